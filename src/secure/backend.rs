//! The protocol primitives the forward is written over.
//!
//! A backend holds secret values as it likes: the plain backend
//! ([`super::plain`]) holds the ring elements in the clear, a two-party
//! backend would hold additive shares. The BERT forward and the fixed-point
//! approximations call only these methods, so both backends run the same
//! algorithm and must agree bit for bit in `exact` truncation mode — the
//! cleartext twin separates approximation error from protocol bugs.
//!
//! Vectors are flat and row-major; shapes are the caller's bookkeeping.
//! Operations are element-wise unless said otherwise. A public operand given
//! as a slice shorter than the secret repeats cyclically (a bias or a LayerNorm
//! γ over rows, a scalar as a 1-element slice); its length must divide the
//! secret's.
//!
//! **Local** methods cost nothing in a protocol (they act on each share
//! alone); **interactive** ones are counted in the backend's [`Meter`] under
//! the scope the forward has set. Backends also check every operation whose
//! exact result can grow (sums, products before truncation) and count values
//! that leave the ring's signed range as overflows in that scope.
//!
//! # Panics
//! Shape mismatches (lengths that do not match or divide) are programmer
//! errors and panic with a message.

use super::report::{Meter, OpClass};
use crate::fixed::Ring;

/// A public weight matrix as the server holds it, encoded in the ring.
#[derive(Clone, Debug)]
pub struct PublicMatrix {
    /// Which of the model's weights this is (the dealer of the shares
    /// backend looks weights up by it); 0 outside a model.
    pub id: u32,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Signed views of the encoded weights, transposed (out_dim × in_dim) so
    /// that each output is a contiguous dot product.
    pub w_t: Vec<i64>,
    /// Σ_k |w[k][j]| per output column j: bounds a dot product so the plain
    /// backend knows when 64-bit accumulation is exact (see its matmul).
    pub(crate) col_l1: Vec<u128>,
    /// The weights as offset 32-bit values, when they all fit in i32 (the
    /// plain backend's fast kernel).
    pub(crate) offset32: Option<Offset32>,
}

/// Weights w stored as w + 2^31 in `u32` (so that products of two such
/// values are unsigned 32 × 32 → 64-bit multiplies, one SIMD instruction per
/// two lanes even on baseline x86-64), with Σ_k w per column to undo the
/// offset.
#[derive(Clone, Debug)]
pub(crate) struct Offset32 {
    pub(crate) w: Vec<u32>,
    pub(crate) col_sum: Vec<i64>,
}

/// `v + 2^31` as `u32` for a `v` that fits in i32.
pub(crate) fn offset32(v: i64) -> u32 {
    (v as i32 as u32) ^ 0x8000_0000
}

impl PublicMatrix {
    /// From signed encoded weights laid out `out_dim × in_dim` (Hugging Face
    /// `Linear.weight` layout).
    pub fn from_out_in(w_t: Vec<i64>, in_dim: usize, out_dim: usize) -> Self {
        assert_eq!(w_t.len(), in_dim * out_dim, "weight is not {out_dim} × {in_dim}");
        let col_l1 = w_t
            .chunks(in_dim.max(1))
            .map(|row| row.iter().map(|w| w.unsigned_abs() as u128).sum())
            .collect();
        let fits = w_t.iter().all(|&w| i32::try_from(w).is_ok());
        let offset32 = fits.then(|| Offset32 {
            w: w_t.iter().map(|&w| offset32(w)).collect(),
            col_sum: w_t.chunks(in_dim.max(1)).map(|row| row.iter().sum()).collect(),
        });
        PublicMatrix { id: 0, in_dim, out_dim, w_t, col_l1, offset32 }
    }
}

/// A vector of the server's (LayerNorm γ at scale s), with its id in the
/// model as for [`PublicMatrix::id`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightVector {
    pub id: u32,
    pub values: Vec<u64>,
}

impl WeightVector {
    pub fn new(values: Vec<u64>) -> Self {
        WeightVector { id: 0, values }
    }
}

/// A public dense layer: weights at scale s and a bias at scale 2s, added to
/// the 2s-scaled products before the single truncation.
#[derive(Clone, Debug)]
pub struct PublicLinear {
    pub matrix: PublicMatrix,
    pub bias2: Vec<u64>,
}

/// The primitives of a two-party protocol over Z_{2^ℓ}.
pub trait Backend {
    /// A secret vector of ring elements (arithmetic shares).
    type Arith: Clone;
    /// A secret vector of bits (boolean shares).
    type Bits: Clone;
    /// A secret partition of rows into a high and a low group whose sizes
    /// are public (made by [`Backend::partition`]).
    type Partition;

    fn ring(&self) -> Ring;
    /// The accounting of this run.
    fn meter(&mut self) -> &mut Meter;
    fn len(&self, x: &Self::Arith) -> usize;
    fn bits_len(&self, b: &Self::Bits) -> usize;

    /// Attribute what follows to an operator class and layer.
    fn set_scope(&mut self, class: OpClass, layer: Option<usize>) {
        self.meter().set_scope(class, layer);
    }

    /// Count `n` elements processed by the current operator.
    fn note_elements(&mut self, n: usize) {
        self.meter().count(crate::fixed::cost::PrimitiveCounts {
            elements: n as u64,
            ..Default::default()
        });
    }

    // ---- in and out -------------------------------------------------------

    /// The client's input, already encoded in the ring (secret-shared by the
    /// client in a protocol).
    fn input(&mut self, values: &[u64]) -> Self::Arith;
    /// Public ring values as a secret (trivial sharing; local).
    fn constant(&mut self, values: &[u64]) -> Self::Arith;
    /// Open a secret to both parties (interactive, counted as reveals).
    fn reveal(&mut self, x: &Self::Arith) -> Vec<u64>;
    /// Open a secret to the client (the input's owner) only: the result of
    /// an inference. A party that does not learn it gets an empty vector.
    /// Counted as reveals, like [`Backend::reveal`].
    fn reveal_output(&mut self, x: &Self::Arith) -> Vec<u64> {
        self.reveal(x)
    }
    /// Analysis only: the value of a secret, for reports (scores, kept
    /// positions). Not a protocol step; never counted. `None` where the
    /// backend cannot see it (a deployed protocol).
    fn peek(&mut self, x: &Self::Arith) -> Option<Vec<u64>>;
    /// Analysis only, as [`Backend::peek`].
    fn peek_bits(&mut self, b: &Self::Bits) -> Option<Vec<bool>>;

    // ---- local ------------------------------------------------------------

    fn add(&mut self, a: &Self::Arith, b: &Self::Arith) -> Self::Arith;
    fn sub(&mut self, a: &Self::Arith, b: &Self::Arith) -> Self::Arith;
    fn neg(&mut self, a: &Self::Arith) -> Self::Arith;
    /// `a + c`, c public (cyclic).
    fn add_public(&mut self, a: &Self::Arith, c: &[u64]) -> Self::Arith;
    /// `a · c`, c public (cyclic); not truncated.
    fn mul_public(&mut self, a: &Self::Arith, c: &[u64]) -> Self::Arith;
    /// `a · w`, w a vector of the server's weights (cyclic); not truncated.
    /// Local where weights are public to the computation (the plain
    /// engine); one message in a two-party protocol.
    /// The server's vector `w` repeated over `rows` rows as a secret value:
    /// the server's share is `w`, the client's 0 (as for a constant; the
    /// client's copy of the model has zeros there). A product with it can
    /// then open it masked beside another opening ([`Backend::trunc_mul`])
    /// instead of taking a round of its own.
    fn weights_shared(&mut self, w: &WeightVector, rows: usize) -> Self::Arith {
        let v: Vec<u64> = (0..rows).flat_map(|_| w.values.iter().copied()).collect();
        self.constant(&v)
    }
    /// `x · W` for x of `rows × w.in_dim`; not truncated. Counted as
    /// secret × public MACs (an HE or local protocol, cheap next to the
    /// non-linear layers).
    fn matmul_public(&mut self, x: &Self::Arith, rows: usize, w: &PublicMatrix) -> Self::Arith;
    /// `out[i] = x[idx[i]]`: any public re-arrangement (slices, transposes,
    /// broadcasts, head splits).
    fn gather(&mut self, x: &Self::Arith, idx: &[usize]) -> Self::Arith;
    fn concat(&mut self, parts: &[&Self::Arith]) -> Self::Arith;
    /// Sums of consecutive chunks of length `chunk`.
    fn sum_chunks(&mut self, x: &Self::Arith, chunk: usize) -> Self::Arith;
    /// Bitwise NOT (local: one party flips its share).
    fn not(&mut self, b: &Self::Bits) -> Self::Bits;
    fn bits_public(&mut self, v: &[bool]) -> Self::Bits;
    fn bits_concat(&mut self, parts: &[&Self::Bits]) -> Self::Bits;
    /// `out[i] = b[idx[i]]` (local).
    fn bits_gather(&mut self, b: &Self::Bits, idx: &[usize]) -> Self::Bits;
    /// Ring values that are 0 or 1 (as [`Backend::b2a`] makes them) as
    /// bits again: local on additive shares (their low bits are XOR shares
    /// of the bit), and [`Backend::b2a`] of the result is free.
    fn ring_bits(&mut self, x: &Self::Arith) -> Self::Bits;

    // ---- interactive --------------------------------------------------------

    /// Element-wise secret × secret product; not truncated.
    fn mul(&mut self, a: &Self::Arith, b: &Self::Arith) -> Self::Arith;
    /// Secret × secret matrix product, `a` m × k times `b` k × n; not
    /// truncated.
    fn matmul(&mut self, a: &Self::Arith, b: &Self::Arith, m: usize, k: usize, n: usize)
        -> Self::Arith;
    /// Independent products of the same shape (the heads of attention):
    /// one round in a protocol instead of one per product.
    fn matmul_many(&mut self, pairs: &[(Self::Arith, Self::Arith)], m: usize, k: usize, n: usize) -> Vec<Self::Arith> {
        pairs.iter().map(|(a, b)| self.matmul(a, b, m, k, n)).collect()
    }
    /// Truncation by `k` bits (the backend's exact or probabilistic mode).
    fn truncate(&mut self, a: &Self::Arith, k: u32) -> Self::Arith;
    /// Whether [`Backend::truncate`] is exact (an arithmetic shift), so
    /// that truncations of one value by different k agree with each other.
    fn exact_truncation(&self) -> bool;
    /// Most significant bit of the signed view, i.e. `a < 0`: one secure
    /// comparison per element.
    fn msb(&mut self, a: &Self::Arith) -> Self::Bits;
    /// `msb(a)` and `truncate(t, k)` of two independent secrets: a protocol
    /// that opens a masked value for each does both in one round.
    fn msb_and_truncate(&mut self, a: &Self::Arith, t: &Self::Arith, k: u32) -> (Self::Bits, Self::Arith) {
        let (m, mut ts) = self.msb_and_truncate_each(a, &[(t, k)]);
        (m, ts.pop().expect("one truncation"))
    }
    /// `msb(a)` and `truncate(t, k)` for each (t, k) of `parts`, all
    /// independent: one round in a protocol that opens a masked value for
    /// each.
    fn msb_and_truncate_each(&mut self, a: &Self::Arith, parts: &[(&Self::Arith, u32)]) -> (Self::Bits, Vec<Self::Arith>) {
        let m = self.msb(a);
        (m, parts.iter().map(|&(t, k)| self.truncate(t, k)).collect())
    }
    /// `msb(a)` and `a·msb(a)` (the MUX of `a` and zero on its own sign,
    /// as in max, ReLU and |x|): a protocol whose comparison key can carry
    /// the mask of `a` does both in the comparison's round.
    fn msb_times(&mut self, a: &Self::Arith) -> (Self::Bits, Self::Arith) {
        let m = self.msb(a);
        let z = self.zeros(self.len(a));
        let p = self.mux(&m, a, &z);
        (m, p)
    }
    /// `truncate(u, k)` and `y·truncate(u, k)` (not truncated): a protocol
    /// that opens y masked beside u's truncation opening does both in one
    /// round, where truncating and then multiplying take two.
    fn trunc_mul(&mut self, y: &Self::Arith, u: &Self::Arith, k: u32) -> (Self::Arith, Self::Arith) {
        let t = self.truncate(u, k);
        let p = self.mul(y, &t);
        (t, p)
    }
    /// `y1·u + y2·truncate(u, k)` (not truncated; with y2 = 1 − y1 a bit,
    /// the MUX between u and its truncation): a protocol that opens y1 and
    /// y2 masked beside u's truncation opening does it in one round, where
    /// truncating and then multiplying take two (the protocol backends
    /// override this; here it is the engine's arithmetic).
    fn trunc_lincomb(&mut self, y1: &Self::Arith, y2: &Self::Arith, u: &Self::Arith, k: u32) -> Self::Arith {
        let t = self.truncate(u, k);
        let a = self.mul(y1, u);
        let c = self.mul(y2, &t);
        self.add(&a, &c)
    }
    /// `b ? if_one : if_zero`, element-wise.
    fn mux(&mut self, b: &Self::Bits, if_one: &Self::Arith, if_zero: &Self::Arith) -> Self::Arith;
    /// A bit as the ring integer 0 or 1 (not scaled).
    fn b2a(&mut self, b: &Self::Bits) -> Self::Arith;
    /// Oblivious compaction: keep the rows (of `width` elements) whose bit
    /// is set, in their order; the number kept is revealed. Cost:
    /// [`crate::fixed::cost::swap_compaction`].
    fn compact_rows(&mut self, x: &Self::Arith, width: usize, keep: &Self::Bits) -> Self::Arith;
    /// Obliviously partition `low.len()` rows of `width` elements into a high
    /// group (bit unset) and a low group (bit set); the group sizes are
    /// revealed. Cost as compaction. Later splits and merges with the
    /// partition are free relabelings: a protocol keeps rows in partitioned
    /// order, and ring sums do not depend on order. (A shares backend that
    /// keeps the permuted order must still find `[CLS]` for the pooler, e.g.
    /// by carrying a one-hot column through the partition.)
    fn partition(&mut self, low: &Self::Bits, width: usize) -> Self::Partition;
    /// Sizes (high, low) of a partition, public.
    fn partition_sizes(&self, p: &Self::Partition) -> (usize, usize);
    /// Rows of `x` (width `width`) split into (high rows, low rows).
    fn split_rows(&mut self, x: &Self::Arith, width: usize, p: &Self::Partition)
        -> (Self::Arith, Self::Arith);
    /// Inverse of [`Backend::split_rows`].
    fn merge_rows(
        &mut self,
        high: &Self::Arith,
        low: &Self::Arith,
        width: usize,
        p: &Self::Partition,
    ) -> Self::Arith;

    // ---- conveniences built from the above (same on every backend) ---------

    /// `a − c`, c public (cyclic).
    fn sub_public(&mut self, a: &Self::Arith, c: &[u64]) -> Self::Arith {
        let r = self.ring();
        let neg: Vec<u64> = c.iter().map(|&v| r.neg(v)).collect();
        self.add_public(a, &neg)
    }

    /// `c − a`, c public (cyclic).
    fn public_sub(&mut self, c: &[u64], a: &Self::Arith) -> Self::Arith {
        let n = self.neg(a);
        self.add_public(&n, c)
    }

    /// `a ≥ c` as bits (one comparison each), c public (cyclic).
    fn ge_public(&mut self, a: &Self::Arith, c: &[u64]) -> Self::Bits {
        let d = self.sub_public(a, c);
        let lt = self.msb(&d);
        self.not(&lt)
    }

    /// Zeros of length n (public).
    fn zeros(&mut self, n: usize) -> Self::Arith {
        self.constant(&vec![0; n])
    }

    /// Truncation by s, the usual rescale after a product.
    fn rescale(&mut self, a: &Self::Arith) -> Self::Arith {
        let s = self.ring().frac();
        self.truncate(a, s)
    }

    /// Secret × public dense layer with bias, one truncation:
    /// `trunc(x·W + b)`, the bias encoded at 2s.
    fn linear(&mut self, x: &Self::Arith, rows: usize, lin: &PublicLinear) -> Self::Arith {
        let y = self.matmul_public(x, rows, &lin.matrix);
        let y = self.add_public(&y, &lin.bias2);
        self.rescale(&y)
    }
}
