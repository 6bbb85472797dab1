//! `cipherprune secure-eval`: the float simulation and the fixed-point
//! engine on the same examples — does the accuracy hold under the
//! arithmetic the secure protocol computes, and what does it cost?

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cipherprune::fixed::{Ring, Truncation};
use cipherprune::model::Masking;
use cipherprune::prune::check::{compare, shown, Comparison};
use cipherprune::prune::simulate::simulate;
use cipherprune::mpc::eval::{cost_report, run_examples, SharesInput, SharesSummary};
use cipherprune::mpc::shares::{SharesOptions, Suite};
use cipherprune::mpc::sort::Compaction;
use cipherprune::secure::bert::{encode_input, EngineConfig, EngineModel, LayerThresholds};
use cipherprune::secure::run::{run_all, totals, EngineInput};

use super::progress::Bars;
use super::report::mode_name;
use cipherprune::mpc::estimate::{engine_shapes, secure_ratios, Protocol};
use cipherprune::run::{engine_weights, Ablation, Run};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RingPreset {
    /// ℓ = 37, s = 12 (BOLT).
    Bolt,
    /// ℓ = 32, s = 12 (CipherPrune's benchmarks).
    Cipherprune,
    /// ℓ = 64, s = 16 (CrypTen).
    Crypten,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TruncMode {
    /// Arithmetic shift (faithful truncation).
    Exact,
    /// ±1-ulp stochastic error of local share truncation, seeded.
    Probabilistic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The cleartext fixed-point engine only.
    Engine,
    /// Also run the two-party protocol over secret shares (the same
    /// examples) and check its logits against the engine's bit for bit.
    /// Single-process: server, client and dealer are threads of this
    /// process, which then holds everything — a measurement setting, not a
    /// secure deployment (use `dealer`, `serve` and `client` for that).
    Shares,
}

#[derive(Args, Debug)]
pub struct SecureEvalArgs {
    #[command(flatten)]
    pub data: super::runinfo::EvalData,
    /// Threshold file written by `export` (default: the run's own thresholds).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    #[command(flatten)]
    pub ring: RingArgs,
    #[arg(long, value_enum, default_value = "exact")]
    pub truncation: TruncMode,
    /// Seed of probabilistic truncation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `shares` adds the real two-party protocol: bytes, rounds and time per
    /// operator and layer, pruned against unpruned (slower: use --limit).
    #[arg(long, value_enum, default_value = "engine")]
    pub backend: BackendKind,
    /// How the protocol moves kept rows together and partitions reduced ones.
    /// (default shuffle: cheapest in every measurement, see the README)
    #[arg(long, value_enum, default_value = "shuffle")]
    pub compaction: Compaction,
    /// Comparisons and exact truncations: `and-tree` (bit correlations and a
    /// comparison circuit, 7 rounds each at ℓ = 37), `fss` (the dealer's
    /// DCF keys, one round each; keys are offline traffic) or `fss-bounded`
    /// (smaller truncation keys, exact for values at least 2^(ℓ−9) from the
    /// ring's edge).
    #[arg(long = "protocol", value_enum, default_value = "and-tree")]
    pub suite: Suite,
}

/// The ring flags shared by `secure-eval` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct RingArgs {
    /// Ring preset (overridden by --ring-bits / --frac-bits).
    #[arg(long, value_enum, default_value = "bolt")]
    pub ring: RingPreset,
    #[arg(long)]
    pub ring_bits: Option<u32>,
    #[arg(long)]
    pub frac_bits: Option<u32>,
}

impl RingArgs {
    pub fn resolve(&self) -> Result<Ring> {
        let preset = match self.ring {
            RingPreset::Bolt => Ring::BOLT,
            RingPreset::Cipherprune => Ring::CIPHERPRUNE,
            RingPreset::Crypten => Ring::CRYPTEN,
        };
        Ok(Ring::new(self.ring_bits.unwrap_or(preset.bits()), self.frac_bits.unwrap_or(preset.frac()))?)
    }
}

fn bar(hidden: bool, len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    if hidden {
        b.set_draw_target(ProgressDrawTarget::hidden());
    }
    b.set_style(ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta}").expect("static template"));
    b.set_prefix(what.to_string());
    b
}

pub fn run(args: SecureEvalArgs) -> Result<()> {
    let ring = args.ring.resolve()?;
    let truncation = match args.truncation {
        TruncMode::Exact => Truncation::Exact,
        TruncMode::Probabilistic => Truncation::Probabilistic { seed: args.seed },
    };
    let d = &args.data;
    let run = Run::load(&d.spec(args.thresholds.clone()))?;
    let quiet = args.json;
    let exact = simulate(&run.model, &run.plan(Ablation { exact: true, ..Default::default() }, false)?, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(quiet))?;
    let plan = run.plan(Ablation::default(), true)?;
    let sim = simulate(&run.model, &plan, run.task, &run.data, 64, run.max_seq_len, &mut Bars::new(quiet))?;
    let (thetas, betas, exponents, merge) = match &plan.masking {
        Masking::Hard { theta, beta, exponent, merge } => (theta.clone(), beta.clone(), exponent.clone(), *merge),
        _ => (None, None, None, false),
    };

    let weights = engine_weights(&run.loaded)?;
    let model = EngineModel::from_weights(&weights, &ring);
    let inputs: Vec<EngineInput> = run.data.iter().map(|e| EngineInput { ids: &e.input_ids, type_ids: &e.type_ids }).collect();
    let pruned_cfg = EngineConfig { ring, truncation, thetas, betas, exponents, merge };
    let unpruned_cfg = EngineConfig { thetas: None, betas: None, merge: false, ..pruned_cfg.clone() };
    let started = Instant::now();
    let pb = bar(quiet, inputs.len(), "engine");
    let pruned = run_all(&weights, &model, &pruned_cfg, &inputs, &|_| pb.inc(1))?;
    pb.finish_and_clear();
    let engine_seconds = started.elapsed().as_secs_f64();
    let pb = bar(quiet, inputs.len(), "unpruned");
    let unpruned = run_all(&weights, &model, &unpruned_cfg, &inputs, &|_| pb.inc(1))?;
    pb.finish_and_clear();
    let (cost_p, overflow) = totals(&model, &pruned);
    let (cost_u, _) = totals(&model, &unpruned);
    let labels: Vec<f32> = run.data.iter().map(|e| e.label).collect();
    let c = compare(run.task, &labels, &sim, &pruned, &unpruned, &cost_p, &cost_u, &overflow);
    let eps = inputs.len() as f64 / engine_seconds.max(1e-9);

    let mut report = serde_json::json!({
        "task": run.task.name(), "split": d.split, "checkpoint": d.checkpoint,
        "thresholds": args.thresholds, "mode": mode_name(&plan),
        "ring": { "bits": ring.bits(), "frac": ring.frac() }, "truncation": truncation,
        "examples": inputs.len(),
        "exact": shown(&exact.metrics), "simulation": shown(&sim.metrics), "engine": shown(&c.engine),
        "engine_unpruned": shown(&c.engine_unpruned),
        "simulation_tokens_kept_per_layer": sim.tokens_kept_per_layer, "relative_work": sim.relative_work, "relative_flops": sim.relative_flops,
        "examples_per_second": eps, "engine_seconds": engine_seconds, "compaction": args.compaction.name(),
    });
    // Per operator class and layer, for the pruned and the unpruned model.
    report["cost_by_layer"] = serde_json::json!({ "pruned": cost_p, "unpruned": cost_u });
    let detail = serde_json::to_value(&c)?;
    for key in ["agreement", "logit_diff_max", "logit_diff_mean", "flips_per_layer", "examples_with_flips", "engine_tokens_kept_per_layer", "engine_reduced_per_layer", "overflows", "overflow_rows", "costs"] {
        report[key] = detail[key].clone();
    }
    // The protocol's online cost from the engine's shapes (what a
    // two-party run of these thresholds reveals), without running it.
    let shapes = engine_shapes(&pruned, run.data.iter().map(|e| e.len()));
    let proto = Protocol { truncation, compaction: args.compaction, suite: args.suite };
    let secure = secure_ratios(&model, &LayerThresholds::from_config(&pruned_cfg, model.num_layers()), proto, &shapes);
    report["secure_cost"] = serde_json::to_value(secure)?;
    report["secure_bytes_ratio"] = secure.bytes_ratio.into();
    report["secure_rounds_ratio"] = secure.rounds_ratio.into();
    let mut shares = None;
    if args.backend == BackendKind::Shares {
        let sinputs = run
            .data
            .iter()
            .map(|e| {
                let emb = weights.embed(&e.input_ids, Some(&e.type_ids))?;
                Ok(SharesInput { input: encode_input(ring, &emb).0, tokens: e.input_ids.len() })
            })
            .collect::<Result<Vec<_>, cipherprune::secure::weights::WeightsError>>()?;
        let opts = SharesOptions { truncation, compaction: args.compaction, analysis: false, suite: args.suite };
        let layers = model.num_layers();
        let mut both = Vec::new();
        for (what, cfg, results) in [("2PC", &pruned_cfg, &pruned), ("2PC full", &unpruned_cfg, &unpruned)] {
            let thr = LayerThresholds::from_config(cfg, layers);
            let logits: Vec<Vec<u64>> = results.iter().map(|r| r.logits_ring.clone()).collect();
            let pb = bar(quiet, sinputs.len(), what);
            let s = run_examples(&model, &thr, opts, &sinputs, &logits, args.seed, &|| pb.inc(1))
                .map_err(|e| anyhow::anyhow!("two-party run failed: {e}"))?;
            pb.finish_and_clear();
            both.push(s);
        }
        let unp = both.pop().expect("two runs");
        let pr = both.pop().expect("two runs");
        let identical = pr.mismatched.is_empty() && unp.mismatched.is_empty();
        let costs = cost_report(&pr, Some(&unp));
        let total = pr.total();
        report["bit_identical"] = identical.into();
        report["bytes_sent"] = serde_json::json!({
            "server_to_client": total.server_to_client_bytes, "client_to_server": total.client_to_server_bytes, "total": total.bytes,
        });
        report["rounds"] = total.rounds.into();
        report["offline"] = costs["offline"].clone();
        report["per_operator"] = costs["per_operator"].clone();
        report["shares"] = serde_json::json!({
            "compaction": args.compaction.name(), "protocol": args.suite, "examples": pr.examples,
            "mismatched_pruned": pr.mismatched, "mismatched_unpruned": unp.mismatched,
            "tokens_kept_per_layer": pr.kept_per_layer.iter().map(|&k| k as f64 / pr.examples.max(1) as f64).collect::<Vec<_>>(),
            "cost": costs,
        });
        shares = Some((pr, unp));
    }
    let suffix = match (&shares, args.suite) {
        (None, _) => "",
        (Some(_), Suite::AndTree) => "-shares",
        (Some(_), Suite::Fss) => "-shares-fss",
        (Some(_), Suite::FssBounded) => "-shares-fss-bounded",
    };
    let name = format!("secure-eval-{}-{}-{}{suffix}.json", d.split, ring.bits(), ring.frac());
    let path = d.checkpoint.join(&name);
    cipherprune::io::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    if args.json {
        println!("{report}");
    } else {
        print_table(&report, &c, &path);
        if let Some((p, u)) = &shares {
            print_shares(&report, p, u);
        }
    }
    Ok(())
}

fn fmt_metrics(v: &serde_json::Value) -> String {
    v.as_object().map(|o| o.iter().map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

fn print_table(r: &serde_json::Value, c: &Comparison, path: &std::path::Path) {
    if c.overflows > 0 {
        println!("OVERFLOW: {} values left the ring (see overflow rows below); engine results are not trustworthy at this precision", c.overflows);
    } else {
        println!("no overflow");
    }
    println!("{} {} on ring {}/{} ({} examples, {}, truncation {})", r["task"].as_str().unwrap_or(""), r["split"].as_str().unwrap_or(""), r["ring"]["bits"], r["ring"]["frac"], r["examples"], r["mode"].as_str().unwrap_or(""), r["truncation"]["mode"].as_str().unwrap_or(""));
    println!("  exact float model      {}", fmt_metrics(&r["exact"]));
    println!("  float simulation       {}", fmt_metrics(&r["simulation"]));
    println!("  fixed-point engine     {}", fmt_metrics(&r["engine"]));
    println!("  engine, unpruned       {}", fmt_metrics(&r["engine_unpruned"]));
    println!("  agreement sim/engine   {:.2} % of examples; logits differ by max {:.4}, mean {:.5}", 100.0 * c.agreement, c.logit_diff_max, c.logit_diff_mean);
    println!("  threshold flips        {:?} per layer ({} examples with any)", c.flips_per_layer, c.examples_with_flips);
    let kept: Vec<String> = c.engine_tokens_kept_per_layer.iter().map(|v| format!("{v:.1}")).collect();
    println!("  engine tokens kept     [{}] per layer (simulation relative work {:.3})", kept.join(", "), r["relative_work"].as_f64().unwrap_or(f64::NAN));
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!("  relative FLOPs         {:.3} (simulation); secure online bytes {:.3}, rounds {:.3} of the unpruned model's (engine shapes, {} compaction)", f("relative_flops"), f("secure_bytes_ratio"), f("secure_rounds_ratio"), r["compaction"].as_str().unwrap_or("shuffle"));
    println!("  engine speed           {:.1} examples/s", r["examples_per_second"].as_f64().unwrap_or(0.0));
    println!("  cost, pruned / unpruned    products (mults, MACs)   comparisons   truncations");
    for k in &c.costs {
        let f = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.3}"));
        if k.unpruned.elements + k.pruned.elements == 0 {
            continue;
        }
        if k.unpruned.elements == 0 {
            // Pruning and reduction exist only in the pruned model: show what they add.
            println!("    {:<22} adds {} comparisons, {} MUXes, {} truncations", k.class, k.pruned.comparisons, k.pruned.muxes, k.pruned.truncations);
        } else {
            println!("    {:<22} {:>22} {:>13} {:>13}", k.class, f(k.ratio_mults), f(k.ratio_comparisons), f(k.ratio_truncations));
        }
    }
    for o in &c.overflow_rows {
        println!("  overflow: {} in layer {:?}: {} values, up to {} bits", o.class, o.layer, o.count, o.max_bits);
    }
    println!("report: {}", path.display());
}

fn print_shares(r: &serde_json::Value, p: &SharesSummary, u: &SharesSummary) {
    use cipherprune::mpc::cost::{LAN, WAN};
    use cipherprune::secure::report::OpClass;
    let ok = r["bit_identical"].as_bool().unwrap_or(false);
    println!(
        "two-party protocol ({} compaction, {} examples): {}",
        r["shares"]["compaction"].as_str().unwrap_or(""),
        p.examples,
        if ok {
            "opened logits bit-identical to the engine".to_string()
        } else if r["truncation"]["mode"] == "probabilistic" {
            format!("{} pruned and {} unpruned examples differ from the engine, as expected: probabilistic truncation is local share truncation in the protocol and seeded noise in the engine (only exact is bit-identical)", p.mismatched.len(), u.mismatched.len())
        } else {
            format!("{} pruned and {} unpruned examples DIFFER from the engine", p.mismatched.len(), u.mismatched.len())
        }
    );
    let (pe, ue) = (p.per_example(), u.per_example());
    let mb = |b: u64| b as f64 / 1e6;
    println!("  per example            pruned        unpruned   ratio");
    println!("  bytes (MB)         {:>10.3}      {:>10.3}   {:.3}", mb(pe.bytes), mb(ue.bytes), pe.bytes as f64 / ue.bytes.max(1) as f64);
    println!("  rounds             {:>10}      {:>10}   {:.3}", pe.rounds, ue.rounds, pe.rounds as f64 / ue.rounds.max(1) as f64);
    println!("  in-process time (s){:>10.3}      {:>10.3}   {:.3}", pe.seconds, ue.seconds, pe.seconds / ue.seconds.max(1e-12));
    for net in [LAN, WAN] {
        println!("  {} estimate (s)    {:>10.3}      {:>10.3}   {:.3}", net.name, pe.on(&net), ue.on(&net), pe.on(&net) / ue.on(&net));
    }
    println!("  online dealer bytes per example: {:.3} MB in {} round trips (pool refills: {})", mb(pe.dealer_bytes), pe.dealer_round_trips, p.refills);
    let (po, uo) = (p.offline_total().per(p.examples), u.offline_total().per(u.examples));
    println!("  offline per example: {:.3} MB server → client (W − B), {:.3} MB with the dealer, {} rounds + {} dealer round trips, {:.3} s (pruned; unpruned {:.3} MB + {:.3} MB)", mb(po.server_to_client_bytes), mb(po.dealer_bytes), po.rounds, po.dealer_round_trips, po.seconds, mb(uo.server_to_client_bytes), mb(uo.dealer_bytes));
    println!("  per operator (MB per example, rounds)   pruned            unpruned");
    for c in OpClass::ALL {
        let (a, b) = (p.class(c), u.class(c));
        if a.bytes + b.bytes == 0 {
            continue;
        }
        let n = |l: cipherprune::mpc::eval::CostLine, ex: usize| (mb(l.bytes) / ex.max(1) as f64, l.rounds / ex.max(1) as u64);
        let (x, y) = (n(a, p.examples), n(b, u.examples));
        println!("    {:<20} {:>10.3} {:>6}   {:>10.3} {:>6}", c.name(), x.0, x.1, y.0, y.1);
    }
}
