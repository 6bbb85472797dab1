//! `cipherprune eval`: a fine-tuned run's metrics on a split.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use cipherprune::data::Task;
use cipherprune::train::{eval::evaluate, finetune};

use super::progress::Bars;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory written by `finetune` (or any model directory with a head).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// GLUE task (default: the run's task).
    #[arg(long)]
    pub task: Option<String>,
    /// GLUE root or task folder (default: the run's data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    pub split: String,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Default: the run's max_seq_len, else 128.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let info = super::runinfo::RunInfo::read(&args.checkpoint)?;
    let task = Task::from_name(&info.task(&args.task)?)?;
    let data_dir = info.data_dir(&args.data_dir)?;
    let max_len = args.max_seq_len.or(info.max_seq_len).unwrap_or(128);
    let spec = args.checkpoint.to_string_lossy().into_owned();
    let loaded = finetune::load_model(&spec, None, max_len, 0)?;
    let num_labels = loaded.cfg.num_labels.context("the checkpoint has no task head (config.json lacks num_labels): fine-tune it first")?;
    anyhow::ensure!(num_labels == task.num_labels(), "the checkpoint has {num_labels} labels but {} needs {}", task.name(), task.num_labels());
    let model = cipherprune::model::Bert::new(&loaded.cfg, &loaded.params, Some(num_labels))?;
    let data = finetune::load_split(&loaded.tokenizer, &data_dir, task, &args.split, args.limit)?;
    let started = std::time::Instant::now();
    let metrics = evaluate(&model, task, &data, args.batch_size, &mut Bars::new(args.json))?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let mut obj = serde_json::json!({ "task": task.name(), "split": args.split, "checkpoint": args.checkpoint, "seconds": secs });
        for (k, v) in &metrics {
            obj[k.as_str()] = if k == "examples" { serde_json::json!(*v as u64) } else { serde_json::json!(v) };
        }
        println!("{obj}");
    } else {
        println!("{} {} ({} examples, {:.1}s)", task.name(), args.split, data.len(), secs);
        for (k, v) in metrics.iter().filter(|(k, _)| *k != "examples") {
            println!("  {k:<14} {v:.4}");
        }
    }
    Ok(())
}
