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
use super::finetune::{inputs_of, load_model, load_split, save_model_dir, task_loss, Loaded};
use super::optim::{decays, Group};
use super::progress::Observer;
use super::trainer::{self, LoopSpec, Outcome, Stage};
use crate::data::{batch::Batch, Encoded, Task};
use crate::error::{Error, Result};
use crate::model::{params, Bert, ForwardCtx, Masking, Numerics, Plan};
use crate::prune::config::PruneConfig;
use crate::prune::simulate::{simulate, SimReport};
use crate::prune::Thresholds;

pub const THRESHOLDS_FILE: &str = "thresholds.safetensors";

/// The inference plan of a pruning run: hard masks, approximations.
pub fn hard_plan(cfg: &PruneConfig, theta: Vec<f64>, beta: Vec<f64>, physical: bool) -> Plan {
    Plan {
        numerics: Numerics::Approx,
        masking: Masking::Hard { theta: cfg.prune.then_some(theta), beta: cfg.reduce.then_some(beta) },
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
    /// Distillation targets per training row (the starting model's exact
    /// logits), when `cfg.distill > 0`.
    teacher: Option<std::sync::Arc<Vec<Vec<f32>>>>,
}

impl PruneStage {
    fn plan(&self) -> Result<Plan> {
        if self.soft {
            Ok(Plan {
                numerics: Numerics::Approx,
                masking: Masking::Soft { theta: self.thr.theta.as_tensor().clone(), beta: self.thr.beta()?, temperature: self.cfg.temperature, cumulative: self.cfg.cumulative, per_input: self.cfg.per_input_loss },
                physical: false,
            })
        } else {
            let (t, b) = self.thr.values()?;
            Ok(hard_plan(&self.cfg, t, b, false))
        }
    }

    fn sim(&self, observer: &mut dyn Observer) -> Result<SimReport> {
        let (t, b) = self.thr.values()?;
        simulate(&self.model, &hard_plan(&self.cfg, t, b, false), self.task, &self.dev, 64, self.cfg.max_seq_len, observer)
    }
}

impl Stage for PruneStage {
    fn loss(&mut self, b: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Vec<(String, f64)>)> {
        let plan = self.plan()?;
        let out = self.model.forward_with(&inputs_of(b)?, &plan, &mut ForwardCtx { dropout: Some(rng), output_attentions: false })?;
        let logits = out.base.logits.expect("pruned model has a head").to_dtype(DType::F32)?;
        let task = task_loss(&logits, &b.labels, self.task.is_regression())?;
        let mut extra = vec![("task_loss".to_string(), task.to_scalar::<f32>()? as f64)];
        let mut loss = task;
        if let Some(t) = &self.teacher {
            let w = self.cfg.distill;
            let d = distill_loss(&logits, b.indices.iter().map(|&i| t[i].as_slice()), self.task.is_regression())?;
            extra.push(("distill_loss".into(), d.to_scalar::<f32>()? as f64));
            loss = ((loss * (1.0 - w))? + (d * w)?)?;
        }
        if self.soft {
            let mut reg: Option<Tensor> = None;
            if let (true, Some(p)) = (self.cfg.prune, &out.l_prune) {
                extra.push(("l_prune".into(), p.to_scalar::<f32>()? as f64));
                reg = Some(p.clone());
            }
            if let (true, Some(a)) = (self.cfg.reduce, &out.l_approx) {
                extra.push(("l_approx".into(), a.to_scalar::<f32>()? as f64));
                let a = (a * self.cfg.alpha)?;
                reg = Some(match reg { Some(r) => (r + a)?, None => a });
            }
            if let Some(r) = reg {
                loss = (loss + (r * self.cfg.lambda)?)?;
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
            let vars = self.thr.vars().into_iter().filter(|(n, _)| (n.ends_with("theta") && self.cfg.prune) || (n.ends_with("delta") && self.cfg.reduce)).collect();
            g.push(Group { name: "thresholds".into(), vars, lr: self.cfg.threshold_lr, weight_decay: 0.0 });
        }
        g
    }

    fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Metrics> {
        let r = self.sim(observer)?;
        let mut m = r.metrics;
        m.insert("relative_work".into(), r.relative_work);
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

    fn snapshot(&self) -> Result<serde_json::Value> {
        let (t, b) = self.thr.values()?;
        Ok(serde_json::json!({ "soft": self.soft, "theta": t, "beta": b }))
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
    /// Where the result (model + thresholds) is.
    pub result_dir: PathBuf,
}

fn stage_spec(cfg: &PruneConfig, run_dir: PathBuf, epochs: usize, task: Task, run: &PruneRun, select_best: bool) -> LoopSpec {
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
        select_best,
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
    let saved = dir.join(THRESHOLDS_FILE);
    if saved.is_file() {
        thr.restore_from(&saved)?;
    }
    Ok(PruneStage { loaded, model, thr, task, dev: dev.to_vec(), cfg: cfg.clone(), soft, teacher: None })
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

/// The model's exact, unpruned logits for every row of `data`.
fn teacher_logits(model: &Bert, data: &[Encoded], observer: &mut dyn Observer) -> Result<Vec<Vec<f32>>> {
    super::eval::map_batches("teacher", data, 64, observer, |b| {
        let logits = model.forward(&inputs_of(b)?, &mut ForwardCtx::eval())?.logits.expect("pruned model has a head");
        Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    })
}

/// The training rows: at least `min_tokens` real tokens, then the first `limit`.
fn load_train(tok: &tokenizers::Tokenizer, cfg: &PruneConfig, task: Task) -> Result<Vec<Encoded>> {
    if cfg.min_train_tokens == 0 {
        return load_split(tok, &cfg.data_dir, task, "train", cfg.limit);
    }
    let mut rows = load_split(tok, &cfg.data_dir, task, "train", None)?;
    rows.retain(|e| e.len() >= cfg.min_train_tokens);
    if let Some(n) = cfg.limit {
        rows.truncate(n);
    }
    Ok(rows)
}

pub fn prune(run: &PruneRun, observer: &mut dyn Observer) -> Result<PruneReport> {
    let cfg = &run.cfg;
    cfg.validate()?;
    let task = Task::from_name(&cfg.task)?;
    std::fs::create_dir_all(&run.out).map_err(|e| Error::io(&run.out, e))?;
    crate::config::save_yaml(&run.out.join("prune.yaml"), cfg)?;
    let soft_dir = run.out.join("soft");
    if cfg.soft_epochs > 0 {
        // The soft stage is a run of its own (the result, with no hard
        // stage): `simulate` and `export` read task and data from here.
        std::fs::create_dir_all(&soft_dir).map_err(|e| Error::io(&soft_dir, e))?;
        crate::config::save_yaml(&soft_dir.join("prune.yaml"), cfg)?;
    }
    let mut soft_stage = load_stage(cfg, &cfg.checkpoint, task, true, &[])?;
    let train = load_train(&soft_stage.loaded.tokenizer, cfg, task)?;
    let dev = load_split(&soft_stage.loaded.tokenizer, &cfg.data_dir, task, "dev", cfg.eval_limit)?;
    if train.is_empty() {
        return Err(Error::Config(format!("the training split is empty (min_train_tokens = {}, limit = {:?})", cfg.min_train_tokens, cfg.limit)));
    }
    let mut report = PruneReport { soft: None, hard: None, train_examples: train.len(), theta: vec![], beta: vec![], result_dir: run.out.clone() };
    let teacher = if cfg.distill > 0.0 {
        let other = cfg.teacher.as_ref().map(|dir| load_stage(cfg, dir, task, false, &[])).transpose()?;
        let model = other.as_ref().map_or(&soft_stage.model, |t| &t.model);
        Some(std::sync::Arc::new(teacher_logits(model, &train, observer)?))
    } else {
        None
    };
    soft_stage.teacher = teacher.clone();
    let mut start_hard_from = cfg.checkpoint.clone();
    if cfg.soft_epochs > 0 {
        observer.note("soft stage: weights and thresholds");
        soft_stage.dev = dev.clone();
        let outcome = trainer::run(&stage_spec(cfg, soft_dir.clone(), cfg.soft_epochs, task, run, false), &mut soft_stage, &train, observer)?;
        (report.theta, report.beta) = soft_stage.thr.values()?;
        let interrupted = outcome.interrupted;
        report.soft = Some(outcome);
        if interrupted {
            return Ok(report);
        }
        start_hard_from = soft_dir;
    }
    drop(soft_stage);
    if cfg.hard_epochs > 0 {
        observer.note("hard stage: thresholds frozen, weights adapt to hard masks");
        let mut hard = load_stage(cfg, &start_hard_from, task, false, &dev)?;
        hard.teacher = teacher;
        let outcome = trainer::run(&stage_spec(cfg, run.out.clone(), cfg.hard_epochs, task, run, true), &mut hard, &train, observer)?;
        (report.theta, report.beta) = hard.thr.values()?;
        report.hard = Some(outcome);
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
}
