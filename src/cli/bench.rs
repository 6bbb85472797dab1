//! `cipherprune bench`: training-step time on the real model.

use anyhow::Result;
use clap::Args;

use cipherprune::train::bench::{run as bench, BenchSpec};

use cipherprune::train::Observer;

use super::progress::Bars;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory or Hugging Face hub id.
    #[arg(long, default_value = cipherprune::config::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per example (no padding).
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Timed steps, after one warm-up step.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Time the prune soft stage's step (soft masks, learnable thresholds,
    /// the secure approximations) instead of fine-tuning's.
    #[arg(long)]
    pub soft_masks: bool,
    /// Also time the engine's ring matrix product against f32 GEMM.
    #[arg(long)]
    pub engine: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(args.steps >= 1 && args.batch_size >= 1 && args.seq_len >= 2, "--steps, --batch-size ≥ 1 and --seq-len ≥ 2");
    let spec = BenchSpec { model: args.model.clone(), batch_size: args.batch_size, seq_len: args.seq_len, steps: args.steps, soft_masks: args.soft_masks };
    let mut bars = Bars::new(args.json);
    bars.begin("bench", args.steps as u64 + 1);
    let r = bench(&spec, |i| bars.update(i as u64 + 1, ""))?;
    bars.end();
    let rates = if args.engine { Some(cipherprune::train::bench::matmul_rates(128, 384, 1536, 20)?) } else { None };
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(m) = &rates {
            v["engine_matmul"] = serde_json::to_value(m)?;
        }
        println!("{v}");
    } else {
        let kind = if r.soft_masks { "soft-mask step" } else { "training step" };
        println!("{kind}, {} (batch {} × {} tokens, word embeddings frozen, dropout on, {} threads)", r.model, r.batch_size, r.seq_len, r.threads);
        println!("  forward    {:.3} s", r.forward_s);
        println!("  backward   {:.3} s", r.backward_s);
        println!("  optimiser  {:.3} s", r.optimizer_s);
        println!("  step       {:.3} s median of {} (min {:.3}, max {:.3})", r.step_s, r.steps, r.step_min_s, r.step_max_s);
        println!("  throughput {:.1} examples/s", r.examples_per_second);
        println!("  peak RSS   {:.0} MiB", r.peak_rss_mib);
        if let Some(m) = &rates {
            println!("engine matrix product {}×{}×{}: ring {:.2} GMAC/s, f32 GEMM {:.2} GMAC/s ({:.0} % of the float rate)", m.rows, m.inner, m.cols, m.ring_gmacs, m.f32_gmacs, 100.0 * m.ring_gmacs / m.f32_gmacs);
        }
    }
    Ok(())
}
