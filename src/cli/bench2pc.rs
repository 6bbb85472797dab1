//! `cipherprune bench-2pc`: what the two-party protocol costs — the three
//! oblivious compactions across sizes and pruning rates, and BERT shapes
//! with the paper's token schedule, pruned against unpruned.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use cipherprune::mpc::bench::{compaction_point, shape, shape_estimate, shape_run, Cut};
use cipherprune::mpc::cost::{LAN, WAN};
use cipherprune::mpc::eval::cost_report;
use cipherprune::mpc::shares::Suite;
use cipherprune::mpc::sort::Compaction;
use cipherprune::secure::report::OpClass;

#[derive(Args, Debug)]
pub struct Bench2pcArgs {
    /// Time swap, shuffle and bitonic compaction for every --n and --pruned.
    #[arg(long)]
    pub compaction: bool,
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    pub n: Vec<usize>,
    /// Fractions of the n tokens pruned.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    pub pruned: Vec<f64>,
    /// Row width (hidden size + the score column).
    #[arg(long, default_value_t = 769)]
    pub width: usize,
    /// BERT shapes to run end to end (medium, base, large), random weights.
    #[arg(long, value_delimiter = ',')]
    pub shapes: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub tokens: Vec<usize>,
    /// How thresholds calibrated on random weights round when scores tie at
    /// the cut: keep at least, or at most, the paper's token counts.
    #[arg(long, value_enum, default_value = "at-least")]
    pub cut: Cut,
    /// The score's length exponent p the shape runs' thresholds compare with
    /// (S = ΣA / (H·n^p), DESIGN.md §2; a public rescaling, no cost of its
    /// own). At 0 the threshold's steps are n times finer than at 1, so the
    /// near-equal scores of random weights split at the paper's counts.
    #[arg(long, default_value_t = 0.0)]
    pub score_exponent: f64,
    /// Compaction used in the shape runs.
    #[arg(long, value_enum, default_value = "shuffle")]
    pub with: Compaction,
    /// Comparisons and exact truncations: `and-tree` (bit correlations and a
    /// comparison circuit, 7 rounds each at ℓ = 37), `fss` (the dealer's
    /// DCF keys, one round each; keys are offline traffic) or `fss-bounded`
    /// (smaller truncation keys, exact for values at least 2^(ℓ−9) from the
    /// ring's edge).
    #[arg(long = "protocol", value_enum, default_value = "and-tree")]
    pub suite: Suite,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the JSON report here (atomically).
    /// With --shapes: the unpruned model's online rounds and bytes per
    /// operator and the DCF keys, from the shapes alone, for both
    /// protocols (seconds, no protocol run).
    #[arg(long)]
    pub estimate: bool,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Bench2pcArgs) -> Result<()> {
    if !args.compaction && args.shapes.is_empty() {
        bail!("nothing to measure: pass --compaction and/or --shapes medium,base,large");
    }
    for s in &args.shapes {
        if shape(s).is_none() {
            bail!("--shapes: unknown shape `{s}` (medium, base, large)");
        }
    }
    if !(0.0..=1.0).contains(&args.score_exponent) {
        bail!("--score-exponent: {} is outside [0, 1]", args.score_exponent);
    }
    let mut report = serde_json::json!({});
    if args.compaction {
        let mut points = Vec::new();
        if !args.json {
            println!("oblivious compaction, rows of {} ring elements (37-bit), both directions", args.width);
            println!("  {:>4} {:>7} {:<8} {:>10} {:>7} {:>9} {:>9} {:>9}", "n", "pruned", "method", "MB", "rounds", "time s", "LAN s", "WAN s");
        }
        for &n in &args.n {
            for &p in &args.pruned {
                let pruned = ((p * n as f64).round() as usize).min(n - 1);
                for c in [Compaction::Swap, Compaction::Shuffle, Compaction::Bitonic] {
                    let pt = compaction_point(c, n, pruned, args.width, args.seed).map_err(|e| anyhow::anyhow!("{e}"))?;
                    if !args.json {
                        println!("  {:>4} {:>7} {:<8} {:>10.3} {:>7} {:>9.3} {:>9.3} {:>9.3}", n, pruned, pt.compaction, pt.bytes as f64 / 1e6, pt.rounds, pt.seconds, pt.lan_seconds, pt.wan_seconds);
                    }
                    points.push(pt);
                }
            }
        }
        report["compaction"] = serde_json::to_value(&points)?;
    }
    let mut shapes = Vec::new();
    if args.estimate {
        for s in &args.shapes {
            for &t in &args.tokens {
                for suite in [Suite::AndTree, Suite::Fss, Suite::FssBounded] {
                    let e = shape_estimate(s, t, suite);
                    if !args.json {
                        println!("bert-{s} at {t} tokens, {}: {} rounds, {:.1} MB online, {} DCF keys ({:.1} GB from the dealer), unpruned", suite.name(), e.rounds, e.online_bytes as f64 / 1e6, e.keys, e.key_bytes as f64 / 1e9);
                        let per: Vec<String> = e.rounds_per_layer.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
                        println!("  rounds per layer: {}", per.join(", "));
                        println!("  pruned to the paper's schedule {:?} (half of the kept reduced): {} rounds, {:.1} MB online", e.pruned_schedule, e.pruned_rounds, e.pruned_online_bytes as f64 / 1e6);
                        let per: Vec<String> = e.pruned_rounds_per_layer.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
                        println!("  pruned rounds per layer: {}", per.join(", "));
                    }
                    shapes.push(serde_json::to_value(&e)?);
                }
            }
        }
        report["estimates"] = serde_json::Value::Array(std::mem::take(&mut shapes));
    }
    for s in args.shapes.iter().filter(|_| !args.estimate) {
        for &t in &args.tokens {
            let r = shape_run(s, t, args.with, args.suite, (args.cut, args.score_exponent), args.seed, &|what| {
                if !args.json {
                    eprintln!("bert-{s} at {t} tokens: {what}");
                }
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let costs = cost_report(&r.pruned, Some(&r.unpruned));
            if !args.json {
                let (p, u) = (r.pruned.total(), r.unpruned.total());
                println!("bert-{} at {} tokens ({} compaction): schedule {:?} (paper {:?}, p = {}); engine and protocol bit-identical: {}", s, t, args.with.name(), r.schedule_reached, r.schedule_target, r.exponent, r.bit_identical);
                println!("  {:<10} {:>12} {:>12} {:>8}", "", "pruned", "unpruned", "ratio");
                println!("  {:<10} {:>12.1} {:>12.1} {:>8.3}", "MB", p.bytes as f64 / 1e6, u.bytes as f64 / 1e6, p.bytes as f64 / u.bytes as f64);
                println!("  {:<10} {:>12} {:>12} {:>8.3}", "rounds", p.rounds, u.rounds, p.rounds as f64 / u.rounds as f64);
                println!("  {:<10} {:>12.1} {:>12.1} {:>8.3}", "compute s", p.seconds, u.seconds, p.seconds / u.seconds);
                for net in [LAN, WAN] {
                    println!("  {:<10} {:>12.1} {:>12.1} {:>8.3}", format!("{} s", net.name), p.on(&net), u.on(&net), p.on(&net) / u.on(&net));
                }
                println!("  {:<10} {:>12.1} {:>12.1}", "online dealer MB", p.dealer_bytes as f64 / 1e6, u.dealer_bytes as f64 / 1e6);
                let (po, uo) = (r.pruned.offline_total(), r.unpruned.offline_total());
                println!("  offline    {:>12.1} {:>12.1}   MB W − B (server → client)", po.server_to_client_bytes as f64 / 1e6, uo.server_to_client_bytes as f64 / 1e6);
                println!("  offline    {:>12.1} {:>12.1}   MB with the dealer", po.dealer_bytes as f64 / 1e6, uo.dealer_bytes as f64 / 1e6);
                println!("  offline    {:>12} {:>12}   rounds + dealer round trips", po.rounds + po.dealer_round_trips, uo.rounds + uo.dealer_round_trips);
                println!("  offline    {:>12.1} {:>12.1}   s (in-process)", po.seconds, uo.seconds);
                if args.suite.dcf() {
                    let (p, u) = (&r.pruned, &r.unpruned);
                    println!("  offline    {:>12.1} {:>12.1}   MB of DCF keys, dealer → client (the client forwards the correction words)", p.key_bytes as f64 / 1e6, u.key_bytes as f64 / 1e6);
                    println!("  offline    {:>12.1} {:>12.1}   s of key generation (the dealer)", p.keygen_seconds, u.keygen_seconds);
                }
                println!("  online pool refills: pruned {}, unpruned {}", r.pruned.refills, r.unpruned.refills);
            }
            // Per element of the unpruned run, beside BOLT's (REFERENCE.md §5).
            let c = shape(s).expect("checked");
            let (l, d, f, h) = (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads);
            let per_element = serde_json::json!([
                ("gelu", OpClass::Gelu, l * t * f), ("softmax", OpClass::Softmax, l * h * t * t), ("layernorm", OpClass::LayerNorm, 2 * l * t * d),
            ].iter().map(|(name, class, elements)| {
                let line = r.unpruned.class(*class);
                serde_json::json!({ "class": name, "elements": elements, "bytes_per_element": line.bytes as f64 / *elements as f64, "rounds_per_layer": line.rounds as f64 / l as f64 })
            }).collect::<Vec<_>>());
            if !args.json {
                for e in per_element.as_array().expect("array") {
                    println!("  unpruned {:<10} {:>8.1} bytes per element, {:>6.0} rounds per layer", e["class"].as_str().unwrap_or(""), e["bytes_per_element"].as_f64().unwrap_or(0.0), e["rounds_per_layer"].as_f64().unwrap_or(0.0));
                }
            }
            let mut v = serde_json::to_value(&r)?;
            v["cost"] = costs;
            v["per_element_unpruned"] = per_element;
            shapes.push(v);
        }
    }
    if !shapes.is_empty() {
        report["shapes"] = serde_json::Value::Array(shapes);
    }
    if let Some(path) = &args.out {
        cipherprune::io::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if args.json {
        println!("{report}");
    }
    Ok(())
}
