//! `cipherprune sweep`: threshold learning for several λ from one
//! fine-tuned run, each point simulated on dev, and the trade-off picture
//! (task metric against relative work) a pruning paper shows.

use anyhow::{bail, Result};
use clap::Args;

use cipherprune::data::Task;
use cipherprune::prune::simulate::simulate;
use cipherprune::train::prune::{prune, PruneRun};

use super::progress::Bars;
use super::prune::{finish, resolve, PruneArgs};
use super::simulate::{load_run, plan_of};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// λ values, comma-separated (more λ, more pruning).
    #[arg(long, value_delimiter = ',', required = true)]
    pub lambdas: Vec<f64>,
    /// Everything `prune` takes; --out is the sweep directory, one
    /// `lambda-X/` run per value inside it.
    #[command(flatten)]
    pub prune: PruneArgs,
}

pub fn run(mut args: SweepArgs) -> Result<()> {
    if args.prune.lambda.is_some() {
        bail!("give the λ values with --lambdas, not --lambda");
    }
    let dir = args.prune.out.clone();
    let quiet = args.prune.common.quiet;
    std::fs::create_dir_all(&dir)?;
    let mut points = vec![];
    let mut lines = String::new();
    for &lambda in &args.lambdas.clone() {
        let out = dir.join(format!("lambda-{lambda}"));
        args.prune.out = out.clone();
        args.prune.lambda = Some(lambda);
        let summary_path = out.join("summary.json");
        let summary: serde_json::Value = if summary_path.is_file() {
            serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?
        } else {
            args.prune.common.resume = out.join("prune.yaml").is_file();
            let cfg = resolve(&args.prune)?;
            if !quiet {
                eprintln!("λ = {lambda}: {}", out.display());
            }
            let run = PruneRun { cfg, out: out.clone(), resume: args.prune.common.resume, stop_after: args.prune.common.stop_after };
            let r = prune(&run, &mut Bars::new(quiet))?;
            if r.hard.as_ref().is_some_and(|o| o.interrupted) || r.soft.as_ref().is_some_and(|o| o.interrupted) {
                println!("sweep stopped at λ = {lambda} (rerun the same command to resume)");
                return Ok(());
            }
            finish(&out, &r.result_dir, quiet)?
        };
        let task = Task::from_name(summary["task"].as_str().unwrap_or("sst2"))?;
        let main = task.main_metric();
        let (m, rw) = (summary[main].as_f64().unwrap_or(f64::NAN), summary["relative_work"].as_f64().unwrap_or(f64::NAN));
        println!("λ = {lambda:<6} {main} {m:.4}  relative work {rw:.3}  tokens kept per layer {}", summary["tokens_kept_per_layer"]);
        let mut line = summary.clone();
        line["lambda"] = lambda.into();
        lines.push_str(&format!("{line}\n"));
        points.push((rw, m, format!("λ={lambda}"), main));
    }
    cipherprune::io::write_atomic(&dir.join("sweep.jsonl"), lines.as_bytes())?;
    // The unpruned reference: the fine-tuned model with high-degree approximations.
    let cfg = resolve(&args.prune)?;
    let base = load_run(&cfg.checkpoint, None, &Some(cfg.task.clone()), &Some(cfg.data_dir.clone()), "dev", cfg.eval_limit, Some(cfg.max_seq_len))?;
    let plan = plan_of(&base, false, true, true, false)?;
    let r = simulate(&base.model, &plan, base.task, &base.data, 64, base.max_seq_len, &mut Bars::new(quiet))?;
    let main = base.task.main_metric();
    let reference = r.metrics[main];
    println!("unpruned (high-degree approximations): {main} {reference:.4}");
    let pts: Vec<(f64, f64, String)> = points.iter().map(|(x, y, l, _)| (*x, *y, l.clone())).collect();
    let svg = dir.join("sweep.svg");
    cipherprune::plot::tradeoff(&svg, &format!("{}: {main} against relative work", base.task.name()), "relative work (token-layers kept / real token-layers)", main, &pts, Some((reference, "unpruned, high-degree approximations")))?;
    println!("wrote {} and {}", dir.join("sweep.jsonl").display(), svg.display());
    Ok(())
}
