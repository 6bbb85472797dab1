//! `cipherprune eval`: a fine-tuned run's metrics on a split.

use anyhow::Result;
use clap::Args;

use cipherprune::run::Run;
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
    let Run { model, task, data, .. } = Run::load(&sel.spec(None))?;
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
