//! The shares backend against the plain engine: every primitive, the
//! approximations, the three compactions, and the whole pruned forward on a
//! tiny model — bit for bit in exact truncation — plus what a broken peer
//! does to the other side.

use super::channel::{mem_pair, ChannelError, MsgWriter, Transport};
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use super::session::run_in_process;
use super::shares::{Abort, SharesBackend, SharesOptions};
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
    SharesOptions { truncation: Truncation::Exact, compaction, analysis: true }
}

fn model(ring: Ring) -> EngineModel {
    EngineModel::from_weights(&BertWeights::random(tiny_config(), 2, 42), &ring)
}

/// The program on two parties (threads) with a dealer; the opened output.
fn on_shares(ring: Ring, compaction: Compaction, m: &EngineModel, prog: &impl Prog) -> Vec<u64> {
    let seeds = session_seeds(&mut ChaCha8Rng::seed_from_u64(9));
    let t = Duration::from_secs(60);
    let (a, b) = mem_pair(t);
    let (d, c) = mem_pair(t);
    let o = opts(compaction);
    let (s0, s1) = std::thread::scope(|s| {
        s.spawn(move || {
            let mut d = d;
            serve_dealer(ring, m, seeds, &mut d).unwrap()
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
        assert_eq!(on_shares(ring, Compaction::Swap, &m, &prog), on_plain(ring, &prog), "ring {ring}");
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
    // γ of the first LayerNorm of the model (id known to the dealer).
    let id = (0..100).find(|&i| m.vector_by_id(i).is_some()).expect("the model has a γ");
    let gamma = WeightVector { id, values: m.vector_by_id(id).unwrap().to_vec() };
    let w = gamma.values.len();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<u64> = (0..4 * w).map(|_| ring.encode(rng.gen_range(-4.0..4.0))).collect();
    let prog = Approximations { x, gamma };
    assert_eq!(on_shares(ring, Compaction::Shuffle, &m, &prog), on_plain(ring, &prog));
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
    let cfg = EngineConfig { ring, truncation: Truncation::Exact, thetas: Some(vec![0.07, 0.09]), betas: Some(vec![0.1, 0.12]), exponents: None };
    let thr = LayerThresholds::from_config(&cfg, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut pruned_somewhere = false;
    for (i, c) in [Compaction::Swap, Compaction::Shuffle, Compaction::Bitonic, Compaction::Shuffle].into_iter().enumerate() {
        let ids: Vec<u32> = (0..rng.gen_range(6..13)).map(|_| rng.gen_range(0..50)).collect();
        let emb = w.embed(&ids, None).unwrap();
        let plain = forward(&m, &cfg, &emb, ids.len(), 0);
        let (input, _) = encode_input(ring, &emb);
        let run = run_in_process(&m, &shape, &thr, opts(c), &input, ids.len(), i as u64).unwrap();
        assert_eq!(run.logits_ring, plain.logits_ring, "example {i}, {c:?}");
        assert_eq!(run.client.trace.kept_per_layer, plain.kept_per_layer);
        assert_eq!(run.client.trace.reduced_per_layer, plain.reduced_per_layer);
        pruned_somewhere |= plain.kept_per_layer.iter().any(|k| k.len() < ids.len());
        // The same primitive counts as the engine, and real traffic.
        assert_eq!(run.client.meter.cost.total(), plain.cost.total());
        let comm = run.client.comm.total();
        assert!(comm.bytes_sent > 0 && comm.rounds > 0 && comm.dealer_bytes > 0);
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
    let short = server_against(|t| t.send(vec![1, 2, 3]).unwrap());
    assert!(matches!(short, ChannelError::Garbage { .. }), "{short}");
    let junk = server_against(|t| t.send(MsgWriter::new(Ring::CRYPTEN).u64s(&[u64::MAX; 48]).finish()).unwrap());
    assert!(junk.to_string().contains("malformed"), "{junk}");
    // A peer that stays silent: the timeout, not a hang.
    let silent = server_against(|_| std::thread::sleep(Duration::from_secs(3)));
    assert!(matches!(silent, ChannelError::Timeout(..)), "{silent}");
    let _ = Abort; // the unwinding payload stays internal
}
