//! The one training loop every stage shares: seeded length-bucketed batches,
//! warmup + linear decay, clipping, JSON-lines metrics, atomic resumable
//! checkpoints, best-on-dev model. A stage only says how to compute its loss,
//! what it trains, and how to evaluate and save itself.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::average::Average;
use super::eval::Metrics;
use super::optim::{schedule, AdamW, Group};
use super::progress::Observer;
use crate::data::{batch, Encoded};
use crate::error::{Error, Result};

pub trait Stage {
    /// Loss of one batch (with dropout drawn from `rng`) and extra scalars to log.
    fn loss(&mut self, batch: &batch::Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// What the optimiser updates; called once.
    fn groups(&self) -> Vec<Group>;
    fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Metrics>;
    /// Writes the stage's model (and anything else it needs) into `dir`.
    fn save(&self, dir: &Path) -> Result<()>;
    /// Restores trainable values saved by `save`.
    fn restore(&mut self, dir: &Path) -> Result<()>;
    /// Called before each step's `loss` with the step and the stage's total
    /// steps (pure in them, so a resumed run sees what an uninterrupted one
    /// would).
    fn begin_step(&mut self, _step: usize, _total: usize) {}
    /// The weights a tail average covers (`LoopSpec::average_from`).
    fn weights(&self) -> Vec<(String, candle_core::Var)> {
        vec![]
    }
    /// Extra numbers to log at an evaluation point (e.g. per-layer thresholds).
    fn snapshot(&self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct LoopSpec {
    pub run_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub save_every: usize,
    pub eval_every: usize,
    pub log_every: usize,
    /// Metric that picks the best checkpoint (higher is better).
    pub main_metric: String,
    /// Stop (as if interrupted) after this many steps; for tests and demos.
    pub stop_after: Option<usize>,
    pub resume: bool,
    /// Keep the best-on-dev model at the run root; otherwise the latest
    /// evaluated one (a stage whose dev score is not what it optimises).
    pub select_best: bool,
    /// What the stage's checks run on, for the progress lines and the
    /// metrics' eval lines ("dev", or "held-out" training rows).
    pub checks_on: &'static str,
    /// Average the weights over the steps after this share of the stage
    /// ([`Average`]): from then on every check, save of the result and the
    /// result itself are the mean. With it, `select_best` should be off.
    pub average_from: Option<f64>,
}

/// Where the loop stands; saved with every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub global_step: usize,
    pub best_metric: Option<f64>,
    pub best_step: usize,
    pub best: Metrics,
}

pub struct Outcome {
    pub state: LoopState,
    pub interrupted: bool,
    pub seconds: f64,
}

/// A checkpoint's tail average of the weights, once averaging has started.
pub const AVERAGE_FILE: &str = "average.safetensors";

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The newest complete checkpoint, if any (`checkpoints/LATEST` names it).
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>> {
    let ptr = checkpoints_dir(run).join("LATEST");
    if !ptr.exists() {
        return Ok(None);
    }
    let name = crate::io::read_to_string(&ptr)?;
    let dir = checkpoints_dir(run).join(name.trim());
    if !dir.join("state.json").is_file() {
        return Err(Error::Field { file: ptr, field: "LATEST".into(), msg: format!("points to missing `{}`", dir.display()) });
    }
    Ok(Some(dir))
}

/// Per-step dropout RNG: a pure function of (seed, step), so a resumed run
/// draws exactly the masks an uninterrupted one would.
fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step as u64)
}

pub fn run(spec: &LoopSpec, stage: &mut dyn Stage, train: &[Encoded], observer: &mut dyn Observer) -> Result<Outcome> {
    let started = Instant::now();
    std::fs::create_dir_all(&spec.run_dir).map_err(|e| Error::io(&spec.run_dir, e))?;
    let metrics_path = spec.run_dir.join("metrics.jsonl");
    let lengths: Vec<usize> = train.iter().map(|e| e.input_ids.len()).collect();
    let per_epoch = lengths.len().div_ceil(spec.batch_size);
    let total = per_epoch * spec.epochs;
    let warmup = ((total as f64) * spec.warmup_ratio).ceil() as usize;
    let mut opt = AdamW::new(stage.groups())?;
    let mut avg = spec.average_from.map(|share| Average::new(stage.weights(), ((total as f64) * share).floor() as usize));
    let mut st = LoopState::default();
    if spec.resume {
        match latest_checkpoint(&spec.run_dir)? {
            Some(dir) => {
                stage.restore(&dir)?;
                opt.load(&dir.join("optimizer.safetensors"))?;
                st = serde_json::from_str(&crate::io::read_to_string(&dir.join("state.json"))?)
                    .map_err(|e| Error::Field { file: dir.join("state.json"), field: "<root>".into(), msg: e.to_string() })?;
                if let Some(a) = &mut avg {
                    a.load(&dir.join(AVERAGE_FILE), st.global_step)?;
                }
                observer.note(&format!("resuming from {} (step {})", dir.display(), st.global_step));
            }
            None => observer.note("no checkpoint to resume from; starting fresh"),
        }
    }
    let mut window = (0.0f64, 0usize, 0usize, Instant::now());
    // Stage scalars summed over the logging window, logged as means.
    let mut extra_sums: std::collections::BTreeMap<String, f64> = Default::default();
    observer.begin("train", total as u64);
    observer.update(st.global_step as u64, "");
    while st.epoch < spec.epochs {
        let batches = batch::epoch_batches(&lengths, spec.batch_size, spec.seed, st.epoch as u64, true);
        while st.batch_in_epoch < batches.len() {
            let b = batch::collate(train, &batches[st.batch_in_epoch]);
            let mut rng = step_rng(spec.seed, st.global_step);
            stage.begin_step(st.global_step, total);
            let (loss, extra) = stage.loss(&b, &mut rng)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                return Err(Error::Diverged(format!(
                    "loss is {lv} at step {} (epoch {}); the last good checkpoint is kept in `{}`",
                    st.global_step,
                    st.epoch,
                    checkpoints_dir(&spec.run_dir).display()
                )));
            }
            let grads = loss.backward()?;
            let lr_scale = schedule(st.global_step, warmup, total);
            let gnorm = opt.step(&grads, lr_scale, Some(spec.max_grad_norm))?;
            st.global_step += 1;
            st.batch_in_epoch += 1;
            if let Some(a) = &mut avg {
                a.update(st.global_step)?;
            }
            for (k, v) in extra {
                *extra_sums.entry(k).or_default() += v;
            }
            window.0 += lv;
            window.1 += 1;
            window.2 += b.batch_size;
            let rate = window.2 as f64 / window.3.elapsed().as_secs_f64().max(1e-9);
            observer.update(st.global_step as u64, &format!("ep {} loss {:.4} {:.0} ex/s", st.epoch + 1, window.0 / window.1 as f64, rate));
            if st.global_step % spec.log_every == 0 {
                let mut line = serde_json::json!({
                    "kind": "train", "step": st.global_step, "epoch": st.epoch,
                    "loss": window.0 / window.1 as f64, "lr_scale": lr_scale, "grad_norm": gnorm,
                    "examples_per_second": rate,
                });
                for (k, v) in std::mem::take(&mut extra_sums) {
                    line[k] = (v / window.1 as f64).into();
                }
                crate::io::append_json_line(&metrics_path, &line)?;
                window = (0.0, 0, 0, Instant::now());
            }
            let epoch_end = st.batch_in_epoch == batches.len();
            if epoch_end {
                st.epoch += 1;
                st.batch_in_epoch = 0;
            }
            if epoch_end || (spec.eval_every > 0 && st.global_step % spec.eval_every == 0) {
                match &avg {
                    Some(a) => a.with_mean(|| evaluate_point(spec, stage, &mut st, a.steps(), &metrics_path, observer))?,
                    None => evaluate_point(spec, stage, &mut st, 0, &metrics_path, observer)?,
                }
            }
            if epoch_end || st.global_step % spec.save_every == 0 || spec.stop_after == Some(st.global_step) {
                save_checkpoint(&spec.run_dir, stage, &opt, avg.as_ref(), &st)?;
            }
            if spec.stop_after == Some(st.global_step) {
                observer.end();
                return Ok(Outcome { state: st, interrupted: true, seconds: started.elapsed().as_secs_f64() });
            }
            if epoch_end {
                break;
            }
        }
    }
    observer.end();
    Ok(Outcome { state: st, interrupted: false, seconds: started.elapsed().as_secs_f64() })
}

/// Checks the stage (with `averaged` > 0: the mean of that many steps'
/// weights, which the caller has put in place).
fn evaluate_point(spec: &LoopSpec, stage: &mut dyn Stage, st: &mut LoopState, averaged: usize, metrics_path: &Path, observer: &mut dyn Observer) -> Result<()> {
    let m = stage.evaluate(observer)?;
    let score = *m.get(&spec.main_metric).ok_or_else(|| Error::Config(format!("metric `{}` not computed", spec.main_metric)))?;
    let improved = !spec.select_best || st.best_metric.is_none_or(|b| score > b);
    if improved {
        stage.save(&spec.run_dir)?;
        st.best_metric = Some(score);
        st.best_step = st.global_step;
        st.best = m.clone();
    }
    let mut line = serde_json::json!({ "kind": "eval", "split": spec.checks_on, "step": st.global_step, "epoch": st.epoch, "best": improved, "stage": stage.snapshot()? });
    if averaged > 0 {
        line["averaged_steps"] = averaged.into();
    }
    for (k, v) in &m {
        line[k.as_str()] = (*v).into();
    }
    crate::io::append_json_line(metrics_path, &line)?;
    let shown: Vec<String> = m.iter().filter(|(k, _)| *k != "examples").map(|(k, v)| format!("{k} {v:.4}")).collect();
    let what = if averaged > 0 { format!(" (mean of the last {averaged} steps' weights)") } else { String::new() };
    observer.note(&format!("step {}: {}{what} {}{}", st.global_step, spec.checks_on, shown.join(", "), if improved { " (best, saved)" } else { "" }));
    Ok(())
}

/// Writes `checkpoints/step-N/` completely, then points `LATEST` at it, then
/// removes older ones: a crash at any moment leaves a complete checkpoint.
fn save_checkpoint(run: &Path, stage: &dyn Stage, opt: &AdamW, avg: Option<&Average>, st: &LoopState) -> Result<()> {
    let root = checkpoints_dir(run);
    let name = format!("step-{:07}", st.global_step);
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    stage.save(&dir)?;
    opt.save(&dir.join("optimizer.safetensors"))?;
    if let Some(a) = avg {
        a.save(&dir.join(AVERAGE_FILE))?;
    }
    let json = serde_json::to_string_pretty(st).expect("state serialises");
    crate::io::write_atomic(&dir.join("state.json"), json.as_bytes())?;
    crate::io::write_atomic(&root.join("LATEST"), name.as_bytes())?;
    for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("step-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}
