//! `cipherprune table`: the paper's Table 2 rebuilt on real dev sets. Per
//! task, from one fine-tuned run and one pruning run started from it, the
//! rows exact / high-degree approximations / + pruning / + pruning +
//! reduction, each with the float simulation's metric, the engine's at
//! 37/12, their agreement (same class; STS-B: scores within 0.05), relative
//! FLOPs, the protocol's online bytes over the unpruned model's and the
//! tokens kept per layer.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use cipherprune::fixed::Ring;
use cipherprune::prune::simulate::simulate;
use cipherprune::prune::simulate::SimReport;
use cipherprune::run::{engine_check, Ablation, EngineCheck, Run, RunSpec};

use super::progress::Bars;

#[derive(Args, Debug)]
pub struct TableArgs {
    /// One task: `FINETUNED:PRUNED` (two run directories; the pruning run
    /// started from the fine-tuned one). Repeat for each task.
    #[arg(long = "run", value_name = "FINETUNED:PRUNED", required = true)]
    pub runs: Vec<String>,
    /// First N dev examples only (exploration; report from full sets).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where to write the table (Markdown) and, beside it, the same as JSON lines.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(short, long)]
    pub quiet: bool,
}

struct Row {
    label: &'static str,
    run: usize,
    ablation: Ablation,
    engine: bool,
}

const ROWS: [Row; 4] = [
    Row { label: "exact", run: 0, ablation: Ablation { exact: true, no_prune: false, no_reduce: false }, engine: false },
    Row { label: "high-degree approximations", run: 0, ablation: Ablation { exact: false, no_prune: true, no_reduce: true }, engine: true },
    Row { label: "+ pruning", run: 1, ablation: Ablation { exact: false, no_prune: false, no_reduce: true }, engine: true },
    Row { label: "+ pruning + reduction", run: 1, ablation: Ablation { exact: false, no_prune: false, no_reduce: false }, engine: true },
];

pub fn run(args: TableArgs) -> Result<()> {
    let pairs: Vec<(PathBuf, PathBuf)> = args
        .runs
        .iter()
        .map(|r| {
            let (a, b) = r.split_once(':').with_context(|| format!("--run {r}: expected FINETUNED:PRUNED"))?;
            Ok((PathBuf::from(a), PathBuf::from(b)))
        })
        .collect::<Result<_>>()?;
    for (a, b) in &pairs {
        for d in [a, b] {
            if !d.is_dir() {
                bail!("`{}` is not a run directory (nothing written)", d.display());
            }
        }
    }
    let mut md = String::from("| task | row | metric (float) | metric (engine 37/12) | agreement | relative FLOPs | secure bytes | tokens kept per layer |\n|---|---|---|---|---|---|---|---|\n");
    let mut jsonl = String::new();
    let bars = || Bars::new(args.quiet);
    for (ft, pr) in &pairs {
        let load = |c: &PathBuf| Run::load(&RunSpec { checkpoint: c.clone(), split: "dev".into(), limit: args.limit, ..Default::default() });
        let runs = [load(ft)?, load(pr)?];
        if runs[0].task != runs[1].task {
            bail!("`{}` is {} but `{}` is {}", ft.display(), runs[0].task.name(), pr.display(), runs[1].task.name());
        }
        let task = runs[0].task;
        let main = task.main_metric();
        let mut reference = None;
        for row in &ROWS {
            let run = &runs[row.run];
            let sim_plan = run.plan(row.ablation, false)?;
            let r = simulate(&run.model, &sim_plan, task, &run.data, 64, run.max_seq_len, &mut bars())?;
            let check = if row.engine { Some(on_engine(run, row.ablation, &r, args.quiet)?) } else { None };
            let m = r.metrics[main];
            if row.label == "high-degree approximations" {
                reference = Some(m);
            }
            let em = check.as_ref().map(|c| c.metrics[main]);
            let bytes = check.as_ref().map(|c| c.secure.bytes_ratio);
            let kept: Vec<String> = r.tokens_kept_per_layer.iter().map(|v| format!("{v:.1}")).collect();
            let pct = |v: f64| format!("{:.2}", 100.0 * v);
            let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".to_string(), f);
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {} | {} of {:.1} |\n",
                task.name(),
                row.label,
                pct(m),
                opt(em, &pct),
                opt(check.as_ref().map(|c| c.agreement), &pct),
                r.relative_flops,
                opt(bytes, &|v| format!("{v:.3}")),
                kept.join(" "),
                r.real_tokens
            ));
            let line = serde_json::json!({
                "task": task.name(), "row": row.label, "checkpoint": run.loaded.files.dir, "metric": main,
                "float": m, "engine": em, "agreement": check.as_ref().map(|c| c.agreement),
                "relative_work": r.relative_work, "relative_flops": r.relative_flops,
                "secure_bytes_ratio": bytes, "secure_rounds_ratio": check.as_ref().map(|c| c.secure.rounds_ratio),
                "overflows": check.as_ref().map(|c| c.overflows),
                "tokens_kept_per_layer": r.tokens_kept_per_layer, "real_tokens": r.real_tokens, "examples": run.data.len(),
                "delta_vs_high_degree": reference.map(|x| m - x),
            });
            jsonl.push_str(&format!("{line}\n"));
            if !args.quiet {
                eprintln!("{} {}: {main} {} (engine {}), relative FLOPs {:.3}", task.name(), row.label, pct(m), opt(em, &pct), r.relative_flops);
            }
        }
    }
    cipherprune::io::write_atomic(&args.out, md.as_bytes())?;
    let json_path = args.out.with_extension("jsonl");
    cipherprune::io::write_atomic(&json_path, jsonl.as_bytes())?;
    print!("{md}");
    println!("wrote {} and {}", args.out.display(), json_path.display());
    Ok(())
}

/// `run` with `ablation` on the engine at 37/12 (exact truncation) against
/// its float simulation `sim`, with a progress bar unless `quiet`.
pub fn on_engine(run: &Run, ablation: Ablation, sim: &SimReport, quiet: bool) -> Result<EngineCheck> {
    let pb = indicatif::ProgressBar::new(run.data.len() as u64);
    if quiet {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let c = engine_check(run, &run.plan(ablation, true)?, sim, Ring::BOLT, &|_| pb.inc(1))?;
    pb.finish_and_clear();
    Ok(c)
}
