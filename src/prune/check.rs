//! Simulated versus secure: the float simulation and the fixed-point
//! engine on the same examples, compared the way `secure-eval` reports it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::{metrics, Task};
use crate::fixed::cost::PrimitiveCounts;
use crate::secure::bert::ForwardResult;
use crate::secure::report::{CostTally, OpClass, OverflowTally};
use crate::train::Metrics;

use super::simulate::SimReport;

#[derive(Clone, Debug, Serialize)]
pub struct ClassCost {
    pub class: &'static str,
    pub pruned: PrimitiveCounts,
    pub unpruned: PrimitiveCounts,
    /// pruned / unpruned of products of any kind (secret × secret
    /// element-wise and MACs, secret × public MACs), of comparisons, and
    /// of truncations.
    pub ratio_mults: Option<f64>,
    pub ratio_comparisons: Option<f64>,
    pub ratio_truncations: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OverflowRow {
    pub class: &'static str,
    pub layer: Option<usize>,
    pub count: u64,
    pub max_bits: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Share of examples where the engine predicts what the simulation
    /// does (see [`agreeing`]).
    pub agreement: f64,
    pub logit_diff_max: f64,
    pub logit_diff_mean: f64,
    /// Per layer: tokens entering the layer in both that one keeps and the
    /// other prunes (summed over examples).
    pub flips_per_layer: Vec<usize>,
    /// Examples with at least one flip.
    pub examples_with_flips: usize,
    pub engine: Metrics,
    pub engine_unpruned: Metrics,
    pub engine_tokens_kept_per_layer: Vec<f64>,
    pub engine_reduced_per_layer: Vec<f64>,
    pub overflows: u64,
    pub overflow_rows: Vec<OverflowRow>,
    pub costs: Vec<ClassCost>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// How many predictions agree: the same class, or for a regression (STS-B,
/// scores 0–5) scores within [`REGRESSION_AGREEMENT`] of each other, where
/// bit-equal floats would say nothing.
pub fn agreeing(task: Task, a: &[f32], b: &[f32]) -> usize {
    let tol = if task.is_regression() { REGRESSION_AGREEMENT } else { 0.0 };
    a.iter().zip(b).filter(|(x, y)| (*x - *y).abs() <= tol).count()
}

/// 1 % of STS-B's 0–5 scale.
pub const REGRESSION_AGREEMENT: f32 = 0.05;

/// Engine predictions (argmax or the regression value) and metrics.
pub fn engine_metrics(task: Task, results: &[ForwardResult], labels: &[f32]) -> (Vec<f32>, Metrics) {
    let preds: Vec<f32> = results
        .iter()
        .map(|r| {
            if task.is_regression() {
                r.logits[0] as f32
            } else {
                // First maximum, as candle's argmax.
                let mut best = 0;
                for (i, &v) in r.logits.iter().enumerate() {
                    if v > r.logits[best] {
                        best = i;
                    }
                }
                best as f32
            }
        })
        .collect();
    let mut m = metrics::compute(task, &preds, labels);
    m.insert("examples".into(), results.len() as f64);
    (preds, m)
}

#[allow(clippy::too_many_arguments)]
pub fn compare(
    task: Task,
    labels: &[f32],
    sim: &SimReport,
    pruned: &[ForwardResult],
    unpruned: &[ForwardResult],
    cost_pruned: &CostTally,
    cost_unpruned: &CostTally,
    overflow: &OverflowTally,
) -> Comparison {
    let (preds, engine) = engine_metrics(task, pruned, labels);
    let (_, engine_unpruned) = engine_metrics(task, unpruned, labels);
    let n = pruned.len().max(1) as f64;
    let agree = agreeing(task, &preds, &sim.predictions);
    let mut diffs = vec![];
    for (r, s) in pruned.iter().zip(&sim.logits) {
        for (a, b) in r.logits.iter().zip(s) {
            diffs.push((a - *b as f64).abs());
        }
    }
    let layers = pruned.first().map_or(0, |r| r.kept_per_layer.len());
    let mut flips = vec![0usize; layers];
    let mut examples_with_flips = 0;
    for (r, sim_kept) in pruned.iter().zip(&sim.kept_positions) {
        let mut any = false;
        for l in 0..layers {
            let (ke, ks) = (&r.kept_per_layer[l], &sim_kept[l]);
            let entering_e = &r.live_per_layer[l];
            let entering_s: Vec<usize> = if l == 0 { entering_e.clone() } else { sim_kept[l - 1].clone() };
            let f = entering_e.iter().filter(|p| entering_s.contains(p)).filter(|p| ke.contains(p) != ks.contains(p)).count();
            flips[l] += f;
            any |= f > 0;
        }
        examples_with_flips += usize::from(any);
    }
    let kept = (0..layers).map(|l| pruned.iter().map(|r| r.kept_per_layer[l].len() as f64).sum::<f64>() / n).collect();
    let reduced = (0..layers)
        .map(|l| {
            let k: usize = pruned.iter().map(|r| r.kept_per_layer[l].len()).sum();
            pruned.iter().map(|r| r.reduced_per_layer[l].len()).sum::<usize>() as f64 / k.max(1) as f64
        })
        .collect();
    let row = |class: &'static str, p: PrimitiveCounts, u: PrimitiveCounts| ClassCost {
        class,
        pruned: p,
        unpruned: u,
        ratio_mults: ratio(p.ss_mults + p.ss_macs + p.pub_macs, u.ss_mults + u.ss_macs + u.pub_macs),
        ratio_comparisons: ratio(p.comparisons, u.comparisons),
        ratio_truncations: ratio(p.truncations, u.truncations),
    };
    let mut costs: Vec<ClassCost> = OpClass::ALL
        .iter()
        .filter(|&&c| c != OpClass::Input)
        .map(|&c| {
            let (p, u) = (cost_pruned.class_total(c), cost_unpruned.class_total(c));
            ClassCost {
                class: c.name(),
                pruned: p,
                unpruned: u,
                ratio_mults: ratio(p.ss_mults + p.ss_macs + p.pub_macs, u.ss_mults + u.ss_macs + u.pub_macs),
                ratio_comparisons: ratio(p.comparisons, u.comparisons),
                ratio_truncations: ratio(p.truncations, u.truncations),
            }
        })
        .collect();
    costs.push(row("total", cost_pruned.total(), cost_unpruned.total()));
    let overflow_rows = overflow.rows().iter().map(|r| OverflowRow { class: r.class.name(), layer: r.layer, count: r.value.count, max_bits: r.value.max_bits }).collect();
    Comparison {
        agreement: agree as f64 / n,
        logit_diff_max: diffs.iter().copied().fold(0.0, f64::max),
        logit_diff_mean: diffs.iter().sum::<f64>() / diffs.len().max(1) as f64,
        flips_per_layer: flips,
        examples_with_flips,
        engine,
        engine_unpruned,
        engine_tokens_kept_per_layer: kept,
        engine_reduced_per_layer: reduced,
        overflows: overflow.count(),
        overflow_rows,
        costs,
    }
}

/// Metric names without the `examples` count, for tables.
pub fn shown(m: &Metrics) -> BTreeMap<String, f64> {
    m.iter().filter(|(k, _)| *k != "examples").map(|(k, v)| (k.clone(), *v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_scores_agree_within_a_hundredth_of_the_scale() {
        let (a, b) = ([1.0f32, 2.0, 3.0, 4.0], [1.0f32, 2.04, 3.06, 1.0]);
        assert_eq!(agreeing(Task::Stsb, &a, &b), 2);
        // Classes must match exactly.
        assert_eq!(agreeing(Task::Sst2, &[1.0, 0.0, 1.0], &[1.0, 1.0, 1.0]), 2);
    }
}
