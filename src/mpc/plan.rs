//! The offline phase's plan: what one inference will consume, before the
//! input exists. The forward on lengths alone ([`super::lengths`]) for the
//! public input length with every token live records each correlation the
//! shares backend would draw ([`super::shares`], primitive by primitive).
//! Run once with every reducing layer's rows all high and once all low;
//! the plan takes the larger count per pool. Pruning only shrinks later layers, so a pruned
//! run usually consumes less; what it needs beyond the plan (compaction
//! networks, shapes that exist only after pruning) is dealt online and
//! counted there.

use super::lengths::{Counts, Lengths};
use super::estimate::Protocol;
use super::shares::{OfflinePlan, Suite};
use super::sort::Compaction;
use crate::fixed::Truncation;
use crate::secure::bert::{forward_on, EngineModel, LayerThresholds};

/// The offline plan of one inference of `n` tokens on `model` (the
/// server's or the client's public shape: only shapes, ids and which layers
/// prune or reduce matter).
pub fn offline_plan(model: &EngineModel, thresholds: &[LayerThresholds], truncation: Truncation, suite: Suite, n: usize) -> OfflinePlan {
    let run = |all_low: bool| {
        // The compaction does not matter: it draws from streams dealt online.
        let proto = Protocol { truncation, compaction: Compaction::Shuffle, suite };
        let mut g = Lengths::new(model.ring(), proto, Counts::AllLive { all_low });
        forward_on(&mut g, model, thresholds, n * model.hidden(), n);
        g
    };
    let high = run(false);
    let mut pools = high.pools.clone();
    if thresholds.iter().any(|t| t.beta.is_some()) {
        for (k, v) in run(true).pools {
            let e = pools.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    OfflinePlan {
        matrices: high.matrices.iter().map(|(&id, &(rows, i, o))| (id, rows, i, o)).collect(),
        pools: pools.into_iter().collect(),
    }
}
