//! `cipherprune sweep`: threshold learning for several FLOPs targets (or
//! λ) from one fine-tuned run, each point simulated on dev, and the
//! trade-off picture (task metric against relative FLOPs) a pruning paper
//! shows.

use anyhow::{bail, Context, Result};
use clap::Args;

use cipherprune::data::Task;
use cipherprune::prune::simulate::simulate;
use cipherprune::train::prune::{prune, PruneRun};

use super::progress::Bars;
use super::prune::{finish, resolve, PruneArgs};
use cipherprune::fixed::Ring;
use cipherprune::model::Plan;
use cipherprune::plot::Curve;
use cipherprune::run::{engine_model, ratio_plan, secure_cost, theta_ramp, zero_shot_plan, Ablation, Run, RunSpec};

use super::report::{mode_name, report_json};

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// FLOPs targets in (0, 1], comma-separated: one run per target, each
    /// holding the soft masks' expected relative FLOPs there.
    #[arg(long, value_delimiter = ',', required_unless_present = "lambdas", conflicts_with = "lambdas")]
    pub targets: Vec<f64>,
    /// λ values instead, comma-separated (more λ, more pruning).
    #[arg(long, value_delimiter = ',')]
    pub lambdas: Vec<f64>,
    /// Zero-shot baseline points: θ on LTP's ramp on the starting model,
    /// θ_L at these multiples of the mean score n̄^(−p).
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,3")]
    pub zero_shot: Vec<f64>,
    /// Fixed keep-ratio baseline points (the same share kept after every layer).
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.8,0.7,0.6")]
    pub keep_ratios: Vec<f64>,
    /// Another sweep directory drawn beside this one (its sweep.jsonl), e.g.
    /// the λ recipe; repeatable.
    #[arg(long)]
    pub baseline: Vec<std::path::PathBuf>,
    /// Also run every trained point on the fixed-point engine at 37/12
    /// (exact truncation): its metric and agreement with the simulation go
    /// into sweep.jsonl (about a minute per point on SST-2's dev set).
    #[arg(long)]
    pub engine: bool,
    /// Everything `prune` takes; --out is the sweep directory, one
    /// `lambda-X/` run per value inside it.
    #[command(flatten)]
    pub prune: PruneArgs,
}

/// A trained point on the engine at 37/12: (its metric, agreement with the
/// float simulation), on the dev rows its summary scored.
fn engine_point(dir: &std::path::Path, prune: &PruneArgs, quiet: bool) -> Result<(f64, f64)> {
    let cfg = resolve(prune)?;
    let spec = RunSpec { checkpoint: dir.to_path_buf(), split: "dev".into(), limit: cfg.eval_limit, ..Default::default() };
    let run = Run::load(&spec)?;
    let ablation = Ablation::default();
    let r = simulate(&run.model, &run.plan(ablation, false)?, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(quiet))?;
    let c = super::table::on_engine(&run, ablation, &r, quiet)?;
    Ok((c.metrics[run.task.main_metric()], c.agreement))
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
    let mut points: Vec<((f64, f64, f64), String)> = vec![];
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
        if args.engine {
            let (em, agreement) = engine_point(&out, &args.prune, quiet)?;
            println!("{:<12} engine 37/12: {main} {em:.4}, agreement with the simulation {:.2} %", "", 100.0 * agreement);
            line["engine"] = em.into();
            line["agreement"] = agreement.into();
        }
        lines.push_str(&format!("{line}\n"));
        points.push(((rf, f("secure_bytes_ratio"), m), label));
    }
    cipherprune::io::write_atomic(&dir.join("sweep.jsonl"), lines.as_bytes())?;
    let cfg = resolve(&args.prune)?;
    let spec = RunSpec { checkpoint: cfg.checkpoint.clone(), task: Some(cfg.task.clone()), data_dir: Some(cfg.data_dir.clone()), split: "dev".into(), limit: cfg.eval_limit, max_seq_len: Some(cfg.max_seq_len), ..Default::default() };
    let base = Run::load(&spec)?;
    let engine = engine_model(&base.loaded, Ring::BOLT)?;
    let main = base.task.main_metric();
    let layers = base.layers();
    // Every baseline point on the starting model, simulated like the
    // trained ones: (relative FLOPs, secure bytes, metric) and its summary.
    let point = |plan: &Plan, what: &str| -> Result<((f64, f64, f64), serde_json::Value)> {
        let r = simulate(&base.model, plan, base.task, &base.data, 64, base.max_seq_len, &mut Bars::new(quiet))?;
        let sc = secure_cost(&engine, plan, &r.shapes);
        let mut j = report_json(base.task, "dev", mode_name(plan), &r, Some(&sc));
        j["baseline"] = what.into();
        Ok(((r.relative_flops, sc.bytes_ratio, r.metrics[main]), j))
    };
    // The unpruned reference: the fine-tuned model with high-degree approximations.
    let (reference, _) = point(&base.plan(Ablation { no_prune: true, no_reduce: true, ..Default::default() }, false)?, "reference")?;
    println!("unpruned (high-degree approximations): {main} {:.4}", reference.2);
    // Named after the run it starts from, so that sweeps drawn together
    // (--baseline) tell which fine-tune each curve began with.
    let from = cfg.checkpoint.file_name().map_or_else(|| cfg.checkpoint.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut curves = vec![Curve { name: format!("learned θ from {from}, p = {} ({})", cfg.score_exponent, if by_target { "FLOPs targets" } else { "λ" }), points: points.iter().map(|p| p.0).collect() }];
    let mut base_lines = String::new();
    // Zero-shot: hard θ on LTP's ramp, no retraining, at multiples of the
    // mean score n̄^(−p) (scores average n^(−p) over an input's tokens).
    let n_bar = base.data.iter().map(|e| e.len()).sum::<usize>() as f64 / base.data.len().max(1) as f64;
    let p = cfg.score_exponent;
    let mut zs = Curve { name: format!("zero-shot θ ramp, p = {p}"), points: vec![] };
    for &c in &args.zero_shot {
        let theta_final = c * n_bar.powf(-p);
        let (pt, j) = point(&zero_shot_plan(&theta_ramp(theta_final, layers), p, layers, false)?, &format!("zero-shot ramp {c}"))?;
        println!("zero-shot ramp θ_L = {theta_final:.4} (p = {p}): {main} {:.4}  relative FLOPs {:.3}  secure bytes {:.3}", pt.2, pt.0, pt.1);
        zs.points.push(pt);
        base_lines.push_str(&format!("{j}\n"));
    }
    let mut kr = Curve { name: "fixed keep-ratio schedule".into(), points: vec![] };
    for &k in &args.keep_ratios {
        let (pt, j) = point(&ratio_plan(&[k], layers, false)?, &format!("keep ratio {k}"))?;
        println!("keep ratio {k}: {main} {:.4}  relative FLOPs {:.3}  secure bytes {:.3}", pt.2, pt.0, pt.1);
        kr.points.push(pt);
        base_lines.push_str(&format!("{j}\n"));
    }
    curves.extend([zs, kr].into_iter().filter(|c| !c.points.is_empty()));
    // Other sweeps (e.g. today's λ recipe) from their sweep.jsonl.
    for other in &args.baseline {
        let f = other.join("sweep.jsonl");
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading `{}`", f.display()))?;
        let pts = text
            .lines()
            .map(|l| -> Result<(f64, f64, f64)> {
                let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("`{}`: a line that is not JSON", f.display()))?;
                let g = |k: &str| v[k].as_f64().with_context(|| format!("`{}`: field `{k}` missing (a sweep from before relative FLOPs: rerun it)", f.display()));
                Ok((g("relative_flops")?, g("secure_bytes_ratio")?, g(main)?))
            })
            .collect::<Result<Vec<_>>>()?;
        curves.push(Curve { name: other.file_name().map_or("baseline".into(), |n| n.to_string_lossy().into_owned()), points: pts });
    }
    cipherprune::io::write_atomic(&dir.join("baselines.jsonl"), base_lines.as_bytes())?;
    let svg = dir.join("sweep.svg");
    cipherprune::plot::frontier(&svg, &format!("{}: {main} against relative FLOPs and two-party online bytes (dev)", base.task.name()), main, &curves, Some((reference.2, "unpruned, high-degree approximations")))?;
    println!("wrote {}, {} and {}", dir.join("sweep.jsonl").display(), dir.join("baselines.jsonl").display(), svg.display());
    Ok(())
}
