//! The online cost of the two-party protocol computed from the shapes
//! alone: the same forward ([`forward_on`]) on lengths
//! ([`super::lengths`]), the revealed counts (the tokens kept after each
//! layer and the size of each reduced group) taken from a given
//! [`ExampleShape`] instead of from the data, so a whole dev set's
//! simulation becomes a secure cost without running the protocol. A test
//! holds the result to the bytes and rounds the real protocol measures,
//! exactly.

use super::lengths::{Counts, Lengths};
use super::shares::Suite;
use super::sort::Compaction;
use crate::fixed::Truncation;
use crate::prune::simulate::ExampleShape;
use crate::secure::backend::Backend;
use crate::secure::bert::{forward_on, EngineModel, LayerThresholds};
use crate::secure::report::OpClass;
use serde::Serialize;

/// Online traffic between the two parties (the dealer's is not online).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OnlineCost {
    /// Bytes each party sends, payload plus a 4-byte frame per message.
    pub server_sent: u64,
    pub client_sent: u64,
    /// Message flights (an exchange or a one-way message is one).
    pub rounds: u64,
}

impl OnlineCost {
    pub fn bytes(&self) -> u64 {
        self.server_sent + self.client_sent
    }
}

impl std::ops::AddAssign for OnlineCost {
    fn add_assign(&mut self, o: Self) {
        self.server_sent += o.server_sent;
        self.client_sent += o.client_sent;
        self.rounds += o.rounds;
    }
}

/// What the protocol run is: ring, truncation, compaction, and which
/// layers prune and reduce (the values of θ and β do not change the cost).
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    pub truncation: Truncation,
    pub compaction: Compaction,
    pub suite: Suite,
}

/// The online cost of one example of `shape` (pruned as it says where
/// `thresholds` has θ and β), and of the same input unpruned.
///
/// # Panics
/// If the shape does not fit the model (layers) or says more tokens are
/// kept than enter.
pub fn online_cost(model: &EngineModel, thresholds: &[LayerThresholds], proto: Protocol, shape: &ExampleShape) -> OnlineCost {
    let n = shape.real;
    let mut b = Lengths::new(model.ring(), proto, Counts::Shape(shape));
    b.set_scope(OpClass::Input, None);
    let x = b.input(&vec![0; n * model.hidden()]);
    forward_on(&mut b, model, thresholds, x, n);
    b.cost
}

/// The unpruned model's online cost on `n` tokens.
pub fn unpruned_cost(model: &EngineModel, proto: Protocol, n: usize) -> OnlineCost {
    let layers = model.num_layers();
    let shape = ExampleShape { real: n, entering: vec![n; layers], kept: vec![n; layers], reduced: vec![0; layers], merged: vec![] };
    online_cost(model, &vec![LayerThresholds::default(); layers], proto, &shape)
}

/// Per-example ratios over the unpruned model's cost, averaged, for a set
/// of simulated shapes: (bytes ratio, rounds ratio, mean pruned cost, mean
/// unpruned cost).
pub fn secure_ratios(model: &EngineModel, thresholds: &[LayerThresholds], proto: Protocol, shapes: &[ExampleShape]) -> SecureCost {
    let mut cache = std::collections::HashMap::new();
    let mut out = SecureCost::default();
    let k = shapes.len().max(1) as f64;
    for s in shapes {
        let full = *cache.entry(s.real).or_insert_with(|| unpruned_cost(model, proto, s.real));
        let got = online_cost(model, thresholds, proto, s);
        out.bytes_ratio += got.bytes() as f64 / full.bytes() as f64 / k;
        out.rounds_ratio += got.rounds as f64 / full.rounds as f64 / k;
        out.bytes += got.bytes() as f64 / k;
        out.rounds += got.rounds as f64 / k;
        out.unpruned_bytes += full.bytes() as f64 / k;
        out.unpruned_rounds += full.rounds as f64 / k;
    }
    out
}

/// The secure-cost view of a simulation (DESIGN.md §2), per example means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SecureCost {
    /// Mean over examples of pruned / unpruned online bytes.
    pub bytes_ratio: f64,
    pub rounds_ratio: f64,
    /// Mean online bytes and rounds per example, pruned and unpruned.
    pub bytes: f64,
    pub rounds: f64,
    pub unpruned_bytes: f64,
    pub unpruned_rounds: f64,
}

/// The shapes the engine's forward revealed, one per example of `real`
/// tokens: what a two-party run with the same thresholds reveals too.
pub fn engine_shapes(results: &[crate::secure::bert::ForwardResult], real: impl Iterator<Item = usize>) -> Vec<ExampleShape> {
    results
        .iter()
        .zip(real)
        .map(|(r, n)| {
            let kept: Vec<usize> = r.kept_per_layer.iter().map(Vec::len).collect();
            let entering = std::iter::once(n).chain(kept.iter().copied()).take(kept.len()).collect();
            let merged = if r.merged_per_layer.contains(&true) { r.merged_per_layer.clone() } else { vec![] };
            ExampleShape { real: n, entering, kept, reduced: r.reduced_per_layer.iter().map(Vec::len).collect(), merged }
        })
        .collect()
}

/// Whether each layer prunes or reduces, as the cost model needs it.
pub fn layer_switches(layers: usize, prune: bool, reduce: bool, merge: bool) -> Vec<LayerThresholds> {
    vec![LayerThresholds { theta: prune.then_some(0), beta: reduce.then_some(0), merge: prune && merge, ..Default::default() }; layers]
}
