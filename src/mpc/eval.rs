//! Many examples through the two-party protocol in-process, checked against
//! the engine's logits, and the cost report that puts the pruned run beside
//! the unpruned one.

use super::channel::ChannelError;
use super::cost::{estimate_seconds, CommCounts, CommTally, Network, LAN, WAN};
use super::session::run_in_process;
use super::shares::SharesOptions;
use crate::secure::bert::{EngineModel, LayerThresholds};
use crate::secure::report::OpClass;
use serde::Serialize;

/// One protocol input: the client's encoded embeddings and its token count.
pub struct SharesInput {
    pub input: Vec<u64>,
    pub tokens: usize,
}

/// The protocol over a set of examples.
#[derive(Clone, Debug, Default)]
pub struct SharesSummary {
    pub examples: usize,
    /// Examples whose opened logits differ from the engine's.
    pub mismatched: Vec<usize>,
    pub server: CommTally,
    pub client: CommTally,
    /// Summed in-process wall time of the runs, seconds.
    pub seconds: f64,
    /// Tokens the client saw kept after each layer, summed over examples.
    pub kept_per_layer: Vec<usize>,
    /// The offline phases, summed over examples (server's, client's).
    pub offline: (CommCounts, CommCounts),
    /// Pools that ran dry online and were refilled from the dealer.
    pub refills: u64,
    /// The dealer's DCF key generation, seconds, and its replies that
    /// carried keys, bytes (offline; `--protocol fss`).
    pub keygen_seconds: f64,
    pub key_bytes: u64,
}

/// Run every input through the protocol (one at a time; each run uses three
/// threads) and compare with `engine_logits`. Example i uses seed
/// `seed + i`.
///
/// # Errors
/// A protocol error in any run.
pub fn run_examples(
    model: &EngineModel,
    thresholds: &[LayerThresholds],
    opts: SharesOptions,
    inputs: &[SharesInput],
    engine_logits: &[Vec<u64>],
    seed: u64,
    progress: &dyn Fn(),
) -> Result<SharesSummary, ChannelError> {
    let shape = model.public_shape();
    let mut s = SharesSummary { examples: inputs.len(), ..Default::default() };
    for (i, x) in inputs.iter().enumerate() {
        let run = run_in_process(model, &shape, thresholds, opts, &x.input, x.tokens, seed.wrapping_add(i as u64))?;
        if run.logits_ring != engine_logits[i] {
            s.mismatched.push(i);
        }
        s.add_run(&run);
        s.seconds += run.wall.as_secs_f64();
        let kept = &run.client.trace.kept_per_layer;
        s.kept_per_layer.resize(kept.len().max(s.kept_per_layer.len()), 0);
        for (t, k) in s.kept_per_layer.iter_mut().zip(kept) {
            *t += k.len();
        }
        progress();
    }
    Ok(s)
}

impl SharesSummary {
    /// Add one in-process run's communication (online and offline).
    pub fn add_run(&mut self, run: &super::session::InProcessRun) {
        self.server.merge(&run.server.comm);
        self.client.merge(&run.client.comm);
        self.offline.0 += run.server.offline;
        self.offline.1 += run.client.offline;
        self.refills += run.client.refills;
        self.keygen_seconds += run.dealer.keygen_ns as f64 * 1e-9;
        self.key_bytes += run.dealer.key_bytes;
    }

    /// The offline phase, summed over examples.
    pub fn offline_total(&self) -> CostLine {
        CostLine::of(self.offline.0, self.offline.1)
    }
}

/// Costs of one scope (or the total) of a run, both parties together.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CostLine {
    pub server_to_client_bytes: u64,
    pub client_to_server_bytes: u64,
    pub bytes: u64,
    pub rounds: u64,
    /// Dealer ↔ client bytes (online: pool refills and permutation
    /// correlations; offline: all the prepared material).
    pub dealer_bytes: u64,
    /// Waits for the dealer (requests sent together wait once).
    pub dealer_round_trips: u64,
    /// In-process wall time, seconds (the client's clock).
    pub seconds: f64,
}

impl CostLine {
    fn of(server: CommCounts, client: CommCounts) -> Self {
        CostLine {
            server_to_client_bytes: server.bytes_sent,
            client_to_server_bytes: client.bytes_sent,
            bytes: server.bytes_sent + client.bytes_sent,
            rounds: client.rounds,
            dealer_bytes: client.dealer_bytes,
            dealer_round_trips: client.dealer_round_trips,
            seconds: client.time_ns as f64 * 1e-9,
        }
    }

    /// Wall time on `net` (see [`estimate_seconds`]).
    pub fn on(&self, net: &Network) -> f64 {
        estimate_seconds(net, self.seconds, self.rounds, self.server_to_client_bytes, self.client_to_server_bytes)
    }

    pub fn per(&self, n: usize) -> CostLine {
        let n = n.max(1) as u64;
        CostLine {
            server_to_client_bytes: self.server_to_client_bytes / n,
            client_to_server_bytes: self.client_to_server_bytes / n,
            bytes: self.bytes / n,
            rounds: self.rounds / n,
            dealer_bytes: self.dealer_bytes / n,
            dealer_round_trips: self.dealer_round_trips / n,
            seconds: self.seconds / n as f64,
        }
    }
}

impl SharesSummary {
    pub fn total(&self) -> CostLine {
        CostLine::of(self.server.total(), self.client.total())
    }

    pub fn class(&self, c: OpClass) -> CostLine {
        CostLine::of(self.server.class_total(c), self.client.class_total(c))
    }

    pub fn layer(&self, l: Option<usize>) -> CostLine {
        CostLine::of(self.server.layer_total(l), self.client.layer_total(l))
    }

    /// Mean per example.
    pub fn per_example(&self) -> CostLine {
        self.total().per(self.examples)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The JSON cost report of a pruned run beside its unpruned twin: totals
/// and per-example means, per operator class and per layer, and estimated
/// wall time on LAN and WAN.
pub fn cost_report(pruned: &SharesSummary, unpruned: Option<&SharesSummary>) -> serde_json::Value {
    let line = |s: &SharesSummary, l: CostLine| {
        let per = l.per(s.examples);
        serde_json::json!({
            "total": l, "per_example": per,
            "lan_seconds_per_example": per.on(&LAN), "wan_seconds_per_example": per.on(&WAN),
        })
    };
    let both = |f: &dyn Fn(&SharesSummary) -> CostLine| {
        let p = f(pruned);
        let mut v = serde_json::json!({ "pruned": line(pruned, p) });
        if let Some(u) = unpruned {
            let q = f(u);
            v["unpruned"] = line(u, q);
            v["ratio"] = serde_json::json!({
                "bytes": ratio(p.bytes as f64, q.bytes as f64),
                "rounds": ratio(p.rounds as f64, q.rounds as f64),
                "lan": ratio(p.per(pruned.examples).on(&LAN), q.per(u.examples).on(&LAN)),
                "wan": ratio(p.per(pruned.examples).on(&WAN), q.per(u.examples).on(&WAN)),
            });
        }
        v
    };
    let per_operator: Vec<serde_json::Value> = OpClass::ALL
        .iter()
        .filter(|&&c| pruned.class(c).bytes + unpruned.map_or(0, |u| u.class(c).bytes) > 0)
        .map(|&c| {
            let mut v = both(&|s| s.class(c));
            v["class"] = c.name().into();
            v
        })
        .collect();
    let layers = pruned.kept_per_layer.len();
    let per_layer: Vec<serde_json::Value> = (0..layers)
        .map(Some)
        .chain([None])
        .map(|l| {
            let mut v = both(&|s| s.layer(l));
            v["layer"] = serde_json::json!(l);
            v
        })
        .collect();
    let offline = |s: &SharesSummary| {
        let l = s.offline_total();
        serde_json::json!({ "total": l, "per_example": l.per(s.examples), "online_refills": s.refills,
            "keygen_seconds": s.keygen_seconds, "key_bytes": s.key_bytes })
    };
    let mut off = serde_json::json!({ "pruned": offline(pruned) });
    if let Some(u) = unpruned {
        off["unpruned"] = offline(u);
    }
    serde_json::json!({
        "networks": { "lan": LAN, "wan": WAN },
        "total": both(&|s| s.total()),
        "offline": off,
        "per_operator": per_operator,
        "per_layer": per_layer,
    })
}
