//! `cipherprune finetune`: flags + YAML → `FinetuneConfig` → library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use cipherprune::config::{load_yaml, FinetuneConfig};
use cipherprune::train::finetune::{finetune, FinetuneRun};

use super::progress::Bars;

/// Flags shared by every training command; each overrides the YAML value.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonTrain {
    /// YAML config file (see configs/); flags given here override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of passes over the training set.
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (AdamW, linear warmup then linear decay).
    #[arg(long = "lr", alias = "learning-rate")]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train on the first N examples only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on the first N dev examples only.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Append a line to metrics.jsonl every N steps.
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after N optimiser steps as if interrupted (for trying --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// No progress bars or notes.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Model directory or Hugging Face hub id.
    #[arg(long)]
    pub model: Option<String>,
    /// GLUE task: sst2, mrpc, rte, stsb, cola, qnli, qqp, mnli, wnli.
    #[arg(long)]
    pub task: Option<String>,
    /// GLUE root folder (holding SST-2/, MRPC/, …) or one task's folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run directory to create (config, metrics, checkpoints, best model).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Write a resumable checkpoint every N steps.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Also evaluate on dev every N steps (0: only at epoch ends).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// LengthDrop p in [0, 1): half the batches keep a random share
    /// 1 − U(0, p) of the highest-scoring tokens after each layer.
    #[arg(long, value_name = "P")]
    pub length_drop: Option<f64>,
    #[command(flatten)]
    pub common: CommonTrain,
}

fn resolve(args: &FinetuneArgs) -> Result<FinetuneConfig> {
    let saved = args.out.join("config.yaml");
    let mut cfg: FinetuneConfig = match (&args.common.config, args.common.resume && saved.is_file()) {
        (_, true) => load_yaml(&saved)?,
        (Some(p), false) => load_yaml(p)?,
        (None, false) => FinetuneConfig::default(),
    };
    let before = cfg.clone();
    if let Some(v) = &args.model { cfg.model = v.clone(); }
    if let Some(v) = &args.task { cfg.task = v.clone(); }
    if let Some(v) = &args.data_dir { cfg.data_dir = v.clone(); }
    if let Some(v) = args.warmup_ratio { cfg.warmup_ratio = v; }
    if let Some(v) = args.weight_decay { cfg.weight_decay = v; }
    if let Some(v) = args.save_every { cfg.save_every = v; }
    if let Some(v) = args.eval_every { cfg.eval_every = v; }
    if let Some(v) = args.length_drop { cfg.length_drop = v; }
    let c = &args.common;
    if let Some(v) = c.epochs { cfg.epochs = v; }
    if let Some(v) = c.batch_size { cfg.batch_size = v; }
    if let Some(v) = c.learning_rate { cfg.learning_rate = v; }
    if let Some(v) = c.max_seq_len { cfg.max_seq_len = v; }
    if let Some(v) = c.seed { cfg.seed = v; }
    if c.limit.is_some() { cfg.limit = c.limit; }
    if c.eval_limit.is_some() { cfg.eval_limit = c.eval_limit; }
    if let Some(v) = c.log_every { cfg.log_every = v; }
    if c.resume && saved.is_file() && cfg != before {
        bail!("`{}` holds this run's configuration; a resumed run cannot change it (drop the changed flags)", saved.display());
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let cfg = resolve(&args)?;
    if !args.common.resume && args.out.join("checkpoints").exists() {
        bail!("`{}` already holds a run; pass --resume to continue it or choose another --out", args.out.display());
    }
    let mut bars = Bars::new(args.common.quiet);
    let run = FinetuneRun { cfg: cfg.clone(), run_dir: args.out.clone(), resume: args.common.resume, stop_after: args.common.stop_after };
    let report = finetune(&run, &mut bars).with_context(|| format!("fine-tuning into `{}` failed", args.out.display()))?;
    let st = &report.outcome.state;
    let verb = if report.outcome.interrupted { "stopped (resume with --resume)" } else { "done" };
    println!(
        "finetune {verb}: {} on {} ({} train / {} dev examples), {} steps in {:.0}s",
        cfg.model, cfg.task, report.train_examples, report.dev_examples, st.global_step, report.outcome.seconds
    );
    if let Some(best) = st.best_metric {
        let shown: Vec<String> = st.best.iter().filter(|(k, _)| *k != "examples").map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("best dev (step {}): {}  [main {:.4}]", st.best_step, shown.join(", "), best);
    }
    let m = args.out.join("metrics.jsonl");
    if !report.outcome.interrupted && m.is_file() {
        let loss = cipherprune::plot::series_from_metrics(&m, "train", "loss")?;
        if !loss.is_empty() {
            cipherprune::plot::lines(&args.out.join("loss.svg"), "fine-tuning: training loss", "step", "loss", &[("train loss".into(), loss)])?;
        }
    }
    println!("run directory: {}", args.out.display());
    Ok(())
}
