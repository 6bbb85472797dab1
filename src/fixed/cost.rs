//! Counters of the secure primitives a two-party protocol executes, and the
//! cost model of the oblivious row movements used by pruning and reduction.
//!
//! Counts are in *elements*: a MUX over a 384-wide vector is 384 MUXes, a
//! truncation of an n-element vector is n truncations. They are what the
//! backends execute, counted as they execute it, so the plain engine and a
//! secret-shared backend report the same numbers for the same forward.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

/// Primitive counts of one operator class in one layer (or in total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimitiveCounts {
    /// Element-wise secret × secret multiplications (one Beaver triple or
    /// one OT-based product each).
    pub ss_mults: u64,
    /// Multiply-accumulates of secret × secret matrix products (QKᵀ, A·V).
    pub ss_macs: u64,
    /// Multiply-accumulates of secret × public products (linear layers;
    /// local on additive shares, HE-based in BOLT).
    pub pub_macs: u64,
    /// Truncations (faithful or probabilistic), per element.
    pub truncations: u64,
    /// Secure comparisons (MSB extraction / millionaires'), per element.
    pub comparisons: u64,
    /// Multiplexers, per element selected.
    pub muxes: u64,
    /// Boolean-to-arithmetic share conversions, per bit.
    pub b2a: u64,
    /// Values opened to both parties (the logits, the pruned/reduced counts).
    pub reveals: u64,
    /// Elements the operator processed (its input size; see the forward).
    pub elements: u64,
}

impl AddAssign for PrimitiveCounts {
    fn add_assign(&mut self, o: Self) {
        self.ss_mults += o.ss_mults;
        self.ss_macs += o.ss_macs;
        self.pub_macs += o.pub_macs;
        self.truncations += o.truncations;
        self.comparisons += o.comparisons;
        self.muxes += o.muxes;
        self.b2a += o.b2a;
        self.reveals += o.reveals;
        self.elements += o.elements;
    }
}

impl Add for PrimitiveCounts {
    type Output = Self;
    fn add(mut self, o: Self) -> Self {
        self += o;
        self
    }
}

/// Cost of CipherPrune's oblivious compaction (REFERENCE.md §4): `moved` of
/// `n` rows of `width` ring elements are carried to the tail by `moved`
/// passes of `n − 1` adjacent oblivious swaps, which keeps the order of the
/// others. One swap is one comparison (on the bound keep-bits) and two MUXes
/// over the row. The number moved is opened (one reveal); nothing moves, and
/// nothing is paid beyond that reveal, when it is 0.
///
/// The same model prices the reduction's partition into high and low groups.
pub fn swap_compaction(n: usize, moved: usize, width: usize) -> PrimitiveCounts {
    assert!(moved <= n, "cannot move {moved} of {n} rows");
    let swaps = (moved * n.saturating_sub(1)) as u64;
    PrimitiveCounts {
        comparisons: swaps,
        muxes: 2 * swaps * width as u64,
        reveals: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_cost_model() {
        // REFERENCE.md §4's measured case: 50 tokens, 2 pruned, 768 wide.
        let c = swap_compaction(50, 2, 768);
        assert_eq!(c.comparisons, 98);
        assert_eq!(c.muxes, 2 * 98 * 768);
        assert_eq!(c.reveals, 1);
        assert_eq!(swap_compaction(50, 0, 768).muxes, 0);
        let sum = c + c;
        assert_eq!(sum.comparisons, 196);
    }
}
