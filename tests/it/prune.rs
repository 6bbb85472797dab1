//! The invariants of token pruning (DESIGN.md §2), on a tiny model built in
//! code: scores, [CLS], β ≥ θ, threshold gradients, the T → 0 limit,
//! removal = masking, and cumulative pruning.

use candle_core::{Tensor, Var};
use cipherprune::model::{Bert, BertConfig, ForwardCtx, Inputs, Masking, Numerics, Params, Plan};
use cipherprune::prune::Thresholds;

use super::fixtures;

/// A tiny model with a 2-label head, and its config.
fn tiny(seed: u64) -> (Bert, BertConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(dir.path(), seed);
    let mut cfg = BertConfig::load(&m.join("config.json")).unwrap();
    let mut p = Params::load(&m.join("model.safetensors")).unwrap();
    let mut rng = cipherprune::model::params::seeded(seed);
    p.init_if_missing("classifier.weight", &[2, cfg.hidden_size], 0.5, &mut rng).unwrap();
    p.init_if_missing("classifier.bias", &[2], 0.0, &mut rng).unwrap();
    cfg.num_labels = Some(2);
    (Bert::new(&cfg, &p, Some(2)).unwrap(), cfg, dir)
}

/// Two examples of 9 and 6 real tokens ([CLS] = 2 first), the second padded.
fn batch() -> (Inputs, Vec<Vec<u32>>) {
    let a: Vec<u32> = vec![2, 5, 11, 7, 9, 14, 6, 8, 3];
    let b: Vec<u32> = vec![2, 12, 13, 10, 15, 3];
    let t = a.len();
    let mut ids = a.clone();
    ids.extend(b.iter().copied().chain(std::iter::repeat(0).take(t - b.len())));
    let mask: Vec<u32> = ids.iter().enumerate().map(|(i, &id)| u32::from(i < t || id != 0)).collect();
    (Inputs::new(&ids, &vec![0; ids.len()], &mask, 2, t).unwrap(), vec![a, b])
}

fn one(ids: &[u32]) -> Inputs {
    Inputs::new(ids, &vec![0; ids.len()], &vec![1; ids.len()], 1, ids.len()).unwrap()
}

fn hard(numerics: Numerics, theta: f64, beta: Option<f64>, layers: usize, physical: bool) -> Plan {
    Plan { numerics, masking: Masking::Hard { theta: Some(vec![theta; layers]), beta: beta.map(|b| vec![b; layers]), exponent: None, merge: false }, physical }
}

/// A θ that prunes about half of the live tokens in layer 0 (the tiny
/// random model attends almost uniformly, so fixed values would not).
fn median_score(model: &Bert, inputs: &Inputs) -> f64 {
    let plan = Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta: None, beta: None, exponent: None, merge: false }, physical: false };
    let out = model.forward_with(inputs, &plan, &mut ForwardCtx::eval()).unwrap();
    let mut v: Vec<f32> = out.scores[0].flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().filter(|&x| x > 0.0).collect();
    v.sort_by(f32::total_cmp);
    v[v.len() / 2] as f64
}

fn pruned_count(out: &cipherprune::model::ForwardOutput) -> usize {
    out.layers.iter().map(|t| t.entering.iter().sum::<usize>() - t.kept.iter().map(Vec::len).sum::<usize>()).sum()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn scores_sum_to_one_over_live_tokens_and_cls_is_never_pruned() {
    let (model, cfg, _d) = tiny(3);
    let (inputs, _) = batch();
    // A θ above every score: only [CLS] survives layer 0.
    for theta in [0.05, 0.11, 2.0] {
        let out = model.forward_with(&inputs, &hard(Numerics::Approx, theta, Some(theta + 0.05), cfg.num_hidden_layers, false), &mut ForwardCtx::eval()).unwrap();
        for (l, (s, tr)) in out.scores.iter().zip(&out.layers).enumerate() {
            let sums = s.sum(1).unwrap().to_vec1::<f32>().unwrap();
            for (k, sum) in sums.iter().enumerate() {
                assert!((sum - 1.0).abs() < 1e-5, "layer {l} example {k}: scores sum to {sum}");
                assert_eq!(tr.kept[k].first(), Some(&0), "layer {l} example {k}: [CLS] pruned");
            }
        }
        if theta >= 2.0 {
            assert!(out.layers[0].kept.iter().all(|k| k == &vec![0]));
        }
    }
    let t = Thresholds::new(cfg.num_hidden_layers, 0.03, 0.01).unwrap();
    let (th, be) = t.values().unwrap();
    assert!(th.iter().zip(&be).all(|(t, b)| b > t));
    assert!(Thresholds::from_values(&[0.1, 0.1], &[0.2, 0.05]).is_err());
}

#[test]
fn pruning_is_cumulative() {
    let (model, cfg, _d) = tiny(4);
    let (inputs, rows) = batch();
    let theta = median_score(&model, &inputs);
    let out = model.forward_with(&inputs, &hard(Numerics::Approx, theta, Some(theta + 0.05), cfg.num_hidden_layers, false), &mut ForwardCtx::eval()).unwrap();
    for k in 0..2 {
        let mut prev: Vec<usize> = (0..rows[k].len()).collect();
        for (l, tr) in out.layers.iter().enumerate() {
            assert_eq!(tr.entering[k], prev.len(), "layer {l}: entering ≠ kept before");
            assert!(tr.kept[k].iter().all(|p| prev.contains(p)), "layer {l} revived a pruned token");
            prev = tr.kept[k].clone();
        }
    }
    assert!(pruned_count(&out) > 2, "θ = {theta} pruned almost nothing; the test would prove nothing");
}

#[test]
fn removing_pruned_tokens_equals_masking_them() {
    let (model, cfg, _d) = tiny(5);
    let (inputs, rows) = batch();
    let layers = cfg.num_hidden_layers;
    let theta = median_score(&model, &inputs);
    for (numerics, beta) in [(Numerics::Exact, None), (Numerics::Approx, Some(theta + 0.02))] {
        let masked = model.forward_with(&inputs, &hard(numerics, theta, beta, layers, false), &mut ForwardCtx::eval()).unwrap();
        assert!(pruned_count(&masked) > 2, "{numerics:?}: θ = {theta} pruned almost nothing");
        let reduced: usize = masked.layers.iter().map(|t| t.reduced.iter().sum::<usize>()).sum();
        assert!(beta.is_none() || reduced > 0, "nothing reduced");
        let logits = masked.base.logits.unwrap();
        for (k, ids) in rows.iter().enumerate() {
            let removed = model.forward_with(&one(ids), &hard(numerics, theta, beta, layers, true), &mut ForwardCtx::eval()).unwrap();
            let diff = max_abs(&logits.narrow(0, k, 1).unwrap(), &removed.base.logits.unwrap());
            assert!(diff < 1e-5, "{numerics:?} example {k}: removal and masking differ by {diff}");
            for (l, (a, b)) in masked.layers.iter().zip(&removed.layers).enumerate() {
                assert_eq!(a.kept[k], b.kept[0], "{numerics:?} example {k} layer {l}: different tokens kept");
                assert_eq!(a.reduced[k], b.reduced[0]);
            }
            // Removal really shrinks the rows.
            assert_eq!(removed.base.hidden.dim(1).unwrap(), removed.layers[layers - 1].kept[0].len());
        }
    }
}

#[test]
fn merging_folds_each_layers_pruned_tokens_into_one_kept_token() {
    let (model, cfg, _d) = tiny(5);
    let (inputs, rows) = batch();
    let layers = cfg.num_hidden_layers;
    let theta = median_score(&model, &inputs);
    let dropped = model.forward_with(&inputs, &hard(Numerics::Approx, theta, None, layers, false), &mut ForwardCtx::eval()).unwrap();
    let merging = hard(Numerics::Approx, theta, None, layers, false).merging().unwrap();
    let merged = model.forward_with(&inputs, &merging, &mut ForwardCtx::eval()).unwrap();
    // Layer 0 decides the same; the first pruned position stays, as the merged token.
    let mut pruning = 0;
    for k in 0..rows.len() {
        let (d, m) = (&dropped.layers[0].kept[k], &merged.layers[0].kept[k]);
        let mut want = d.clone();
        if let Some(first_gone) = (0..dropped.layers[0].entering[k]).find(|j| !d.contains(j)) {
            want.push(first_gone);
            want.sort();
            pruning += 1;
        }
        assert_eq!(m, &want, "example {k}: kept {m:?}, dropped kept {d:?}");
    }
    assert!(pruning > 0, "θ = {theta} pruned nothing in layer 0");
    let gap = max_abs(dropped.base.logits.as_ref().unwrap(), merged.base.logits.as_ref().unwrap());
    assert!(gap > 1e-4, "merging changed no logit ({gap})");
    // Removing rows for real merges the same way.
    let logits = merged.base.logits.unwrap();
    for (k, ids) in rows.iter().enumerate() {
        let plan = hard(Numerics::Approx, theta, None, layers, true).merging().unwrap();
        let removed = model.forward_with(&one(ids), &plan, &mut ForwardCtx::eval()).unwrap();
        let diff = max_abs(&logits.narrow(0, k, 1).unwrap(), &removed.base.logits.unwrap());
        assert!(diff < 1e-5, "example {k}: merged removal and masking differ by {diff}");
        for (a, b) in merged.layers.iter().zip(&removed.layers) {
            assert_eq!(a.kept[k], b.kept[0]);
        }
    }
    // A θ above every score leaves [CLS] and one merged token.
    let all = model.forward_with(&inputs, &hard(Numerics::Approx, 2.0, None, layers, false).merging().unwrap(), &mut ForwardCtx::eval()).unwrap();
    assert!(all.layers[0].kept.iter().all(|k| k == &vec![0, 1]), "{:?}", all.layers[0].kept);
    // Only a plan that prunes can merge.
    let off = Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta: None, beta: None, exponent: None, merge: false }, physical: false };
    assert!(off.merging().unwrap_err().to_string().contains("merging needs pruning thresholds"));
}

fn soft_plan(t: &Thresholds, temperature: f64) -> Plan {
    soft_plan_with(t, temperature, false, false)
}

fn soft_plan_with(t: &Thresholds, temperature: f64, cumulative: bool, per_input: bool) -> Plan {
    soft_plan_p(t, temperature, cumulative, per_input, None)
}

fn soft_plan_p(t: &Thresholds, temperature: f64, cumulative: bool, per_input: bool, exponent: Option<Tensor>) -> Plan {
    Plan { numerics: Numerics::Approx, masking: Masking::Soft { theta: t.theta.as_tensor().clone(), beta: t.beta().unwrap(), exponent, temperature, cumulative, per_input }, physical: false }
}


/// The two averages of the mask losses over a batch of a 9- and a 6-token
/// input: per input, the plain mean of what each input gives alone; over
/// tokens, the same two weighted 9 : 6.
#[test]
fn mask_losses_average_per_input_or_over_all_live_tokens() {
    let (model, cfg, _d) = tiny(6);
    let (inputs, rows) = batch();
    let t = Thresholds::new(cfg.num_hidden_layers, median_score(&model, &inputs), 0.02).unwrap();
    let losses = |inputs: &Inputs, per_input: bool| {
        let out = model.forward_with(inputs, &soft_plan_with(&t, 0.01, false, per_input), &mut ForwardCtx::eval()).unwrap();
        [out.l_prune.unwrap(), out.l_approx.unwrap()].map(|x| x.to_scalar::<f32>().unwrap())
    };
    let (a, b) = (losses(&one(&rows[0]), true), losses(&one(&rows[1]), true));
    let (per_input, per_token) = (losses(&inputs, true), losses(&inputs, false));
    let (na, nb) = (rows[0].len() as f32, rows[1].len() as f32);
    for k in 0..2 {
        assert!((per_input[k] - (a[k] + b[k]) / 2.0).abs() < 1e-5, "term {k}: per input {} vs {}", per_input[k], (a[k] + b[k]) / 2.0);
        let weighted = (a[k] * na + b[k] * nb) / (na + nb);
        assert!((per_token[k] - weighted).abs() < 1e-5, "term {k}: over tokens {} vs {weighted}", per_token[k]);
        assert!((a[k] - b[k]).abs() > 1e-3, "term {k}: both inputs keep the same share, the averages were not told apart");
    }
}

/// Cumulative soft masks at T → 0 are the hard forward itself: same keep
/// masks, same scores, same logits, pruning and reduction both on.
#[test]
fn cumulative_soft_masks_become_the_hard_forward_as_t_goes_to_zero() {
    let (model, cfg, _d) = tiny(6);
    let (inputs, _) = batch();
    // Just above the median: a score exactly at θ would get σ(0) = ½.
    let t = Thresholds::new(cfg.num_hidden_layers, median_score(&model, &inputs) + 1e-5, 0.02).unwrap();
    let (th, be) = t.values().unwrap();
    let soft = model.forward_with(&inputs, &soft_plan_with(&t, 1e-7, true, false), &mut ForwardCtx::eval()).unwrap();
    let hard = model.forward_with(&inputs, &Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta: Some(th), beta: Some(be), exponent: None, merge: false }, physical: false }, &mut ForwardCtx::eval()).unwrap();
    assert!(pruned_count(&hard) > 3, "nothing pruned: the limit was not tested");
    for l in 0..cfg.num_hidden_layers {
        assert_eq!(soft.keep_masks[l].to_vec2::<f32>().unwrap(), hard.keep_masks[l].to_vec2::<f32>().unwrap(), "layer {l} keep masks");
        assert!(max_abs(&soft.scores[l], &hard.scores[l]) < 1e-4, "layer {l} scores");
    }
    let (a, b) = (soft.base.logits.unwrap(), hard.base.logits.unwrap());
    assert!(max_abs(&a, &b) < 1e-3, "logits {a} vs {b}");
    // The per-layer (LTP) soft masks let pruned tokens come back as keys.
    let ltp = model.forward_with(&inputs, &soft_plan_with(&t, 1e-7, false, false), &mut ForwardCtx::eval()).unwrap();
    assert!(max_abs(&ltp.base.logits.unwrap(), &b) > 1e-3);
}

#[test]
fn soft_masks_become_the_hard_ones_as_t_goes_to_zero() {
    let (model, cfg, _d) = tiny(6);
    let (inputs, _) = batch();
    let theta = median_score(&model, &inputs);
    let t = Thresholds::new(cfg.num_hidden_layers, theta, 0.05).unwrap();
    let out = model.forward_with(&inputs, &soft_plan(&t, 1e-7), &mut ForwardCtx::eval()).unwrap();
    let live = inputs.mask.to_vec2::<f32>().unwrap();
    let (mut compared, mut below) = (0, 0);
    for (l, (m, s)) in out.keep_masks.iter().zip(&out.scores).enumerate() {
        let (m, s) = (m.to_vec2::<f32>().unwrap(), s.to_vec2::<f32>().unwrap());
        for k in 0..2 {
            for i in 0..m[k].len() {
                let hard = if live[k][i] == 0.0 { 0.0 } else if i == 0 || s[k][i] as f64 >= theta { 1.0 } else { 0.0 };
                if (s[k][i] as f64 - theta).abs() > 1e-4 {
                    assert!((m[k][i] - hard).abs() < 1e-6, "layer {l} example {k} token {i}: soft {} vs hard {hard}", m[k][i]);
                    compared += 1;
                    below += usize::from(hard == 0.0 && live[k][i] == 1.0);
                }
            }
        }
    }
    assert!(compared > 20);
    assert!(below > 3, "no live token below θ: the limit was not tested");
}

#[test]
fn threshold_gradients_match_finite_differences() {
    threshold_gradients_match(false, false);
}

#[test]
fn cumulative_threshold_gradients_match_finite_differences() {
    threshold_gradients_match(true, false);
}

#[test]
fn per_input_threshold_gradients_match_finite_differences() {
    threshold_gradients_match(false, true);
}

fn threshold_gradients_match(cumulative: bool, per_input: bool) {
    let (model, cfg, _d) = tiny(7);
    let (inputs, _) = batch();
    let (lambda, alpha, temp) = (0.7, 0.5, 0.05);
    let loss = |t: &Thresholds| -> Tensor {
        let out = model.forward_with(&inputs, &soft_plan_with(t, temp, cumulative, per_input), &mut ForwardCtx::eval()).unwrap();
        let task = out.base.logits.unwrap().sqr().unwrap().mean_all().unwrap();
        let reg = (out.l_prune.unwrap() + (out.l_approx.unwrap() * alpha).unwrap()).unwrap();
        (task + (reg * lambda).unwrap()).unwrap()
    };
    let (th0, be0) = (vec![0.09, 0.12], vec![0.15, 0.16]);
    let t = Thresholds::from_values(&th0, &be0).unwrap();
    let grads = loss(&t).backward().unwrap();
    let g_theta = grads.get(t.theta.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let g_delta = grads.get(t.delta.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let h = 1e-3f32;
    let value = |v: &Var, l: usize, d: f32, t: &Thresholds| {
        let mut x = v.as_tensor().to_vec1::<f32>().unwrap();
        x[l] += d;
        v.set(&Tensor::new(x, v.device()).unwrap()).unwrap();
        let r = loss(t).to_scalar::<f32>().unwrap();
        let mut x = v.as_tensor().to_vec1::<f32>().unwrap();
        x[l] -= d;
        v.set(&Tensor::new(x, v.device()).unwrap()).unwrap();
        r
    };
    for l in 0..cfg.num_hidden_layers {
        for (name, var, g) in [("θ", &t.theta, &g_theta), ("δ", &t.delta, &g_delta)] {
            let fd = (value(var, l, h, &t) - value(var, l, -h, &t)) / (2.0 * h);
            assert!((g[l] - fd).abs() < 0.03 * fd.abs().max(0.05), "layer {l} {name}: autograd {} vs finite difference {fd}", g[l]);
            assert!(g[l].abs() > 1e-4, "layer {l} {name}: no gradient");
        }
    }
}

#[test]
fn a_keep_ratio_schedule_keeps_the_top_scores_and_removal_equals_masking() {
    let (model, cfg, _d) = tiny(6);
    let (inputs, rows) = batch();
    let layers = cfg.num_hidden_layers;
    let plan = |physical| Plan { numerics: Numerics::Approx, masking: Masking::Ratio { keep: vec![0.6; layers] }, physical };
    let masked = model.forward_with(&inputs, &plan(false), &mut ForwardCtx::eval()).unwrap();
    let logits = masked.base.logits.unwrap();
    for (k, ids) in rows.iter().enumerate() {
        let mut live: Vec<usize> = (0..ids.len()).collect();
        for (l, (tr, s)) in masked.layers.iter().zip(&masked.scores).enumerate() {
            let s = s.narrow(0, k, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let kept = &tr.kept[k];
            // Two layers: 9 → 5 → 3 tokens and 6 → 4 → 2, round(0.6 · n).
            assert_eq!(kept.len(), ((0.6 * live.len() as f64).round() as usize).max(1), "example {k} layer {l}");
            assert_eq!(kept[0], 0, "example {k} layer {l}: [CLS] pruned");
            let dropped: Vec<usize> = live.iter().copied().filter(|p| !kept.contains(p)).collect();
            let lowest_kept = kept[1..].iter().map(|&p| s[p]).fold(f32::INFINITY, f32::min);
            assert!(dropped.iter().all(|&p| s[p] <= lowest_kept), "example {k} layer {l}: a dropped token outscored a kept one");
            live = kept.clone();
        }
        let removed = model.forward_with(&one(ids), &plan(true), &mut ForwardCtx::eval()).unwrap();
        let diff = max_abs(&logits.narrow(0, k, 1).unwrap(), &removed.base.logits.unwrap());
        assert!(diff < 1e-5, "example {k}: removal and masking differ by {diff}");
        assert_eq!(removed.base.hidden.dim(1).unwrap(), live.len());
    }
}

/// S^(p) = ΣA/(H·n^p) = S·n^(1−p) for every live token of every input, so
/// p = 0 gives scores that average 1 whatever the length; and a hard θ on
/// S^(p) keeps exactly the tokens with S ≥ θ/n^(1−p).
#[test]
fn the_length_exponent_rescales_scores_by_n_to_the_one_minus_p() {
    let (model, cfg, _d) = tiny(4);
    let (inputs, rows) = batch();
    let layers = cfg.num_hidden_layers;
    let with_p = |p: f64, theta: Option<Vec<f64>>| {
        let plan = Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta, beta: None, exponent: Some(vec![p; layers]), merge: false }, physical: false };
        model.forward_with(&inputs, &plan, &mut ForwardCtx::eval()).unwrap()
    };
    let base = with_p(1.0, None);
    for p in [0.0, 0.5] {
        let out = with_p(p, None);
        for (b, row) in rows.iter().enumerate() {
            let n = row.len() as f32;
            let s1 = base.scores[0].get(b).unwrap().to_vec1::<f32>().unwrap();
            let sp = out.scores[0].get(b).unwrap().to_vec1::<f32>().unwrap();
            for i in 0..row.len() {
                assert!((sp[i] - s1[i] * n.powf(1.0 - p as f32)).abs() < 1e-5, "p = {p}, input {b}, token {i}: {} vs {}", sp[i], s1[i]);
            }
            if p == 0.0 {
                let mean = sp[..row.len()].iter().sum::<f32>() / n;
                assert!((mean - 1.0).abs() < 1e-4, "p = 0 scores average 1, got {mean}");
            }
        }
    }
    // θ = 1 on the relative score (p = 0) prunes the below-average tokens of
    // each input: the same as θ = 1/n per input on the share score.
    let out = with_p(0.0, Some(vec![1.0; layers]));
    for (b, row) in rows.iter().enumerate() {
        let s1 = base.scores[0].get(b).unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<usize> = (0..row.len()).filter(|&i| i == 0 || s1[i] * row.len() as f32 >= 1.0).collect();
        assert_eq!(out.layers[0].kept[b], want, "input {b}");
        assert!(want.len() < row.len(), "input {b}: θ = 1 pruned nothing, the test would not mean anything");
    }
}

/// A learned p gets the gradient of the loss through n^p, checked against
/// finite differences like θ and δ.
#[test]
fn exponent_gradients_match_finite_differences() {
    let (model, cfg, _d) = tiny(7);
    let (inputs, _) = batch();
    let t = Thresholds::from_values(&[0.5, 0.6], &[0.7, 0.8]).unwrap();
    t.set_exponent(&[0.4]).unwrap();
    let loss = |t: &Thresholds| -> Tensor {
        let plan = soft_plan_p(t, 0.2, false, false, Some(t.exponent_tensor().unwrap()));
        let out = model.forward_with(&inputs, &plan, &mut ForwardCtx::eval()).unwrap();
        let task = out.base.logits.unwrap().sqr().unwrap().mean_all().unwrap();
        (task + (out.l_prune.unwrap() * 0.7).unwrap()).unwrap()
    };
    let g = loss(&t).backward().unwrap();
    let g = g.get(t.exponent.as_tensor()).expect("p gets a gradient").to_vec1::<f32>().unwrap();
    let h = 1e-3f32;
    for l in 0..cfg.num_hidden_layers {
        let at = |d: f32| {
            let mut x = t.exponent.as_tensor().to_vec1::<f32>().unwrap();
            x[l] += d;
            t.exponent.set(&Tensor::new(x, t.exponent.device()).unwrap()).unwrap();
            let r = loss(&t).to_scalar::<f32>().unwrap();
            let mut x = t.exponent.as_tensor().to_vec1::<f32>().unwrap();
            x[l] -= d;
            t.exponent.set(&Tensor::new(x, t.exponent.device()).unwrap()).unwrap();
            r
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        assert!((g[l] - fd).abs() < 0.03 * fd.abs().max(0.05), "layer {l} p: autograd {} vs finite difference {fd}", g[l]);
        assert!(g[l].abs() > 1e-4, "layer {l} p: no gradient");
    }
}

/// Runs saved before p existed load with p = 1.
#[test]
fn thresholds_saved_without_p_load_with_p_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.safetensors");
    let old = Thresholds::from_values(&[0.1, 0.2], &[0.3, 0.4]).unwrap();
    let map: std::collections::HashMap<String, Tensor> = [("thresholds.theta", &old.theta), ("thresholds.delta", &old.delta)].into_iter().map(|(n, v)| (n.to_string(), v.as_tensor().clone())).collect();
    candle_core::safetensors::save(&map, &f).unwrap();
    let t = Thresholds::new(2, 0.0, 1.0).unwrap();
    t.set_exponent(&[0.3]).unwrap();
    t.restore_from(&f).unwrap();
    assert_eq!(t.exponents().unwrap(), vec![1.0, 1.0]);
    assert_eq!(t.values().unwrap().0, old.values().unwrap().0);
    // And p round-trips once saved.
    t.set_exponent(&[0.25, 0.75]).unwrap();
    t.save(&f).unwrap();
    let u = Thresholds::new(2, 0.0, 1.0).unwrap();
    u.restore_from(&f).unwrap();
    assert_eq!(u.exponents().unwrap(), vec![0.25, 0.75]);
}
