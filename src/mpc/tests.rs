//! The shares backend against the plain engine: every primitive, the
//! approximations, the three compactions, and the whole pruned forward on a
//! tiny model — bit for bit in exact truncation — plus what a broken peer
//! does to the other side.

use super::channel::{mem_pair, ChannelError, MsgWriter, Transport};
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use super::session::run_in_process;
use super::shares::{Abort, SharesBackend, SharesOptions, Suite};
use super::sort::Compaction;
use crate::fixed::approx::{gelu, layer_norm, softmax, tanh, Degree};
use crate::fixed::{Ring, Truncation};
use crate::secure::backend::{Backend, WeightVector};
use crate::secure::bert::{encode_input, forward, EngineConfig, EngineModel, LayerThresholds};
use crate::secure::plain::PlainBackend;
use crate::secure::weights::tests::tiny_config;
use crate::secure::weights::BertWeights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// A program written once over any backend.
trait Prog: Sync {
    fn run<B: Backend>(&self, b: &mut B) -> B::Arith;
}

fn opts(compaction: Compaction) -> SharesOptions {
    SharesOptions { truncation: Truncation::Exact, compaction, analysis: true, suite: Suite::AndTree }
}

fn model(ring: Ring) -> EngineModel {
    EngineModel::from_weights(&BertWeights::random(tiny_config(), 2, 42), &ring)
}

/// The program on two parties (threads) with a dealer; the opened output.
fn on_shares(ring: Ring, compaction: Compaction, _m: &EngineModel, prog: &impl Prog) -> Vec<u64> {
    on_shares_with(ring, opts(compaction), prog)
}

fn on_shares_with(ring: Ring, o: SharesOptions, prog: &impl Prog) -> Vec<u64> {
    let seeds = session_seeds(&mut ChaCha8Rng::seed_from_u64(9));
    let t = Duration::from_secs(60);
    let (a, b) = mem_pair(t);
    let (d, c) = mem_pair(t);
    let (s0, s1) = std::thread::scope(|s| {
        s.spawn(move || {
            let mut d = d;
            serve_dealer(ring, seeds, &mut d).unwrap()
        });
        let server = s.spawn(move || {
            let mut bk = SharesBackend::new(Party::Server, ring, o, Box::new(a), Correlations::server(ring, seeds.0), 0);
            let out = prog.run(&mut bk);
            let (_, _, _) = bk.finish();
            out
        });
        let mut bk = SharesBackend::new(Party::Client, ring, o, Box::new(b), Correlations::client(ring, seeds.1, Box::new(c)), 5);
        let out = prog.run(&mut bk);
        let (_, _, mut corr) = bk.finish();
        corr.finish().unwrap();
        (server.join().unwrap(), out)
    });
    s0.iter().zip(&s1).map(|(&x, &y)| ring.add(x, y)).collect()
}

fn on_plain(ring: Ring, prog: &impl Prog) -> Vec<u64> {
    prog.run(&mut PlainBackend::new(ring, Truncation::Exact, 0))
}

fn values(ring: Ring, n: usize, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lim = (ring.max_signed() / 4) as i64;
    let mut v: Vec<u64> = (0..n).map(|_| ring.from_signed(rng.gen_range(-lim..lim))).collect();
    // The edges of the signed range and of small values.
    v.extend([0i64, -1, 1, ring.max_signed() as i64, ring.min_signed() as i64, -(1 << ring.frac())].map(|x| ring.from_signed(x)));
    v
}

struct Primitives {
    x: Vec<u64>,
    y: Vec<u64>,
}

impl Prog for Primitives {
    fn run<B: Backend>(&self, b: &mut B) -> B::Arith {
        let r = b.ring();
        let x = b.input(&self.x);
        let y = b.input(&self.y);
        let mut outs = Vec::new();
        let neg = b.msb(&x);
        outs.push(b.b2a(&neg));
        for k in [1, r.frac(), r.bits() - 2] {
            outs.push(b.truncate(&x, k));
        }
        outs.push(b.mul(&x, &y));
        outs.push(b.mux(&neg, &x, &y));
        let ge = b.ge_public(&x, &[r.encode(0.5)]);
        outs.push(b.b2a(&ge));
        // The fused ones, on the same edge values.
        let (sign, xs) = b.msb_times(&x);
        outs.push(b.b2a(&sign));
        outs.push(xs);
        for k in [1, r.frac(), r.bits() - 2] {
            let (t, yt) = b.trunc_mul(&y, &x, k);
            outs.extend([t, yt]);
            outs.push(b.trunc_lincomb(&y, &x, &x, k));
        }
        let (m, ts) = b.msb_and_truncate_each(&y, &[(&x, 1), (&y, r.frac()), (&x, r.bits() - 2)]);
        outs.push(b.b2a(&m));
        outs.extend(ts);
        let n = b.len(&x);
        let m = n / 2;
        let a = b.gather(&x, &(0..2 * m).collect::<Vec<_>>());
        let c = b.gather(&y, &(0..2 * m).collect::<Vec<_>>());
        outs.push(b.matmul(&a, &c, 2, m, 2));
        let parts: Vec<&B::Arith> = outs.iter().collect();
        b.concat(&parts)
    }
}

#[test]
fn primitives_match_the_engine_bit_for_bit() {
    for ring in [Ring::BOLT, Ring::CIPHERPRUNE, Ring::CRYPTEN, Ring::new(20, 6).unwrap()] {
        let prog = Primitives { x: values(ring, 150, 1), y: values(ring, 150, 2) };
        let m = model(ring);
        let plain = on_plain(ring, &prog);
        assert_eq!(on_shares(ring, Compaction::Swap, &m, &prog), plain, "ring {ring}");
        let fss = SharesOptions { suite: Suite::Fss, ..opts(Compaction::Swap) };
        assert_eq!(on_shares_with(ring, fss, &prog), plain, "ring {ring}, DCF keys");
    }
}

struct Approximations {
    x: Vec<u64>,
    gamma: WeightVector,
}

impl Prog for Approximations {
    fn run<B: Backend>(&self, b: &mut B) -> B::Arith {
        let x = b.input(&self.x);
        let w = self.gamma.values.len();
        let g1 = gelu(b, &x, Degree::High);
        let g2 = gelu(b, &x, Degree::Low);
        let s1 = softmax(b, &x, w, Degree::High);
        let s2 = softmax(b, &x, w, Degree::Low);
        let ln = layer_norm(b, &x, w, &self.gamma, &vec![0; w]);
        let t = tanh(b, &x);
        b.concat(&[&g1, &g2, &s1, &s2, &ln, &t])
    }
}

#[test]
fn approximations_match_the_engine_bit_for_bit() {
    let ring = Ring::BOLT;
    let m = model(ring);
    // γ of the first LayerNorm of the model (the server's: opened masked).
    let id = (0..100).find(|&i| m.vector_by_id(i).is_some()).expect("the model has a γ");
    let gamma = WeightVector { id, values: m.vector_by_id(id).unwrap().to_vec() };
    let w = gamma.values.len();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<u64> = (0..4 * w).map(|_| ring.encode(rng.gen_range(-4.0..4.0))).collect();
    let prog = Approximations { x, gamma };
    let plain = on_plain(ring, &prog);
    assert_eq!(on_shares(ring, Compaction::Shuffle, &m, &prog), plain);
    assert_eq!(on_shares_with(ring, SharesOptions { suite: Suite::Fss, ..opts(Compaction::Shuffle) }, &prog), plain, "DCF keys");
    assert_eq!(on_shares_with(ring, SharesOptions { suite: Suite::FssBounded, ..opts(Compaction::Shuffle) }, &prog), plain, "bounded truncation keys");
}

/// The bounded truncation keys are exact up to the band's edge,
/// |x| ≤ 2^(ℓ−1) − 2^(ℓ−9) (included), on every primitive that truncates, and
/// wrong at the ring's very edge, where only the full-width keys are exact.
#[test]
fn bounded_truncation_is_exact_inside_its_band_only() {
    use super::shares::BOUNDED_WRAP_BITS;
    for ring in [Ring::BOLT, Ring::CIPHERPRUNE, Ring::CRYPTEN, Ring::new(20, 6).unwrap()] {
        let band = (ring.max_signed() + 1 - (1i128 << (ring.bits() - BOUNDED_WRAP_BITS))) as i64;
        let inner = |seed| -> Vec<u64> {
            let mut v = values(ring, 150, seed);
            let n = v.len();
            (v[n - 3], v[n - 2]) = (ring.from_signed(band), ring.from_signed(-band));
            v
        };
        let prog = Primitives { x: inner(1), y: inner(2) };
        let bounded = SharesOptions { suite: Suite::FssBounded, ..opts(Compaction::Swap) };
        assert_eq!(on_shares_with(ring, bounded, &prog), on_plain(ring, &prog), "ring {ring}");
        let edge = Primitives { x: vec![ring.from_signed(ring.max_signed() as i64); 4], y: vec![ring.one(); 4] };
        assert_ne!(on_shares_with(ring, bounded, &edge), on_plain(ring, &edge), "ring {ring}: the edge is outside the band");
        let exact = SharesOptions { suite: Suite::Fss, ..opts(Compaction::Swap) };
        assert_eq!(on_shares_with(ring, exact, &edge), on_plain(ring, &edge), "ring {ring}: full-width keys");
    }
}

struct Rows {
    x: Vec<u64>,
    keep: Vec<bool>,
    low: Vec<bool>,
    width: usize,
}

impl Prog for Rows {
    fn run<B: Backend>(&self, b: &mut B) -> B::Arith {
        let x = b.input(&self.x);
        let n = self.keep.len();
        // Secret bits from secret values: keep(i) ⟺ key_i ≥ 0.5.
        let r = b.ring();
        let key = b.input(&self.keep.iter().map(|&k| r.encode(k as u8 as f64)).collect::<Vec<_>>());
        let keep = b.ge_public(&key, &[r.encode(0.5)]);
        let lowk = b.input(&self.low.iter().map(|&k| r.encode(k as u8 as f64)).collect::<Vec<_>>());
        let low = b.ge_public(&lowk, &[r.encode(0.5)]);
        let packed = b.compact_rows(&x, self.width, &keep);
        let p = b.partition(&low, self.width);
        let (hi, lo) = b.split_rows(&x, self.width, &p);
        let back = b.merge_rows(&hi, &lo, self.width, &p);
        assert_eq!(b.len(&back), n * self.width);
        b.concat(&[&packed, &hi, &lo, &back])
    }
}

#[test]
fn compactions_and_partitions_keep_order_in_all_three_ways() {
    let ring = Ring::BOLT;
    let m = model(ring);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for n in [1usize, 2, 7, 16] {
        let width = 3;
        let prog = Rows {
            x: (0..n * width).map(|i| ring.from_signed(i as i64 * 7 - 20)).collect(),
            keep: (0..n).map(|i| i == 0 || rng.gen_bool(0.5)).collect(),
            low: (0..n).map(|_| rng.gen_bool(0.4)).collect(),
            width,
        };
        let want = on_plain(ring, &prog);
        for c in [Compaction::Swap, Compaction::Shuffle, Compaction::Bitonic] {
            assert_eq!(on_shares(ring, c, &m, &prog), want, "n = {n}, {c:?}");
        }
    }
}

#[test]
fn pruned_forward_is_bit_identical_to_the_engine() {
    let w = BertWeights::random(tiny_config(), 2, 42);
    let ring = Ring::BOLT;
    let m = EngineModel::from_weights(&w, &ring);
    let shape = m.public_shape();
    let cfg = EngineConfig { ring, truncation: Truncation::Exact, thetas: Some(vec![0.07, 0.09]), betas: Some(vec![0.1, 0.12]), exponents: None, merge: false };
    let thr = LayerThresholds::from_config(&cfg, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut pruned_somewhere = false;
    let cases = [
        (Compaction::Swap, Suite::AndTree),
        (Compaction::Shuffle, Suite::Fss),
        (Compaction::Bitonic, Suite::Fss),
        (Compaction::Shuffle, Suite::AndTree),
        (Compaction::Swap, Suite::Fss),
        (Compaction::Shuffle, Suite::FssBounded),
    ];
    for (i, (c, suite)) in cases.into_iter().enumerate() {
        let ids: Vec<u32> = (0..rng.gen_range(6..13)).map(|_| rng.gen_range(0..50)).collect();
        let emb = w.embed(&ids, None).unwrap();
        let plain = forward(&m, &cfg, &emb, ids.len(), 0);
        let (input, _) = encode_input(ring, &emb);
        let run = run_in_process(&m, &shape, &thr, SharesOptions { suite, ..opts(c) }, &input, ids.len(), i as u64).unwrap();
        assert_eq!(run.logits_ring, plain.logits_ring, "example {i}, {c:?}, {suite:?}");
        assert_eq!(run.client.trace.kept_per_layer, plain.kept_per_layer);
        assert_eq!(run.client.trace.reduced_per_layer, plain.reduced_per_layer);
        pruned_somewhere |= plain.kept_per_layer.iter().any(|k| k.len() < ids.len());
        // The same primitive counts as the engine, and real traffic.
        assert_eq!(run.client.meter.cost.total(), plain.cost.total());
        let comm = run.client.comm.total();
        assert!(comm.bytes_sent > 0 && comm.rounds > 0);
        assert!(run.client.offline.dealer_bytes > 0 && run.server.offline.bytes_sent > 0, "an offline phase");
        assert_eq!(run.client.refills, 0, "the offline plan covers every element-wise pool, example {i}, {c:?}");
        assert!(run.server.trace.logits_ring.is_empty(), "the server learns no logits");
        assert_eq!(comm.rounds, run.server.comm.total().rounds, "both parties count the same rounds");
        assert_eq!(comm.bytes_sent, run.server.comm.total().bytes_received);
    }
    assert!(pruned_somewhere, "the thresholds must prune for this test to mean anything");
}

/// A server party whose client misbehaves must return an error, not panic
/// or hang.
fn server_against(peer: impl FnOnce(&mut dyn Transport) + Send) -> ChannelError {
    let ring = Ring::BOLT;
    let (a, mut b) = mem_pair(Duration::from_secs(2));
    let m = model(ring);
    let thr = vec![LayerThresholds::default(); 2];
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let bk = SharesBackend::new(Party::Server, ring, opts(Compaction::Swap), Box::new(a), Correlations::server(ring, [1; 32]), 0);
            super::session::run_party(bk, &m, &thr, &vec![0; 3 * 16], 3)
        });
        peer(&mut b);
        drop(b);
        h.join().expect("no panic").expect_err("the run must fail")
    })
}

#[test]
fn a_broken_peer_is_an_error_on_the_other_side() {
    let hung_up = server_against(|_| {});
    assert!(matches!(hung_up, ChannelError::Closed(_)), "{hung_up}");
    assert!(hung_up.to_string().contains("input"), "says where: {hung_up}");
    // (The server first sends its offline message, W − B.)
    let short = server_against(|t| {
        t.recv().unwrap();
        t.send(vec![1, 2, 3]).unwrap()
    });
    assert!(matches!(short, ChannelError::Garbage { .. }), "{short}");
    let junk = server_against(|t| {
        t.recv().unwrap();
        t.send(MsgWriter::new(Ring::CRYPTEN).u64s(&[u64::MAX; 48]).finish()).unwrap()
    });
    assert!(junk.to_string().contains("malformed"), "{junk}");
    // A peer that stays silent: the timeout, not a hang.
    let silent = server_against(|_| std::thread::sleep(Duration::from_secs(3)));
    assert!(matches!(silent, ChannelError::Timeout(..)), "{silent}");
    let _ = Abort; // the unwinding payload stays internal
}

// ---- what each party and the dealer see (DESIGN.md §5) --------------------

use super::dealer::{kind, parse_request, pool};
use super::shares::Leak;
use std::sync::{Arc, Mutex};

/// A transport that keeps a copy of every frame it receives.
struct Tap<T: Transport> {
    inner: T,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<T: Transport> Transport for Tap<T> {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.inner.send(msg)
    }
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        let m = self.inner.recv()?;
        self.log.lock().unwrap().push(m.clone());
        Ok(m)
    }
}

/// What one run showed: frames the server received from the client, the
/// client from the server, the dealer from the client; and the logits.
struct Views {
    server: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
    dealer: Vec<Vec<u8>>,
    logits: Vec<u64>,
}

/// One unpruned forward of `input` (n tokens) with the given seeds, the
/// server holding `model`, and `leak` switched on in both parties.
fn views(model: &EngineModel, input: &[u64], n: usize, seeds: ([u8; 32], [u8; 32]), input_seed: u64, leak: Leak, suite: Suite) -> Views {
    let ring = model.ring();
    let shape = model.public_shape();
    let thr = vec![LayerThresholds::default(); model.num_layers()];
    let t = Duration::from_secs(60);
    let (a, b) = mem_pair(t);
    let (d, c) = mem_pair(t);
    let (ls, lc, ld) = (Arc::default(), Arc::default(), Arc::default());
    let o = SharesOptions { truncation: Truncation::Exact, compaction: Compaction::Shuffle, analysis: false, suite };
    let zeros = vec![0; input.len()];
    let logits = std::thread::scope(|s| {
        let mut dt = Tap { inner: d, log: Arc::clone(&ld) };
        s.spawn(move || serve_dealer(ring, seeds, &mut dt).unwrap());
        let (thr, zeros, ls) = (&thr, &zeros, Arc::clone(&ls));
        let server = s.spawn(move || {
            let mut bk = SharesBackend::new(Party::Server, ring, o, Box::new(Tap { inner: a, log: ls }), Correlations::server(ring, seeds.0), 0);
            bk.set_leak(leak);
            super::session::run_party(bk, model, thr, zeros, n).unwrap()
        });
        let corr = Correlations::client(ring, seeds.1, Box::new(c));
        let mut bk = SharesBackend::new(Party::Client, ring, o, Box::new(Tap { inner: b, log: Arc::clone(&lc) }), corr, input_seed);
        bk.set_leak(leak);
        let out = super::session::run_party(bk, &shape, &super::session::client_thresholds(thr), input, n).unwrap();
        assert!(server.join().unwrap().trace.logits_ring.is_empty());
        out.trace.logits_ring
    });
    let take = |l: Arc<Mutex<Vec<Vec<u8>>>>| std::mem::take(&mut *l.lock().unwrap());
    Views { server: take(ls), client: take(lc), dealer: take(ld), logits }
}

/// Two-sample χ² statistic of two byte histograms (empty bins skipped).
fn chi2(a: &[u8], b: &[u8]) -> f64 {
    let (mut ha, mut hb) = ([0f64; 256], [0f64; 256]);
    a.iter().for_each(|&x| ha[x as usize] += 1.0);
    b.iter().for_each(|&x| hb[x as usize] += 1.0);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
    (0..256).filter(|&i| ha[i] + hb[i] > 0.0).map(|i| (ka * ha[i] - kb * hb[i]).powi(2) / (ha[i] + hb[i])).sum()
}

/// χ² critical value far in the tail for 255 degrees of freedom (mean 255,
/// sd 22.6): about 6 sd, so a pass is no accident of the seeds.
const CHI2_SAME: f64 = 400.0;

fn ring_elems(ring: Ring, frame: &[u8]) -> Vec<u64> {
    let n = frame.len() / super::channel::ring_bytes(ring);
    super::channel::MsgReader::new(ring, frame).ring(n).unwrap()
}

/// The server's input share plus each of the first layer's Q, K, V
/// messages: what a server would add up to find the client's input if a
/// message were x₁.
fn server_sum(ring: Ring, v: &Views) -> Vec<u8> {
    let x0 = ring_elems(ring, &v.server[0]);
    (1..=3).flat_map(|i| MsgWriter::new(ring).ring(&super::arith::add(ring, &x0, &ring_elems(ring, &v.server[i]))).finish()).collect()
}

fn two_inputs(ring: Ring, n: usize, d: usize) -> (Vec<u64>, Vec<u64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let small: Vec<u64> = (0..n * d).map(|_| ring.encode(rng.gen_range(-0.1..0.1))).collect();
    let large: Vec<u64> = (0..n * d).map(|i| ring.encode(if i % 2 == 0 { 2.5 } else { -1.75 })).collect();
    (small, large)
}

#[test]
fn the_servers_view_does_not_depend_on_the_input() {
    let ring = Ring::BOLT;
    let m = model(ring);
    let n = 32;
    let (x, y) = two_inputs(ring, n, m.hidden());
    let server_seed = [7u8; 32];
    // Same server seed, fresh client randomness, no pruning (same counts).
    let run = |input: &[u64], c: u8, leak, suite| views(&m, input, n, (server_seed, [c; 32]), c as u64, leak, suite);
    // On DCF keys the server's view also holds the correction words the
    // client forwards: independent of the input too.
    for suite in [Suite::AndTree, Suite::Fss] {
        let (vx, vy) = (run(&x, 1, Leak::None, suite), run(&y, 2, Leak::None, suite));
        let lens = |v: &Views| v.server.iter().map(|f| f.len()).collect::<Vec<_>>();
        assert_eq!(lens(&vx), lens(&vy), "the same message sizes");
        let (all_x, all_y) = (vx.server.concat(), vy.server.concat());
        let raw = chi2(&all_x, &all_y);
        let sum = chi2(&server_sum(ring, &vx), &server_sum(ring, &vy));
        assert!(raw < CHI2_SAME && sum < CHI2_SAME, "{suite:?}: told apart: χ² {raw:.0} (all bytes), {sum:.0} (x₀ + first message)");
    }
    // The same test on a client that sends x₁ unmasked tells them apart.
    let (lx, ly) = (run(&x, 1, Leak::ClientShareUnmasked, Suite::AndTree), run(&y, 2, Leak::ClientShareUnmasked, Suite::AndTree));
    let leaky = chi2(&server_sum(ring, &lx), &server_sum(ring, &ly));
    assert!(leaky > 4.0 * CHI2_SAME, "the leak went unseen: χ² {leaky:.0}");
}

#[test]
fn the_clients_view_does_not_depend_on_the_weights() {
    let ring = Ring::BOLT;
    let m = model(ring);
    let zero = m.public_shape(); // another weight set: all zeros, same ids
    let n = 6;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<u64> = (0..n * m.hidden()).map(|_| ring.encode(rng.gen_range(-1.0..1.0))).collect();
    let client_seed = [9u8; 32];
    // Same client seed and input, fresh server randomness; the last frame
    // (the client's share of the logits) is the result and left out.
    let run = |model: &EngineModel, s: u8, leak, suite| {
        let mut v = views(model, &x, n, ([s; 32], client_seed), 3, leak, suite).client;
        v.pop();
        v
    };
    for suite in [Suite::AndTree, Suite::Fss] {
        let (va, vb) = (run(&m, 1, Leak::None, suite), run(&zero, 2, Leak::None, suite));
        assert_eq!(va.iter().map(|f| f.len()).collect::<Vec<_>>(), vb.iter().map(|f| f.len()).collect::<Vec<_>>());
        let (offline, online) = (chi2(&va[0], &vb[0]), chi2(&va[1..].concat(), &vb[1..].concat()));
        assert!(offline < CHI2_SAME && online < CHI2_SAME, "{suite:?}: told apart: χ² {offline:.0} (W − B), {online:.0} (online)");
    }
    // A server that sends W itself is told apart at once.
    let (la, lb) = (run(&m, 1, Leak::WeightsUnmasked, Suite::AndTree), run(&zero, 2, Leak::WeightsUnmasked, Suite::AndTree));
    let leaky = chi2(&la[0], &lb[0]);
    assert!(leaky > 10.0 * CHI2_SAME, "the leak went unseen: χ² {leaky:.0}");
}

#[test]
fn the_dealer_receives_requests_only() {
    let ring = Ring::BOLT;
    let m = model(ring);
    let n = 5;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x: Vec<u64> = (0..n * m.hidden()).map(|_| ring.encode(rng.gen_range(-1.0..1.0))).collect();
    for suite in [Suite::AndTree, Suite::Fss] {
        let v = views(&m, &x, n, ([3; 32], [4; 32]), 8, Leak::None, suite);
        assert!(!v.logits.is_empty());
        // The weight matrices (LayerNorm's γ enters its product masked, as a secret).
        let ids: Vec<u32> = (0..200).filter(|&i| m.matrix_by_id(i).is_some()).collect();
        let mut counts = std::collections::BTreeMap::new();
        for f in &v.dealer {
            let w = parse_request(f).unwrap_or_else(|e| panic!("not a request: {e}"));
            *counts.entry(w[0]).or_insert(0usize) += 1;
            match w[0] {
                kind::FILL => assert!((pool::TRIPLE..=pool::DCF_TRUNC_MUL).contains(&(w[1] & !pool::ONLINE)) && w.len() == 6, "{w:?}"),
                kind::LINEAR => assert!(ids.contains(&(w[1] as u32)) && w[2] as usize <= n && w.len() == 5, "{w:?}"),
                kind::PERM_NEW | kind::PERM_APPLY => {}
                kind::DONE => assert_eq!(w.len(), 1),
                k => panic!("request kind {k}"),
            }
        }
        // One request per weight (offline), pool fills, and DONE; nothing else.
        let weights = counts.get(&kind::LINEAR).copied().unwrap_or(0);
        assert_eq!(weights, ids.len(), "{counts:?}");
        assert_eq!(counts.get(&kind::DONE), Some(&1));
        let bytes: usize = v.dealer.iter().map(|f| f.len()).sum();
        assert!(bytes <= 8 * kind::MAX_WORDS * v.dealer.len(), "{bytes} bytes in {} requests", v.dealer.len());
    }
}
