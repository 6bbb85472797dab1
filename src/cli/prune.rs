//! `cipherprune prune`: learn θ/β from a fine-tuned run (soft stage), then
//! adapt the weights to the hard masks (hard stage).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use cipherprune::config::load_yaml;
use cipherprune::prune::config::PruneConfig;
use cipherprune::train::prune::{prune, PruneRun};

use super::finetune::CommonTrain;
use super::progress::Bars;
use cipherprune::run::{Ablation, Run, RunInfo, RunSpec};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Fine-tuned run directory to start from (written by `finetune`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// GLUE task (default: the checkpoint's).
    #[arg(long)]
    pub task: Option<String>,
    /// GLUE root or task folder (default: the checkpoint's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run directory to create: `soft/` holds the soft stage, the root the
    /// hard stage and the final model with its thresholds.
    #[arg(long)]
    pub out: PathBuf,
    /// Epochs of the soft stage (default: --epochs, else the config's).
    #[arg(long)]
    pub soft_epochs: Option<usize>,
    /// Epochs of the hard stage (default: --epochs, else the config's).
    #[arg(long)]
    pub hard_epochs: Option<usize>,
    /// Learning rate of θ and β (their own optimiser group).
    #[arg(long)]
    pub threshold_lr: Option<f64>,
    /// Temperature T of the soft masks σ((S − θ)/T).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// λ in L_task + λ·(L_prune + α·L_approx): more λ, more pruning.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// α: weight of reduction (low-degree functions) against pruning.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Initial θ for every layer.
    #[arg(long)]
    pub theta_init: Option<f64>,
    /// Initial β − θ.
    #[arg(long)]
    pub beta_gap: Option<f64>,
    /// Learn no pruning thresholds (reduction only).
    #[arg(long)]
    pub no_prune: bool,
    /// Learn no reduction thresholds (pruning only; ablation row).
    #[arg(long)]
    pub no_reduce: bool,
    /// Cumulative soft masks: Π_{k≤l} Mθ_k scales token i from layer l on,
    /// as a hard mask removes it for good.
    #[arg(long)]
    pub cumulative: bool,
    /// Average the mask losses per input, then over inputs, as relative work
    /// is averaged (default: over all live tokens, which weighs long inputs more).
    #[arg(long)]
    pub per_input_loss: bool,
    /// p of the compared score ΣA/(H·n^p), in [0, 1]: 1 the share score
    /// (default), 0 the relative score (mean 1; thresholds mean the same at
    /// every length).
    #[arg(long, value_name = "P")]
    pub score_exponent: Option<f64>,
    /// Learn p per layer with θ (from --score-exponent).
    #[arg(long)]
    pub learn_exponent: bool,
    /// Hold the soft masks' expected relative FLOPs at X in (0, 1] with a
    /// Lagrange multiplier, in both stages, instead of the λ·L_prune penalty.
    #[arg(long, value_name = "X")]
    pub target_flops: Option<f64>,
    /// Learning rate of the FLOPs target's multipliers.
    #[arg(long)]
    pub lagrange_lr: Option<f64>,
    /// Share of the soft stage over which the FLOPs target falls from 1 to
    /// --target-flops (0: the target from the first step).
    #[arg(long, value_name = "SHARE")]
    pub target_warmup: Option<f64>,
    /// Run the stages' checks, and choose the hard stage's checkpoint, on
    /// this many training rows set aside (the split's last) instead of dev.
    #[arg(long, value_name = "ROWS")]
    pub holdout: Option<usize>,
    /// The hard stage's result is the mean of its weights over the steps
    /// after this share of it (e.g. 0.5: its second half), not its best
    /// check: nothing is chosen on dev.
    #[arg(long, value_name = "SHARE")]
    pub average_from: Option<f64>,
    /// Run the hard stage K times from the soft result (seeds seed … seed
    /// + K − 1, in `hard-seed-S/`) and keep the mean of their weights: one
    /// model, the thresholds and the secure cost unchanged.
    #[arg(long, value_name = "K")]
    pub soup: Option<usize>,
    /// Fold the tokens each layer prunes into one kept token, their mean,
    /// instead of dropping them (the hard stage trains with it; simulation,
    /// export, the engine and the protocol follow it).
    #[arg(long)]
    pub merge: bool,
    /// Skip training rows shorter than this many tokens (thresholds are
    /// absolute scores, which scale as 1/length).
    #[arg(long)]
    pub min_train_tokens: Option<usize>,
    /// Distillation weight in [0, 1] towards the starting model's exact
    /// predictions (0: labels only).
    #[arg(long)]
    pub distill: Option<f64>,
    /// Model to distil from (default: --checkpoint), e.g. the fine-tuned run
    /// when --checkpoint is an earlier pruning run.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Rank distillation weight (0: off): every layer's token scores learn
    /// the ranking of the teacher's last-layer scores.
    #[arg(long, value_name = "W")]
    pub rank_distill: Option<f64>,
    #[arg(long)]
    pub save_every: Option<usize>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[command(flatten)]
    pub common: CommonTrain,
}

pub(super) fn resolve(args: &PruneArgs) -> Result<PruneConfig> {
    let saved = args.out.join("prune.yaml");
    let resumed = args.common.resume && saved.is_file();
    let mut cfg: PruneConfig = match (&args.common.config, resumed) {
        (_, true) => load_yaml(&saved)?,
        (Some(p), false) => load_yaml(p)?,
        (None, false) => PruneConfig::default(),
    };
    let before = cfg.clone();
    if let Some(c) = &args.checkpoint {
        cfg.checkpoint = c.clone();
    }
    // Without a config file, task, data and length come from the checkpoint.
    if args.common.config.is_none() && !resumed {
        let info = RunInfo::read(&cfg.checkpoint)?;
        if let Some(t) = info.task { cfg.task = t; }
        if let Some(d) = info.data_dir { cfg.data_dir = d; }
        if let Some(m) = info.max_seq_len { cfg.max_seq_len = m; }
    }
    if let Some(v) = &args.task { cfg.task = v.clone(); }
    if let Some(v) = &args.data_dir { cfg.data_dir = v.clone(); }
    let c = &args.common;
    if let Some(e) = c.epochs { cfg.soft_epochs = e; cfg.hard_epochs = e; }
    if let Some(v) = args.soft_epochs { cfg.soft_epochs = v; }
    if let Some(v) = args.hard_epochs { cfg.hard_epochs = v; }
    if let Some(v) = args.threshold_lr { cfg.threshold_lr = v; }
    if let Some(v) = args.temperature { cfg.temperature = v; }
    if let Some(v) = args.lambda { cfg.lambda = v; }
    if let Some(v) = args.alpha { cfg.alpha = v; }
    if let Some(v) = args.theta_init { cfg.theta_init = v; }
    if let Some(v) = args.beta_gap { cfg.beta_gap_init = v; }
    if args.no_prune { cfg.prune = false; }
    if args.no_reduce { cfg.reduce = false; }
    if args.cumulative { cfg.cumulative = true; }
    if args.per_input_loss { cfg.per_input_loss = true; }
    if let Some(v) = args.score_exponent { cfg.score_exponent = v; }
    if args.learn_exponent { cfg.learn_exponent = true; }
    if let Some(v) = args.target_flops { cfg.target_flops = Some(v); }
    if let Some(v) = args.lagrange_lr { cfg.lagrange_lr = v; }
    if let Some(v) = args.target_warmup { cfg.target_warmup = v; }
    if let Some(v) = args.min_train_tokens { cfg.min_train_tokens = v; }
    if args.holdout.is_some() { cfg.holdout = args.holdout; }
    if args.average_from.is_some() { cfg.average_from = args.average_from; }
    if args.merge { cfg.merge = true; }
    if let Some(v) = args.soup { cfg.soup = v; }
    if let Some(v) = args.distill { cfg.distill = v; }
    if let Some(v) = &args.teacher { cfg.teacher = Some(v.clone()); }
    if let Some(v) = args.rank_distill { cfg.rank_distill = v; }
    if let Some(v) = args.save_every { cfg.save_every = v; }
    if let Some(v) = args.eval_every { cfg.eval_every = v; }
    if let Some(v) = c.batch_size { cfg.batch_size = v; }
    if let Some(v) = c.learning_rate { cfg.learning_rate = v; }
    if let Some(v) = c.max_seq_len { cfg.max_seq_len = v; }
    if let Some(v) = c.seed { cfg.seed = v; }
    if c.limit.is_some() { cfg.limit = c.limit; }
    if c.eval_limit.is_some() { cfg.eval_limit = c.eval_limit; }
    if let Some(v) = c.log_every { cfg.log_every = v; }
    if resumed && cfg != before {
        bail!("`{}` holds this run's configuration; a resumed run cannot change it (drop the changed flags)", saved.display());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// After a finished run: the dev simulation of the result (batched
/// masks), `summary.json`, and the pictures.
pub fn finish(out: &std::path::Path, result: &std::path::Path, quiet: bool) -> Result<serde_json::Value> {
    let run = Run::load(&RunSpec { checkpoint: result.to_path_buf(), split: "dev".into(), ..Default::default() })?;
    let plan = run.plan(Ablation::default(), false)?;
    let r = cipherprune::prune::simulate::simulate(&run.model, &plan, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(quiet))?;
    let secure = cipherprune::run::secure_cost(&cipherprune::run::engine_model(&run.loaded, cipherprune::fixed::Ring::BOLT)?, &plan, &r.shapes);
    let summary = super::report::report_json(run.task, "dev", super::report::mode_name(&plan), &r, Some(&secure));
    cipherprune::io::write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    cipherprune::plot::tokens_per_layer(&out.join("tokens_kept.svg"), &format!("{}: tokens entering each layer (dev mean)", run.task.name()), &r.tokens_entering_per_layer, r.real_tokens)?;
    let mut series = vec![];
    // A soup's hard stages (`hard-seed-S/`) each follow the soft stage.
    let mut soup: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(out)
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("hard-seed-")).map(|s| (format!("hard (seed {s})"), e.path()))).collect())
        .unwrap_or_default();
    soup.sort();
    let mut stages = vec![("soft".to_string(), out.join("soft")), ("hard".to_string(), out.to_path_buf())];
    stages.extend(soup);
    let mut soft_end = 0.0;
    for (stage, dir) in stages {
        let m = dir.join("metrics.jsonl");
        if m.is_file() {
            let offset = if stage == "soft" { 0.0 } else { soft_end };
            for key in ["loss", "task_loss"] {
                let pts: Vec<(f64, f64)> = cipherprune::plot::series_from_metrics(&m, "train", key)?.into_iter().map(|(x, y)| (x + offset, y)).collect();
                if !pts.is_empty() {
                    if stage == "soft" {
                        soft_end = soft_end.max(pts.last().map_or(0.0, |q| q.0));
                    }
                    series.push((format!("{stage} {key}"), pts));
                }
            }
        }
    }
    if !series.is_empty() {
        cipherprune::plot::lines(&out.join("loss.svg"), "threshold learning: loss per step (soft, then hard stage)", "step", "loss", &series)?;
    }
    Ok(summary)
}

pub fn run(args: PruneArgs) -> Result<()> {
    let cfg = resolve(&args)?;
    let soup_started = std::fs::read_dir(&args.out).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("hard-seed-")));
    if !args.common.resume && (args.out.join("checkpoints").exists() || args.out.join("soft").exists() || soup_started) {
        bail!("`{}` already holds a run; pass --resume to continue it or choose another --out", args.out.display());
    }
    let mut bars = Bars::new(args.common.quiet);
    let run = PruneRun { cfg: cfg.clone(), out: args.out.clone(), resume: args.common.resume, stop_after: args.common.stop_after };
    let r = prune(&run, &mut bars).with_context(|| format!("threshold learning into `{}` failed", args.out.display()))?;
    let interrupted = r.soft.as_ref().is_some_and(|o| o.interrupted) || r.hard.as_ref().is_some_and(|o| o.interrupted);
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
    println!(
        "prune {}: {} on {} ({} train examples)",
        if interrupted { "stopped (resume with --resume)" } else { "done" },
        cfg.checkpoint.display(),
        cfg.task,
        r.train_examples
    );
    println!("  θ per layer: {}", fmt(&r.theta));
    println!("  β per layer: {}", fmt(&r.beta));
    if r.exponent.iter().any(|&p| p != 1.0) {
        println!("  p per layer: {}", fmt(&r.exponent));
    }
    let on = if cfg.holdout.is_some() { "held-out training rows" } else { "dev" };
    if !r.soup.is_empty() {
        let each: Vec<String> = r.soup.iter().map(|(s, m)| format!("seed {s} {}", m.map_or("-".into(), |m| format!("{m:.4}")))).collect();
        println!("  hard stages on {on}: {}; the result is the mean of their weights", each.join(", "));
    } else if let Some(h) = &r.hard {
        if let Some(best) = h.state.best_metric {
            let rw = h.state.best.get("relative_work").copied().unwrap_or(f64::NAN);
            match cfg.average_from {
                Some(share) => println!("  hard stage result: its weights averaged from {share} of it on, on {on} at the end: main metric {best:.4}, relative work {rw:.3}"),
                None => println!("  hard stage best on {on} (step {}): main metric {best:.4}, relative work {rw:.3}", h.state.best_step),
            }
        }
    }
    if !interrupted {
        let s = finish(&args.out, &r.result_dir, args.common.quiet)?;
        let main = cipherprune::data::Task::from_name(&cfg.task)?.main_metric();
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  dev (hard masks, approximations): {main} {:.4}, relative work {:.3}, relative FLOPs {:.3}, secure bytes {:.3} and rounds {:.3}, tokens kept per layer {}",
            f(main), f("relative_work"), f("relative_flops"), f("secure_bytes_ratio"), f("secure_rounds_ratio"), s["tokens_kept_per_layer"]
        );
        println!("  plots: {}/loss.svg, {}/tokens_kept.svg", args.out.display(), args.out.display());
    }
    println!("result: {} (next: cipherprune simulate --checkpoint {0}; cipherprune export --checkpoint {0} --out thresholds.yaml)", r.result_dir.display());
    Ok(())
}
