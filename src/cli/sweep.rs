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
    /// Seeds, comma-separated: every target (or λ) is trained once per seed
    /// (`target-X-seed-S/`), and sweep.jsonl and the picture carry the
    /// mean over seeds with its spread; the single runs are drawn too.
    /// One run of this recipe differs from the next seed's by a point or
    /// more on SST-2, so a claim wants several.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Vec<u64>,
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

/// One trained run of a sweep, as its summary reports it.
struct Point {
    seed: Option<u64>,
    dir: String,
    metric: f64,
    work: f64,
    flops: f64,
    bytes: f64,
    rounds: f64,
    engine: Option<(f64, f64)>,
}

/// Mean, sample standard deviation, min and max.
fn spread(xs: &[f64]) -> (f64, f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (mean, sd, xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// A target's line of sweep.jsonl over several seeds: every figure the
/// mean over the seeds, the metric's spread beside it, and each run.
fn seeds_line(task: Task, key: &str, v: f64, runs: &[Point]) -> serde_json::Value {
    let main = task.main_metric();
    let mean = |f: &dyn Fn(&Point) -> f64| spread(&runs.iter().map(f).collect::<Vec<_>>()).0;
    let (m, sd, lo, hi) = spread(&runs.iter().map(|p| p.metric).collect::<Vec<_>>());
    let mut line = serde_json::json!({
        key: v,
        "task": task.name(),
        "seeds": runs.iter().map(|p| p.seed).collect::<Vec<_>>(),
        main: m,
        format!("{main}_sd"): sd,
        format!("{main}_min"): lo,
        format!("{main}_max"): hi,
        "relative_work": mean(&|p| p.work),
        "relative_flops": mean(&|p| p.flops),
        "secure_bytes_ratio": mean(&|p| p.bytes),
        "secure_rounds_ratio": mean(&|p| p.rounds),
        "runs": runs.iter().map(|p| {
            let mut r = serde_json::json!({ "seed": p.seed, "dir": p.dir, main: p.metric, "relative_work": p.work, "relative_flops": p.flops, "secure_bytes_ratio": p.bytes, "secure_rounds_ratio": p.rounds });
            if let Some((e, a)) = p.engine {
                r["engine"] = e.into();
                r["agreement"] = a.into();
            }
            r
        }).collect::<Vec<_>>(),
    });
    if runs.iter().all(|p| p.engine.is_some()) {
        line["engine"] = mean(&|p| p.engine.unwrap().0).into();
        line["agreement"] = mean(&|p| p.engine.unwrap().1).into();
    }
    line
}

/// Whether `out` holds a point made with these settings (then it is
/// resumed, or read back if finished); an error if it holds one made with
/// others, naming the settings that differ.
fn same_settings(out: &std::path::Path, cfg: &cipherprune::prune::config::PruneConfig) -> Result<bool> {
    let saved = out.join("prune.yaml");
    if !saved.is_file() {
        return Ok(false);
    }
    let old: cipherprune::prune::config::PruneConfig = cipherprune::config::load_yaml(&saved)?;
    let (a, b) = (serde_json::to_value(&old)?, serde_json::to_value(cfg)?);
    let differ: Vec<String> = b.as_object().into_iter().flatten().filter(|(k, v)| a.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: {} there, {v} here", a.get(k.as_str()).unwrap_or(&serde_json::Value::Null))).collect();
    if !differ.is_empty() {
        bail!("`{}` was made with other settings than this sweep's ({}); move it away or sweep into another --out", saved.display(), differ.join("; "));
    }
    Ok(true)
}

/// A simulated point's three work views, as the lines print them.
fn views(j: &serde_json::Value) -> String {
    let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    format!("relative work {:.3}  relative FLOPs {:.3}  secure bytes {:.3}  rounds {:.3}", f("relative_work"), f("relative_flops"), f("secure_bytes_ratio"), f("secure_rounds_ratio"))
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
    if let Some(s) = args.seeds.iter().enumerate().find_map(|(i, s)| args.seeds[..i].contains(s).then_some(s)) {
        bail!("--seeds: {s} is given twice (nothing written)");
    }
    let dir = args.prune.out.clone();
    let quiet = args.prune.common.quiet;
    std::fs::create_dir_all(&dir)?;
    // One run per value and seed; no --seeds: one run per value, the
    // config's seed, in `target-X/` as before.
    let seeds: Vec<Option<u64>> = if args.seeds.is_empty() { vec![None] } else { args.seeds.iter().map(|&s| Some(s)).collect() };
    let mut curve = vec![];
    let mut singles = vec![];
    let mut lines = String::new();
    for &v in &values {
        let (name, label) = if by_target { (format!("target-{v}"), format!("target {v}")) } else { (format!("lambda-{v}"), format!("λ={v}")) };
        if by_target {
            args.prune.target_flops = Some(v);
        } else {
            args.prune.lambda = Some(v);
        }
        let mut runs = vec![];
        let mut task = Task::Sst2;
        for &seed in &seeds {
            let (name, label) = match seed {
                Some(s) => (format!("{name}-seed-{s}"), format!("{label} seed {s}")),
                None => (name.clone(), label.clone()),
            };
            let out = dir.join(&name);
            args.prune.out = out.clone();
            if seed.is_some() {
                args.prune.common.seed = seed;
            }
            args.prune.common.resume = false;
            let cfg = resolve(&args.prune)?;
            args.prune.common.resume = same_settings(&out, &cfg)?;
            let summary_path = out.join("summary.json");
            let summary: serde_json::Value = if summary_path.is_file() {
                serde_json::from_str(&std::fs::read_to_string(&summary_path)?).with_context(|| format!("`{}` is not JSON", summary_path.display()))?
            } else {
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
            task = Task::from_name(summary["task"].as_str().unwrap_or("sst2"))?;
            let main = task.main_metric();
            let f = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
            let mut p = Point { seed, dir: name, metric: f(main), work: f("relative_work"), flops: f("relative_flops"), bytes: f("secure_bytes_ratio"), rounds: f("secure_rounds_ratio"), engine: None };
            println!("{label:<12} {main} {:.4}  {}  tokens kept per layer {}", p.metric, views(&summary), summary["tokens_kept_per_layer"]);
            let mut line = summary.clone();
            line[if by_target { "target_flops" } else { "lambda" }] = v.into();
            if args.engine {
                let (em, agreement) = engine_point(&out, &args.prune, quiet)?;
                println!("{:<12} engine 37/12: {main} {em:.4}, agreement with the simulation {:.2} %", "", 100.0 * agreement);
                line["engine"] = em.into();
                line["agreement"] = agreement.into();
                p.engine = Some((em, agreement));
            }
            if seed.is_none() {
                lines.push_str(&format!("{line}\n"));
            }
            runs.push(p);
        }
        if args.seeds.is_empty() {
            curve.push((runs[0].flops, runs[0].bytes, runs[0].metric));
            continue;
        }
        let line = seeds_line(task, if by_target { "target_flops" } else { "lambda" }, v, &runs);
        let main = task.main_metric();
        let g = |k: &str| line[k].as_f64().unwrap_or(f64::NAN);
        let engine = if args.engine { format!("  engine 37/12 {:.4} (agreement {:.2} %)", g("engine"), 100.0 * g("agreement")) } else { String::new() };
        println!(
            "{label:<12} mean of {} seeds: {main} {:.4} (sd {:.4}, {:.4} to {:.4})  relative work {:.3}  relative FLOPs {:.3}  secure bytes {:.3}  rounds {:.3}{engine}",
            runs.len(),
            g(main),
            g(&format!("{main}_sd")),
            g(&format!("{main}_min")),
            g(&format!("{main}_max")),
            g("relative_work"),
            g("relative_flops"),
            g("secure_bytes_ratio"),
            g("secure_rounds_ratio")
        );
        lines.push_str(&format!("{line}\n"));
        curve.push((g("relative_flops"), g("secure_bytes_ratio"), g(main)));
        singles.extend(runs.iter().map(|p| (p.flops, p.bytes, p.metric)));
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
    let mut curves = vec![Curve { name: format!("learned θ from {from}, p = {} ({})", cfg.score_exponent, if by_target { "FLOPs targets" } else { "λ" }), points: curve, runs: singles }];
    let mut base_lines = String::new();
    // Zero-shot: hard θ on LTP's ramp, no retraining, at multiples of the
    // mean score n̄^(−p) (scores average n^(−p) over an input's tokens).
    let n_bar = base.data.iter().map(|e| e.len()).sum::<usize>() as f64 / base.data.len().max(1) as f64;
    let p = cfg.score_exponent;
    let mut zs = Curve { name: format!("zero-shot θ ramp, p = {p}"), points: vec![], runs: vec![] };
    for &c in &args.zero_shot {
        let theta_final = c * n_bar.powf(-p);
        let (pt, j) = point(&zero_shot_plan(&theta_ramp(theta_final, layers), p, layers, false)?, &format!("zero-shot ramp {c}"))?;
        println!("zero-shot ramp θ_L = {theta_final:.4} (p = {p}): {main} {:.4}  {}", pt.2, views(&j));
        zs.points.push(pt);
        base_lines.push_str(&format!("{j}\n"));
    }
    let mut kr = Curve { name: "fixed keep-ratio schedule".into(), points: vec![], runs: vec![] };
    for &k in &args.keep_ratios {
        let (pt, j) = point(&ratio_plan(&[k], layers, false)?, &format!("keep ratio {k}"))?;
        println!("keep ratio {k}: {main} {:.4}  {}", pt.2, views(&j));
        kr.points.push(pt);
        base_lines.push_str(&format!("{j}\n"));
    }
    curves.extend([zs, kr].into_iter().filter(|c| !c.points.is_empty()));
    // Other sweeps (e.g. today's λ recipe) from their sweep.jsonl.
    for other in &args.baseline {
        let f = other.join("sweep.jsonl");
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading `{}`", f.display()))?;
        let (mut points, mut runs) = (vec![], vec![]);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("`{}`: a line that is not JSON", f.display()))?;
            let g = |v: &serde_json::Value, k: &str| v[k].as_f64().with_context(|| format!("`{}`: field `{k}` missing (a sweep from before relative FLOPs: rerun it)", f.display()));
            points.push((g(&v, "relative_flops")?, g(&v, "secure_bytes_ratio")?, g(&v, main)?));
            // A sweep over seeds: its single runs behind the mean.
            for r in v["runs"].as_array().into_iter().flatten() {
                runs.push((g(r, "relative_flops")?, g(r, "secure_bytes_ratio")?, g(r, main)?));
            }
        }
        curves.push(Curve { name: other.file_name().map_or("baseline".into(), |n| n.to_string_lossy().into_owned()), points, runs });
    }
    cipherprune::io::write_atomic(&dir.join("baselines.jsonl"), base_lines.as_bytes())?;
    let svg = dir.join("sweep.svg");
    cipherprune::plot::frontier(&svg, &format!("{}: {main} against relative FLOPs and two-party online bytes (dev)", base.task.name()), main, &curves, Some((reference.2, "unpruned, high-degree approximations")))?;
    println!("wrote {}, {} and {}", dir.join("sweep.jsonl").display(), dir.join("baselines.jsonl").display(), svg.display());
    Ok(())
}
