//! The engine on a tiny BERT built in code (2 layers, hidden 16, 2 heads,
//! FFN 32): against the f64 reference of the same approximations, pruning
//! and reduction with thresholds placed between known scores, overflow in a
//! small ring, determinism, and cost.

use super::*;
use crate::secure::reference::reference_forward;
use crate::secure::weights::tests::tiny_config;
use crate::secure::weights::BertConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny() -> BertWeights {
    BertWeights::random(tiny_config(), 2, 42)
}

/// Random token sequences (ids avoid nothing special: the model is random).
fn sequences(count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| (0..rng.gen_range(4..14)).map(|_| rng.gen_range(0..50)).collect()).collect()
}

fn config(ring: Ring) -> EngineConfig {
    EngineConfig { ring, truncation: Truncation::Exact, thetas: None, betas: None, exponents: None, merge: false }
}

fn run(w: &BertWeights, cfg: &EngineConfig, ids: &[u32], index: u64) -> ForwardResult {
    let model = EngineModel::from_weights(w, &cfg.ring);
    forward(&model, cfg, &w.embed(ids, None).unwrap(), ids.len(), index)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Turn ΣA ring values into a threshold θ that sits halfway between two
/// of them (so no rounding can flip it): θ·H·n·2^s = (lo + hi)/2.
fn theta_between(lo: i64, hi: i64, heads: usize, n: usize, ring: Ring) -> f64 {
    (lo + hi) as f64 / 2.0 / (heads * n) as f64 / (ring.frac() as f64).exp2()
}

#[test]
fn engine_matches_reference_without_pruning() {
    let w = tiny();
    for (ring, tol) in [(Ring::BOLT, 0.02), (Ring::CRYPTEN, 0.002)] {
        let mut worst: f64 = 0.0;
        for (i, ids) in sequences(12, 1).iter().enumerate() {
            let r = run(&w, &config(ring), ids, i as u64);
            let f = reference_forward(&w, None, None, &w.embed(ids, None).unwrap(), ids.len());
            assert_eq!(r.overflow.count(), 0);
            assert_eq!(argmax(&r.logits), argmax(&f.logits), "{ring}: {:?} vs {:?}", r.logits, f.logits);
            for (a, b) in r.logits.iter().zip(&f.logits) {
                worst = worst.max((a - b).abs());
            }
            // Scores agree too (ΣA at scale s vs the float ΣA).
            for (sr, sf) in r.scores_ring.iter().zip(&f.scores) {
                for (&a, &b) in sr.iter().zip(sf) {
                    assert!((ring.decode(ring.from_signed(a)) - b).abs() < 40.0 * tol, "{a} vs {b}");
                }
            }
        }
        println!("tiny model {ring}: max |logit − reference| = {worst:.5} (tolerance {tol})");
        assert!(worst < tol, "{ring}: {worst}");
    }
}

#[test]
fn pruning_removes_exactly_the_tokens_below_theta() {
    let w = tiny();
    let ring = Ring::BOLT;
    let h = w.config.num_attention_heads;
    let ids: Vec<u32> = vec![3, 17, 9, 41, 22, 8, 30, 5, 11, 47];
    let n = ids.len();
    let base = run(&w, &config(ring), &ids, 0);
    assert!(base.kept_per_layer.iter().all(|k| k.len() == n), "no thresholds, nothing pruned");

    // Layer 0: prune the three lowest-scoring tokens other than [CLS].
    let s0 = &base.scores_ring[0];
    let mut order: Vec<usize> = (1..n).collect();
    order.sort_by_key(|&i| s0[i]);
    let theta0 = theta_between(s0[order[2]], s0[order[3]], h, n, ring);
    let mut cfg = config(ring);
    cfg.thetas = Some(vec![theta0, 0.0]);
    let r = run(&w, &cfg, &ids, 0);
    let mut want0: Vec<usize> = (0..n).filter(|i| !order[..3].contains(i)).collect();
    want0.sort();
    assert_eq!(r.kept_per_layer[0], want0);
    assert_eq!(r.kept_per_layer[1], want0, "θ = 0 keeps everything live");
    assert_eq!(r.live_per_layer[1], want0);
    assert_eq!(r.scores_ring[0], base.scores_ring[0], "layer 0's scores come before its pruning");

    // Layer 1: of the survivors, prune the lowest one: cumulative.
    let s1 = &r.scores_ring[1];
    let n1 = want0.len();
    let mut order1: Vec<usize> = (1..n1).collect();
    order1.sort_by_key(|&j| s1[j]);
    cfg.thetas = Some(vec![theta0, theta_between(s1[order1[0]], s1[order1[1]], h, n1, ring)]);
    let r = run(&w, &cfg, &ids, 0);
    let gone = want0[order1[0]];
    let want1: Vec<usize> = want0.iter().copied().filter(|&p| p != gone).collect();
    assert_eq!(r.kept_per_layer, vec![want0.clone(), want1]);

    // A threshold no score reaches keeps [CLS] alone, in every layer.
    cfg.thetas = Some(vec![1.0, 1.0]);
    let r = run(&w, &cfg, &ids, 0);
    assert_eq!(r.kept_per_layer, vec![vec![0], vec![0]]);
    assert_eq!(r.live_per_layer[1], vec![0]);
    assert!(r.logits.iter().all(|v| v.is_finite()));
    assert_eq!(r.overflow.count(), 0);
}

#[test]
fn reduction_marks_known_tokens_and_uses_the_low_polynomials() {
    let w = tiny();
    let ring = Ring::BOLT;
    let h = w.config.num_attention_heads;
    let ids: Vec<u32> = vec![3, 17, 9, 41, 22, 8, 30, 5, 11, 47];
    let n = ids.len();
    let base = run(&w, &config(ring), &ids, 0);
    let s0 = &base.scores_ring[0];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| s0[i]);
    // Prune the lowest two (unless [CLS]), reduce the next three.
    let theta = theta_between(s0[order[1]], s0[order[2]], h, n, ring);
    let beta = theta_between(s0[order[4]], s0[order[5]], h, n, ring);
    let mut cfg = config(ring);
    cfg.thetas = Some(vec![theta, 0.0]);
    cfg.betas = Some(vec![beta, 0.0]);
    let r = run(&w, &cfg, &ids, 0);
    let pruned: Vec<usize> = order[..2].iter().copied().filter(|&i| i != 0).collect();
    let mut reduced: Vec<usize> = order[..5].iter().copied().filter(|i| !pruned.contains(i)).collect();
    reduced.sort();
    assert_eq!(r.reduced_per_layer[0], reduced);
    assert!(r.reduced_per_layer[1].is_empty());
    assert!(r.kept_per_layer[0].iter().all(|p| !pruned.contains(p)));

    // The f64 reference agrees on the sets and, with them, on the logits.
    let f = reference_forward(&w, cfg.thetas.as_deref(), cfg.betas.as_deref(), &w.embed(&ids, None).unwrap(), n);
    assert_eq!(f.kept_per_layer, r.kept_per_layer);
    assert_eq!(f.reduced_per_layer, r.reduced_per_layer);
    for (a, b) in r.logits.iter().zip(&f.logits) {
        assert!((a - b).abs() < 0.02, "{:?} vs {:?}", r.logits, f.logits);
    }

    // Reduced tokens cost fewer secret products in layer 0's GELU and in
    // layer 1's softmax than the same run without reduction.
    cfg.betas = None;
    let unreduced = run(&w, &cfg, &ids, 0);
    let low = |t: &CostTally, c, l| t.get(c, Some(l)).ss_mults;
    assert!(low(&r.cost, OpClass::Gelu, 0) < low(&unreduced.cost, OpClass::Gelu, 0));
    assert!(low(&r.cost, OpClass::Softmax, 1) < low(&unreduced.cost, OpClass::Softmax, 1));
    assert_eq!(low(&r.cost, OpClass::Softmax, 0), low(&unreduced.cost, OpClass::Softmax, 0));
    assert!(r.cost.get(OpClass::Reduction, Some(0)).comparisons > 0);
    assert_ne!(r.logits_ring, unreduced.logits_ring);
}

#[test]
fn small_ring_overflows_and_says_where() {
    let w = tiny();
    let ring = Ring::new(16, 12).unwrap(); // values in [−8, 8); no product fits
    let ids: Vec<u32> = vec![1, 2, 3, 4, 5];
    let r = run(&w, &config(ring), &ids, 0);
    assert!(r.overflow.count() > 0);
    // (The attention products do not overflow: the wrapped, truncated Q and
    // K are a few ulps.)
    for class in [OpClass::Linear, OpClass::Softmax, OpClass::Gelu, OpClass::LayerNorm] {
        let o = r.overflow.get(class, Some(0));
        assert!(o.count > 0, "{class:?} should overflow in layer 0");
        assert!(o.max_bits > 16, "{class:?}: the values needed more than 16 bits");
    }
    assert!(r.logits.iter().all(|v| v.is_finite()), "it keeps going and wraps");
    // The same model in the BOLT ring does not overflow.
    assert_eq!(run(&w, &config(Ring::BOLT), &ids, 0).overflow.count(), 0);
}

#[test]
fn identical_seeds_give_identical_results() {
    let w = tiny();
    let ids: Vec<u32> = vec![4, 8, 15, 16, 23, 42];
    let mut cfg = config(Ring::BOLT);
    cfg.truncation = Truncation::Probabilistic { seed: 7 };
    cfg.thetas = Some(vec![0.05, 0.05]);
    cfg.betas = Some(vec![0.1, 0.1]);
    let a = run(&w, &cfg, &ids, 3);
    assert_eq!(a, run(&w, &cfg, &ids, 3));
    // Threads do not matter: run the same example from a rayon pool.
    let model = EngineModel::from_weights(&w, &cfg.ring);
    let emb = w.embed(&ids, None).unwrap();
    let par: Vec<ForwardResult> = {
        use rayon::prelude::*;
        (0..4).into_par_iter().map(|_| forward(&model, &cfg, &emb, ids.len(), 3)).collect()
    };
    assert!(par.iter().all(|p| *p == a));
    // Another seed or example index draws differently.
    assert_ne!(a.scores_ring, run(&w, &cfg, &ids, 4).scores_ring);
    cfg.truncation = Truncation::Probabilistic { seed: 8 };
    let b = run(&w, &cfg, &ids, 3);
    assert_ne!(a.scores_ring, b.scores_ring);
    // Probabilistic and exact truncation differ by rounding only.
    cfg.truncation = Truncation::Exact;
    let e = run(&w, &cfg, &ids, 3);
    for (x, y) in a.logits.iter().zip(&e.logits) {
        assert!((x - y).abs() < 0.02);
    }
}

#[test]
fn pruned_runs_cost_less_and_counts_add_up() {
    let w = tiny();
    let ring = Ring::BOLT;
    let c = &w.config;
    let (d, f, h) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 % 50) as u32).collect();
    let n = ids.len() as u64;
    let full = run(&w, &config(ring), &ids, 0);
    // Secret × public MACs of layer 0: Q, K, V, output (4d²) and FFN (2df) per token.
    let lin0 = full.cost.get(OpClass::Linear, Some(0));
    assert_eq!(lin0.pub_macs, n * (4 * d * d + 2 * d * f) as u64);
    assert_eq!(full.cost.get(OpClass::Softmax, Some(0)).elements, h as u64 * n * n);
    assert_eq!(full.cost.get(OpClass::Pruning, Some(0)), Default::default(), "no θ, no pruning cost");
    // Classifier and pooler run on [CLS] only.
    assert_eq!(full.cost.get(OpClass::Classifier, None).pub_macs, (d * 2) as u64);
    assert_eq!(full.cost.get(OpClass::Classifier, None).reveals, 2);

    // Prune about half of the tokens after layer 0.
    let s0 = &full.scores_ring[0];
    let mut sorted: Vec<i64> = s0[1..].to_vec();
    sorted.sort();
    let theta = theta_between(sorted[5], sorted[6], h, ids.len(), ring);
    let mut cfg = config(ring);
    cfg.thetas = Some(vec![theta, 0.0]);
    let pruned = run(&w, &cfg, &ids, 0);
    let kept = pruned.kept_per_layer[0].len() as u64;
    assert!(kept < n);
    let (tp, tf) = (pruned.cost.total(), full.cost.total());
    assert!(tp.ss_mults < tf.ss_mults && tp.ss_macs < tf.ss_macs && tp.pub_macs < tf.pub_macs);
    assert!(tp.comparisons < tf.comparisons && tp.truncations < tf.truncations);
    // The pruning itself: n − 1 comparisons with θ ([CLS] needs none) and
    // (n − kept)(n − 1) swaps of d wide rows (no reduction: no bit rides along).
    let pc = pruned.cost.get(OpClass::Pruning, Some(0));
    let swaps = (n - kept) * (n - 1);
    assert_eq!(pc.comparisons, (n - 1) + swaps);
    assert_eq!(pc.muxes, 2 * swaps * d as u64);
    assert_eq!(pc.reveals, 1);
    // Layer 1 runs on the kept tokens only.
    assert_eq!(pruned.cost.get(OpClass::Linear, Some(1)).pub_macs, kept * (4 * d * d + 2 * d * f) as u64);

    let json = serde_json::to_string(&pruned).unwrap();
    let back: ForwardResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pruned);
}

#[test]
fn weights_that_do_not_fit_are_reported() {
    let mut w = tiny();
    w.layers[1].ffn_in.weight[0] = 1e8; // 1e8·2^12 needs 40 bits
    let model = EngineModel::from_weights(&w, &Ring::BOLT);
    let o = model.encode_overflow();
    assert_eq!(o.count(), 1);
    assert_eq!(o.get(OpClass::Linear, Some(1)), OverflowCount { count: 1, max_bits: 40 });
    let r = forward(&model, &config(Ring::BOLT), &w.embed(&[1, 2, 3], None).unwrap(), 3, 0);
    assert!(r.overflow.get(OpClass::Linear, Some(1)).count >= 1, "reported with every forward");
}

/// MiniLM-shaped random model: examples per second of the engine.
/// `cargo test --release -- --ignored --nocapture minilm_shaped_speed`.
#[test]
#[ignore]
fn minilm_shaped_speed() {
    let cfg = BertConfig {
        vocab_size: 1000,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        max_position_embeddings: 128,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let w = BertWeights::random(cfg, 2, 1);
    let ecfg = config(Ring::BOLT);
    let model = EngineModel::from_weights(&w, &ecfg.ring);
    let seqs: Vec<Vec<u32>> = (0..40).map(|i| (0..25).map(|j| ((i * 31 + j * 17) % 1000) as u32).collect()).collect();
    let embs: Vec<Vec<f32>> = seqs.iter().map(|s| w.embed(s, None).unwrap()).collect();
    let t = std::time::Instant::now();
    let results: Vec<ForwardResult> = {
        use rayon::prelude::*;
        embs.par_iter().enumerate().map(|(i, e)| forward(&model, &ecfg, e, 25, i as u64)).collect()
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "MiniLM-shaped (6 × 384, 12 heads, FFN 1536), 25 tokens, 37/12, {} threads: {:.1} examples/s, {:.0} tokens/s",
        rayon::current_num_threads(),
        results.len() as f64 / secs,
        (results.len() * 25) as f64 / secs
    );
}
