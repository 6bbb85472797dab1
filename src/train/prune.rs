//! Threshold learning as two stages on the shared loop (DESIGN.md §2):
//! soft (weights and θ/β together, loss L_task + λ·(L_prune + α·L_approx)),
//! then hard (θ/β frozen, weights adapt to hard masks and the
//! approximations). Run layout: `OUT/soft/` is the soft stage's run
//! directory; `OUT/` itself is the hard stage's, and its best-on-dev model
//! with `thresholds.safetensors` is the result.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::eval::Metrics;
use super::finetune::{inputs_of, save_model_dir, task_loss};
use super::optim::{decays, Group};
use super::progress::Observer;
use super::trainer::{self, LoopSpec, Outcome, Stage};
use crate::data::{batch::Batch, Encoded, Task};
use crate::error::{Error, Result};
use crate::model::forward::soft_keep;
use crate::model::{params, Bert, ForwardCtx, Masking, Numerics, Plan};
use crate::prune::config::PruneConfig;
use crate::prune::simulate::{simulate, SimReport};
use crate::prune::Thresholds;
use crate::run::{load_model, load_split, Loaded};

pub use crate::run::THRESHOLDS_FILE;

/// The inference plan of a pruning run: hard masks, approximations.
pub fn hard_plan(cfg: &PruneConfig, theta: Vec<f64>, beta: Vec<f64>, exponent: Vec<f64>, physical: bool) -> Plan {
    Plan {
        numerics: Numerics::Approx,
        masking: Masking::Hard { theta: cfg.prune.then_some(theta), beta: cfg.reduce.then_some(beta), exponent: Some(exponent), merge: cfg.merge },
        physical,
    }
}

struct PruneStage {
    loaded: Loaded,
    model: Bert,
    thr: Thresholds,
    task: Task,
    dev: Vec<Encoded>,
    cfg: PruneConfig,
    soft: bool,
    /// The teacher's view of every training row, when `cfg.distill > 0`
    /// or `cfg.rank_distill > 0`.
    teacher: Option<std::sync::Arc<Teacher>>,
    /// Share of this stage's steps done, for the target's warmup.
    progress: f64,
}

/// What the unpruned teacher says about each training row, computed once:
/// its exact logits and its last layer's score of each real token.
struct Teacher {
    logits: Vec<Vec<f32>>,
    scores: Vec<Vec<f32>>,
}

impl PruneStage {
    fn plan(&self) -> Result<Plan> {
        if self.soft {
            // p = 1 fixed takes the exact share score, as before p existed.
            let exponent = (self.cfg.learn_exponent || self.cfg.score_exponent != 1.0).then(|| self.thr.exponent_tensor()).transpose()?;
            Ok(Plan {
                numerics: Numerics::Approx,
                masking: Masking::Soft { theta: self.thr.theta.as_tensor().clone(), beta: self.thr.beta()?, exponent, temperature: self.cfg.temperature, cumulative: self.cfg.cumulative, per_input: self.cfg.per_input_loss },
                physical: false,
            })
        } else {
            let (t, b) = self.thr.values()?;
            Ok(hard_plan(&self.cfg, t, b, self.thr.exponents()?, false))
        }
    }

    fn sim(&self, observer: &mut dyn Observer) -> Result<SimReport> {
        let (t, b) = self.thr.values()?;
        simulate(&self.model, &hard_plan(&self.cfg, t, b, self.thr.exponents()?, false), self.task, &self.dev, self.eval_batch(), self.cfg.max_seq_len, observer)
    }

    /// The dev check runs the trainable model, whose graph candle keeps for
    /// a whole batch: attention tensors grow as batch × n², so long inputs
    /// get smaller batches (64 up to 64 tokens; RTE's 2-sentence pairs peaked
    /// at 13–24 GB with 64).
    fn eval_batch(&self) -> usize {
        let n = self.dev.iter().map(Encoded::len).max().unwrap_or(1).min(self.cfg.max_seq_len).max(1);
        (64 * 64 * 64 / (n * n)).clamp(1, 64)
    }
}

impl PruneStage {
    /// The batch mean of the soft masks' expected relative FLOPs.
    ///
    /// Soft stage: token i survives layer l with probability Π_{k≤l} Mθ_k(i)
    /// (pruning is cumulative in inference even where the soft forward is
    /// not), so E[kept_l] = Σ_i Π_{k≤l} Mθ_k(i) and E[entering_{l+1}] =
    /// E[kept_l]. Hard stage: the hard masks fix who enters each layer, and
    /// E[kept_l] = Σ_{entering i} σ((S_l(i) − θ_l)/T) ([CLS] counts 1), so
    /// the weights feel the scores that hover near the frozen θ.
    /// `mask` is the batch's [`real_mask`].
    fn expected_flops(&self, out: &crate::model::ForwardOutput, mask: &Tensor) -> Result<Tensor> {
        let dims = crate::prune::work::LayerDims { hidden: self.loaded.cfg.hidden_size, intermediate: self.loaded.cfg.intermediate_size };
        let real = mask.sum(1)?;
        let (mut entering, mut kept) = (vec![], vec![]);
        if self.soft {
            let mut surv: Option<Tensor> = None;
            for m in &out.keep_masks {
                let s = match (&surv, self.cfg.cumulative) {
                    (Some(prev), false) => (prev * m)?,
                    _ => m.clone(),
                };
                entering.push(match &surv { Some(p) => p.sum(1)?, None => real.clone() });
                kept.push(s.sum(1)?);
                surv = Some(s);
            }
        } else {
            let theta = self.thr.theta.as_tensor();
            let mut live = mask.clone();
            for (l, (s, hard)) in out.scores.iter().zip(&out.keep_masks).enumerate() {
                let m = soft_keep(s, &theta.narrow(0, l, 1)?.detach(), self.cfg.temperature, &live)?;
                entering.push(live.sum(1)?);
                kept.push(m.sum(1)?);
                live = hard.clone();
            }
        }
        Ok(dims.relative_flops_soft(&real, &entering, &kept)?.mean_all()?)
    }

    /// The FLOPs target at this step: in the soft stage's warmup it falls
    /// linearly from 1 to `target_flops`.
    fn target(&self) -> Result<f64> {
        let x = self.cfg.target_flops.ok_or_else(|| Error::Config("no FLOPs target".into()))?;
        let w = self.cfg.target_warmup;
        Ok(if self.soft && w > 0.0 { 1.0 - (1.0 - x) * (self.progress / w).min(1.0) } else { x })
    }

    /// The Lagrangian of ToP for E[FLOPs] = target: λ₁·g + λ₂·g² with g =
    /// E[FLOPs] − target. The weights (and θ) descend on it, the
    /// multipliers ascend (their terms enter with the sign flipped and g
    /// detached, so its value adds nothing to the logged loss).
    fn lagrangian(&self, flops: &Tensor, extra: &mut Vec<(String, f64)>) -> Result<Tensor> {
        let target = self.target()?;
        let g = (flops - target)?;
        let lam = self.thr.lagrange.as_tensor();
        let (l1, l2) = (lam.narrow(0, 0, 1)?.squeeze(0)?, lam.narrow(0, 1, 1)?.squeeze(0)?);
        let model_side = ((&g * l1.detach().to_scalar::<f32>()? as f64)? + (g.sqr()? * l2.detach().to_scalar::<f32>()? as f64)?)?;
        let gd = g.detach();
        let multiplier_side = ((l1.mul(&gd)? + l2.mul(&gd.sqr()?)?)? * -1.0)?;
        extra.push(("flops_soft".into(), flops.to_scalar::<f32>()? as f64));
        extra.push(("flops_target".into(), target));
        extra.push(("lagrange_1".into(), l1.to_scalar::<f32>()? as f64));
        extra.push(("lagrange_2".into(), l2.to_scalar::<f32>()? as f64));
        Ok((model_side + multiplier_side)?)
    }
}

impl Stage for PruneStage {
    fn begin_step(&mut self, step: usize, total: usize) {
        self.progress = step as f64 / total.max(1) as f64;
    }

    fn loss(&mut self, b: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Vec<(String, f64)>)> {
        let plan = self.plan()?;
        let out = self.model.forward_with(&inputs_of(b)?, &plan, &mut ForwardCtx { dropout: Some(rng), output_attentions: false })?;
        let logits = out.base.logits.as_ref().expect("pruned model has a head").to_dtype(DType::F32)?;
        let mask = real_mask(b)?;
        let task = task_loss(&logits, &b.labels, self.task.is_regression())?;
        let mut extra = vec![("task_loss".to_string(), task.to_scalar::<f32>()? as f64)];
        let mut loss = task;
        let teacher = self.teacher.clone();
        if let (Some(t), true) = (&teacher, self.cfg.distill > 0.0) {
            let w = self.cfg.distill;
            let d = distill_loss(&logits, b.indices.iter().map(|&i| t.logits[i].as_slice()), self.task.is_regression())?;
            extra.push(("distill_loss".into(), d.to_scalar::<f32>()? as f64));
            loss = ((loss * (1.0 - w))? + (d * w)?)?;
        }
        if let (Some(t), true) = (&teacher, self.cfg.rank_distill > 0.0) {
            let w = self.cfg.rank_distill;
            // Live tokens per layer: every real one in the soft stage (its
            // masks scale, they do not remove); in the hard stage those the
            // previous layer kept.
            let lives: Vec<Tensor> = (0..out.scores.len()).map(|l| if self.soft || l == 0 { mask.clone() } else { out.keep_masks[l - 1].detach() }).collect();
            let rows: Vec<f32> = b.indices.iter().flat_map(|&i| t.scores[i].iter().copied().chain(std::iter::repeat(0.0)).take(b.seq_len)).collect();
            let teacher = Tensor::from_vec(rows, (b.batch_size, b.seq_len), logits.device())?;
            let r = rank_distill_loss(&out.scores, &lives, &teacher)?;
            extra.push(("rank_loss".into(), r.to_scalar::<f32>()? as f64));
            loss = (loss + (r * w)?)?;
        }
        if self.soft {
            let mut reg: Option<Tensor> = None;
            if let (true, Some(p)) = (self.cfg.prune, &out.l_prune) {
                extra.push(("l_prune".into(), p.to_scalar::<f32>()? as f64));
                // A FLOPs target replaces the L1 pressure on the keep masks.
                if self.cfg.target_flops.is_none() {
                    reg = Some(p.clone());
                }
            }
            if let (true, Some(a)) = (self.cfg.reduce, &out.l_approx) {
                extra.push(("l_approx".into(), a.to_scalar::<f32>()? as f64));
                let a = (a * self.cfg.alpha)?;
                reg = Some(match reg { Some(r) => (r + a)?, None => a });
            }
            if let Some(r) = reg {
                loss = (loss + (r * self.cfg.lambda)?)?;
            }
            if self.cfg.target_flops.is_some() && self.cfg.prune {
                let f = self.expected_flops(&out, &mask)?;
                loss = (loss + self.lagrangian(&f, &mut extra)?)?;
            }
            // Thresholds now, and the hard-mask share of live tokens each
            // layer would keep and reduce.
            let (th, be) = self.thr.values()?;
            for (l, tr) in out.layers.iter().enumerate() {
                let kept: usize = tr.kept.iter().map(Vec::len).sum();
                let live: usize = tr.entering.iter().sum();
                let reduced: usize = tr.reduced.iter().sum();
                extra.push((format!("theta_{l}"), th[l]));
                extra.push((format!("beta_{l}"), be[l]));
                extra.push((format!("kept_ratio_{l}"), kept as f64 / live.max(1) as f64));
                extra.push((format!("reduced_ratio_{l}"), reduced as f64 / kept.max(1) as f64));
            }
            if self.cfg.learn_exponent {
                for (l, p) in self.thr.exponents()?.into_iter().enumerate() {
                    extra.push((format!("exponent_{l}"), p));
                }
            }
        } else if self.cfg.target_flops.is_some() && self.cfg.prune {
            // θ is frozen, but the weights still move the scores: without
            // this the kept-token count creeps up in the hard stage (LTP).
            let f = self.expected_flops(&out, &mask)?;
            loss = (loss + self.lagrangian(&f, &mut extra)?)?;
        }
        Ok((loss, extra))
    }

    fn groups(&self) -> Vec<Group> {
        let (decay, no_decay): (Vec<_>, Vec<_>) = self.loaded.params.vars().iter().map(|(n, v)| (n.clone(), v.clone())).partition(|(n, _)| decays(n));
        let mut g = vec![
            Group { name: "decay".into(), vars: decay, lr: self.cfg.learning_rate, weight_decay: self.cfg.weight_decay },
            Group { name: "no_decay".into(), vars: no_decay, lr: self.cfg.learning_rate, weight_decay: 0.0 },
        ];
        if self.soft {
            let learn = |n: &str| (n.ends_with("theta") && self.cfg.prune) || (n.ends_with("delta") && self.cfg.reduce) || (n.ends_with("exponent") && self.cfg.learn_exponent);
            let vars = self.thr.vars().into_iter().filter(|(n, _)| learn(n)).collect();
            g.push(Group { name: "thresholds".into(), vars, lr: self.cfg.threshold_lr, weight_decay: 0.0 });
        }
        if self.cfg.target_flops.is_some() && self.cfg.prune {
            let vars = self.thr.vars().into_iter().filter(|(n, _)| n.ends_with("lagrange")).collect();
            g.push(Group { name: "lagrange".into(), vars, lr: self.cfg.lagrange_lr, weight_decay: 0.0 });
        }
        g
    }

    fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Metrics> {
        let r = self.sim(observer)?;
        let mut m = r.metrics;
        m.insert("relative_work".into(), r.relative_work);
        m.insert("relative_flops".into(), r.relative_flops);
        Ok(m)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_model_dir(dir, &self.loaded.params, &self.loaded.cfg, &self.loaded.files.dir)?;
        self.thr.save(&dir.join(THRESHOLDS_FILE))
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        self.loaded.params.restore_from(&dir.join("model.safetensors"))?;
        self.thr.restore_from(&dir.join(THRESHOLDS_FILE))
    }

    fn weights(&self) -> Vec<(String, candle_core::Var)> {
        self.loaded.params.vars().iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    fn snapshot(&self) -> Result<serde_json::Value> {
        let (t, b) = self.thr.values()?;
        Ok(serde_json::json!({ "soft": self.soft, "theta": t, "beta": b, "exponent": self.thr.exponents()? }))
    }
}

pub struct PruneRun {
    pub cfg: PruneConfig,
    pub out: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
}

pub struct PruneReport {
    pub soft: Option<Outcome>,
    pub hard: Option<Outcome>,
    pub train_examples: usize,
    /// θ and β at the end.
    pub theta: Vec<f64>,
    pub beta: Vec<f64>,
    /// p per layer at the end.
    pub exponent: Vec<f64>,
    /// Where the result (model + thresholds) is.
    pub result_dir: PathBuf,
    /// With `soup` > 1: each hard stage's seed and its result's check.
    pub soup: Vec<(u64, Option<f64>)>,
}

/// The loop of one stage; the hard stage (`hard`) keeps its best check, or
/// with `average_from` its weights' tail average.
fn stage_spec(cfg: &PruneConfig, run_dir: PathBuf, epochs: usize, task: Task, run: &PruneRun, hard: bool) -> LoopSpec {
    LoopSpec {
        run_dir,
        epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        warmup_ratio: cfg.warmup_ratio,
        max_grad_norm: cfg.max_grad_norm,
        save_every: cfg.save_every,
        eval_every: cfg.eval_every,
        log_every: cfg.log_every,
        main_metric: task.main_metric().to_string(),
        stop_after: run.stop_after,
        resume: run.resume,
        select_best: hard && cfg.average_from.is_none(),
        checks_on: if cfg.holdout.is_some() { "held-out" } else { "dev" },
        // θ moves in the soft stage, so only the hard stage's weights average.
        average_from: if hard { cfg.average_from } else { None },
    }
}

/// Loads `dir` (a fine-tuned run, or a soft stage's result) with its
/// thresholds, or fresh ones.
fn load_stage(cfg: &PruneConfig, dir: &Path, task: Task, soft: bool, dev: &[Encoded]) -> Result<PruneStage> {
    let spec = dir.to_string_lossy().into_owned();
    let files = crate::model::resolve(&spec)?;
    if crate::model::BertConfig::load(&files.config)?.num_labels.is_none() {
        return Err(Error::Model(format!("`{}` has no task head: fine-tune it on {} first", dir.display(), task.name())));
    }
    let mut loaded = load_model(&spec, Some(task.num_labels()), cfg.max_seq_len, cfg.seed)?;
    if loaded.cfg.num_labels != Some(task.num_labels()) || !loaded.params.contains("classifier.weight") {
        return Err(Error::Model(format!("`{}` has no {}-label head: fine-tune it on {} first", dir.display(), task.num_labels(), task.name())));
    }
    let freeze = cfg.freeze_word_embeddings;
    loaded.params.make_trainable(|n| !(freeze && n == params::WORD_EMBEDDINGS))?;
    let model = Bert::new(&loaded.cfg, &loaded.params, Some(task.num_labels()))?;
    let thr = Thresholds::new(loaded.cfg.num_hidden_layers, cfg.theta_init, cfg.beta_gap_init)?;
    thr.set_exponent(&[cfg.score_exponent])?;
    let saved = dir.join(THRESHOLDS_FILE);
    if saved.is_file() {
        thr.restore_from(&saved)?;
    }
    Ok(PruneStage { loaded, model, thr, task, dev: dev.to_vec(), cfg: cfg.clone(), soft, teacher: None, progress: 0.0 })
}

/// Cross-entropy against the teacher's softmax (classification) or squared
/// error against its score (regression), averaged over the batch.
fn distill_loss<'a>(logits: &Tensor, teacher: impl Iterator<Item = &'a [f32]>, regression: bool) -> Result<Tensor> {
    let rows: Vec<f32> = teacher.flat_map(|r| r.iter().copied()).collect();
    let t = Tensor::from_vec(rows, logits.dims(), logits.device())?;
    if regression {
        return Ok(candle_nn::loss::mse(logits, &t)?);
    }
    let p = candle_nn::ops::softmax_last_dim(&t)?;
    let log_q = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    Ok(((p * log_q)?.sum(1)?.mean_all()? * -1.0)?)
}

/// The batch's real tokens as a (batch, seq) 0/1 tensor.
fn real_mask(b: &Batch) -> Result<Tensor> {
    Ok(Tensor::from_vec(b.attention_mask.iter().map(|&m| m as f32).collect::<Vec<_>>(), (b.batch_size, b.seq_len), &candle_core::Device::Cpu)?)
}

/// Rank distillation (ToP's idea, ListNet's loss): per layer and row, the
/// KL from softmax(z(teacher)) to softmax(z(student scores)) over the live
/// tokens but [CLS] (always kept, never ranked), z standardising over those
/// tokens so that only the order and spread count, not the 1/n^p scale;
/// averaged over rows, then layers. `scores`, `lives` per layer and
/// `teacher` are (batch, seq).
fn rank_distill_loss(scores: &[Tensor], lives: &[Tensor], teacher: &Tensor) -> Result<Tensor> {
    let seq = teacher.dim(1)?;
    let not_cls = Tensor::from_vec((0..seq).map(|i| if i == 0 { 0f32 } else { 1.0 }).collect::<Vec<_>>(), (1, seq), teacher.device())?;
    let mut per_layer = Vec::with_capacity(scores.len());
    for (s, live) in scores.iter().zip(lives) {
        let m = live.broadcast_mul(&not_cls)?;
        let n = m.sum_keepdim(1)?.clamp(1f32, f32::MAX)?;
        let z = |x: &Tensor| -> Result<Tensor> {
            let mean = (x * &m)?.sum_keepdim(1)?.div(&n)?;
            let c = (x.broadcast_sub(&mean)? * &m)?;
            let sd = (c.sqr()?.sum_keepdim(1)?.div(&n)? + 1e-12)?.sqrt()?;
            // Masked positions sit far below every live one.
            Ok((c.broadcast_div(&sd)? + ((&m - 1.0)? * 1e4)?)?)
        };
        let log_p = candle_nn::ops::log_softmax(&z(&teacher.detach())?, candle_core::D::Minus1)?;
        let log_q = candle_nn::ops::log_softmax(&z(s)?, candle_core::D::Minus1)?;
        let kl = (log_p.exp()? * (log_p - log_q)?)?.sum(1)?;
        per_layer.push(kl.mean_all()?);
    }
    Ok((Tensor::stack(&per_layer, 0)?.sum_all()? / scores.len().max(1) as f64)?)
}

/// The teacher's exact, unpruned logits and last-layer scores (p = 1: the
/// exponent rescales a row, it does not reorder it) for every row of `data`.
fn teacher_pass(model: &Bert, data: &[Encoded], observer: &mut dyn Observer) -> Result<Teacher> {
    let plan = Plan { numerics: Numerics::Exact, masking: Masking::Hard { theta: None, beta: None, exponent: None, merge: false }, physical: false };
    let both = super::eval::map_batches("teacher", data, 64, observer, |b| {
        let out = model.forward_with(&inputs_of(b)?, &plan, &mut ForwardCtx::eval())?;
        let logits = out.base.logits.expect("pruned model has a head").to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let scores = out.scores.last().expect("a model has layers").to_vec2::<f32>()?;
        Ok(logits.into_iter().zip(scores).zip(&b.indices).map(|((l, mut s), &i)| {
            s.truncate(data[i].len());
            (l, s)
        }).collect())
    })?;
    let (logits, scores) = both.into_iter().unzip();
    Ok(Teacher { logits, scores })
}

/// The training rows (at least `min_tokens` real tokens, then the first
/// `limit`) and, with `holdout`, the split's last rows set aside, disjoint
/// from them.
fn load_train(tok: &tokenizers::Tokenizer, cfg: &PruneConfig, task: Task) -> Result<(Vec<Encoded>, Option<Vec<Encoded>>)> {
    if cfg.min_train_tokens == 0 && cfg.holdout.is_none() {
        return Ok((load_split(tok, &cfg.data_dir, task, "train", cfg.limit)?, None));
    }
    let mut rows = load_split(tok, &cfg.data_dir, task, "train", None)?;
    rows.retain(|e| e.len() >= cfg.min_train_tokens);
    let held = match cfg.holdout {
        Some(n) => {
            let wanted = cfg.limit.map_or(1, |l| l.max(1)) + n;
            if rows.len() < wanted {
                return Err(Error::Config(format!(
                    "holdout: {n} rows set aside and {} to train on need {wanted} training rows, the split has {} (min_train_tokens = {})",
                    cfg.limit.map_or("at least 1".to_string(), |l| l.to_string()),
                    rows.len(),
                    cfg.min_train_tokens
                )));
            }
            Some(rows.split_off(rows.len() - n))
        }
        None => None,
    };
    if let Some(n) = cfg.limit {
        rows.truncate(n);
    }
    Ok((rows, held))
}

pub fn prune(run: &PruneRun, observer: &mut dyn Observer) -> Result<PruneReport> {
    let cfg = &run.cfg;
    cfg.validate()?;
    let task = Task::from_name(&cfg.task)?;
    let mut soft_stage = load_stage(cfg, &cfg.checkpoint, task, true, &[])?;
    let (train, held) = load_train(&soft_stage.loaded.tokenizer, cfg, task)?;
    // The rows the stages check themselves on: dev, or the held-out rows
    // (then dev is only reported, by the caller's final simulation).
    let dev = match held {
        Some(rows) => rows,
        None => load_split(&soft_stage.loaded.tokenizer, &cfg.data_dir, task, "dev", cfg.eval_limit)?,
    };
    if train.is_empty() {
        return Err(Error::Config(format!("the training split is empty (min_train_tokens = {}, limit = {:?})", cfg.min_train_tokens, cfg.limit)));
    }
    let mut report = PruneReport { soft: None, hard: None, train_examples: train.len(), theta: vec![], beta: vec![], exponent: vec![], result_dir: run.out.clone(), soup: vec![] };
    let teacher = if cfg.distill > 0.0 || cfg.rank_distill > 0.0 {
        let other = cfg.teacher.as_ref().map(|dir| load_stage(cfg, dir, task, false, &[])).transpose()?;
        let model = other.as_ref().map_or(&soft_stage.model, |t| &t.model);
        Some(std::sync::Arc::new(teacher_pass(model, &train, observer)?))
    } else {
        None
    };
    soft_stage.teacher = teacher.clone();
    // Written once everything the run reads has loaded: a wrong path or
    // an empty split leaves no directory that a corrected rerun would
    // have to --resume.
    std::fs::create_dir_all(&run.out).map_err(|e| Error::io(&run.out, e))?;
    crate::config::save_yaml(&run.out.join("prune.yaml"), cfg)?;
    let soft_dir = run.out.join("soft");
    if cfg.soft_epochs > 0 {
        // The soft stage is a run of its own (the result, with no hard
        // stage): `simulate` and `export` read task and data from here.
        std::fs::create_dir_all(&soft_dir).map_err(|e| Error::io(&soft_dir, e))?;
        crate::config::save_yaml(&soft_dir.join("prune.yaml"), cfg)?;
    }
    let mut start_hard_from = cfg.checkpoint.clone();
    if cfg.soft_epochs > 0 {
        observer.note("soft stage: weights and thresholds");
        soft_stage.dev = dev.clone();
        let outcome = trainer::run(&stage_spec(cfg, soft_dir.clone(), cfg.soft_epochs, task, run, false), &mut soft_stage, &train, observer)?;
        (report.theta, report.beta) = soft_stage.thr.values()?;
        report.exponent = soft_stage.thr.exponents()?;
        let interrupted = outcome.interrupted;
        report.soft = Some(outcome);
        if interrupted {
            return Ok(report);
        }
        start_hard_from = soft_dir;
    }
    drop(soft_stage);
    if cfg.hard_epochs > 0 {
        // With a soup, K hard stages in `hard-seed-S/`, then their mean in
        // `run.out`; without, the one hard stage trains in `run.out`.
        let soup = cfg.soup > 1;
        let mut dirs = vec![];
        let mut last = None;
        for k in 0..cfg.soup as u64 {
            let c = PruneConfig { seed: cfg.seed + k, ..cfg.clone() };
            let dir = if soup { run.out.join(format!("hard-seed-{}", c.seed)) } else { run.out.clone() };
            let which = if soup { format!("hard stage {} of {} (seed {})", k + 1, cfg.soup, c.seed) } else { "hard stage".into() };
            observer.note(&format!("{which}: thresholds frozen, weights adapt to hard masks"));
            let mut hard = load_stage(&c, &start_hard_from, task, false, &dev)?;
            hard.teacher = teacher.clone();
            let outcome = trainer::run(&stage_spec(&c, dir.clone(), c.hard_epochs, task, run, true), &mut hard, &train, observer)?;
            let interrupted = outcome.interrupted;
            if soup {
                report.soup.push((c.seed, outcome.state.best_metric));
            }
            report.hard = Some(outcome);
            if interrupted {
                return Ok(report);
            }
            dirs.push(dir);
            last = Some(hard);
        }
        let hard = last.expect("validate: soup ≥ 1");
        if soup {
            observer.note(&format!("the result: the mean of the {} hard stages' weights", cfg.soup));
            super::average::soup(&hard.loaded.params, &dirs)?;
            hard.save(&run.out)?;
        }
        (report.theta, report.beta) = hard.thr.values()?;
        report.exponent = hard.thr.exponents()?;
    } else {
        report.result_dir = start_hard_from;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn distillation_is_cross_entropy_against_the_teachers_softmax() {
        let student = Tensor::new(&[[0.0f32, 1.0], [2.0, -1.0]], &Device::Cpu).unwrap();
        let teacher: [&[f32]; 2] = [&[1.0, 1.0], &[0.0, 3.0]];
        let got = distill_loss(&student, teacher.into_iter(), false).unwrap().to_scalar::<f32>().unwrap();
        let lse = |a: f32, b: f32| (a.exp() + b.exp()).ln();
        // Row 1: teacher (½, ½); row 2: teacher softmax(0, 3).
        let r1 = -(0.5 * (0.0 - lse(0.0, 1.0)) + 0.5 * (1.0 - lse(0.0, 1.0)));
        let (p0, p1) = (1.0 / (1.0 + 3f32.exp()), 3f32.exp() / (1.0 + 3f32.exp()));
        let r2 = -(p0 * (2.0 - lse(2.0, -1.0)) + p1 * (-1.0 - lse(2.0, -1.0)));
        assert!((got - (r1 + r2) / 2.0).abs() < 1e-5, "{got} vs {}", (r1 + r2) / 2.0);
        // Regression: squared error against the teacher's score.
        let s = Tensor::new(&[[1.0f32], [3.0]], &Device::Cpu).unwrap();
        let t: [&[f32]; 2] = [&[0.0], &[1.0]];
        assert_eq!(distill_loss(&s, t.into_iter(), true).unwrap().to_scalar::<f32>().unwrap(), 2.5);
    }

    #[test]
    fn rank_distillation_compares_orders_over_live_tokens_only() {
        let dev = &Device::Cpu;
        let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1, v.len()), dev).unwrap();
        let loss = |s: &[f32], live: &[f32], teacher: &[f32]| rank_distill_loss(&[t(s)], &[t(live)], &t(teacher)).unwrap().to_scalar::<f32>().unwrap();
        let (teacher, live) = ([0.5, 0.1, 0.3, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]);
        // An affine image of the teacher's live scores ranks alike: [CLS]
        // and the padding position may hold anything.
        assert!(loss(&[9.0, 0.25, 0.65, 0.45, 7.0], &live, &teacher).abs() < 1e-5);
        // Two live tokens in the wrong order: z = ±1 on both sides, so the
        // KL is 2·p₁ − 2·p₂ = 2·tanh(1).
        let got = loss(&[0.0, 0.3, 0.1, 0.0, 0.0], &[1.0, 1.0, 1.0, 0.0, 0.0], &teacher);
        assert!((got - 2.0 * 1f32.tanh()).abs() < 1e-4, "{got}");
        assert!(loss(&[0.5, 0.3, 0.1, 0.2, 0.0], &live, &teacher) > 0.1);
        // It reaches the scores: the teacher's top token (2) goes up, its
        // last (1) down. (A fully reversed order is a stationary point.)
        let v = candle_core::Var::from_tensor(&t(&[0.5, 0.2, 0.1, 0.25, 0.0])).unwrap();
        let g = rank_distill_loss(&[v.as_tensor().clone()], &[t(&live)], &t(&teacher)).unwrap().backward().unwrap();
        let grad = g.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(grad[0][1] > 0.0 && grad[0][2] < 0.0, "descent lowers 1, raises 2: {grad:?}");
        assert_eq!((grad[0][0], grad[0][4]), (0.0, 0.0));
    }
}
