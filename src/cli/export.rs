//! `cipherprune export`: a pruned run's thresholds as the versioned YAML
//! file of DESIGN.md §6, with the simulation it was exported with.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use cipherprune::fixed::Ring;
use cipherprune::prune::file::{Measured, ModelIdentity, ThresholdFile};
use cipherprune::prune::simulate::simulate;
use cipherprune::run::{engine_model, secure_cost, Ablation, Run, RunSpec};

use super::progress::Bars;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run written by `prune`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Where to write the threshold file (YAML).
    #[arg(long)]
    pub out: PathBuf,
    /// Ring for the integer thresholds: bits ℓ.
    #[arg(long, default_value_t = 37)]
    pub ring_bits: u32,
    /// Ring: fractional bits s.
    #[arg(long, default_value_t = 12)]
    pub frac_bits: u32,
    /// Measure on the first N dev examples only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Do not run the dev-set simulation (no `measured` section).
    #[arg(long)]
    pub no_measure: bool,
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let ring = Ring::new(args.ring_bits, args.frac_bits)?;
    let spec = RunSpec { checkpoint: args.checkpoint.clone(), split: "dev".into(), limit: if args.no_measure { Some(0) } else { args.limit }, ..Default::default() };
    let run = Run::load(&spec)?;
    let t = run.thresholds.clone().with_context(|| format!("`{}` has no thresholds: run `prune` first", args.checkpoint.display()))?;
    let (theta, beta) = (t.theta, t.beta);
    let measured = if args.no_measure {
        None
    } else {
        let plan = run.plan(Ablation::default(), true)?;
        let r = simulate(&run.model, &plan, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(args.quiet))?;
        let secure = secure_cost(&engine_model(&run.loaded, ring)?, &plan, &r.shapes);
        Some(Measured {
            split: "dev".into(),
            examples: run.data.len(),
            metrics: r.metrics.into_iter().filter(|(k, _)| k != "examples").collect(),
            tokens_kept_per_layer: r.tokens_kept_per_layer,
            reduced_per_layer: r.reduced_per_layer,
            relative_work: r.relative_work,
            relative_flops: Some(r.relative_flops),
            secure_bytes_ratio: Some(secure.bytes_ratio),
            secure_rounds_ratio: Some(secure.rounds_ratio),
        })
    };
    let c = &run.loaded.cfg;
    let model = ModelIdentity {
        name: args.checkpoint.display().to_string(),
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        hidden: c.hidden_size,
        weights_sha256: run.weights_sha256.clone(),
    };
    let pc = run.prune_cfg.clone().unwrap_or_default();
    // A stage that was switched off exports thresholds that never fire.
    let theta: Vec<f64> = if pc.prune { theta } else { vec![0.0; theta.len()] };
    let beta: Vec<f64> = if pc.reduce { beta } else { theta.clone() };
    let file = ThresholdFile::new(model, run.task.name(), pc.temperature, ring, &theta, &beta, &t.exponent, measured).with_merge(t.merge);
    file.save(&args.out)?;
    println!("wrote {} ({} layers, ring {}/{})", args.out.display(), theta.len(), ring.bits(), ring.frac());
    if let Some(m) = &file.measured {
        let metrics: Vec<String> = m.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        println!(
            "  measured on {} dev examples: {}, relative work {:.3}, relative FLOPs {:.3}, secure bytes {:.3}, rounds {:.3}",
            m.examples, metrics.join(", "), m.relative_work, v(m.relative_flops), v(m.secure_bytes_ratio), v(m.secure_rounds_ratio)
        );
    }
    Ok(())
}
