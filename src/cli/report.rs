//! How simulation results are shown: the mode's name, one JSON object,
//! and the table `simulate` prints. Shared by every command that reports a
//! simulation (simulate, prune, sweep).

use cipherprune::data::Task;
use cipherprune::model::{Masking, Numerics, Plan};
use cipherprune::mpc::estimate::SecureCost;
use cipherprune::prune::simulate::SimReport;

pub fn mode_name(plan: &Plan) -> &'static str {
    match (&plan.numerics, &plan.masking) {
        (Numerics::Exact, _) => "exact",
        (_, Masking::Ratio { .. }) => "approximations + fixed keep-ratio schedule",
        (_, Masking::Hard { theta: Some(_), beta: None, merge: true, .. }) => "approximations + pruning (merged)",
        (_, Masking::Hard { theta: Some(_), beta: Some(_), merge: true, .. }) => "approximations + pruning (merged) + reduction",
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

