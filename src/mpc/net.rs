//! `serve` and `client` over TCP. A session uses two connections from the
//! client: the protocol connection to the server party, and one to the
//! dealer. In `serve` the dealer runs as a thread beside the server party,
//! with its own seeds: the trusted-dealer simulation of CrypTen's TTP mode.
//! A deployment would put the dealer on a third machine, or replace it with
//! OT/HE preprocessing; the protocol messages would not change.
//!
//! Handshake (JSON frames): the client says hello with its token count;
//! the server answers with the public facts of its model (architecture,
//! ring, which layers prune or reduce — not the thresholds); on the dealer
//! connection the dealer sends the client's 32-byte seed.

use super::channel::{ChannelError, TcpTransport, Transport};
use super::cost::CommTally;
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use super::session::{client_thresholds, run_party, PartyOutcome};
use super::shares::{SharesBackend, SharesOptions};
use super::sort::Compaction;
use crate::fixed::{Ring, Truncation};
use crate::secure::bert::{EngineModel, LayerThresholds};
use crate::secure::weights::{BertConfig, BertWeights};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Protocol name and version, first field of every hello.
pub const PROTOCOL: &str = "cipherprune-2pc/1";

/// Longest accepted sequence (tokens) from a client.
pub const MAX_TOKENS: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hello {
    protocol: String,
    /// "party" or "dealer".
    role: String,
    /// The client's token count (party connection only).
    #[serde(default)]
    tokens: usize,
}

/// What the server tells a client about its model: public facts only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub protocol: String,
    /// A label for the model (the checkpoint's name and weights digest).
    pub model: String,
    pub config: BertConfig,
    pub num_labels: usize,
    pub ring: Ring,
    pub truncation: Truncation,
    pub compaction: Compaction,
    /// Per layer: does it prune / reduce.
    pub prune: Vec<bool>,
    pub reduce: Vec<bool>,
}

/// The server's side: its model, thresholds and the public description.
pub struct ServerModel {
    pub model: EngineModel,
    pub thresholds: Vec<LayerThresholds>,
    pub info: ServerInfo,
}

impl ServerModel {
    pub fn new(model: EngineModel, thresholds: Vec<LayerThresholds>, info: ServerInfo) -> Self {
        ServerModel { model, thresholds, info }
    }

    fn options(&self) -> SharesOptions {
        SharesOptions { truncation: self.info.truncation, compaction: self.info.compaction, analysis: false }
    }
}

fn garbage(msg: impl Into<String>) -> ChannelError {
    ChannelError::Garbage { at: " (handshake)".into(), msg: msg.into() }
}

fn send_json<T: Serialize>(t: &mut dyn Transport, v: &T) -> Result<(), ChannelError> {
    t.send(serde_json::to_vec(v).expect("serialisable"))
}

fn recv_json<T: for<'de> Deserialize<'de>>(t: &mut dyn Transport, what: &str) -> Result<T, ChannelError> {
    let m = t.recv().map_err(|e| e.at(what))?;
    serde_json::from_slice(&m).map_err(|e| garbage(format!("{what} is not valid: {e}")))
}

fn hello(t: &mut dyn Transport, role: &str) -> Result<Hello, ChannelError> {
    let h: Hello = recv_json(t, "the client's hello")?;
    if h.protocol != PROTOCOL {
        return Err(garbage(format!("the peer speaks `{}`, not `{PROTOCOL}`", h.protocol)));
    }
    if h.role != role {
        return Err(garbage(format!("expected a `{role}` connection, got `{}`", h.role)));
    }
    Ok(h)
}

/// Accept one connection within `timeout` (`None`: wait for ever).
fn accept(listener: &TcpListener, timeout: Option<Duration>) -> Result<TcpStream, ChannelError> {
    let io = |e: std::io::Error| ChannelError::Io(e.to_string());
    let Some(timeout) = timeout else {
        return listener.accept().map(|(s, _)| s).map_err(io);
    };
    listener.set_nonblocking(true).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let res = loop {
        match listener.accept() {
            Ok((s, _)) => break Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    break Err(ChannelError::Timeout(timeout.as_secs(), " (waiting for the dealer connection)".into()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => break Err(io(e)),
        }
    };
    listener.set_nonblocking(false).map_err(io)?;
    let s = res?;
    s.set_nonblocking(false).map_err(io)?;
    Ok(s)
}

/// What the server learns from one session: the token count and the
/// revealed counts, and its communication.
#[derive(Clone, Debug)]
pub struct ServedSession {
    pub tokens: usize,
    pub kept_per_layer: Vec<usize>,
    pub comm: CommTally,
    pub wall: Duration,
}

/// Serve one client session on `listener`.
///
/// # Errors
/// When the client is not a cipherprune client, sends garbage, stalls
/// longer than `timeout` or hangs up.
pub fn serve_one(
    listener: &TcpListener,
    server: &ServerModel,
    rng: &mut impl RngCore,
    timeout: Duration,
) -> Result<ServedSession, ChannelError> {
    let stream = accept(listener, None)?;
    let start = Instant::now();
    let mut party = TcpTransport::new(stream, timeout)?;
    let h = hello(&mut party, "party")?;
    if h.tokens == 0 || h.tokens > MAX_TOKENS {
        return Err(garbage(format!("{} tokens (1..={MAX_TOKENS} accepted)", h.tokens)));
    }
    send_json(&mut party, &server.info)?;
    let mut dealer_conn = TcpTransport::new(accept(listener, Some(timeout))?, timeout)?;
    hello(&mut dealer_conn, "dealer")?;
    let seeds = session_seeds(rng);
    dealer_conn.send(seeds.1.to_vec())?;
    let ring = server.info.ring;
    let n = h.tokens;
    let d = server.info.config.hidden_size;
    let (outcome, dealt) = std::thread::scope(|s| {
        let model = &server.model;
        let dealer = s.spawn(move || serve_dealer(ring, model, seeds, &mut dealer_conn));
        let b = SharesBackend::new(Party::Server, ring, server.options(), Box::new(party), Correlations::server(ring, seeds.0), 0);
        let out = run_party(b, &server.model, &server.thresholds, &vec![0; n * d], n);
        (out, dealer.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    let outcome = outcome?;
    dealt?;
    Ok(ServedSession {
        tokens: n,
        kept_per_layer: outcome.trace.kept_per_layer.iter().map(|k| k.len()).collect(),
        comm: outcome.comm,
        wall: start.elapsed(),
    })
}

/// The client's result: the logits and what the run cost it.
#[derive(Clone, Debug)]
pub struct ClientResult {
    pub info: ServerInfo,
    pub logits: Vec<f64>,
    pub outcome: PartyOutcome,
    pub wall: Duration,
}

/// Run one sentence against a server. `weights` is the client's copy of the
/// model's public parts: its config and embedding table (nothing else is
/// read). `seed` masks the input.
///
/// # Errors
/// When the server cannot be reached, is not a cipherprune server, serves
/// another architecture, sends garbage, stalls or hangs up.
pub fn run_client(
    addr: impl ToSocketAddrs + Copy,
    weights: &BertWeights,
    ids: &[u32],
    type_ids: &[u32],
    seed: u64,
    timeout: Duration,
) -> Result<ClientResult, ChannelError> {
    let start = Instant::now();
    let connect = || {
        TcpStream::connect(addr).map_err(|e| ChannelError::Io(format!("cannot connect to the server: {e}")))
    };
    let mut party = TcpTransport::new(connect()?, timeout)?;
    let n = ids.len();
    send_json(&mut party, &Hello { protocol: PROTOCOL.into(), role: "party".into(), tokens: n })?;
    let info: ServerInfo = recv_json(&mut party, "the server's model description")?;
    if info.protocol != PROTOCOL {
        return Err(garbage(format!("the server speaks `{}`, not `{PROTOCOL}`", info.protocol)));
    }
    let mine = &weights.config;
    if (info.config.hidden_size, info.config.vocab_size) != (mine.hidden_size, mine.vocab_size) {
        return Err(garbage(format!(
            "the server's model has hidden size {} and vocabulary {}, this client's embeddings {} and {}",
            info.config.hidden_size, info.config.vocab_size, mine.hidden_size, mine.vocab_size
        )));
    }
    let layers = info.config.num_hidden_layers;
    if info.prune.len() != layers || info.reduce.len() != layers {
        return Err(garbage("per-layer flags do not match the layer count"));
    }
    let emb = weights.embed(ids, Some(type_ids)).map_err(|e| ChannelError::Io(e.to_string()))?;
    let (input, _) = crate::secure::bert::encode_input(info.ring, &emb);
    let shape = EngineModel::from_weights(&BertWeights::random(info.config.clone(), info.num_labels, 0), &info.ring).public_shape();
    let thresholds: Vec<LayerThresholds> = info
        .prune
        .iter()
        .zip(&info.reduce)
        .map(|(&p, &r)| LayerThresholds { theta: p.then_some(0), beta: r.then_some(0), ..Default::default() })
        .collect();
    let mut dealer = TcpTransport::new(connect()?, timeout)?;
    send_json(&mut dealer, &Hello { protocol: PROTOCOL.into(), role: "dealer".into(), tokens: 0 })?;
    let seed1: [u8; 32] = dealer
        .recv()
        .map_err(|e| e.at("waiting for the dealer's seed"))?
        .try_into()
        .map_err(|_| garbage("the dealer's seed is not 32 bytes"))?;
    let opts = SharesOptions { truncation: info.truncation, compaction: info.compaction, analysis: false };
    let corr = Correlations::client(info.ring, seed1, Box::new(dealer));
    let b = SharesBackend::new(Party::Client, info.ring, opts, Box::new(party), corr, seed);
    let outcome = run_party(b, &shape, &client_thresholds(&thresholds), &input, n)?;
    let logits = outcome.trace.logits_ring.iter().map(|&v| info.ring.decode(v)).collect();
    Ok(ClientResult { info, logits, outcome, wall: start.elapsed() })
}
