//! Many examples through the engine, in parallel: each example's result
//! depends only on (model, config, tokens, index), so the thread count
//! changes nothing but the speed.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::bert::{forward, EngineConfig, EngineModel, ForwardResult};
use super::report::{CostTally, OverflowTally};
use super::weights::{BertWeights, WeightsError};

/// One tokenised input: ids and token type ids.
pub struct EngineInput<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

/// Runs every input (the client embeds its own tokens first); `progress`
/// is called with the number done so far, from any thread.
pub fn run_all(
    weights: &BertWeights,
    model: &EngineModel,
    cfg: &EngineConfig,
    inputs: &[EngineInput],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ForwardResult>, WeightsError> {
    let done = AtomicUsize::new(0);
    inputs
        .par_iter()
        .enumerate()
        .map(|(i, x)| {
            let emb = weights.embed(x.ids, Some(x.type_ids))?;
            let r = forward(model, cfg, &emb, x.ids.len(), i as u64);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            Ok(r)
        })
        .collect()
}

/// Costs summed over results, and overflows: the weight encoding's once
/// plus every example's own.
pub fn totals(model: &EngineModel, results: &[ForwardResult]) -> (CostTally, OverflowTally) {
    let mut cost = CostTally::default();
    let mut overflow = model.encode_overflow().clone();
    for r in results {
        cost.merge(&r.cost);
        overflow.merge(&r.run_overflow);
    }
    (cost, overflow)
}
