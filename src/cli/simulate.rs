//! `cipherprune simulate`: evaluate with hard masks and the secure
//! approximations, pruned tokens really removed; the ablation switches give
//! the rows of the paper's table, `--theta` the zero-shot baseline.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cipherprune::data::Task;
use cipherprune::model::{Masking, Numerics, Plan};
use cipherprune::prune::simulate::{simulate, SimReport};
use cipherprune::fixed::Ring;
use cipherprune::mpc::estimate::SecureCost;
use cipherprune::run::{engine_model, ratio_plan, secure_cost, theta_ramp, zero_shot_plan, Ablation, Run};

use super::progress::Bars;
use super::runinfo::EvalData;

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    #[command(flatten)]
    pub data: EvalData,
    /// Threshold file written by `export` (default: the run's own thresholds).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Exact functions, no pruning: the fine-tuned model itself.
    #[arg(long)]
    pub exact: bool,
    /// Do not prune (θ off).
    #[arg(long)]
    pub no_prune: bool,
    /// Do not reduce (β off: high-degree functions everywhere).
    #[arg(long)]
    pub no_reduce: bool,
    /// Mask pruned tokens in batches instead of removing them (faster to
    /// write, same results; removal is what secure inference does).
    #[arg(long)]
    pub batched: bool,
    /// Instead of thresholds, a fixed schedule ranking by the same score:
    /// after layer l keep the share R_l of each input's live tokens with the
    /// highest scores (one value for all layers, or one per layer). The
    /// baseline that shows what learning θ buys; no reduction.
    #[arg(long, value_name = "R0,R1,..", value_delimiter = ',', conflicts_with_all = ["exact", "no_prune", "thresholds"])]
    pub keep_ratio: Option<Vec<f64>>,
    /// Zero-shot thresholds on any run, a plain fine-tuned one included (no
    /// retraining): prune tokens whose score ΣA/(H·n^p) is under θ_l (one
    /// value for all layers, or one per layer); no reduction. The baseline
    /// every trained point must beat.
    #[arg(long, value_name = "T0,T1,..", value_delimiter = ',', conflicts_with_all = ["exact", "no_prune", "thresholds", "keep_ratio", "theta_ramp"])]
    pub theta: Option<Vec<f64>>,
    /// Zero-shot thresholds on LTP's ramp: θ_l = X · l / L (layer 0 prunes nothing).
    #[arg(long, value_name = "X", conflicts_with_all = ["exact", "no_prune", "thresholds", "keep_ratio"])]
    pub theta_ramp: Option<f64>,
    /// p of the zero-shot score ΣA/(H·n^p), in [0, 1]: 1 the share score,
    /// 0 the relative score (mean 1).
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub exponent: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn mode_name(plan: &Plan) -> &'static str {
    match (&plan.numerics, &plan.masking) {
        (Numerics::Exact, _) => "exact",
        (_, Masking::Ratio { .. }) => "approximations + fixed keep-ratio schedule",
        (_, Masking::Hard { theta: Some(_), beta: None, exponent: Some(_) }) => "approximations + pruning",
        (_, Masking::Hard { theta: None, beta: None, .. }) | (_, Masking::Off) => "high-degree approximations",
        (_, Masking::Hard { theta: Some(_), beta: None, .. }) => "approximations + pruning",
        (_, Masking::Hard { theta: None, beta: Some(_), .. }) => "approximations + reduction",
        _ => "approximations + pruning + reduction",
    }
}

pub fn report_json(task: Task, split: &str, mode: &str, r: &SimReport, secure: Option<&SecureCost>) -> serde_json::Value {
    let mut obj = serde_json::json!({
        "task": task.name(), "split": split, "mode": mode,
        "tokens_kept_per_layer": r.tokens_kept_per_layer,
        "tokens_entering_per_layer": r.tokens_entering_per_layer,
        "kept_histogram": r.kept_histogram,
        "reduced_per_layer": r.reduced_per_layer,
        "relative_work": r.relative_work,
        "relative_flops": r.relative_flops,
        "relative_work_padded": r.relative_work_padded,
        "by_length": r.by_length,
        "real_tokens": r.real_tokens,
        "seconds": r.seconds,
        "examples_per_second": r.examples_per_second,
    });
    for (k, v) in &r.metrics {
        obj[k.as_str()] = if k == "examples" { serde_json::json!(*v as u64) } else { serde_json::json!(v) };
    }
    if let Some(c) = secure {
        obj["secure_bytes_ratio"] = c.bytes_ratio.into();
        obj["secure_rounds_ratio"] = c.rounds_ratio.into();
        obj["secure"] = serde_json::to_value(c).expect("plain numbers");
    }
    obj
}

pub fn print_table(task: Task, split: &str, mode: &str, r: &SimReport, secure: Option<&SecureCost>) {
    println!("{} {split}, {mode} ({} examples, {:.1}s, {:.1} examples/s)", task.name(), r.metrics.get("examples").copied().unwrap_or(0.0), r.seconds, r.examples_per_second);
    for (k, v) in r.metrics.iter().filter(|(k, _)| *k != "examples") {
        println!("  {k:<14} {v:.4}");
    }
    println!("  relative work  {:.3} of the real tokens' layer work ({:.3} against inputs padded to max length)", r.relative_work, r.relative_work_padded);
    println!("  relative FLOPs {:.3} (attention at the tokens entering, FFN at the tokens kept)", r.relative_flops);
    if let Some(c) = secure {
        println!(
            "  secure cost    {:.3} of the unpruned online bytes, {:.3} of its rounds ({:.1} MB and {:.0} rounds per example against {:.1} MB and {:.0}; two-party protocol at 37/12, from the shapes)",
            c.bytes_ratio, c.rounds_ratio, c.bytes / 1e6, c.rounds, c.unpruned_bytes / 1e6, c.unpruned_rounds
        );
    }
    println!("  layer  entering  kept   reduced  kept/real histogram (0–10 % … 90–100 %)");
    for l in 0..r.tokens_kept_per_layer.len() {
        let h: Vec<String> = r.kept_histogram[l].iter().map(|c| c.to_string()).collect();
        println!("  {l:>5}  {:>8.1}  {:>5.1}  {:>6.1} %  [{}]", r.tokens_entering_per_layer[l], r.tokens_kept_per_layer[l], 100.0 * r.reduced_per_layer[l], h.join(" "));
    }
    let main = task.main_metric();
    println!("  by input length (equal-size groups)   {main:<10} work   FLOPs");
    for g in &r.by_length {
        println!("  {:>3}–{:<3} tokens, {:>5} examples     {:<10.4} {:.3}  {:.3}", g.min_tokens, g.max_tokens, g.examples, g.metrics.get(main).copied().unwrap_or(f64::NAN), g.relative_work, g.relative_flops);
    }
}

pub fn run(args: SimArgs) -> Result<()> {
    let d = &args.data;
    let run = Run::load(&d.spec(args.thresholds.clone()))?;
    let (layers, physical) = (run.layers(), !args.batched);
    let plan = match (&args.keep_ratio, &args.theta, args.theta_ramp) {
        (Some(keep), _, _) => ratio_plan(keep, layers, physical)?,
        (_, Some(theta), _) => zero_shot_plan(theta, args.exponent, layers, physical)?,
        (_, _, Some(x)) => zero_shot_plan(&theta_ramp(x, layers), args.exponent, layers, physical)?,
        _ => run.plan(Ablation { exact: args.exact, no_prune: args.no_prune, no_reduce: args.no_reduce }, physical)?,
    };
    let r = simulate(&run.model, &plan, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(args.json))?;
    let secure = (plan.numerics == Numerics::Approx).then(|| -> Result<SecureCost> { Ok(secure_cost(&engine_model(&run.loaded, Ring::BOLT)?, &plan, &r.shapes)) }).transpose()?;
    let mode = mode_name(&plan);
    if args.json {
        println!("{}", report_json(run.task, &d.split, mode, &r, secure.as_ref()));
    } else {
        print_table(run.task, &d.split, mode, &r, secure.as_ref());
    }
    Ok(())
}
