//! The online cost of the two-party protocol computed from the shapes
//! alone: the same forward ([`forward_on`]) over a backend whose values are
//! only their lengths, charging each interactive primitive the messages
//! [`super::shares::SharesBackend`] sends for it. The revealed counts (the
//! tokens kept after each layer and the size of each reduced group) come
//! from a given [`ExampleShape`] instead of from the data, so a whole dev
//! set's simulation becomes a secure cost without running the protocol.
//! A test holds the result to the bytes and rounds the real protocol
//! measures, exactly.

use super::channel::ring_bytes;
use super::sort::Compaction;
use crate::fixed::cost::swap_compaction;
use crate::fixed::{Ring, Truncation};
use crate::prune::simulate::ExampleShape;
use crate::secure::backend::{Backend, PublicMatrix, WeightVector};
use crate::secure::bert::{forward_on, EngineModel, LayerThresholds};
use crate::secure::report::{Meter, OpClass};
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

/// A backend of lengths: `Arith` and `Bits` are element counts.
struct ShapeBackend<'a> {
    ring: Ring,
    truncation: Truncation,
    compaction: Compaction,
    shape: &'a ExampleShape,
    meter: Meter,
    cost: OnlineCost,
}

impl ShapeBackend<'_> {
    fn w(&self) -> u64 {
        ring_bytes(self.ring) as u64
    }

    /// Both parties send `bytes` and receive the other's: one round.
    fn exchange(&mut self, bytes: u64) {
        self.cost.server_sent += bytes + 4;
        self.cost.client_sent += bytes + 4;
        self.cost.rounds += 1;
    }

    fn client_sends(&mut self, bytes: u64) {
        self.cost.client_sent += bytes + 4;
        self.cost.rounds += 1;
    }

    fn server_sends(&mut self, bytes: u64) {
        self.cost.server_sent += bytes + 4;
        self.cost.rounds += 1;
    }

    fn open(&mut self, n: usize) {
        let w = self.w();
        self.exchange(n as u64 * w);
    }

    fn and_bits(&mut self, n: usize) {
        if n > 0 {
            self.exchange(2 * bits(n));
        }
    }

    /// The comparison tree over segments of `leaves` leaves of `n` bits.
    fn compare_tree(&mut self, mut segs: Vec<usize>, n: usize) {
        while segs.iter().any(|&s| s > 1) {
            let pairs: usize = segs.iter().map(|s| s / 2).sum();
            self.and_bits(2 * n * pairs);
            for s in segs.iter_mut() {
                *s = s.div_ceil(2);
            }
        }
    }

    fn msb_protocol(&mut self, n: usize) {
        self.open(n);
        self.compare_tree(vec![self.ring.bits() as usize - 1], n);
    }

    fn mux_protocol(&mut self, n: usize) {
        if n > 0 {
            let w = self.w();
            self.exchange(bits(n) + n as u64 * w);
        }
    }

    fn b2a_protocol(&mut self, n: usize) {
        self.exchange(bits(n));
    }

    /// The layer the forward is in, for the revealed counts.
    fn layer(&self) -> usize {
        self.meter.scope().layer.expect("pruning and reduction happen in a layer")
    }

    /// Building a schedule that moves `tail` of `n` rows to the end.
    fn build_schedule(&mut self, n: usize, tail: usize) {
        self.b2a_protocol(n);
        self.open(1);
        if tail == 0 || tail == n {
            return;
        }
        match self.compaction {
            Compaction::Shuffle => {
                let w = self.w();
                self.exchange(2 * n as u64 * w); // the destination product
                self.perm_stages(n, 1);
                self.open(n);
            }
            Compaction::Swap => {
                for p in swap_steps(n, tail) {
                    self.and_bits(p);
                }
            }
            Compaction::Bitonic => {
                for half in bitonic_steps(n) {
                    self.msb_protocol(half);
                    self.mux_protocol(half);
                }
            }
        }
    }

    /// Two permutation stages over `rows` rows of `width`: one one-way
    /// message each, from the party that does not know the permutation
    /// (the client for the server's, then the server for the client's).
    fn perm_stages(&mut self, rows: usize, width: usize) {
        let b = (rows * width) as u64 * self.w();
        self.client_sends(b);
        self.server_sends(b);
    }

    /// Applying a schedule of `n` rows, `tail` at the end, to rows of `width`.
    fn apply_schedule(&mut self, n: usize, tail: usize, width: usize) {
        if tail == 0 || tail == n {
            return;
        }
        match self.compaction {
            Compaction::Shuffle => self.perm_stages(n, width),
            Compaction::Swap => {
                for p in swap_steps(n, tail) {
                    self.mux_protocol(p * width);
                }
            }
            Compaction::Bitonic => {
                for half in bitonic_steps(n) {
                    self.mux_protocol(half * width);
                }
            }
        }
    }
}

fn bits(n: usize) -> u64 {
    n.div_ceil(8) as u64
}

/// Pairs per step of the swap wavefront (steps with no pair are skipped).
fn swap_steps(n: usize, m: usize) -> Vec<usize> {
    (0..(n - 1) + 2 * (m - 1))
        .map(|t| (0..m).filter_map(|j| t.checked_sub(2 * j)).filter(|&i| i + 1 < n).count())
        .filter(|&p| p > 0)
        .collect()
}

/// Compare-exchanges per stage of a bitonic network on n rows (padded to a
/// power of two).
fn bitonic_steps(n: usize) -> Vec<usize> {
    let big = n.next_power_of_two();
    let mut out = Vec::new();
    let mut k = 2;
    while k <= big {
        let mut j = k / 2;
        while j > 0 {
            out.push(big / 2);
            j /= 2;
        }
        k *= 2;
    }
    out
}

impl Backend for ShapeBackend<'_> {
    type Arith = usize;
    type Bits = usize;
    /// (rows, rows in the low group).
    type Partition = (usize, usize);

    fn ring(&self) -> Ring {
        self.ring
    }
    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }
    fn len(&self, x: &usize) -> usize {
        *x
    }
    fn bits_len(&self, b: &usize) -> usize {
        *b
    }
    fn input(&mut self, values: &[u64]) -> usize {
        let w = self.w();
        self.client_sends(values.len() as u64 * w);
        values.len()
    }
    fn constant(&mut self, values: &[u64]) -> usize {
        values.len()
    }
    fn reveal(&mut self, x: &usize) -> Vec<u64> {
        self.open(*x);
        vec![0; *x]
    }
    /// The logits go to the client alone: the server's shares, one way.
    fn reveal_output(&mut self, x: &usize) -> Vec<u64> {
        let w = self.w();
        self.server_sends(*x as u64 * w);
        vec![0; *x]
    }
    fn peek(&mut self, _: &usize) -> Option<Vec<u64>> {
        None
    }
    fn peek_bits(&mut self, _: &usize) -> Option<Vec<bool>> {
        None
    }
    fn add(&mut self, a: &usize, _: &usize) -> usize {
        *a
    }
    fn sub(&mut self, a: &usize, _: &usize) -> usize {
        *a
    }
    fn neg(&mut self, a: &usize) -> usize {
        *a
    }
    fn add_public(&mut self, a: &usize, _: &[u64]) -> usize {
        *a
    }
    fn mul_public(&mut self, a: &usize, _: &[u64]) -> usize {
        *a
    }
    fn mul_weights(&mut self, a: &usize, _: &WeightVector) -> usize {
        let w = self.w();
        self.client_sends(*a as u64 * w);
        *a
    }
    fn matmul_public(&mut self, _: &usize, rows: usize, m: &PublicMatrix) -> usize {
        let w = self.w();
        self.client_sends((rows * m.in_dim) as u64 * w);
        rows * m.out_dim
    }
    fn gather(&mut self, _: &usize, idx: &[usize]) -> usize {
        idx.len()
    }
    fn concat(&mut self, parts: &[&usize]) -> usize {
        parts.iter().copied().sum()
    }
    fn sum_chunks(&mut self, x: &usize, chunk: usize) -> usize {
        x / chunk
    }
    fn not(&mut self, b: &usize) -> usize {
        *b
    }
    fn bits_public(&mut self, v: &[bool]) -> usize {
        v.len()
    }
    fn bits_concat(&mut self, parts: &[&usize]) -> usize {
        parts.iter().copied().sum()
    }
    fn mul(&mut self, a: &usize, _: &usize) -> usize {
        let w = self.w();
        self.exchange(2 * *a as u64 * w);
        *a
    }
    fn matmul(&mut self, a: &usize, b: &usize, m: usize, k: usize, n: usize) -> usize {
        self.matmul_many(&[(*a, *b)], m, k, n).pop().expect("one product")
    }
    fn matmul_many(&mut self, pairs: &[(usize, usize)], m: usize, k: usize, n: usize) -> Vec<usize> {
        let w = self.w();
        self.exchange((pairs.len() * (m * k + k * n)) as u64 * w);
        vec![m * n; pairs.len()]
    }
    fn truncate(&mut self, a: &usize, k: u32) -> usize {
        let n = *a;
        if k == 0 || n == 0 || self.truncation != Truncation::Exact {
            return n;
        }
        let l = self.ring.bits() as usize;
        self.open(n);
        self.compare_tree(vec![k as usize, l - k as usize], n);
        self.exchange(3 * bits(n));
        n
    }
    fn msb(&mut self, a: &usize) -> usize {
        if *a > 0 {
            self.msb_protocol(*a);
        }
        *a
    }
    fn mux(&mut self, b: &usize, _: &usize, _: &usize) -> usize {
        self.mux_protocol(*b);
        *b
    }
    fn b2a(&mut self, b: &usize) -> usize {
        self.b2a_protocol(*b);
        *b
    }
    fn compact_rows(&mut self, _: &usize, width: usize, keep: &usize) -> usize {
        let (n, l) = (*keep, self.layer());
        let kept = self.shape.kept[l];
        assert!(kept <= n && self.shape.entering[l] == n, "layer {l}: the shape says {} of {} enter, {kept} kept; the forward has {n}", self.shape.entering[l], n);
        self.meter.count(swap_compaction(n, n - kept, width));
        self.build_schedule(n, n - kept);
        self.apply_schedule(n, n - kept, width);
        kept * width
    }
    fn partition(&mut self, low: &usize, width: usize) -> (usize, usize) {
        let (n, l) = (*low, self.layer());
        let reduced = self.shape.reduced[l];
        assert!(reduced <= n, "layer {l}: {reduced} of {n} rows reduced");
        self.meter.count(swap_compaction(n, reduced, width));
        self.build_schedule(n, reduced);
        (n, reduced)
    }
    fn partition_sizes(&self, p: &(usize, usize)) -> (usize, usize) {
        (p.0 - p.1, p.1)
    }
    fn split_rows(&mut self, _: &usize, width: usize, p: &(usize, usize)) -> (usize, usize) {
        self.apply_schedule(p.0, p.1, width);
        ((p.0 - p.1) * width, p.1 * width)
    }
    fn merge_rows(&mut self, h: &usize, l: &usize, width: usize, p: &(usize, usize)) -> usize {
        self.apply_schedule(p.0, p.1, width);
        h + l
    }
}

/// What the protocol run is: ring, truncation, compaction, and which
/// layers prune and reduce (the values of θ and β do not change the cost).
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    pub truncation: Truncation,
    pub compaction: Compaction,
}

/// The online cost of one example of `shape` (pruned as it says where
/// `thresholds` has θ and β), and of the same input unpruned.
///
/// # Panics
/// If the shape does not fit the model (layers) or says more tokens are
/// kept than enter.
pub fn online_cost(model: &EngineModel, thresholds: &[LayerThresholds], proto: Protocol, shape: &ExampleShape) -> OnlineCost {
    let n = shape.real;
    let mut b = ShapeBackend { ring: model.ring(), truncation: proto.truncation, compaction: proto.compaction, shape, meter: Meter::default(), cost: OnlineCost::default() };
    b.set_scope(OpClass::Input, None);
    let x = b.input(&vec![0; n * model.hidden()]);
    forward_on(&mut b, model, thresholds, x, n);
    b.cost
}

/// The unpruned model's online cost on `n` tokens.
pub fn unpruned_cost(model: &EngineModel, proto: Protocol, n: usize) -> OnlineCost {
    let layers = model.num_layers();
    let shape = ExampleShape { real: n, entering: vec![n; layers], kept: vec![n; layers], reduced: vec![0; layers] };
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
            ExampleShape { real: n, entering, kept, reduced: r.reduced_per_layer.iter().map(Vec::len).collect() }
        })
        .collect()
}

/// Whether each layer prunes or reduces, as the cost model needs it.
pub fn layer_switches(layers: usize, prune: bool, reduce: bool, exponent: f64) -> Vec<LayerThresholds> {
    vec![LayerThresholds { theta: prune.then_some(0), beta: reduce.then_some(0), exponent }; layers]
}
