//! `cipherprune simulate`: evaluate with hard masks and the secure
//! approximations, pruned tokens really removed; the ablation switches give
//! the rows of the paper's table. Also the shared loading of a pruned run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use cipherprune::data::{Encoded, Task};
use cipherprune::model::{Bert, Masking, Numerics, Plan};
use cipherprune::prune::config::PruneConfig;
use cipherprune::prune::file::{sha256_file, ThresholdFile};
use cipherprune::prune::simulate::{simulate, SimReport};
use cipherprune::prune::Thresholds;
use cipherprune::train::finetune::{load_model, load_split, Loaded};
use cipherprune::train::prune::THRESHOLDS_FILE;

use super::progress::Bars;
use super::runinfo::{EvalData, RunInfo};

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
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A pruned (or fine-tuned) run ready to simulate.
pub struct PrunedRun {
    pub loaded: Loaded,
    pub model: Bert,
    pub task: Task,
    pub data: Vec<Encoded>,
    pub max_seq_len: usize,
    /// θ and β, if the run or file has them.
    pub thresholds: Option<(Vec<f64>, Vec<f64>)>,
    pub prune_cfg: Option<PruneConfig>,
    pub weights_sha256: String,
}

pub fn load_run(checkpoint: &Path, thresholds: Option<&Path>, task: &Option<String>, data_dir: &Option<PathBuf>, split: &str, limit: Option<usize>, max_seq_len: Option<usize>) -> Result<PrunedRun> {
    let info = RunInfo::read(checkpoint)?;
    let task = Task::from_name(&info.task(task)?)?;
    let data_dir = info.data_dir(data_dir)?;
    let max_len = max_seq_len.or(info.max_seq_len).unwrap_or(128);
    let loaded = load_model(&checkpoint.to_string_lossy(), None, max_len, 0)?;
    let k = loaded.cfg.num_labels.context("the checkpoint has no task head: fine-tune it first")?;
    if k != task.num_labels() {
        bail!("`{}` has a {k}-label head but {} needs {}: a checkpoint for another task", checkpoint.display(), task.name(), task.num_labels());
    }
    let model = Bert::new(&loaded.cfg, &loaded.params, Some(k))?;
    let weights_sha256 = sha256_file(&loaded.files.weights)?;
    let thresholds = load_thresholds(checkpoint, thresholds, &loaded, task, &weights_sha256)?;
    let data = load_split(&loaded.tokenizer, &data_dir, task, split, limit)?;
    Ok(PrunedRun { loaded, model, task, data, max_seq_len: max_len, thresholds, prune_cfg: info.prune, weights_sha256 })
}

/// The thresholds of a run: from `--thresholds` (checked against the
/// model and task) or the run's own `thresholds.safetensors`; `None` when it
/// has neither.
pub fn load_thresholds(checkpoint: &Path, thresholds: Option<&Path>, loaded: &Loaded, task: Task, weights_sha256: &str) -> Result<Option<(Vec<f64>, Vec<f64>)>> {
    Ok(match thresholds {
        Some(f) => {
            let file = ThresholdFile::load(f)?;
            file.check_model(f, &loaded.cfg, weights_sha256)?;
            if file.task != task.name() {
                bail!("`{}`: field `task` is {} but the run is {}", f.display(), file.task, task.name());
            }
            Some((file.thetas(), file.betas()))
        }
        None => {
            let p = checkpoint.join(THRESHOLDS_FILE);
            if p.is_file() {
                let t = Thresholds::new(loaded.cfg.num_hidden_layers, 0.0, 1.0)?;
                t.restore_from(&p)?;
                Some(t.values()?)
            } else {
                None
            }
        }
    })
}

/// The plan the switches ask for, checked against what the run has.
pub fn plan_of(run: &PrunedRun, exact: bool, no_prune: bool, no_reduce: bool, physical: bool) -> Result<Plan> {
    if exact {
        return Ok(Plan { numerics: Numerics::Exact, masking: Masking::Off, physical: false });
    }
    let (want_theta, want_beta) = (!no_prune && run.prune_cfg.as_ref().is_none_or(|c| c.prune), !no_reduce && run.prune_cfg.as_ref().is_none_or(|c| c.reduce));
    let masking = match (&run.thresholds, want_theta || want_beta) {
        (_, false) => Masking::Hard { theta: None, beta: None },
        (None, true) => bail!("the checkpoint has no thresholds ({THRESHOLDS_FILE}): run `prune` first, pass --thresholds, or simulate with --no-prune --no-reduce"),
        (Some((t, b)), true) => Masking::Hard { theta: want_theta.then(|| t.clone()), beta: want_beta.then(|| b.clone()) },
    };
    Ok(Plan { numerics: Numerics::Approx, masking, physical })
}

/// The fixed keep-ratio schedule of `--keep-ratio` for a model of `layers` layers.
pub fn ratio_plan(keep: &[f64], layers: usize, physical: bool) -> Result<Plan> {
    let keep = match keep.len() {
        1 => vec![keep[0]; layers],
        n if n == layers => keep.to_vec(),
        n => bail!("--keep-ratio: {n} values for a model of {layers} layers (give 1 or {layers})"),
    };
    if let Some((l, r)) = keep.iter().enumerate().find(|(_, r)| !(**r > 0.0 && **r <= 1.0)) {
        bail!("--keep-ratio: layer {l} has {r}, not a share in (0, 1]");
    }
    Ok(Plan { numerics: Numerics::Approx, masking: Masking::Ratio { keep }, physical })
}

pub fn mode_name(plan: &Plan) -> &'static str {
    match (&plan.numerics, &plan.masking) {
        (Numerics::Exact, _) => "exact",
        (_, Masking::Ratio { .. }) => "approximations + fixed keep-ratio schedule",
        (_, Masking::Hard { theta: None, beta: None }) | (_, Masking::Off) => "high-degree approximations",
        (_, Masking::Hard { theta: Some(_), beta: None }) => "approximations + pruning",
        (_, Masking::Hard { theta: None, beta: Some(_) }) => "approximations + reduction",
        _ => "approximations + pruning + reduction",
    }
}

pub fn report_json(task: Task, split: &str, mode: &str, r: &SimReport) -> serde_json::Value {
    let mut obj = serde_json::json!({
        "task": task.name(), "split": split, "mode": mode,
        "tokens_kept_per_layer": r.tokens_kept_per_layer,
        "tokens_entering_per_layer": r.tokens_entering_per_layer,
        "kept_histogram": r.kept_histogram,
        "reduced_per_layer": r.reduced_per_layer,
        "relative_work": r.relative_work,
        "relative_work_padded": r.relative_work_padded,
        "by_length": r.by_length,
        "real_tokens": r.real_tokens,
        "seconds": r.seconds,
        "examples_per_second": r.examples_per_second,
    });
    for (k, v) in &r.metrics {
        obj[k.as_str()] = if k == "examples" { serde_json::json!(*v as u64) } else { serde_json::json!(v) };
    }
    obj
}

pub fn print_table(task: Task, split: &str, mode: &str, r: &SimReport) {
    println!("{} {split}, {mode} ({} examples, {:.1}s, {:.1} examples/s)", task.name(), r.metrics.get("examples").copied().unwrap_or(0.0), r.seconds, r.examples_per_second);
    for (k, v) in r.metrics.iter().filter(|(k, _)| *k != "examples") {
        println!("  {k:<14} {v:.4}");
    }
    println!("  relative work  {:.3} of the real tokens' layer work ({:.3} against inputs padded to max length)", r.relative_work, r.relative_work_padded);
    println!("  layer  entering  kept   reduced  kept/real histogram (0–10 % … 90–100 %)");
    for l in 0..r.tokens_kept_per_layer.len() {
        let h: Vec<String> = r.kept_histogram[l].iter().map(|c| c.to_string()).collect();
        println!("  {l:>5}  {:>8.1}  {:>5.1}  {:>6.1} %  [{}]", r.tokens_entering_per_layer[l], r.tokens_kept_per_layer[l], 100.0 * r.reduced_per_layer[l], h.join(" "));
    }
    let main = task.main_metric();
    println!("  by input length (equal-size groups)   {main:<10} relative work");
    for g in &r.by_length {
        println!("  {:>3}–{:<3} tokens, {:>5} examples     {:<10.4} {:.3}", g.min_tokens, g.max_tokens, g.examples, g.metrics.get(main).copied().unwrap_or(f64::NAN), g.relative_work);
    }
}

pub fn run(args: SimArgs) -> Result<()> {
    let d = &args.data;
    let run = load_run(&d.checkpoint, args.thresholds.as_deref(), &d.task, &d.data_dir, &d.split, d.limit, d.max_seq_len)?;
    let plan = match &args.keep_ratio {
        Some(keep) => ratio_plan(keep, run.model.layers.len(), !args.batched)?,
        None => plan_of(&run, args.exact, args.no_prune, args.no_reduce, !args.batched)?,
    };
    let r = simulate(&run.model, &plan, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(args.json))?;
    let mode = mode_name(&plan);
    if args.json {
        println!("{}", report_json(run.task, &d.split, mode, &r));
    } else {
        print_table(run.task, &d.split, mode, &r);
    }
    Ok(())
}
