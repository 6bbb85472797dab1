//! The cost computed from shapes against the bytes and rounds the real
//! protocol measures: equal, for every compaction, both truncations,
//! several p, pruned (tokens dropped or merged) and unpruned.

use super::estimate::{online_cost, unpruned_cost, OnlineCost, Protocol};
use super::session::run_in_process;
use super::shares::{SharesOptions, Suite};
use super::sort::Compaction;
use crate::fixed::{Ring, Truncation};
use crate::prune::simulate::ExampleShape;
use crate::secure::bert::{encode_input, forward, EngineConfig, EngineModel, LayerThresholds};
use crate::secure::weights::tests::tiny_config;
use crate::secure::weights::BertWeights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn measured(run: &super::session::InProcessRun) -> OnlineCost {
    let (s, c) = (run.server.comm.total(), run.client.comm.total());
    assert_eq!(s.rounds, c.rounds, "both parties count the same rounds");
    OnlineCost { server_sent: s.bytes_sent, client_sent: c.bytes_sent, rounds: s.rounds }
}

#[test]
fn the_cost_from_shapes_equals_the_measured_protocol() {
    let w = BertWeights::random(tiny_config(), 2, 42);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut pruned_somewhere = false;
    let mut reduced_somewhere = false;
    let mut merged_somewhere = false;
    let cases = [
        (Ring::BOLT, Truncation::Exact, Compaction::Shuffle, 1.0, Suite::AndTree, false),
        (Ring::BOLT, Truncation::Exact, Compaction::Swap, 0.5, Suite::AndTree, false),
        (Ring::BOLT, Truncation::Exact, Compaction::Bitonic, 1.0, Suite::AndTree, false),
        (Ring::CRYPTEN, Truncation::Probabilistic { seed: 1 }, Compaction::Shuffle, 0.0, Suite::AndTree, false),
        (Ring::BOLT, Truncation::Exact, Compaction::Shuffle, 0.5, Suite::Fss, false),
        (Ring::BOLT, Truncation::Exact, Compaction::Bitonic, 1.0, Suite::Fss, false),
        (Ring::CRYPTEN, Truncation::Exact, Compaction::Swap, 1.0, Suite::Fss, false),
        (Ring::BOLT, Truncation::Exact, Compaction::Shuffle, 1.0, Suite::AndTree, true),
        (Ring::BOLT, Truncation::Exact, Compaction::Swap, 0.5, Suite::Fss, true),
        (Ring::CRYPTEN, Truncation::Probabilistic { seed: 1 }, Compaction::Bitonic, 1.0, Suite::Fss, true),
    ];
    for (i, (ring, truncation, compaction, p, suite, merge)) in cases.into_iter().enumerate() {
        let m = EngineModel::from_weights(&w, &ring);
        // p rescales the bound: θ·n^(1-p) keeps the same share of tokens.
        let scale = |t: f64| t * 9f64.powf(1.0 - p);
        let cfg = EngineConfig { ring, truncation, thetas: Some(vec![scale(0.07), scale(0.09)]), betas: Some(vec![scale(0.1), scale(0.12)]), exponents: Some(vec![p; 2]), merge };
        let thr = LayerThresholds::from_config(&cfg, 2);
        let ids: Vec<u32> = (0..rng.gen_range(7..13)).map(|_| rng.gen_range(0..50)).collect();
        let n = ids.len();
        let emb = w.embed(&ids, None).unwrap();
        let plain = forward(&m, &cfg, &emb, n, 0);
        let (input, _) = encode_input(ring, &emb);
        let opts = SharesOptions { truncation, compaction, analysis: true, suite }; // peeks are uncounted; they give the trace its reduced rows
        let run = run_in_process(&m, &m.public_shape(), &thr, opts, &input, n, i as u64).unwrap();
        if truncation == Truncation::Exact {
            assert_eq!(run.logits_ring, plain.logits_ring, "case {i}: the protocol still matches the engine");
        }
        // The counts the protocol revealed (local truncation may flip a
        // token near θ against the engine's draw).
        let t = &run.client.trace;
        let kept: Vec<usize> = t.kept_per_layer.iter().map(Vec::len).collect();
        let entering: Vec<usize> = std::iter::once(n).chain(kept.iter().copied()).take(2).collect();
        let shape = ExampleShape { real: n, entering, kept: kept.clone(), reduced: t.reduced_per_layer.iter().map(Vec::len).collect(), merged: if merge { t.merged_per_layer.clone() } else { vec![] } };
        pruned_somewhere |= kept.iter().any(|&k| k < n);
        merged_somewhere |= t.merged_per_layer.contains(&true);
        assert!(merge || !t.merged_per_layer.contains(&true));
        reduced_somewhere |= shape.reduced.iter().any(|&r| r > 0);
        let proto = Protocol { truncation, compaction, suite };
        assert_eq!(online_cost(&m, &thr, proto, &shape), measured(&run), "case {i} ({compaction:?}, p = {p}, merge {merge}), shape {shape:?}");
        // Unpruned: no comparisons, no compaction.
        let none = vec![LayerThresholds::default(); 2];
        let full = run_in_process(&m, &m.public_shape(), &none, opts, &input, n, i as u64).unwrap();
        assert_eq!(unpruned_cost(&m, proto, n), measured(&full), "case {i} unpruned");
        assert!(online_cost(&m, &thr, proto, &shape).bytes() != measured(&full).bytes());
    }
    assert!(pruned_somewhere && reduced_somewhere && merged_somewhere, "the cases must prune, reduce and merge to mean anything");
}

#[test]
fn dcf_keys_cut_the_rounds_of_every_operator_but_the_linear_ones_more() {
    use super::bench::shape_estimate;
    use super::shares::Suite;
    let (tree, fss) = (shape_estimate("medium", 16, Suite::AndTree), shape_estimate("medium", 16, Suite::Fss));
    assert!(fss.rounds * 4 < tree.rounds, "{} vs {} rounds", fss.rounds, tree.rounds);
    assert!(fss.online_bytes * 2 < tree.online_bytes, "an opening instead of a circuit: {} vs {}", fss.online_bytes, tree.online_bytes);
    for (class, r) in &fss.rounds_per_layer {
        assert!(*r <= tree.rounds_per_layer[class], "{class}: {r} vs {}", tree.rounds_per_layer[class]);
    }
    // LayerNorm: 19 dependent steps each, one round apiece; 1/√v's Newton
    // steps take three, each truncation riding with the product after it
    // (the last with c, then y's with γ).
    assert_eq!(fss.rounds_per_layer["layernorm"], 38.0);
    assert_eq!((tree.keys, tree.key_bytes), (0, 0));
    assert!(fss.keys > 0 && fss.key_bytes > 800 * fss.keys, "{} keys, {} bytes", fss.keys, fss.key_bytes);
    // Bounded truncation: the same rounds and online bytes, smaller keys.
    let bounded = shape_estimate("medium", 16, Suite::FssBounded);
    assert_eq!((bounded.rounds, bounded.online_bytes, bounded.keys), (fss.rounds, fss.online_bytes, fss.keys));
    assert!(bounded.key_bytes * 10 < fss.key_bytes * 6, "{} vs {} key bytes", bounded.key_bytes, fss.key_bytes);
}
