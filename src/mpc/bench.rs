//! Measurements of the protocol: the three oblivious compactions across
//! sizes and pruning rates, and whole BERT shapes (random weights) with a
//! given token schedule, pruned against unpruned.

use super::channel::{mem_pair, ChannelError};
use super::cost::CommTally;
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use super::eval::SharesSummary;
use super::session::{run_in_process, run_protocol};
use super::shares::{SharesBackend, SharesOptions, Suite};
use super::sort::Compaction;
use crate::fixed::{Ring, Truncation};
use crate::secure::backend::Backend;
use crate::secure::bert::{encode_input, forward, threshold_bound, EngineConfig, EngineModel, LayerThresholds};
use crate::secure::report::OpClass;
use crate::secure::weights::{BertConfig, BertWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// The online cost from the shapes alone ([`super::lengths`], exact
/// against the protocol in `mpc::estimate_tests`), unpruned and pruned to
/// the paper's schedule with half of the kept tokens reduced (as
/// [`calibrate`] aims for; ties at a cut can keep a few more in a real run),
/// with the DCF keys the offline phase deals for the unpruned model: no
/// protocol run.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeEstimate {
    pub shape: String,
    pub tokens: usize,
    pub protocol: Suite,
    pub rounds: u64,
    pub online_bytes: u64,
    /// Per operator class, rounds divided by the layer count.
    pub rounds_per_layer: std::collections::BTreeMap<&'static str, f64>,
    /// DCF keys (one per comparison or truncation) and the dealer's bytes
    /// for them (the client forwards their correction words to the server,
    /// about as many bytes again).
    pub keys: u64,
    pub key_bytes: u64,
    /// The same on the paper's schedule ([`paper_schedule`]).
    pub pruned_schedule: Vec<usize>,
    pub pruned_rounds: u64,
    pub pruned_online_bytes: u64,
    pub pruned_rounds_per_layer: std::collections::BTreeMap<&'static str, f64>,
}

pub fn shape_estimate(name: &str, tokens: usize, suite: Suite) -> ShapeEstimate {
    use super::estimate::{layer_switches, Protocol};
    use super::lengths::{Counts, Lengths};
    use crate::prune::simulate::ExampleShape;
    let config = shape(name).expect("known shape");
    let model = EngineModel::from_weights(&BertWeights::random(config, 2, 0), &Ring::BOLT).public_shape();
    let layers = model.num_layers();
    let n = tokens;
    let proto = Protocol { truncation: Truncation::Exact, compaction: Compaction::Shuffle, suite };
    let run = |shape: &ExampleShape, thr: &[LayerThresholds]| {
        let mut b = Lengths::new(model.ring(), proto, Counts::Shape(shape));
        b.set_scope(OpClass::Input, None);
        let x = b.input(&vec![0; n * model.hidden()]);
        crate::secure::bert::forward_on(&mut b, &model, thr, x, n);
        (b.cost, b.rounds_by, b.pools)
    };
    let full = ExampleShape { real: n, entering: vec![n; layers], kept: vec![n; layers], reduced: vec![0; layers], merged: vec![] };
    let (cost, rounds_by, pools) = run(&full, &vec![LayerThresholds::default(); layers]);
    let schedule = paper_schedule(layers, n);
    let kept: Vec<usize> = (0..layers).map(|l| schedule.get(l + 1).copied().unwrap_or(schedule[l])).collect();
    let pruned = ExampleShape { real: n, entering: schedule.clone(), reduced: kept.iter().map(|k| k / 2).collect(), kept, merged: vec![] };
    let (p, pruned_by, _) = run(&pruned, &layer_switches(layers, true, true, false));
    let fss: Vec<_> = pools.iter().filter(|(k, _)| k.is_fss()).collect();
    ShapeEstimate {
        shape: name.into(),
        tokens,
        protocol: suite,
        rounds: cost.rounds,
        online_bytes: cost.bytes(),
        rounds_per_layer: rounds_by.iter().map(|(&k, &v)| (k, v as f64 / layers as f64)).collect(),
        keys: fss.iter().map(|(_, &v)| v as u64).sum(),
        key_bytes: fss.iter().map(|(k, &v)| (k.unit_bytes(Ring::BOLT) * v) as u64).sum(),
        pruned_schedule: schedule,
        pruned_rounds: p.rounds,
        pruned_online_bytes: p.bytes(),
        pruned_rounds_per_layer: pruned_by.iter().map(|(&k, &v)| (k, v as f64 / layers as f64)).collect(),
    }
}

/// One party's result and communication.
type PartyResult<R> = (R, CommTally);

/// Run `f` as both parties (threads) with a dealer; returns each party's
/// result and communication.
fn two_party<R: Send>(
    ring: Ring,
    opts: SharesOptions,
    seed: u64,
    f: &(dyn Fn(&mut SharesBackend) -> R + Sync),
) -> Result<(PartyResult<R>, PartyResult<R>), ChannelError> {
    let seeds = session_seeds(&mut ChaCha8Rng::seed_from_u64(seed));
    let t = Duration::from_secs(600);
    let (a, b) = mem_pair(t);
    let (d, c) = mem_pair(t);
    let party = |bk: SharesBackend| run_protocol(bk, f).map(|(v, _, comm)| (v, comm));
    std::thread::scope(|s| {
        let dealer = s.spawn(move || {
            let mut d = d;
            serve_dealer(ring, seeds, &mut d)
        });
        let server = s.spawn(move || party(SharesBackend::new(Party::Server, ring, opts, Box::new(a), Correlations::server(ring, seeds.0), 0)));
        let client = party(SharesBackend::new(Party::Client, ring, opts, Box::new(b), Correlations::client(ring, seeds.1, Box::new(c)), seed));
        let server = server.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let dealt = dealer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let out = (server?, client?);
        dealt?;
        Ok(out)
    })
}

/// The cost of compacting `n` rows of `width` of which `pruned` are dropped.
#[derive(Clone, Debug, Serialize)]
pub struct CompactionPoint {
    pub compaction: &'static str,
    pub n: usize,
    pub pruned: usize,
    pub width: usize,
    /// Both directions.
    pub bytes: u64,
    pub rounds: u64,
    pub dealer_bytes: u64,
    /// In-process wall time of the compaction.
    pub seconds: f64,
    pub lan_seconds: f64,
    pub wan_seconds: f64,
}

/// One compaction through the protocol (the comparisons with θ that make
/// the keep bits are not included: they are the same for all three).
///
/// # Errors
/// A protocol error (in-process: only a bug).
pub fn compaction_point(c: Compaction, n: usize, pruned: usize, width: usize, seed: u64) -> Result<CompactionPoint, ChannelError> {
    assert!(pruned < n, "[CLS] is always kept");
    let ring = Ring::BOLT;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<u64> = (0..n * width).map(|_| ring.encode(rng.gen_range(-4.0..4.0))).collect();
    let mut keep = vec![true; n];
    let mut idx: Vec<usize> = (1..n).collect();
    for _ in 0..pruned {
        let j = rng.gen_range(0..idx.len());
        keep[idx.swap_remove(j)] = false;
    }
    let keys: Vec<u64> = keep.iter().map(|&k| ring.encode(k as u8 as f64)).collect();
    let opts = SharesOptions { truncation: Truncation::Exact, compaction: c, analysis: false, suite: Suite::AndTree };
    let prog = |b: &mut SharesBackend| {
        let xs = b.input(&x);
        let k = b.input(&keys);
        let keep = b.ge_public(&k, &[ring.encode(0.5)]);
        b.set_scope(OpClass::Pruning, Some(0));
        let out = b.compact_rows(&xs, width, &keep);
        b.set_scope(OpClass::Input, None);
        out.len()
    };
    let ((_, sc), (len, cc)) = two_party(ring, opts, seed, &prog)?;
    assert_eq!(len, (n - pruned) * width);
    let s = SharesSummary { examples: 1, server: sc, client: cc, ..Default::default() };
    let line = s.class(OpClass::Pruning);
    Ok(CompactionPoint {
        compaction: c.name(),
        n,
        pruned,
        width,
        bytes: line.bytes,
        rounds: line.rounds,
        dealer_bytes: line.dealer_bytes,
        seconds: line.seconds,
        lan_seconds: line.on(&super::cost::LAN),
        wan_seconds: line.on(&super::cost::WAN),
    })
}

/// BERT architectures of the paper's tables.
pub fn shape(name: &str) -> Option<BertConfig> {
    let (layers, hidden, heads) = match name {
        "medium" => (8, 512, 8),
        "base" => (12, 768, 12),
        "large" => (24, 1024, 16),
        _ => return None,
    };
    Some(BertConfig {
        vocab_size: 1000, hidden_size: hidden, num_hidden_layers: layers, num_attention_heads: heads,
        intermediate_size: 4 * hidden, max_position_embeddings: 512, type_vocab_size: 2, layer_norm_eps: 1e-12,
    })
}

/// The paper's BERT-base schedule (REFERENCE.md §1): tokens entering each
/// layer at 128 input tokens.
pub const PAPER_BASE_128: [usize; 12] = [128, 55, 54, 52, 49, 45, 24, 14, 5, 2, 1, 1];

/// The paper's BERT-medium schedule at 128 tokens.
pub const PAPER_MEDIUM_128: [usize; 8] = [128, 55, 52, 49, 45, 24, 14, 5];

/// The schedule for `layers` layers and `tokens` input tokens: the paper's
/// fractions (BERT-medium's for 8 layers, BERT-base's otherwise, stretched
/// over the layers), scaled to the length.
pub fn paper_schedule(layers: usize, tokens: usize) -> Vec<usize> {
    let base: &[usize] = if layers == 8 { &PAPER_MEDIUM_128 } else { &PAPER_BASE_128 };
    (0..layers)
        .map(|l| {
            let f = base[l * base.len() / layers] as f64 / 128.0;
            ((f * tokens as f64).round() as usize).clamp(1, tokens)
        })
        .collect()
}

/// Thresholds that make `model` follow `schedule` (tokens entering each
/// layer) on `input`, and reduce half of the kept tokens in every layer:
/// chosen layer by layer from the engine's own scores, between the scores
/// of the last kept and the first pruned token. Returns them with the
/// schedule actually reached (scores closer than the threshold's
/// granularity, θ·H·n^p in steps of H·n^p/2^s, can keep a few more). The
/// score's length exponent `p` (DESIGN.md §2) is a public rescaling that
/// costs the protocol nothing; at p = 0 the steps are H/2^s instead of
/// H·n/2^s, fine enough to split the near-equal scores of random weights.
pub fn calibrate(model: &EngineModel, ring: Ring, emb: &[f32], n: usize, schedule: &[usize], cut_rule: Cut, p: f64) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let layers = model.num_layers();
    let s = (ring.frac() as f64).exp2();
    let mut thetas = vec![0.0; layers];
    let mut betas = vec![0.0; layers];
    let heads = model.heads();
    // The largest integer threshold t (θ at scale s) whose bound, the
    // engine's threshold_bound(t, H, live, p), is at or below `score`.
    let under = |score: i64, live: usize| -> i64 {
        let bound = |t: i64| threshold_bound(t, heads, live, p);
        let mut t = (score as f64 / (heads as f64 * (live as f64).powf(p))).floor() as i64;
        while bound(t + 1) <= score as i128 {
            t += 1;
        }
        while bound(t) > score as i128 {
            t -= 1;
        }
        t
    };
    // Pick t with exactly `k` of `scores` at or above its bound when
    // possible.
    let cut = |scores: &mut Vec<i64>, k: usize, live: usize| -> i64 {
        scores.sort_unstable_by(|a, b| b.cmp(a));
        if scores.is_empty() {
            return 0;
        }
        if k == 0 {
            return under(scores[0], live) + 1;
        }
        if k >= scores.len() {
            return under(scores[scores.len() - 1], live);
        }
        match cut_rule {
            // Largest t whose bound is at or below the k-th score: keeps at
            // least k (more when scores closer than a step tie at the cut).
            Cut::AtLeast => under(scores[k - 1], live),
            // Smallest t whose bound is above the (k+1)-th: keeps at most k.
            Cut::AtMost => under(scores[k], live) + 1,
        }
    };
    for l in 0..layers {
        let cfg = EngineConfig {
            ring,
            truncation: Truncation::Exact,
            thetas: Some((0..layers).map(|j| if j < l { thetas[j] } else { 0.0 }).collect()),
            betas: Some((0..layers).map(|j| if j < l { betas[j] } else { 0.0 }).collect()),
            exponents: Some(vec![p; layers]),
            merge: false,
        };
        let r = forward(model, &cfg, emb, n, 0);
        let live = r.scores_ring[l].len();
        let target = if l + 1 < layers { schedule[l + 1].min(live) } else { live };
        // [CLS] (position 0 of the live rows) is kept without a comparison.
        let mut rest: Vec<i64> = r.scores_ring[l][1..].to_vec();
        let t = if rest.is_empty() { 0 } else { cut(&mut rest, target.saturating_sub(1), live) };
        thetas[l] = t as f64 / s;
        // Reduce the lower half of what stays (β compares with the same scale).
        let all = &r.scores_ring[l];
        let tb = threshold_bound(t, heads, live, p);
        let mut kept: Vec<i64> = all[..1].iter().chain(all[1..].iter().filter(|&&v| v as i128 >= tb)).copied().collect();
        let keep_high = kept.len() - kept.len() / 2;
        let b = cut(&mut kept, keep_high, live).max(t);
        betas[l] = b as f64 / s;
    }
    let cfg = EngineConfig { ring, truncation: Truncation::Exact, thetas: Some(thetas.clone()), betas: Some(betas.clone()), exponents: Some(vec![p; layers]), merge: false };
    let reached = forward(model, &cfg, emb, n, 0).live_per_layer.iter().map(|v| v.len()).collect();
    (thetas, betas, reached)
}

/// Which way [`calibrate`] rounds when scores tie at the cut (the
/// threshold's resolution is H·n/2^s on ΣA): keep at least, or at most, the
/// scheduled number of tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Cut {
    AtLeast,
    AtMost,
}

/// One BERT shape through the protocol, pruned (calibrated to `schedule`)
/// and unpruned.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeRun {
    pub shape: String,
    pub tokens: usize,
    pub schedule_target: Vec<usize>,
    pub schedule_reached: Vec<usize>,
    pub cut: Cut,
    /// The score's length exponent the thresholds were calibrated with.
    pub exponent: f64,
    pub bit_identical: bool,
    #[serde(skip)]
    pub pruned: SharesSummary,
    #[serde(skip)]
    pub unpruned: SharesSummary,
}

/// # Errors
/// A protocol error (in-process: only a bug).
pub fn shape_run(name: &str, tokens: usize, compaction: Compaction, suite: Suite, (cut, exponent): (Cut, f64), seed: u64, progress: &dyn Fn(&str)) -> Result<ShapeRun, ChannelError> {
    let config = shape(name).expect("known shape");
    let ring = Ring::BOLT;
    let layers = config.num_hidden_layers;
    progress("weights");
    let weights = BertWeights::random(config, 2, seed);
    let model = EngineModel::from_weights(&weights, &ring);
    let shape_only = model.public_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..tokens).map(|_| rng.gen_range(0..1000)).collect();
    let emb = weights.embed(&ids, None).map_err(|e| ChannelError::Io(e.to_string()))?;
    drop(weights);
    let (input, _) = encode_input(ring, &emb);
    let target = paper_schedule(layers, tokens);
    progress("calibrating thresholds");
    let (thetas, betas, reached) = calibrate(&model, ring, &emb, tokens, &target, cut, exponent);
    let opts = SharesOptions { truncation: Truncation::Exact, compaction, analysis: false, suite };
    let mut out = Vec::new();
    let mut identical = true;
    for (what, cfg) in [
        ("pruned", EngineConfig { ring, truncation: Truncation::Exact, thetas: Some(thetas.clone()), betas: Some(betas.clone()), exponents: Some(vec![exponent; layers]), merge: false }),
        ("unpruned", EngineConfig { ring, truncation: Truncation::Exact, thetas: None, betas: None, exponents: None, merge: false }),
    ] {
        progress(what);
        let engine = forward(&model, &cfg, &emb, tokens, 0);
        let thr = LayerThresholds::from_config(&cfg, layers);
        let run = run_in_process(&model, &shape_only, &thr, opts, &input, tokens, seed)?;
        identical &= run.logits_ring == engine.logits_ring;
        let mut s = SharesSummary {
            examples: 1,
            seconds: run.wall.as_secs_f64(),
            kept_per_layer: run.client.trace.kept_per_layer.iter().map(|k| k.len()).collect(),
            ..Default::default()
        };
        s.add_run(&run);
        out.push(s);
    }
    let unpruned = out.pop().expect("two");
    let pruned = out.pop().expect("two");
    Ok(ShapeRun { shape: name.into(), tokens, schedule_target: target, schedule_reached: reached, cut, exponent, bit_identical: identical, pruned, unpruned })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random weights give near-equal scores: at p = 1 the threshold's steps
    /// (H·n/2^s on ΣA) cannot split them and the cut keeps more than asked
    /// for; at p = 0 (steps of H/2^s) it lands on the schedule.
    #[test]
    fn calibration_at_p0_reaches_the_schedule() {
        let config = BertConfig {
            vocab_size: 100, hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4,
            intermediate_size: 128, max_position_embeddings: 128, type_vocab_size: 2, layer_norm_eps: 1e-12,
        };
        let ring = Ring::BOLT;
        let weights = BertWeights::random(config, 2, 7);
        let model = EngineModel::from_weights(&weights, &ring);
        let n = 96;
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 37) % 100).collect();
        let emb = weights.embed(&ids, None).expect("embeddings");
        let schedule = [96, 41, 40, 17];
        let (.., at0) = calibrate(&model, ring, &emb, n, &schedule, Cut::AtLeast, 0.0);
        let (.., at1) = calibrate(&model, ring, &emb, n, &schedule, Cut::AtLeast, 1.0);
        assert_eq!(at0, schedule, "p = 0");
        assert!(at1.iter().zip(&schedule).all(|(a, s)| a >= s), "at least: {at1:?}");
        let (.., most) = calibrate(&model, ring, &emb, n, &schedule, Cut::AtMost, 1.0);
        assert!(most.iter().zip(&schedule).all(|(a, s)| a <= s), "at most: {most:?}");
    }
}
