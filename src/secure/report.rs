//! Per-(operator class, layer) tallies of primitive costs and of overflows,
//! and the [`Meter`] a backend fills while it runs.
//!
//! Tallies are small lists of rows rather than maps so that they serialise to
//! plain JSON arrays (a map keyed by a tuple does not).

use crate::fixed::cost::PrimitiveCounts;
use serde::{Deserialize, Serialize};
use std::ops::AddAssign;

/// The operator classes costs and overflows are attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// The client's encoding of its embeddings (only overflows occur here).
    Input,
    /// Q, K, V, attention output and FFN dense layers (secret × public).
    Linear,
    /// QKᵀ and A·V (secret × secret).
    AttentionMatmul,
    Softmax,
    Gelu,
    #[serde(rename = "layernorm")]
    LayerNorm,
    /// Comparisons with θ and the compaction of kept tokens.
    Pruning,
    /// Comparisons with β and the partition into high and low groups.
    Reduction,
    /// Pooler dense layer and its tanh.
    PoolerTanh,
    Classifier,
}

impl OpClass {
    pub const ALL: [OpClass; 10] = [
        OpClass::Input,
        OpClass::Linear,
        OpClass::AttentionMatmul,
        OpClass::Softmax,
        OpClass::Gelu,
        OpClass::LayerNorm,
        OpClass::Pruning,
        OpClass::Reduction,
        OpClass::PoolerTanh,
        OpClass::Classifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpClass::Input => "input",
            OpClass::Linear => "linear",
            OpClass::AttentionMatmul => "attention_matmul",
            OpClass::Softmax => "softmax",
            OpClass::Gelu => "gelu",
            OpClass::LayerNorm => "layernorm",
            OpClass::Pruning => "pruning",
            OpClass::Reduction => "reduction",
            OpClass::PoolerTanh => "pooler_tanh",
            OpClass::Classifier => "classifier",
        }
    }
}

/// Where an operation is attributed: a class and an encoder layer (`None`
/// for the input, pooler and classifier, which sit outside the layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub class: OpClass,
    pub layer: Option<usize>,
}

/// Overflows seen in one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowCount {
    /// Values whose exact result left the signed range of the ring.
    pub count: u64,
    /// Bits (sign included) the largest such value needed: the ring width
    /// that would have held it.
    pub max_bits: u32,
}

impl AddAssign for OverflowCount {
    fn add_assign(&mut self, o: Self) {
        self.count += o.count;
        self.max_bits = self.max_bits.max(o.max_bits);
    }
}

/// One row of a [`Tally`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TallyRow<T> {
    pub class: OpClass,
    pub layer: Option<usize>,
    #[serde(flatten)]
    pub value: T,
}

/// Values per (class, layer), rows sorted by layer then class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tally<T> {
    rows: Vec<TallyRow<T>>,
}

pub type CostTally = Tally<PrimitiveCounts>;
pub type OverflowTally = Tally<OverflowCount>;

impl<T> Default for Tally<T> {
    fn default() -> Self {
        Tally { rows: Vec::new() }
    }
}

impl<T: Default + Copy + AddAssign> Tally<T> {
    pub fn rows(&self) -> &[TallyRow<T>] {
        &self.rows
    }

    /// The row of a scope, created empty if missing; returns its index.
    fn index_of(&mut self, scope: Scope) -> usize {
        let key = (scope.layer, scope.class);
        match self.rows.binary_search_by(|r| (r.layer, r.class).cmp(&key)) {
            Ok(i) => i,
            Err(i) => {
                self.rows.insert(
                    i,
                    TallyRow { class: scope.class, layer: scope.layer, value: T::default() },
                );
                i
            }
        }
    }

    pub fn add(&mut self, scope: Scope, value: T) {
        let i = self.index_of(scope);
        self.rows[i].value += value;
    }

    pub fn get(&self, class: OpClass, layer: Option<usize>) -> T {
        self.rows
            .iter()
            .find(|r| r.class == class && r.layer == layer)
            .map(|r| r.value)
            .unwrap_or_default()
    }

    /// Sum over layers of one class.
    pub fn class_total(&self, class: OpClass) -> T {
        let mut t = T::default();
        for r in self.rows.iter().filter(|r| r.class == class) {
            t += r.value;
        }
        t
    }

    /// Sum over classes of one layer.
    pub fn layer_total(&self, layer: Option<usize>) -> T {
        let mut t = T::default();
        for r in self.rows.iter().filter(|r| r.layer == layer) {
            t += r.value;
        }
        t
    }

    pub fn total(&self) -> T {
        let mut t = T::default();
        for r in &self.rows {
            t += r.value;
        }
        t
    }

    /// Add another tally row by row (e.g. to sum over examples).
    pub fn merge(&mut self, other: &Tally<T>) {
        for r in &other.rows {
            self.add(Scope { class: r.class, layer: r.layer }, r.value);
        }
    }
}

impl OverflowTally {
    /// Total number of overflowed values.
    pub fn count(&self) -> u64 {
        self.rows.iter().map(|r| r.value.count).sum()
    }
}

/// What a backend records while it runs: the current scope, the primitive
/// counts and the overflows. The forward sets the scope before each operator.
#[derive(Clone, Debug)]
pub struct Meter {
    scope: Scope,
    cost_row: usize,
    pub cost: CostTally,
    pub overflow: OverflowTally,
}

impl Default for Meter {
    fn default() -> Self {
        let mut m = Meter {
            scope: Scope { class: OpClass::Input, layer: None },
            cost_row: 0,
            cost: CostTally::default(),
            overflow: OverflowTally::default(),
        };
        m.set_scope(OpClass::Input, None);
        m
    }
}

impl Meter {
    pub fn set_scope(&mut self, class: OpClass, layer: Option<usize>) {
        self.scope = Scope { class, layer };
        self.cost_row = self.cost.index_of(self.scope);
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Add counts to the current scope.
    pub fn count(&mut self, c: PrimitiveCounts) {
        self.cost.rows[self.cost_row].value += c;
    }

    /// Record `count` overflowed values in the current scope, the largest
    /// needing `max_bits` bits.
    pub fn overflow(&mut self, count: u64, max_bits: u32) {
        if count > 0 {
            self.overflow.add(self.scope, OverflowCount { count, max_bits });
        }
    }
}

/// Bits (sign included) a signed integer needs: 1 + ⌈log2⌉ of its magnitude.
pub fn signed_bits(v: i128) -> u32 {
    let m = if v < 0 { !v } else { v };
    129 - m.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_rows_sum_and_serialise() {
        let mut m = Meter::default();
        m.set_scope(OpClass::Softmax, Some(1));
        m.count(PrimitiveCounts { comparisons: 3, ..Default::default() });
        m.set_scope(OpClass::Gelu, Some(0));
        m.count(PrimitiveCounts { ss_mults: 5, ..Default::default() });
        m.set_scope(OpClass::Softmax, Some(1));
        m.count(PrimitiveCounts { comparisons: 4, ..Default::default() });
        m.overflow(2, 40);
        m.overflow(1, 45);
        assert_eq!(m.cost.get(OpClass::Softmax, Some(1)).comparisons, 7);
        assert_eq!(m.cost.total().ss_mults, 5);
        assert_eq!(m.cost.layer_total(Some(0)).ss_mults, 5);
        assert_eq!(m.overflow.get(OpClass::Softmax, Some(1)), OverflowCount { count: 3, max_bits: 45 });
        assert_eq!(m.overflow.count(), 3);
        let json = serde_json::to_string(&m.overflow).unwrap();
        assert_eq!(json, r#"[{"class":"softmax","layer":1,"count":3,"max_bits":45}]"#);
        let back: OverflowTally = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m.overflow);
        for c in OpClass::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()));
        }
        let mut twice = m.cost.clone();
        twice.merge(&m.cost);
        assert_eq!(twice.class_total(OpClass::Softmax).comparisons, 14);
    }

    #[test]
    fn signed_bit_lengths() {
        assert_eq!(signed_bits(0), 1);
        assert_eq!(signed_bits(-1), 1);
        assert_eq!(signed_bits(127), 8);
        assert_eq!(signed_bits(128), 9);
        assert_eq!(signed_bits(-128), 8);
        assert_eq!(signed_bits(-129), 9);
    }
}
