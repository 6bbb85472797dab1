//! The offline phase's plan: what one inference will consume, before the
//! input exists. A *ghost* backend runs the forward on lengths alone (no
//! values, no messages) for the public input length with every token live,
//! and records each correlation the shares backend would draw
//! ([`super::shares`], primitive by primitive). Run once with every
//! reducing layer's rows all high and once all low; the plan takes the
//! larger count per pool. Pruning only shrinks later layers, so a pruned
//! run usually consumes less; what it needs beyond the plan (compaction
//! networks, shapes that exist only after pruning) is dealt online and
//! counted there.

use super::dealer::{pool, PoolKey};
use super::shares::OfflinePlan;
use crate::fixed::{Ring, Truncation};
use crate::secure::backend::{Backend, PublicMatrix, WeightVector};
use crate::secure::bert::{forward_on, EngineModel, LayerThresholds};
use crate::secure::report::Meter;
use std::collections::BTreeMap;

/// A backend over lengths: records correlation demand.
struct Ghost {
    ring: Ring,
    truncation: Truncation,
    /// Reducing layers put every row in the low group (else the high one).
    all_low: bool,
    meter: Meter,
    pools: BTreeMap<PoolKey, usize>,
    matrices: BTreeMap<u32, (usize, usize, usize)>,
    vectors: BTreeMap<u32, (usize, usize)>,
}

impl Ghost {
    fn add(&mut self, key: PoolKey, n: usize) {
        if n > 0 {
            *self.pools.entry(key).or_insert(0) += n;
        }
    }

    /// A comparison tree over segments of `leaves` bits each, n lanes: one
    /// AND (2 bit triples per lane) per merge.
    fn tree(&mut self, n: usize, leaves: &[u32]) {
        let merges: usize = leaves.iter().map(|&l| (l as usize).saturating_sub(1)).sum();
        self.add(PoolKey::of(pool::BIT_TRIPLE), 2 * n * merges);
    }
}

impl Backend for Ghost {
    type Arith = usize;
    type Bits = usize;
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
        values.len()
    }
    fn constant(&mut self, values: &[u64]) -> usize {
        values.len()
    }
    fn reveal(&mut self, x: &usize) -> Vec<u64> {
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
    fn mul_weights(&mut self, a: &usize, w: &WeightVector) -> usize {
        let e = self.vectors.entry(w.id).or_insert((0, w.values.len()));
        e.0 = e.0.max(*a);
        *a
    }
    fn matmul_public(&mut self, _: &usize, rows: usize, w: &PublicMatrix) -> usize {
        let e = self.matrices.entry(w.id).or_insert((0, w.in_dim, w.out_dim));
        e.0 = e.0.max(rows);
        rows * w.out_dim
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
        self.add(PoolKey::of(pool::TRIPLE), *a);
        *a
    }
    fn matmul(&mut self, _: &usize, _: &usize, m: usize, k: usize, n: usize) -> usize {
        self.add(PoolKey::mat(m, k, n), 1);
        m * n
    }
    fn matmul_many(&mut self, pairs: &[(usize, usize)], m: usize, k: usize, n: usize) -> Vec<usize> {
        self.add(PoolKey::mat(m, k, n), pairs.len());
        vec![m * n; pairs.len()]
    }
    fn truncate(&mut self, a: &usize, k: u32) -> usize {
        let n = *a;
        if k == 0 || n == 0 || self.truncation != Truncation::Exact {
            return n;
        }
        let l = self.ring.bits();
        self.add(PoolKey::masked_bits(Some(k)), n);
        self.tree(n, &[k, l - k]);
        self.add(PoolKey::of(pool::AND_ARITH), n);
        self.add(PoolKey::of(pool::B2A), n);
        n
    }
    fn msb(&mut self, a: &usize) -> usize {
        let n = *a;
        if n > 0 {
            self.add(PoolKey::masked_bits(None), n);
            self.tree(n, &[self.ring.bits() - 1]);
        }
        n
    }
    fn mux(&mut self, b: &usize, _: &usize, _: &usize) -> usize {
        self.add(PoolKey::of(pool::MUX), *b);
        *b
    }
    fn b2a(&mut self, b: &usize) -> usize {
        self.add(PoolKey::of(pool::B2A), *b);
        *b
    }
    fn compact_rows(&mut self, x: &usize, _: usize, _: &usize) -> usize {
        *x
    }
    fn partition(&mut self, low: &usize, _: usize) -> (usize, usize) {
        if self.all_low {
            (0, *low)
        } else {
            (*low, 0)
        }
    }
    fn partition_sizes(&self, p: &(usize, usize)) -> (usize, usize) {
        *p
    }
    fn split_rows(&mut self, x: &usize, width: usize, p: &(usize, usize)) -> (usize, usize) {
        assert_eq!(*x, (p.0 + p.1) * width, "split_rows");
        (p.0 * width, p.1 * width)
    }
    fn merge_rows(&mut self, high: &usize, low: &usize, _: usize, _: &(usize, usize)) -> usize {
        high + low
    }
}

/// The offline plan of one inference of `n` tokens on `model` (the
/// server's or the client's public shape: only shapes, ids and which layers
/// prune or reduce matter).
pub fn offline_plan(model: &EngineModel, thresholds: &[LayerThresholds], truncation: Truncation, n: usize) -> OfflinePlan {
    let run = |all_low: bool| {
        let mut g = Ghost {
            ring: model.ring(),
            truncation,
            all_low,
            meter: Meter::default(),
            pools: BTreeMap::new(),
            matrices: BTreeMap::new(),
            vectors: BTreeMap::new(),
        };
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
        vectors: high.vectors.iter().map(|(&id, &(n, len))| (id, n, len)).collect(),
        pools: pools.into_iter().collect(),
    }
}
