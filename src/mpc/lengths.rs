//! The forward on lengths alone: a [`Backend`] whose values are element
//! counts, charging each interactive primitive what
//! [`super::shares::SharesBackend`] does for it — the messages between the
//! parties (bytes and rounds, for [`super::estimate`]) and the correlations
//! it draws from the dealer's pools (for the offline [`super::plan`]).
//! The counts a protocol reveals (tokens kept after each layer, the size of
//! each reduced group) come from [`Counts`] instead of from data.

use std::collections::BTreeMap;

use super::channel::ring_bytes;
use super::dealer::{pool, PoolKey};
use super::estimate::{OnlineCost, Protocol};
use super::shares::Suite;
use super::sort::Compaction;
use crate::fixed::cost::swap_compaction;
use crate::fixed::{Ring, Truncation};
use crate::prune::simulate::ExampleShape;
use crate::secure::backend::{Backend, PublicMatrix};
use crate::secure::report::Meter;

/// Where the revealed counts come from.
pub(super) enum Counts<'a> {
    /// One example's shape: kept and reduced per layer.
    Shape(&'a ExampleShape),
    /// Every token stays live; each reducing layer puts all its rows in the
    /// low group (`true`) or the high one (the offline plan's two bounds).
    AllLive { all_low: bool },
}

pub(super) struct Lengths<'a> {
    ring: Ring,
    truncation: Truncation,
    compaction: Compaction,
    suite: Suite,
    counts: Counts<'a>,
    meter: Meter,
    /// Messages between the parties.
    pub(super) cost: OnlineCost,
    /// Rounds per operator class.
    pub(super) rounds_by: BTreeMap<&'static str, u64>,
    /// Correlation units drawn from each planned pool.
    pub(super) pools: BTreeMap<PoolKey, usize>,
    /// Per weight matrix id: (most rows, in, out).
    pub(super) matrices: BTreeMap<u32, (usize, usize, usize)>,
}

fn bits(n: usize) -> u64 {
    n.div_ceil(8) as u64
}

impl<'a> Lengths<'a> {
    pub(super) fn new(ring: Ring, proto: Protocol, counts: Counts<'a>) -> Self {
        let Protocol { truncation, compaction, suite } = proto;
        Lengths { ring, truncation, compaction, suite, counts, meter: Meter::default(), cost: OnlineCost::default(), rounds_by: BTreeMap::new(), pools: BTreeMap::new(), matrices: BTreeMap::new() }
    }

    fn w(&self) -> u64 {
        ring_bytes(self.ring) as u64
    }

    fn draw(&mut self, key: PoolKey, n: usize) {
        if n > 0 {
            *self.pools.entry(key).or_insert(0) += n;
        }
    }

    fn round(&mut self) {
        self.cost.rounds += 1;
        *self.rounds_by.entry(self.meter.scope().class.name()).or_insert(0) += 1;
    }

    /// Both parties send `bytes` and receive the other's: one round.
    fn exchange(&mut self, bytes: u64) {
        self.cost.server_sent += bytes + 4;
        self.cost.client_sent += bytes + 4;
        self.round();
    }

    fn client_sends(&mut self, bytes: u64) {
        self.cost.client_sent += bytes + 4;
        self.round();
    }

    fn server_sends(&mut self, bytes: u64) {
        self.cost.server_sent += bytes + 4;
        self.round();
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

    /// The comparison tree over segments of `leaves` leaves, `n` lanes: per
    /// level one AND round over every pair of every segment (2 bit triples
    /// per lane and pair).
    fn compare_tree(&mut self, segs: Vec<usize>, n: usize) {
        let merges: usize = segs.iter().map(|s| s.saturating_sub(1)).sum();
        self.draw(PoolKey::of(pool::BIT_TRIPLE), 2 * n * merges);
        self.tree_rounds(segs, n);
    }

    fn tree_rounds(&mut self, mut segs: Vec<usize>, n: usize) {
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

    /// The layer the forward is in, for the revealed counts.
    fn layer(&self) -> usize {
        self.meter.scope().layer.expect("pruning and reduction happen in a layer")
    }

    // Compactions draw from streams of their own, dealt online (not from
    // the planned pools): only their messages are charged here.

    /// Building a schedule that moves `tail` of `n` rows to the end.
    /// `ring_free`: the bits came with ring shares (a comparison on DCF keys).
    fn build_schedule(&mut self, n: usize, tail: usize, ring_free: bool) {
        self.build_schedule_moving(n, tail, ring_free, 0)
    }

    /// Building a schedule whose shuffle carries a payload of `width` (0:
    /// none) beside the destinations.
    fn build_schedule_moving(&mut self, n: usize, tail: usize, ring_free: bool, width: usize) {
        if !ring_free {
            self.exchange(bits(n)); // the group bits to the ring
        }
        if self.compaction == Compaction::Shuffle {
            // The group size opened with the destinations' product.
            let w = self.w();
            self.exchange((1 + 2 * n as u64) * w);
            if tail > 0 && tail < n {
                self.perm_stages(n, 1 + width);
                self.open(n);
            }
            return;
        }
        self.open(1);
        if tail == 0 || tail == n {
            return;
        }
        match self.compaction {
            Compaction::Swap => {
                for p in swap_steps(n, tail) {
                    self.and_bits(p);
                }
            }
            Compaction::Bitonic => {
                for half in bitonic_steps(n) {
                    // A comparison (open, then its tree) and a MUX per stage.
                    self.open(half);
                    self.tree_rounds(vec![self.ring.bits() as usize - 1], half);
                    self.mux_protocol(half);
                }
            }
            Compaction::Shuffle => unreachable!("above"),
        }
    }

    /// Two permutation stages over `rows` rows of `width`: one one-way
    /// message each, from the party that does not know the permutation.
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
    let stages = big.trailing_zeros() as usize;
    vec![big / 2; stages * (stages + 1) / 2]
}

impl Backend for Lengths<'_> {
    type Arith = usize;
    /// (length, whether ring shares came with the bits: B2A is free).
    type Bits = (usize, bool);
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
    fn bits_len(&self, b: &(usize, bool)) -> usize {
        b.0
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
    fn peek_bits(&mut self, _: &(usize, bool)) -> Option<Vec<bool>> {
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
    fn matmul_public(&mut self, _: &usize, rows: usize, m: &PublicMatrix) -> usize {
        let e = self.matrices.entry(m.id).or_insert((0, m.in_dim, m.out_dim));
        e.0 = e.0.max(rows);
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
    fn not(&mut self, b: &(usize, bool)) -> (usize, bool) {
        *b
    }
    fn bits_public(&mut self, v: &[bool]) -> (usize, bool) {
        (v.len(), true)
    }
    fn bits_concat(&mut self, parts: &[&(usize, bool)]) -> (usize, bool) {
        (parts.iter().map(|p| p.0).sum(), parts.iter().all(|p| p.1))
    }
    fn bits_gather(&mut self, b: &(usize, bool), idx: &[usize]) -> (usize, bool) {
        (idx.len(), b.1)
    }
    fn ring_bits(&mut self, x: &usize) -> (usize, bool) {
        (*x, true)
    }
    fn mul(&mut self, a: &usize, _: &usize) -> usize {
        self.draw(PoolKey::of(pool::TRIPLE), *a);
        let w = self.w();
        self.exchange(2 * *a as u64 * w);
        *a
    }
    fn matmul(&mut self, a: &usize, b: &usize, m: usize, k: usize, n: usize) -> usize {
        self.matmul_many(&[(*a, *b)], m, k, n).pop().expect("one product")
    }
    fn matmul_many(&mut self, pairs: &[(usize, usize)], m: usize, k: usize, n: usize) -> Vec<usize> {
        self.draw(PoolKey::mat(m, k, n), pairs.len());
        let w = self.w();
        self.exchange((pairs.len() * (m * k + k * n)) as u64 * w);
        vec![m * n; pairs.len()]
    }
    fn truncate(&mut self, a: &usize, k: u32) -> usize {
        let n = *a;
        if k == 0 || n == 0 || self.truncation != Truncation::Exact {
            return n;
        }
        if self.suite.dcf() {
            let key = PoolKey::dcf_trunc(k, self.suite.wrap_bits(self.ring), self.meter.scope().layer);
            self.draw(key, n);
            self.open(n);
            return n;
        }
        let l = self.ring.bits() as usize;
        self.draw(PoolKey::masked_bits(Some(k)), n);
        self.open(n);
        self.compare_tree(vec![k as usize, l - k as usize], n);
        self.draw(PoolKey::of(pool::AND_ARITH), n);
        self.draw(PoolKey::of(pool::B2A), n);
        self.exchange(3 * bits(n));
        n
    }
    fn exact_truncation(&self) -> bool {
        self.truncation == Truncation::Exact
    }
    fn trunc_lincomb(&mut self, _: &usize, _: &usize, u: &usize, k: u32) -> usize {
        if self.suite.dcf() && self.truncation == Truncation::Exact && k > 0 && *u > 0 {
            self.draw(PoolKey::dcf_trunc_mul(k, self.suite.wrap_bits(self.ring), self.meter.scope().layer), *u);
            self.open(3 * *u);
            return *u;
        }
        self.truncate(u, k);
        self.mul(&(2 * *u), &(2 * *u));
        *u
    }
    fn msb_and_truncate_each(&mut self, a: &usize, parts: &[(&usize, u32)]) -> ((usize, bool), Vec<usize>) {
        if self.suite.dcf() && self.truncation == Truncation::Exact && *a > 0 && parts.iter().all(|&(t, k)| k > 0 && *t > 0) {
            let layer = self.meter.scope().layer;
            self.draw(PoolKey::dcf_msb(layer), *a);
            for &(t, k) in parts {
                self.draw(PoolKey::dcf_trunc(k, self.suite.wrap_bits(self.ring), layer), *t);
            }
            self.open(*a + parts.iter().map(|(t, _)| **t).sum::<usize>());
            return ((*a, true), parts.iter().map(|(t, _)| **t).collect());
        }
        let m = self.msb(a);
        (m, parts.iter().map(|&(t, k)| self.truncate(t, k)).collect())
    }
    fn msb_times(&mut self, a: &usize) -> ((usize, bool), usize) {
        if self.suite.dcf() && *a > 0 {
            self.draw(PoolKey::dcf_msb_mul(self.meter.scope().layer), *a);
            self.open(*a);
            return ((*a, true), *a);
        }
        let m = self.msb(a);
        let p = self.mux(&m, a, a);
        (m, p)
    }
    fn trunc_mul(&mut self, y: &usize, u: &usize, k: u32) -> (usize, usize) {
        if self.suite.dcf() && self.truncation == Truncation::Exact && k > 0 && *u > 0 {
            self.draw(PoolKey::dcf_trunc_mul(k, self.suite.wrap_bits(self.ring), self.meter.scope().layer), *u);
            self.open(2 * *u);
            return (*u, *u);
        }
        let t = self.truncate(u, k);
        let p = self.mul(y, &t);
        (t, p)
    }
    fn msb(&mut self, a: &usize) -> (usize, bool) {
        if *a == 0 {
            return (0, true);
        }
        if self.suite.dcf() {
            let key = PoolKey::dcf_msb(self.meter.scope().layer);
            self.draw(key, *a);
            self.open(*a);
            return (*a, true);
        }
        self.draw(PoolKey::masked_bits(None), *a);
        self.msb_protocol(*a);
        (*a, false)
    }
    fn mux(&mut self, b: &(usize, bool), _: &usize, _: &usize) -> usize {
        let n = b.0;
        self.draw(PoolKey::of(pool::MUX), n);
        self.mux_protocol(n);
        n
    }
    fn b2a(&mut self, b: &(usize, bool)) -> usize {
        if !b.1 {
            self.draw(PoolKey::of(pool::B2A), b.0);
            self.exchange(bits(b.0));
        }
        b.0
    }
    fn compact_rows(&mut self, _: &usize, width: usize, keep: &(usize, bool)) -> usize {
        let n = keep.0;
        let kept = match self.counts {
            Counts::AllLive { .. } => n,
            Counts::Shape(s) => {
                let l = self.layer();
                let kept = s.kept_by_threshold(l);
                assert!(kept <= n && s.entering[l] == n, "layer {l}: the shape says {} enter, {kept} kept; the forward has {n}", s.entering[l]);
                kept
            }
        };
        self.meter.count(swap_compaction(n, n - kept, width));
        if self.compaction == Compaction::Shuffle {
            // The payload rides in the destinations' shuffle.
            self.build_schedule_moving(n, n - kept, keep.1, width);
        } else {
            self.build_schedule(n, n - kept, keep.1);
            self.apply_schedule(n, n - kept, width);
        }
        kept * width
    }
    fn partition(&mut self, low: &(usize, bool), width: usize) -> (usize, usize) {
        let n = low.0;
        let reduced = match self.counts {
            Counts::AllLive { all_low } => if all_low { n } else { 0 },
            Counts::Shape(s) => s.reduced[self.layer()],
        };
        assert!(reduced <= n, "{reduced} of {n} rows reduced");
        self.meter.count(swap_compaction(n, reduced, width));
        self.build_schedule(n, reduced, low.1);
        (n, reduced)
    }
    fn partition_sizes(&self, p: &(usize, usize)) -> (usize, usize) {
        (p.0 - p.1, p.1)
    }
    fn split_rows(&mut self, x: &usize, width: usize, p: &(usize, usize)) -> (usize, usize) {
        assert_eq!(*x, p.0 * width, "split_rows");
        self.apply_schedule(p.0, p.1, width);
        ((p.0 - p.1) * width, p.1 * width)
    }
    fn merge_rows(&mut self, h: &usize, l: &usize, width: usize, p: &(usize, usize)) -> usize {
        self.apply_schedule(p.0, p.1, width);
        h + l
    }
}
