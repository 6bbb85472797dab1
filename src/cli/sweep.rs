//! `cipherprune sweep`: threshold learning for several FLOPs targets (or
//! λ) from one fine-tuned run, each point simulated on dev, and the
//! trade-off picture (task metric against relative FLOPs) a pruning paper
//! shows.

use anyhow::{bail, Result};
use clap::Args;

use cipherprune::data::Task;
use cipherprune::prune::simulate::simulate;
use cipherprune::train::prune::{prune, PruneRun};

use super::progress::Bars;
use super::prune::{finish, resolve, PruneArgs};
use cipherprune::run::{Ablation, Run, RunSpec};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// FLOPs targets in (0, 1], comma-separated: one run per target, each
    /// holding the soft masks' expected relative FLOPs there.
    #[arg(long, value_delimiter = ',', required_unless_present = "lambdas", conflicts_with = "lambdas")]
    pub targets: Vec<f64>,
    /// λ values instead, comma-separated (more λ, more pruning).
    #[arg(long, value_delimiter = ',')]
    pub lambdas: Vec<f64>,
    /// Everything `prune` takes; --out is the sweep directory, one
    /// `lambda-X/` run per value inside it.
    #[command(flatten)]
    pub prune: PruneArgs,
}

pub fn run(mut args: SweepArgs) -> Result<()> {
    if args.prune.lambda.is_some() && !args.lambdas.is_empty() {
        bail!("give the λ values with --lambdas, not --lambda");
    }
    if args.prune.target_flops.is_some() {
        bail!("give the FLOPs targets with --targets, not --target-flops");
    }
    let by_target = !args.targets.is_empty();
    let values = if by_target { args.targets.clone() } else { args.lambdas.clone() };
    // Checked before anything is written, so a typo costs nothing.
    let first = resolve(&args.prune)?;
    if !first.checkpoint.is_dir() {
        bail!("checkpoint `{}` is not a run directory (nothing written)", first.checkpoint.display());
    }
    if let Some(t) = values.iter().find(|&&t| by_target && !(t > 0.0 && t <= 1.0)) {
        bail!("--targets: {t} is not in (0, 1] (nothing written)");
    }
    let dir = args.prune.out.clone();
    let quiet = args.prune.common.quiet;
    std::fs::create_dir_all(&dir)?;
    let mut points = vec![];
    let mut lines = String::new();
    for &v in &values {
        let (name, label) = if by_target { (format!("target-{v}"), format!("target {v}")) } else { (format!("lambda-{v}"), format!("λ={v}")) };
        let out = dir.join(&name);
        args.prune.out = out.clone();
        if by_target {
            args.prune.target_flops = Some(v);
        } else {
            args.prune.lambda = Some(v);
        }
        let summary_path = out.join("summary.json");
        let summary: serde_json::Value = if summary_path.is_file() {
            serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?
        } else {
            args.prune.common.resume = out.join("prune.yaml").is_file();
            let cfg = resolve(&args.prune)?;
            if !quiet {
                eprintln!("{label}: {}", out.display());
            }
            let run = PruneRun { cfg, out: out.clone(), resume: args.prune.common.resume, stop_after: args.prune.common.stop_after };
            let r = prune(&run, &mut Bars::new(quiet))?;
            if r.hard.as_ref().is_some_and(|o| o.interrupted) || r.soft.as_ref().is_some_and(|o| o.interrupted) {
                println!("sweep stopped at {label} (rerun the same command to resume)");
                return Ok(());
            }
            finish(&out, &r.result_dir, quiet)?
        };
        let task = Task::from_name(summary["task"].as_str().unwrap_or("sst2"))?;
        let main = task.main_metric();
        let f = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
        let (m, rw, rf) = (f(main), f("relative_work"), f("relative_flops"));
        println!("{label:<12} {main} {m:.4}  relative work {rw:.3}  relative FLOPs {rf:.3}  secure bytes {:.3}  tokens kept per layer {}", f("secure_bytes_ratio"), summary["tokens_kept_per_layer"]);
        let mut line = summary.clone();
        line[if by_target { "target_flops" } else { "lambda" }] = v.into();
        lines.push_str(&format!("{line}\n"));
        points.push((rf, m, label, main));
    }
    cipherprune::io::write_atomic(&dir.join("sweep.jsonl"), lines.as_bytes())?;
    // The unpruned reference: the fine-tuned model with high-degree approximations.
    let cfg = resolve(&args.prune)?;
    let spec = RunSpec { checkpoint: cfg.checkpoint.clone(), task: Some(cfg.task.clone()), data_dir: Some(cfg.data_dir.clone()), split: "dev".into(), limit: cfg.eval_limit, max_seq_len: Some(cfg.max_seq_len), ..Default::default() };
    let base = Run::load(&spec)?;
    let plan = base.plan(Ablation { no_prune: true, no_reduce: true, ..Default::default() }, false)?;
    let r = simulate(&base.model, &plan, base.task, &base.data, 64, base.max_seq_len, &mut Bars::new(quiet))?;
    let main = base.task.main_metric();
    let reference = r.metrics[main];
    println!("unpruned (high-degree approximations): {main} {reference:.4}");
    let pts: Vec<(f64, f64, String)> = points.iter().map(|(x, y, l, _)| (*x, *y, l.clone())).collect();
    let svg = dir.join("sweep.svg");
    cipherprune::plot::tradeoff(&svg, &format!("{}: {main} against relative FLOPs", base.task.name()), "relative FLOPs (attention at the tokens entering, FFN at the tokens kept)", main, &pts, Some((reference, "unpruned, high-degree approximations")))?;
    println!("wrote {} and {}", dir.join("sweep.jsonl").display(), svg.display());
    Ok(())
}
