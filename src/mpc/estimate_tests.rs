//! The cost computed from shapes against the bytes and rounds the real
//! protocol measures: equal, for every compaction, both truncations,
//! several p, pruned and unpruned.

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
    let cases = [
        (Ring::BOLT, Truncation::Exact, Compaction::Shuffle, 1.0, Suite::AndTree),
        (Ring::BOLT, Truncation::Exact, Compaction::Swap, 0.5, Suite::AndTree),
        (Ring::BOLT, Truncation::Exact, Compaction::Bitonic, 1.0, Suite::AndTree),
        (Ring::CRYPTEN, Truncation::Probabilistic { seed: 1 }, Compaction::Shuffle, 0.0, Suite::AndTree),
        (Ring::BOLT, Truncation::Exact, Compaction::Shuffle, 0.5, Suite::Fss),
        (Ring::BOLT, Truncation::Exact, Compaction::Bitonic, 1.0, Suite::Fss),
        (Ring::CRYPTEN, Truncation::Exact, Compaction::Swap, 1.0, Suite::Fss),
    ];
    for (i, (ring, truncation, compaction, p, suite)) in cases.into_iter().enumerate() {
        let m = EngineModel::from_weights(&w, &ring);
        // p rescales the bound: θ·n^(1-p) keeps the same share of tokens.
        let scale = |t: f64| t * 9f64.powf(1.0 - p);
        let cfg = EngineConfig { ring, truncation, thetas: Some(vec![scale(0.07), scale(0.09)]), betas: Some(vec![scale(0.1), scale(0.12)]), exponents: Some(vec![p; 2]) };
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
        let shape = ExampleShape { real: n, entering, kept: kept.clone(), reduced: t.reduced_per_layer.iter().map(Vec::len).collect() };
        pruned_somewhere |= kept.iter().any(|&k| k < n);
        reduced_somewhere |= shape.reduced.iter().any(|&r| r > 0);
        let proto = Protocol { truncation, compaction, suite };
        assert_eq!(online_cost(&m, &thr, proto, &shape), measured(&run), "case {i} ({compaction:?}, p = {p}), shape {shape:?}");
        // Unpruned: no comparisons, no compaction.
        let none = vec![LayerThresholds::default(); 2];
        let full = run_in_process(&m, &m.public_shape(), &none, opts, &input, n, i as u64).unwrap();
        assert_eq!(unpruned_cost(&m, proto, n), measured(&full), "case {i} unpruned");
        assert!(online_cost(&m, &thr, proto, &shape).bytes() != measured(&full).bytes());
    }
    assert!(pruned_somewhere && reduced_somewhere, "the cases must prune and reduce to mean anything");
}

#[test]
#[ignore = "exploration: prints rounds per operator for BERT shapes"]
fn rounds_by_operator() {
    use super::lengths::{Counts, Lengths};
    use super::shares::Suite;
    use crate::secure::backend::Backend;
    for name in ["medium", "base"] {
        let cfg = super::bench::shape(name).unwrap();
        let w = BertWeights::random(cfg, 2, 1);
        let m = EngineModel::from_weights(&w, &Ring::BOLT);
        let layers = m.num_layers();
        let n = 128;
        for suite in [Suite::AndTree, Suite::Fss] {
            let proto = Protocol { truncation: Truncation::Exact, compaction: Compaction::Shuffle, suite };
            let shape = ExampleShape { real: n, entering: vec![n; layers], kept: vec![n; layers], reduced: vec![0; layers] };
            let mut b = Lengths::new(m.ring(), proto, Counts::Shape(&shape));
            b.set_scope(crate::secure::report::OpClass::Input, None);
            let x = b.input(&vec![0; n * m.hidden()]);
            crate::secure::bert::forward_on(&mut b, &m, &vec![LayerThresholds::default(); layers], x, n);
            eprintln!("{name} {suite:?}: {} rounds, {} MB online; per layer {:?}", b.cost.rounds, b.cost.bytes() / 1_000_000, b.rounds_by.iter().map(|(k, v)| (k, *v as f64 / layers as f64)).collect::<Vec<_>>());
            let mut keys = std::collections::BTreeMap::new();
            for (k, v) in &b.pools {
                if k.is_fss() {
                    *keys.entry((k.kind, k.p[0])).or_insert(0usize) += v;
                }
            }
            eprintln!("  DCF units {keys:?}");
        }
    }
}
