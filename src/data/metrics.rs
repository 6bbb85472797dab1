//! GLUE evaluation metrics.
//!
//! Predictions and labels arrive as `f32` so one signature serves both kinds
//! of task: class ids (`0.0`, `1.0`, ...) for classification, scores for
//! STS-B. Degenerate inputs (empty, a constant column) give `0.0` rather than
//! NaN, as scikit-learn does for MCC, so a summary line never shows NaN for a
//! model that merely predicts one class.

use std::collections::BTreeMap;

use super::glue::Task;

/// Every metric of [`Task::metric_names`], keyed by that name.
///
/// `preds` are predicted class ids (the argmax of the logits) for
/// classification tasks and predicted scores for STS-B.
///
/// # Panics
/// If `preds` and `labels` differ in length.
pub fn compute(task: Task, preds: &[f32], labels: &[f32]) -> BTreeMap<String, f64> {
    assert_eq!(
        preds.len(),
        labels.len(),
        "{} predictions for {} labels",
        preds.len(),
        labels.len()
    );
    task.metric_names()
        .iter()
        .map(|&name| {
            let value = match name {
                "accuracy" => accuracy(preds, labels),
                "f1" => f1_binary(preds, labels),
                "matthews_corr" => matthews_corr(preds, labels),
                "pearson" => pearson(preds, labels),
                "spearman" => spearman(preds, labels),
                other => unreachable!("Task::metric_names returned unknown metric `{other}`"),
            };
            (name.to_string(), value)
        })
        .collect()
}

fn class(v: f32) -> i64 {
    v.round() as i64
}

/// Fraction of rows whose rounded prediction equals the label; 0 when empty.
///
/// # Panics
/// If the slices differ in length.
pub fn accuracy(preds: &[f32], labels: &[f32]) -> f64 {
    assert_eq!(preds.len(), labels.len());
    if preds.is_empty() {
        return 0.0;
    }
    let hits = preds
        .iter()
        .zip(labels)
        .filter(|(p, l)| class(**p) == class(**l))
        .count();
    hits as f64 / preds.len() as f64
}

/// Binary confusion counts with class 1 as the positive class.
struct Confusion {
    tp: f64,
    fp: f64,
    fn_: f64,
    tn: f64,
}

fn confusion(preds: &[f32], labels: &[f32]) -> Confusion {
    assert_eq!(preds.len(), labels.len());
    let mut c = Confusion {
        tp: 0.0,
        fp: 0.0,
        fn_: 0.0,
        tn: 0.0,
    };
    for (&p, &l) in preds.iter().zip(labels) {
        match (class(p) == 1, class(l) == 1) {
            (true, true) => c.tp += 1.0,
            (true, false) => c.fp += 1.0,
            (false, true) => c.fn_ += 1.0,
            (false, false) => c.tn += 1.0,
        }
    }
    c
}

/// F1 of the positive class 1; 0 when there is no positive prediction or label.
///
/// # Panics
/// If the slices differ in length.
pub fn f1_binary(preds: &[f32], labels: &[f32]) -> f64 {
    let c = confusion(preds, labels);
    let denom = 2.0 * c.tp + c.fp + c.fn_;
    if denom == 0.0 {
        0.0
    } else {
        2.0 * c.tp / denom
    }
}

/// Matthews correlation of a binary task; 0 when a row or column of the
/// confusion matrix is empty (e.g. a model that predicts one class).
///
/// # Panics
/// If the slices differ in length.
pub fn matthews_corr(preds: &[f32], labels: &[f32]) -> f64 {
    let c = confusion(preds, labels);
    let denom = ((c.tp + c.fp) * (c.tp + c.fn_) * (c.tn + c.fp) * (c.tn + c.fn_)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (c.tp * c.tn - c.fp * c.fn_) / denom
    }
}

/// Pearson correlation; 0 when either side is constant or there are < 2 rows.
///
/// # Panics
/// If the slices differ in length.
pub fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    pearson_f64(&x, &y)
}

fn pearson_f64(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    if x.len() < 2 {
        return 0.0;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Spearman correlation: Pearson on ranks, tied values sharing their
/// average rank (as `scipy.stats.spearmanr`).
///
/// # Panics
/// If the slices differ in length.
pub fn spearman(x: &[f32], y: &[f32]) -> f64 {
    assert_eq!(x.len(), y.len());
    pearson_f64(&ranks(x), &ranks(y))
}

fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold one value; 1-based average rank.
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    // TP = 3, FP = 1, FN = 2, TN = 4:
    //   accuracy = 7/10
    //   F1  = 2·3 / (2·3 + 1 + 2) = 6/9
    //   MCC = (3·4 − 1·2) / √((3+1)(3+2)(4+1)(4+2)) = 10/√600
    const PREDS: [f32; 10] = [1., 1., 1., 1., 0., 0., 0., 0., 0., 0.];
    const LABELS: [f32; 10] = [1., 1., 1., 0., 1., 1., 0., 0., 0., 0.];

    #[test]
    fn binary_metrics_match_a_hand_computed_confusion_matrix() {
        assert!(close(accuracy(&PREDS, &LABELS), 0.7));
        assert!(close(f1_binary(&PREDS, &LABELS), 6.0 / 9.0));
        assert!(close(matthews_corr(&PREDS, &LABELS), 10.0 / 600f64.sqrt()));
        let m = compute(Task::Mrpc, &PREDS, &LABELS);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["accuracy", "f1"]);
        assert!(close(m["f1"], 6.0 / 9.0));
        let m = compute(Task::Cola, &PREDS, &LABELS);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["accuracy", "matthews_corr"]);
    }

    #[test]
    fn degenerate_inputs_give_zero_not_nan() {
        let ones = [1.0f32; 6];
        let labels = [1., 0., 1., 0., 1., 1.];
        assert_eq!(matthews_corr(&ones, &labels), 0.0);
        assert_eq!(matthews_corr(&[0.0; 4], &[0.0; 4]), 0.0);
        assert_eq!(f1_binary(&[0.0; 4], &[0.0; 4]), 0.0);
        assert!(close(f1_binary(&ones, &labels), 8.0 / 10.0));
        assert_eq!(accuracy(&[], &[]), 0.0);
        assert_eq!(pearson(&[2.0; 5], &[1., 2., 3., 4., 5.]), 0.0);
        assert_eq!(spearman(&[1.0], &[3.0]), 0.0);
        for task in Task::ALL {
            assert!(
                compute(task, &[], &[]).values().all(|v| v.is_finite()),
                "{task}"
            );
            assert!(
                compute(task, &[1.0; 3], &[1.0; 3])
                    .values()
                    .all(|v| v.is_finite()),
                "{task}"
            );
        }
    }

    #[test]
    fn multiclass_accuracy_uses_rounded_class_ids() {
        let m = compute(Task::MnliMatched, &[0., 1., 2., 2.], &[0., 1., 1., 2.]);
        assert!(close(m["accuracy"], 0.75));
        assert!(close(accuracy(&[0.9999, 2.0], &[1.0, 2.0]), 1.0));
    }

    // x = 1..5, y = [2, 4, 5, 4, 5]; deviations dx = [-2,-1,0,1,2],
    // dy = [-2,0,1,0,1]: Σdxdy = 6, Σdx² = 10, Σdy² = 6, r = 6/√60.
    // Ranks of y with ties averaged: [1, 2.5, 4.5, 2.5, 4.5], deviations
    // [-2,-.5,1.5,-.5,1.5]: Σ = 7 against dx, Σ² = 9, ρ = 7/√90.
    #[test]
    fn correlations_match_hand_computed_values() {
        let x = [1., 2., 3., 4., 5.];
        let y = [2., 4., 5., 4., 5.];
        assert!(close(pearson(&x, &y), 6.0 / 60f64.sqrt()));
        assert!(close(spearman(&x, &y), 7.0 / 90f64.sqrt()));
        assert_eq!(ranks(&y), [1.0, 2.5, 4.5, 2.5, 4.5]);
        let cubed: Vec<f32> = x.iter().map(|v| v * v * v).collect();
        assert!(close(spearman(&x, &cubed), 1.0));
        assert!(pearson(&x, &cubed) < 1.0);
        let reversed = [5., 4., 3., 2., 1.];
        assert!(close(pearson(&x, &reversed), -1.0));
        let m = compute(Task::Stsb, &x, &y);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["pearson", "spearman"]);
    }

    #[test]
    #[should_panic(expected = "3 predictions for 2 labels")]
    fn length_mismatch_is_a_bug() {
        compute(Task::Sst2, &[0.0; 3], &[0.0; 2]);
    }
}
