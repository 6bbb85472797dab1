//! `cipherprune simulate`: evaluate with hard masks and the secure
//! approximations, pruned tokens really removed; the ablation switches give
//! the rows of the paper's table, `--theta` the zero-shot baseline.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cipherprune::model::Numerics;
use cipherprune::prune::simulate::simulate;
use cipherprune::fixed::Ring;
use cipherprune::mpc::estimate::SecureCost;
use cipherprune::run::{engine_model, ratio_plan, secure_cost, theta_ramp, zero_shot_plan, Ablation, Run};

use super::progress::Bars;
use super::report::{mode_name, print_table, report_json};
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
    /// Fold the tokens each layer prunes into one kept token (their mean)
    /// instead of dropping them, as `prune --merge` does: measures merging
    /// on thresholds learned without it. The secure cost shown includes the
    /// merged row and its truncation.
    #[arg(long, conflicts_with_all = ["exact", "no_prune", "keep_ratio"])]
    pub merge: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
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
    let plan = if args.merge { plan.merging()? } else { plan };
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
