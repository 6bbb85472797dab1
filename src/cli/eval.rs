//! `cipherprune eval`: a fine-tuned run's metrics on a split.

use anyhow::{Context, Result};
use clap::Args;

use cipherprune::data::Task;
use cipherprune::run::{load_model, load_split, RunInfo};
use cipherprune::train::eval::evaluate;

use super::progress::Bars;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: super::runinfo::EvalData,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let EvalArgs { data: sel, batch_size, json } = args;
    let info = RunInfo::read(&sel.checkpoint)?;
    let task = Task::from_name(&info.task(&sel.task)?)?;
    let data_dir = info.data_dir(&sel.data_dir)?;
    let max_len = sel.max_seq_len.or(info.max_seq_len).unwrap_or(128);
    let spec = sel.checkpoint.to_string_lossy().into_owned();
    let loaded = load_model(&spec, None, max_len, 0)?;
    let num_labels = loaded.cfg.num_labels.context("the checkpoint has no task head (config.json lacks num_labels): fine-tune it first")?;
    anyhow::ensure!(num_labels == task.num_labels(), "the checkpoint has {num_labels} labels but {} needs {}", task.name(), task.num_labels());
    let model = cipherprune::model::Bert::new(&loaded.cfg, &loaded.params, Some(num_labels))?;
    let data = load_split(&loaded.tokenizer, &data_dir, task, &sel.split, sel.limit)?;
    let started = std::time::Instant::now();
    let metrics = evaluate(&model, task, &data, batch_size, &mut Bars::new(json))?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        let mut obj = serde_json::json!({ "task": task.name(), "split": sel.split, "checkpoint": sel.checkpoint, "seconds": secs });
        for (k, v) in &metrics {
            obj[k.as_str()] = if k == "examples" { serde_json::json!(*v as u64) } else { serde_json::json!(v) };
        }
        println!("{obj}");
    } else {
        println!("{} {} ({} examples, {:.1}s)", task.name(), sel.split, data.len(), secs);
        for (k, v) in metrics.iter().filter(|(k, _)| *k != "examples") {
            println!("  {k:<14} {v:.4}");
        }
    }
    Ok(())
}
