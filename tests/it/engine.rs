//! The fixed-point engine against the float simulation (candle, hard masks,
//! approximations, tokens removed) on the same tiny model and inputs:
//! secure arithmetic reproduces what the trainer promised.

use cipherprune::fixed::{Ring, Truncation};
use cipherprune::model::{Bert, BertConfig, ForwardCtx, Inputs, Masking, Numerics, Params, Plan};
use cipherprune::secure::bert::{forward, EngineConfig, EngineModel};
use cipherprune::secure::weights::{BertConfig as EngineBertConfig, BertWeights};

use super::fixtures;

#[test]
fn engine_matches_the_float_simulation_on_a_tiny_model() {
    engine_matches(1.0, false);
}

/// Merged rows: the engine appends the pruned rows' mean after the kept
/// ones, the simulation puts it at the first pruned position; attention
/// does not see order, so the logits agree.
#[test]
fn engine_matches_the_float_simulation_when_pruned_tokens_merge() {
    engine_matches(1.0, true);
    engine_matches(0.5, true);
}

/// The engine compares ΣA with the public round(θ_ring·H·n^p): the same
/// tokens as the float score ΣA/(H·n^p) ≥ θ, for any p.
#[test]
fn engine_matches_the_float_simulation_for_other_length_exponents() {
    engine_matches(0.5, false);
    engine_matches(0.0, false);
}

fn engine_matches(exp: f64, merge: bool) {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(&dir.path().join("m"), 31);
    let mut cfg = BertConfig::load(&m.join("config.json")).unwrap();
    let mut p = Params::load(&m.join("model.safetensors")).unwrap();
    let mut rng = cipherprune::model::params::seeded(31);
    p.init_if_missing("classifier.weight", &[2, cfg.hidden_size], 0.5, &mut rng).unwrap();
    p.init_if_missing("classifier.bias", &[2], 0.0, &mut rng).unwrap();
    cfg.num_labels = Some(2);
    p.save(&m.join("model.safetensors")).unwrap();
    std::fs::write(m.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let model = Bert::new(&cfg, &p, Some(2)).unwrap();
    let weights = BertWeights::from_safetensors_file(&m.join("model.safetensors"), EngineBertConfig::from_json_file(&m.join("config.json")).unwrap()).unwrap();

    let layers = cfg.num_hidden_layers;
    // S^(p) = S·n^(1−p): the same share of tokens at a typical n of 8.
    let scale = 8f64.powf(1.0 - exp);
    let (theta, beta) = (vec![0.12 * scale; layers], vec![0.16 * scale; layers]);
    let exponent = (exp != 1.0).then(|| vec![exp; layers]);
    let plan = Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta: Some(theta.clone()), beta: Some(beta.clone()), exponent: exponent.clone(), merge }, physical: true };
    let ecfg = EngineConfig { ring: Ring::BOLT, truncation: Truncation::Exact, thetas: Some(theta), betas: Some(beta), exponents: exponent, merge };
    let engine = EngineModel::from_weights(&weights, &ecfg.ring);
    let (mut worst, mut agree, mut pruned, mut compared, mut merged) = (0f64, 0, 0, 0, 0);
    for k in 0..24u32 {
        let n = 5 + (k as usize % 7);
        let ids: Vec<u32> = std::iter::once(2).chain((1..n - 1).map(|i| 5 + (k * 7 + i as u32 * 3) % 16)).chain(std::iter::once(3)).collect();
        let inputs = Inputs::new(&ids, &vec![0; n], &vec![1; n], 1, n).unwrap();
        let sim = model.forward_with(&inputs, &plan, &mut ForwardCtx::eval()).unwrap();
        let sl = sim.base.logits.unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let emb = weights.embed(&ids, None).unwrap();
        let r = forward(&engine, &ecfg, &emb, n, k as u64);
        assert_eq!(r.overflow.count(), 0);
        // Where no token sits within rounding of a threshold, both keep the same tokens.
        let sorted = |v: &Vec<usize>| { let mut v = v.clone(); v.sort(); v };
        let same_tokens = sim.layers.iter().zip(&r.kept_per_layer).all(|(a, b)| a.kept[0] == sorted(b));
        pruned += usize::from(r.kept_per_layer[layers - 1].len() < n || r.merged_per_layer.contains(&true));
        assert!(merge || !r.merged_per_layer.contains(&true), "merged without merge");
        if same_tokens && merge {
            let flags: Vec<bool> = sim.layers.iter().map(|t| t.merged[0]).collect();
            assert_eq!(flags, r.merged_per_layer, "example {k}: the simulation and the engine merge in different layers");
        }
        merged += usize::from(r.merged_per_layer.contains(&true));
        if same_tokens {
            compared += 1;
            for (a, b) in sl.iter().zip(&r.logits) {
                worst = worst.max((*a as f64 - b).abs());
            }
            let argmax = |v: &[f64]| if v[1] > v[0] { 1 } else { 0 };
            agree += usize::from(argmax(&r.logits) == argmax(&sl.iter().map(|&x| x as f64).collect::<Vec<_>>()));
        }
    }
    assert!(compared >= 20, "p = {exp}: only {compared} of 24 examples kept the same tokens");
    assert!(pruned >= 8, "p = {exp}: only {pruned} examples pruned anything: the test would not exercise removal");
    // 37/12: an ulp is 2.4e-4; the stated tolerance is 0.02 on the logits.
    assert!(worst < 0.02, "engine and simulation logits differ by {worst}");
    assert!(!merge || merged >= 8, "p = {exp}: only {merged} examples merged anything");
    assert_eq!(agree, compared, "predictions differ");
}
