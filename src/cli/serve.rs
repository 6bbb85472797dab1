//! `cipherprune serve`, `cipherprune client` and `cipherprune dealer`: the
//! pruned model as a real two-party computation over TCP, with the dealer
//! as a third process. The server holds the weights and thresholds; the
//! client tokenizes and embeds its sentence and alone learns the
//! prediction; both learn the length and the per-layer token counts; the
//! dealer learns only the sizes in its requests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::SeedableRng;

use cipherprune::mpc::net::{run_client, run_dealer, serve_one, ClientOptions, DealerOptions, ServerInfo, ServerModel, PROTOCOL};
use cipherprune::mpc::shares::Suite;
use cipherprune::mpc::sort::Compaction;
use cipherprune::secure::bert::{EngineConfig, EngineModel, LayerThresholds};

use cipherprune::model::Masking;
use cipherprune::run::{engine_weights, Ablation, Run, RunSpec};

use super::secure_eval::{RingArgs, TruncMode};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A pruned (or fine-tuned) run directory: the server's model.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Threshold file written by `export` (default: the run's own thresholds).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Serve the model unpruned even if it has thresholds.
    #[arg(long)]
    pub no_prune: bool,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// The dealer (`cipherprune dealer`), its own process; required.
    #[arg(long)]
    pub dealer: Option<String>,
    #[command(flatten)]
    pub ring: RingArgs,
    /// Only `exact` reproduces the engine bit for bit; `probabilistic` is
    /// SecureML's local truncation (no communication, rare large errors).
    #[arg(long, value_enum, default_value = "exact")]
    pub truncation: TruncMode,
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
    /// Stop after this many sessions (0: serve until killed).
    #[arg(long, default_value_t = 0)]
    pub sessions: usize,
    /// Seconds to wait for a client message before giving up on a session.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Seed of the session ids (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args, Debug)]
pub struct DealerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub listen: String,
    /// Stop after this many paired sessions (0: until killed).
    #[arg(long, default_value_t = 0)]
    pub sessions: usize,
    /// Seconds to wait for a party's partner or request.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Seed of the sessions' seeds (default: from the OS; tests only).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// A run directory with the model's config, tokenizer and embedding
    /// table (the client's public parts; nothing else is read).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub connect: String,
    /// The dealer's address (the same dealer as the server's).
    #[arg(long, default_value = "127.0.0.1:7879")]
    pub dealer: String,
    /// The sentence to classify.
    #[arg(long)]
    pub sentence: String,
    /// Second sentence of a pair task (MRPC, RTE, …).
    #[arg(long)]
    pub pair: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Prepare the offline phase for N tokens before the sentence's length
    /// is known (it is announced after; N ≥ the sentence's tokens): the
    /// offline material then depends on nothing but N, and more of it is
    /// sent than an exactly sized phase needs.
    #[arg(long, value_name = "N")]
    pub offline_tokens: Option<usize>,
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Seed of the client's input masks (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

/// A run as a party of the protocol opens it: model, task and thresholds,
/// no dataset.
fn open(checkpoint: &Path, thresholds: Option<PathBuf>, max_len: usize) -> Result<Run> {
    Ok(Run::open(&RunSpec { checkpoint: checkpoint.to_path_buf(), thresholds, max_seq_len: Some(max_len), ..Default::default() })?)
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let Some(dealer) = args.dealer.clone() else {
        bail!("`serve` needs `--dealer ADDR`: the dealer runs as its own process (`cipherprune dealer --listen ADDR`), never inside the server");
    };
    let ring = args.ring.resolve()?;
    let run = open(&args.checkpoint, args.thresholds.clone(), 128)?;
    let (task, sha) = (run.task, &run.weights_sha256);
    // A run without thresholds is served unpruned, as with --no-prune.
    let masks = !args.no_prune && run.thresholds.is_some();
    let plan = run.plan(Ablation { no_prune: !masks, no_reduce: !masks, ..Default::default() }, false)?;
    let Masking::Hard { theta: thetas, beta: betas, exponent: exponents, merge } = plan.masking else {
        bail!("`{}`: the engine serves hard masks only", args.checkpoint.display());
    };
    let weights = engine_weights(&run.loaded)?;
    let model = EngineModel::from_weights(&weights, &ring);
    let layers = model.num_layers();
    let truncation = match args.truncation {
        TruncMode::Exact => cipherprune::fixed::Truncation::Exact,
        TruncMode::Probabilistic => cipherprune::fixed::Truncation::Probabilistic { seed: 0 },
    };
    let cfg = EngineConfig { ring, truncation, thetas, betas, exponents, merge };
    let thresholds = LayerThresholds::from_config(&cfg, layers);
    let public = ServerInfo {
        protocol: PROTOCOL.into(),
        model: format!("{} (weights sha256 {})", args.checkpoint.display(), &sha[..16]),
        config: weights.config.clone(),
        num_labels: model.num_labels(),
        ring,
        truncation,
        compaction: args.compaction,
        suite: args.suite,
        prune: thresholds.iter().map(|t| t.theta.is_some()).collect(),
        reduce: thresholds.iter().map(|t| t.beta.is_some()).collect(),
        merge: thresholds.iter().map(|t| t.merge).collect(),
    };
    let server = ServerModel::new(model, thresholds, public);
    let listener = TcpListener::bind(&args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr} ({} task, ring {ring}, {} compaction, {} comparisons, pruning {}, reduction {})", task.name(), args.compaction.name(), args.suite.name(), server.info.prune.iter().any(|&p| p), server.info.reduce.iter().any(|&r| r));
    let mut rng = match args.seed {
        Some(s) => rand_chacha::ChaCha20Rng::seed_from_u64(s),
        None => rand_chacha::ChaCha20Rng::from_entropy(),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut served = 0;
    loop {
        served += 1;
        match serve_one(&listener, &server, &dealer, &mut rng, timeout) {
            Ok(s) => {
                let c = s.comm.total();
                let o = s.offline;
                println!(
                    "session {served}: {} tokens, kept per layer {:?}; online: sent {:.3} MB, received {:.3} MB, {} rounds, {:.2} s; offline: sent {:.3} MB, {} rounds, {:.2} s; {:.2} s in all",
                    s.tokens, s.kept_per_layer, c.bytes_sent as f64 / 1e6, c.bytes_received as f64 / 1e6, c.rounds, c.time_ns as f64 * 1e-9,
                    o.bytes_sent as f64 / 1e6, o.rounds, o.time_ns as f64 * 1e-9, s.wall.as_secs_f64()
                );
            }
            Err(e) => eprintln!("session {served} failed: {e}"),
        }
        if args.sessions > 0 && served >= args.sessions {
            return Ok(());
        }
    }
}

pub fn client(args: ClientArgs) -> Result<()> {
    let run = open(&args.checkpoint, None, args.max_seq_len)?;
    let loaded = &run.loaded;
    let enc = match &args.pair {
        Some(b) => loaded.tokenizer.encode((args.sentence.as_str(), b.as_str()), true),
        None => loaded.tokenizer.encode(args.sentence.as_str(), true),
    }
    .map_err(|e| anyhow::anyhow!("tokenizing the sentence: {e}"))?;
    let weights = engine_weights(loaded)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let r = run_client(args.connect.as_str(), &args.dealer, &weights, enc.get_ids(), enc.get_type_ids(), ClientOptions { seed, timeout: Duration::from_secs(args.timeout.max(1)), capacity: args.offline_tokens })
        .map_err(|e| anyhow::anyhow!("secure inference with {} failed: {e}", args.connect))?;
    let names = run.task.label_names();
    let best = (0..r.logits.len()).fold(0, |b, i| if r.logits[i] > r.logits[b] { i } else { b });
    let label = if r.logits.len() == 1 { format!("{:.4}", r.logits[0]) } else { names.get(best).map_or(best.to_string(), |s| s.to_string()) };
    let kept: Vec<usize> = r.outcome.trace.kept_per_layer.iter().map(|k| k.len()).collect();
    let c = r.outcome.comm.total();
    let o = r.outcome.offline;
    if args.json {
        println!("{}", serde_json::json!({
            "prediction": label, "logits": r.logits, "tokens": enc.get_ids().len(), "kept_per_layer": kept,
            "bytes_sent": c.bytes_sent, "bytes_received": c.bytes_received, "rounds": c.rounds,
            "dealer_bytes": c.dealer_bytes, "dealer_round_trips": c.dealer_round_trips, "online_seconds": c.time_ns as f64 * 1e-9,
            "offline": { "bytes_received": o.bytes_received, "rounds": o.rounds, "dealer_bytes": o.dealer_bytes,
                         "dealer_round_trips": o.dealer_round_trips, "seconds": o.time_ns as f64 * 1e-9 },
            "pool_refills": r.outcome.refills,
            "seconds": r.wall.as_secs_f64(), "server_model": r.info.model,
        }));
    } else {
        println!("prediction: {label} (logits {:?})", r.logits.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>());
        println!("  {} tokens; kept after each layer {kept:?}", enc.get_ids().len());
        println!("  online: sent {:.3} MB, received {:.3} MB, {} rounds, {:.2} s (dealer: {:.3} MB, {} round trips)", c.bytes_sent as f64 / 1e6, c.bytes_received as f64 / 1e6, c.rounds, c.time_ns as f64 * 1e-9, c.dealer_bytes as f64 / 1e6, c.dealer_round_trips);
        println!("  offline: received {:.3} MB from the server, {:.3} MB with the dealer, {} rounds + {} dealer round trips, {:.2} s; {:.2} s in all", o.bytes_received as f64 / 1e6, o.dealer_bytes as f64 / 1e6, o.rounds, o.dealer_round_trips, o.time_ns as f64 * 1e-9, r.wall.as_secs_f64());
    }
    Ok(())
}

pub fn dealer(args: DealerArgs) -> Result<()> {
    let listener = TcpListener::bind(&args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("dealer listening on {}", listener.local_addr()?);
    let rng = match args.seed {
        Some(s) => rand_chacha::ChaCha20Rng::seed_from_u64(s),
        None => rand_chacha::ChaCha20Rng::from_entropy(),
    };
    let opts = DealerOptions { timeout: Duration::from_secs(args.timeout.max(1)), sessions: args.sessions };
    run_dealer(listener, opts, rng, |s| match s.result {
        Ok(()) => println!("session {} dealt", s.session),
        Err(e) => eprintln!("session {} failed: {e}", s.session),
    })
    .map_err(|e| anyhow::anyhow!("the dealer stopped: {e}"))
}
