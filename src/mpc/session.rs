//! One two-party run of the forward: the server, the client and the dealer
//! as three threads joined by in-process channels ([`run_in_process`]: one
//! process holds everything, so it is a test and measurement setting, not a
//! deployment), or one party over a real connection ([`run_party`], used by
//! `serve` and `client`, with the dealer its own process).
//!
//! Each party runs the offline phase ([`SharesBackend::offline_phase`],
//! sized by [`super::plan`]) before it touches the input, then the online
//! forward. The logits are opened to the client alone.

use super::channel::{mem_pair, ChannelError, MsgWriter, Transport};
use super::cost::{CommCounts, CommTally};
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use super::plan::offline_plan;
use super::shares::{Abort, SharesBackend, SharesOptions};
use crate::secure::backend::Backend;
use crate::secure::bert::{forward_on, EngineModel, LayerThresholds, Trace};
use crate::secure::report::{Meter, OpClass};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// What one party saw and spent.
#[derive(Clone, Debug)]
pub struct PartyOutcome {
    /// The server's trace has no logits (it never learns them).
    pub trace: Trace,
    /// Primitive counts (the same model as the plain engine's).
    pub meter: Meter,
    /// Online bytes, rounds and time per (operator class, layer).
    pub comm: CommTally,
    /// The offline phase: bytes, rounds, dealer traffic and time.
    pub offline: CommCounts,
    /// Pools that ran dry online and were refilled from the dealer.
    pub refills: u64,
}

/// The client's view of the thresholds: whether each layer prunes or
/// reduces is public (the counts are revealed), the values are the server's.
pub fn client_thresholds(server: &[LayerThresholds]) -> Vec<LayerThresholds> {
    server
        .iter()
        .map(|t| LayerThresholds { theta: t.theta.map(|_| 0), beta: t.beta.map(|_| 0), merge: t.merge, ..Default::default() })
        .collect()
}

/// Run one party's side: the offline phase for `n` tokens, then the
/// forward. `input` is the client's encoded n × d embeddings, read only
/// after the offline phase; the server passes zeros of that length.
///
/// # Errors
/// The first protocol error: the peer or the dealer hung up, stalled or sent
/// garbage.
pub fn run_party(
    backend: SharesBackend,
    model: &EngineModel,
    thresholds: &[LayerThresholds],
    input: &[u64],
    n: usize,
) -> Result<PartyOutcome, ChannelError> {
    run_party_ahead(backend, model, thresholds, input, n, None)
}

/// As [`run_party`], with the offline phase prepared for `capacity` tokens
/// before the input's length is known (`None`: for exactly `n`). After it
/// the client announces its length n ≤ capacity in one message — the
/// length is revealed by design anyway — and the forward consumes a prefix
/// of the prepared material. The server passes `n = 0` and no input.
///
/// # Errors
/// As [`run_party`], and a client length over the capacity.
pub fn run_party_ahead(
    backend: SharesBackend,
    model: &EngineModel,
    thresholds: &[LayerThresholds],
    input: &[u64],
    n: usize,
    capacity: Option<usize>,
) -> Result<PartyOutcome, ChannelError> {
    let plan = offline_plan(model, thresholds, backend.options().truncation, backend.options().suite, capacity.unwrap_or(n));
    let d = model.hidden();
    let ((trace, offline, refills), meter, comm) = run_protocol(backend, |b| {
        // The offline phase first: it restarts the clock, so the time spent
        // before it (building the backend and the plan) is charged to no
        // online operator (it was to the input's, 0.03–0.08 s a BERT-medium run).
        b.offline_phase(model, &plan);
        b.set_scope(OpClass::Input, None);
        let (n, zeros) = match capacity {
            None => (n, Vec::new()),
            Some(cap) => {
                let n = announce_length(b, n, cap);
                (n, if b.is_server() { vec![0; n * d] } else { Vec::new() })
            }
        };
        let x = b.input(if zeros.is_empty() { input } else { &zeros });
        let trace = forward_on(b, model, thresholds, x, n);
        (trace, b.offline(), b.refills())
    })?;
    Ok(PartyOutcome { trace, meter, comm, offline, refills })
}

/// The client tells the server its length (one one-way message).
fn announce_length(b: &mut SharesBackend, n: usize, capacity: usize) -> usize {
    if b.is_server() {
        let got = b.recv_only();
        let n = b.parse(&got, |rd| rd.u64s(1))[0] as usize;
        if n == 0 || n > capacity {
            let e = ChannelError::Garbage { at: " (the client's length)".into(), msg: format!("{n} tokens for an offline phase of {capacity}") };
            b.ok::<()>(Err(e));
        }
        n
    } else {
        assert!(n <= capacity, "{n} tokens over the prepared {capacity}");
        b.send_only(MsgWriter::new(b.ring()).u64s(&[n as u64]).finish());
        n
    }
}

/// Run `f` as one party, turning a protocol abort back into its error;
/// then close the books and tell the dealer the session is over.
///
/// # Errors
/// The first protocol error.
pub fn run_protocol<R>(
    mut backend: SharesBackend,
    f: impl FnOnce(&mut SharesBackend) -> R,
) -> Result<(R, Meter, CommTally), ChannelError> {
    match catch_unwind(AssertUnwindSafe(|| f(&mut backend))) {
        Ok(v) => {
            let (meter, comm, mut corr) = backend.finish();
            corr.finish()?;
            Ok((v, meter, comm))
        }
        Err(p) => match p.downcast::<Abort>() {
            Ok(a) => Err(a.0),
            Err(p) => resume_unwind(p),
        },
    }
}

/// Both parties of one in-process run.
#[derive(Clone, Debug)]
pub struct InProcessRun {
    /// The logits (ring elements), as the client reconstructed them.
    pub logits_ring: Vec<u64>,
    pub server: PartyOutcome,
    pub client: PartyOutcome,
    pub wall: Duration,
    /// The dealer's key generation.
    pub dealer: super::dealer::DealerStats,
}

/// Run one example as a two-party computation in three threads of this
/// process (server, client, dealer): for tests and measurement only — one
/// process then holds the weights, the input and the dealer's seeds. `model`
/// is the server's; the client gets only its shape. `seed` fixes the
/// dealer's seeds and the client's input masks.
///
/// # Errors
/// A protocol error from any party (the client's first, as it is the one
/// the others react to).
pub fn run_in_process(
    model: &EngineModel,
    client_model: &EngineModel,
    thresholds: &[LayerThresholds],
    opts: SharesOptions,
    input: &[u64],
    n: usize,
    seed: u64,
) -> Result<InProcessRun, ChannelError> {
    let ring = model.ring();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let seeds = session_seeds(&mut rng);
    let input_seed = rng.next_u64();
    let timeout = Duration::from_secs(600);
    let (to_client, to_server) = mem_pair(timeout);
    let (dealer_end, client_dealer) = mem_pair(timeout);
    let client_thr = client_thresholds(thresholds);
    let zeros = vec![0u64; input.len()];
    let start = Instant::now();
    let (server, client, dealer) = std::thread::scope(|s| {
        let dealer = s.spawn(move || {
            let mut t = dealer_end;
            serve_dealer(ring, seeds, &mut t)
        });
        let zeros = &zeros;
        let server = s.spawn(move || {
            let b = SharesBackend::new(Party::Server, ring, opts, Box::new(to_client), Correlations::server(ring, seeds.0), 0);
            run_party(b, model, thresholds, zeros, n)
        });
        let corr = Correlations::client(ring, seeds.1, Box::new(client_dealer) as Box<dyn Transport>);
        let b = SharesBackend::new(Party::Client, ring, opts, Box::new(to_server), corr, input_seed);
        let client = run_party(b, client_model, &client_thr, input, n);
        let server = server.join().unwrap_or_else(|p| resume_unwind(p));
        let dealer = dealer.join().unwrap_or_else(|p| resume_unwind(p));
        (server, client, dealer)
    });
    let wall = start.elapsed();
    let client = client?;
    let server = server?;
    let dealer = dealer?;
    assert!(server.trace.logits_ring.is_empty(), "the server must not learn the logits");
    Ok(InProcessRun { logits_ring: client.trace.logits_ring.clone(), server, client, wall, dealer })
}
