//! The plaintext simulation: a model evaluated under a [`Plan`] (hard
//! masks, the secure approximations, pruned rows really removed), with the
//! token statistics a pruning run is judged by.

use serde::Serialize;

use crate::data::{batch, metrics, Encoded, Task};
use crate::error::Result;
use crate::model::{Bert, ForwardCtx, Inputs, Plan};
use crate::prune::work::LayerDims;
use crate::train::{Metrics, Observer};

/// Bins of the kept-fraction histogram: [0, 0.1), …, [0.9, 1.0].
pub const HIST_BINS: usize = 10;

/// Equal-count input-length groups of the by-length breakdown.
pub const LENGTH_GROUPS: usize = 4;

/// One length group: absolute thresholds on scores that sum to 1 prune long
/// inputs harder than short ones, so where the metric is lost matters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LengthGroup {
    pub min_tokens: usize,
    pub max_tokens: usize,
    pub examples: usize,
    pub relative_work: f64,
    pub relative_flops: f64,
    pub metrics: Metrics,
}

/// The public shape of one example's pruned forward: what the two-party
/// protocol reveals, and all its cost depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExampleShape {
    pub real: usize,
    /// Per layer: tokens entering, kept after pruning, reduced among the kept.
    pub entering: Vec<usize>,
    pub kept: Vec<usize>,
    pub reduced: Vec<usize>,
    /// Per layer: did its pruned tokens become one kept token (counted in
    /// `kept`)? Empty: no layer merges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<bool>,
}

impl ExampleShape {
    /// Tokens the layer's thresholds kept: `kept` without a merged token.
    pub fn kept_by_threshold(&self, l: usize) -> usize {
        self.kept[l] - usize::from(self.merged.get(l).copied().unwrap_or(false))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SimReport {
    pub metrics: Metrics,
    /// Per example, in data order.
    pub predictions: Vec<f32>,
    pub logits: Vec<Vec<f32>>,
    /// Per example, per layer: original positions kept after the layer.
    #[serde(skip)]
    pub kept_positions: Vec<Vec<Vec<usize>>>,
    /// Mean real tokens per example.
    pub real_tokens: f64,
    /// Per layer: mean tokens entering.
    pub tokens_entering_per_layer: Vec<f64>,
    /// Per layer: mean tokens kept after the layer's pruning.
    pub tokens_kept_per_layer: Vec<f64>,
    /// Per layer: histogram of (kept / real tokens) over examples.
    pub kept_histogram: Vec<[usize; HIST_BINS]>,
    /// Per layer: fraction of kept tokens computed with low-degree functions.
    pub reduced_per_layer: Vec<f64>,
    /// Mean over examples of Σ_l entering_l / (L · real tokens).
    pub relative_work: f64,
    /// Mean over examples of the FLOPs ratio ([`crate::prune::work`]).
    pub relative_flops: f64,
    /// Per example, in data order.
    #[serde(skip)]
    pub shapes: Vec<ExampleShape>,
    /// The same against inputs padded to `max_seq_len` (the view that
    /// counts removed padding as savings).
    pub relative_work_padded: f64,
    /// The data split into [`LENGTH_GROUPS`] groups of equal size by real
    /// tokens, shortest first.
    pub by_length: Vec<LengthGroup>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Runs `plan` over `data` (one example at a time when `plan.physical`).
pub fn simulate(model: &Bert, plan: &Plan, task: Task, data: &[Encoded], batch_size: usize, max_seq_len: usize, observer: &mut dyn Observer) -> Result<SimReport> {
    let started = std::time::Instant::now();
    let layers = model.layers.len();
    let lengths: Vec<usize> = data.iter().map(Encoded::len).collect();
    let bs = if plan.physical { 1 } else { batch_size.max(1) };
    let order = batch::epoch_batches(&lengths, bs, 0, 0, false);
    let mut r = SimReport { predictions: vec![0.0; data.len()], logits: vec![vec![]; data.len()], kept_positions: vec![vec![]; data.len()], ..Default::default() };
    let mut entering = vec![vec![0usize; layers]; data.len()];
    let mut merged = vec![Vec::new(); data.len()];
    let mut reduced = vec![vec![0usize; layers]; data.len()];
    observer.begin("sim", data.len() as u64);
    let mut done = 0u64;
    for idx in order {
        let b = batch::collate(data, &idx);
        let inputs = Inputs::new(&b.input_ids, &b.type_ids, &b.attention_mask, b.batch_size, b.seq_len)?;
        let out = model.forward_with(&inputs, plan, &mut ForwardCtx::eval())?;
        let logits = out.base.logits.expect("simulated models have a head");
        let preds = crate::train::eval::predictions(&logits, task.is_regression())?;
        let lv = logits.to_vec2::<f32>()?;
        for (k, &i) in idx.iter().enumerate() {
            r.predictions[i] = preds[k];
            r.logits[i] = lv[k].clone();
            for (l, tr) in out.layers.iter().enumerate() {
                entering[i][l] = tr.entering[k];
                reduced[i][l] = tr.reduced[k];
                if !tr.merged.is_empty() {
                    merged[i].resize(layers, false);
                    merged[i][l] = tr.merged[k];
                }
                r.kept_positions[i].push(tr.kept[k].clone());
            }
            if out.layers.is_empty() {
                // No masks: every real token enters and stays in every layer.
                entering[i] = vec![lengths[i]; layers];
                r.kept_positions[i] = vec![(0..lengths[i]).collect(); layers];
            }
        }
        done += idx.len() as u64;
        observer.update(done, "");
    }
    observer.end();
    let labels: Vec<f32> = data.iter().map(|e| e.label).collect();
    r.metrics = metrics::compute(task, &r.predictions, &labels);
    r.metrics.insert("examples".into(), data.len() as f64);
    let n = data.len().max(1) as f64;
    r.real_tokens = lengths.iter().sum::<usize>() as f64 / n;
    r.tokens_entering_per_layer = (0..layers).map(|l| entering.iter().map(|e| e[l] as f64).sum::<f64>() / n).collect();
    r.tokens_kept_per_layer = (0..layers).map(|l| r.kept_positions.iter().map(|k| k[l].len() as f64).sum::<f64>() / n).collect();
    r.reduced_per_layer = (0..layers)
        .map(|l| {
            let kept: usize = r.kept_positions.iter().map(|k| k[l].len()).sum();
            reduced.iter().map(|e| e[l]).sum::<usize>() as f64 / kept.max(1) as f64
        })
        .collect();
    r.kept_histogram = (0..layers)
        .map(|l| {
            let mut h = [0usize; HIST_BINS];
            for (k, &len) in r.kept_positions.iter().zip(&lengths) {
                let f = k[l].len() as f64 / len.max(1) as f64;
                h[((f * HIST_BINS as f64) as usize).min(HIST_BINS - 1)] += 1;
            }
            h
        })
        .collect();
    let dims = LayerDims { hidden: model.cfg.hidden_size, intermediate: model.cfg.intermediate_size };
    r.shapes = (0..data.len())
        .map(|i| ExampleShape { real: lengths[i], entering: entering[i].clone(), kept: r.kept_positions[i].iter().map(Vec::len).collect(), reduced: reduced[i].clone(), merged: merged[i].clone() })
        .collect();
    let flops = |i: usize| dims.relative_flops(lengths[i], &r.shapes[i].entering, &r.shapes[i].kept);
    let ratio = |i: usize, denom: f64| entering[i].iter().sum::<usize>() as f64 / (layers as f64 * denom);
    let mean = |f: &dyn Fn(usize) -> f64| (0..data.len()).map(f).sum::<f64>() / n;
    r.relative_work = mean(&|i| ratio(i, lengths[i].max(1) as f64));
    r.relative_work_padded = mean(&|i| ratio(i, max_seq_len.max(lengths[i]) as f64));
    r.relative_flops = mean(&flops);
    let mut by_len: Vec<usize> = (0..data.len()).collect();
    by_len.sort_by_key(|&i| (lengths[i], i));
    r.by_length = (0..LENGTH_GROUPS)
        .map(|g| &by_len[g * data.len() / LENGTH_GROUPS..(g + 1) * data.len() / LENGTH_GROUPS])
        .filter(|ids| !ids.is_empty())
        .map(|ids| LengthGroup {
            min_tokens: lengths[ids[0]],
            max_tokens: lengths[ids[ids.len() - 1]],
            examples: ids.len(),
            relative_work: ids.iter().map(|&i| ratio(i, lengths[i].max(1) as f64)).sum::<f64>() / ids.len() as f64,
            relative_flops: ids.iter().map(|&i| flops(i)).sum::<f64>() / ids.len() as f64,
            metrics: metrics::compute(task, &ids.iter().map(|&i| r.predictions[i]).collect::<Vec<_>>(), &ids.iter().map(|&i| labels[i]).collect::<Vec<_>>()),
        })
        .collect();
    r.seconds = started.elapsed().as_secs_f64();
    r.examples_per_second = data.len() as f64 / r.seconds.max(1e-9);
    Ok(r)
}
