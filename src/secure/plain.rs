//! The cleartext ring backend: secrets are ring elements held in the clear.
//! This *is* the fixed-point engine — it computes the values a two-party
//! protocol would reconstruct, counts the primitives it would execute, and
//! notices overflows a protocol could not see.
//!
//! Every operation computes the ring result with wrapping `u64` arithmetic
//! (exact mod 2^ℓ) and, separately, the exact integer result of the signed
//! operands in `i128` to check that it fits; values that do not are counted
//! in the meter's current scope and the computation goes on with the wrapped
//! value, as the ring would.

use super::backend::{Backend, PublicMatrix};
use super::report::{signed_bits, Meter};
use crate::fixed::cost::{swap_compaction, PrimitiveCounts};
use crate::fixed::{Ring, Truncation};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

/// Below this many MACs a matrix product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 16;

/// See the module docs.
pub struct PlainBackend {
    ring: Ring,
    truncation: Truncation,
    /// Probabilistic truncation draws: ChaCha20 seeded with the run's seed,
    /// stream = example index, consumed in program order (never inside a
    /// parallel loop), so results do not depend on threads.
    rng: ChaCha20Rng,
    meter: Meter,
}

/// A partition of rows into high (bit unset) and low (bit set) groups.
#[derive(Clone, Debug)]
pub struct PlainPartition {
    low: Vec<bool>,
}

impl PlainBackend {
    pub fn new(ring: Ring, truncation: Truncation, example_index: u64) -> Self {
        let seed = match truncation {
            Truncation::Exact => 0,
            Truncation::Probabilistic { seed } => seed,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(example_index);
        PlainBackend { ring, truncation, rng, meter: Meter::default() }
    }

    pub fn into_meter(self) -> Meter {
        self.meter
    }

    fn counts(&mut self, c: PrimitiveCounts) {
        self.meter.count(c);
    }

    /// Apply a binary op on signed views with cyclic broadcasting of `b`.
    /// `exact` is the checked i64 operation: `None` means the exact result
    /// does not even fit i64, hence not the ring (ℓ ≤ 64); `ring` is the same
    /// operation wrapping on `u64`, exact modulo 2^ℓ.
    fn zip_checked(
        &mut self,
        a: &[u64],
        b: &[u64],
        exact: impl Fn(i64, i64) -> Option<i64>,
        ring: impl Fn(u64, u64) -> u64,
    ) -> Vec<u64> {
        assert!(
            a.is_empty() || (!b.is_empty() && a.len().is_multiple_of(b.len())),
            "operand of length {} does not divide {}",
            b.len(),
            a.len()
        );
        let r = self.ring;
        let (lo, hi) = (r.min_signed() as i64, r.max_signed() as i64);
        let mut acc = OverflowAcc::default();
        let out = a
            .iter()
            .zip(b.iter().cycle())
            .map(|(&x, &y)| {
                let (sx, sy) = (r.to_signed(x), r.to_signed(y));
                match exact(sx, sy) {
                    Some(v) if v >= lo && v <= hi => {}
                    Some(v) => acc.note_bits(signed_bits(v as i128)),
                    // Beyond i64: recorded as needing 65 bits.
                    None => acc.note_bits(65),
                }
                r.reduce(ring(x, y))
            })
            .collect();
        acc.record(&mut self.meter);
        out
    }
}

/// Running count of overflowed values inside one operation.
#[derive(Default, Clone, Copy)]
struct OverflowAcc {
    count: u64,
    max_bits: u32,
}

impl OverflowAcc {
    /// Reduce an exact value into the ring, noting whether it fitted.
    fn push(&mut self, r: Ring, v: i128) -> u64 {
        if !r.fits(v) {
            self.count += 1;
            self.max_bits = self.max_bits.max(signed_bits(v));
        }
        r.from_i128(v)
    }

    /// Count a value known not to fit, needing `bits` bits.
    fn note_bits(&mut self, bits: u32) {
        self.count += 1;
        self.max_bits = self.max_bits.max(bits);
    }

    fn join(mut self, o: OverflowAcc) -> OverflowAcc {
        self.count += o.count;
        self.max_bits = self.max_bits.max(o.max_bits);
        self
    }

    fn record(self, m: &mut Meter) {
        m.overflow(self.count, self.max_bits);
    }
}

/// One output row of `x · W`: exact 64-bit accumulation when the weight
/// column's L1 norm times the row's largest |x| stays below 2^63 (then no
/// wrapping can happen and the i64 sum is the exact integer); otherwise the
/// column falls back to i128. When x and W fit in i32 the 64-bit sum is
/// computed with the offset kernel [`dot_offset32`].
fn matmul_public_row(r: Ring, x: &[i64], w: &PublicMatrix, out: &mut [u64]) -> OverflowAcc {
    let max_abs = x.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0) as u128;
    let k = w.in_dim;
    // x + 2^31 as u32 (only used when every |x| < 2^31).
    let fast = w.offset32.as_ref().filter(|_| max_abs < (1 << 31)).map(|o| {
        let xu: Vec<u32> = x.iter().map(|&v| super::backend::offset32(v)).collect();
        (o, xu, x.iter().sum::<i64>())
    });
    let mut acc = OverflowAcc::default();
    for (j, o) in out.iter_mut().enumerate() {
        let exact: i128 = if max_abs * w.col_l1[j] < (1u128 << 63) {
            match &fast {
                Some((o32, xu, xsum)) => {
                    dot_offset32(xu, &o32.w[j * k..(j + 1) * k], *xsum, o32.col_sum[j]) as i128
                }
                None => dot_i64(x, &w.w_t[j * k..(j + 1) * k]) as i128,
            }
        } else {
            x.iter().zip(&w.w_t[j * k..(j + 1) * k]).map(|(&a, &b)| a as i128 * b as i128).sum()
        };
        *o = acc.push(r, exact);
    }
    acc
}

/// Σ x·w mod 2^64 from offset operands xu = x + 2^31, wu = w + 2^31:
/// Σ xu·wu = Σ x·w + 2^31(Σx + Σw) + k·2^62 (mod 2^64).
fn dot_offset32(xu: &[u32], wu: &[u32], xsum: i64, wsum: i64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { dot_offset32_avx2(xu, wu, xsum, wsum) };
        }
    }
    dot_offset32_portable(xu, wu, xsum, wsum)
}

/// The same loop compiled with AVX2 enabled (4 unsigned 32 × 32 → 64-bit
/// multiplies per instruction); chosen at run time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_offset32_avx2(xu: &[u32], wu: &[u32], xsum: i64, wsum: i64) -> i64 {
    dot_offset32_portable(xu, wu, xsum, wsum)
}

#[inline(always)]
fn dot_offset32_portable(xu: &[u32], wu: &[u32], xsum: i64, wsum: i64) -> i64 {
    let mut acc = [0u64; 8];
    let ca = xu.chunks_exact(8);
    let cb = wu.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = acc[l].wrapping_add(x[l] as u64 * y[l] as u64);
        }
    }
    let mut s = acc.iter().fold(0u64, |s, &v| s.wrapping_add(v));
    for (x, y) in ra.iter().zip(rb) {
        s = s.wrapping_add(*x as u64 * *y as u64);
    }
    let k = xu.len() as u64;
    let corr = ((xsum.wrapping_add(wsum)) as u64).wrapping_shl(31).wrapping_add(k.wrapping_shl(62));
    s.wrapping_sub(corr) as i64
}

/// Dot product with eight independent accumulators (lets the compiler keep
/// several multiplies in flight); wrapping, exact when the caller's bound holds.
fn dot_i64(a: &[i64], b: &[i64]) -> i64 {
    let mut acc = [0i64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = acc[l].wrapping_add(x[l].wrapping_mul(y[l]));
        }
    }
    let mut s = acc.iter().fold(0i64, |s, &v| s.wrapping_add(v));
    for (x, y) in ra.iter().zip(rb) {
        s = s.wrapping_add(x.wrapping_mul(*y));
    }
    s
}

impl Backend for PlainBackend {
    type Arith = Vec<u64>;
    type Bits = Vec<bool>;
    type Partition = PlainPartition;

    fn ring(&self) -> Ring {
        self.ring
    }

    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }

    fn len(&self, x: &Vec<u64>) -> usize {
        x.len()
    }

    fn bits_len(&self, b: &Vec<bool>) -> usize {
        b.len()
    }

    fn input(&mut self, values: &[u64]) -> Vec<u64> {
        values.iter().map(|&v| self.ring.reduce(v)).collect()
    }

    fn constant(&mut self, values: &[u64]) -> Vec<u64> {
        self.input(values)
    }

    fn reveal(&mut self, x: &Vec<u64>) -> Vec<u64> {
        self.counts(PrimitiveCounts { reveals: x.len() as u64, ..Default::default() });
        x.clone()
    }

    fn peek(&mut self, x: &Vec<u64>) -> Option<Vec<u64>> {
        Some(x.clone())
    }

    fn peek_bits(&mut self, b: &Vec<bool>) -> Option<Vec<bool>> {
        Some(b.clone())
    }

    fn add(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        assert_eq!(a.len(), b.len(), "add: lengths differ");
        self.zip_checked(a, b, i64::checked_add, u64::wrapping_add)
    }

    fn sub(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        assert_eq!(a.len(), b.len(), "sub: lengths differ");
        self.zip_checked(a, b, i64::checked_sub, u64::wrapping_sub)
    }

    fn neg(&mut self, a: &Vec<u64>) -> Vec<u64> {
        self.zip_checked(a, &[0], |x, _| x.checked_neg(), |x, _| x.wrapping_neg())
    }

    fn add_public(&mut self, a: &Vec<u64>, c: &[u64]) -> Vec<u64> {
        self.zip_checked(a, c, i64::checked_add, u64::wrapping_add)
    }

    fn mul_public(&mut self, a: &Vec<u64>, c: &[u64]) -> Vec<u64> {
        self.zip_checked(a, c, i64::checked_mul, u64::wrapping_mul)
    }

    fn matmul_public(&mut self, x: &Vec<u64>, rows: usize, w: &PublicMatrix) -> Vec<u64> {
        assert_eq!(x.len(), rows * w.in_dim, "matmul_public: x is not {rows} × {}", w.in_dim);
        let r = self.ring;
        let xs: Vec<i64> = x.iter().map(|&v| r.to_signed(v)).collect();
        let mut out = vec![0u64; rows * w.out_dim];
        let k = w.in_dim.max(1);
        let acc = if rows * w.in_dim * w.out_dim >= PAR_MIN_MACS && w.out_dim > 0 {
            out.par_chunks_mut(w.out_dim)
                .zip(xs.par_chunks(k))
                .map(|(o, xr)| matmul_public_row(r, xr, w, o))
                .reduce(OverflowAcc::default, OverflowAcc::join)
        } else {
            out.chunks_mut(w.out_dim.max(1))
                .zip(xs.chunks(k))
                .map(|(o, xr)| matmul_public_row(r, xr, w, o))
                .fold(OverflowAcc::default(), OverflowAcc::join)
        };
        acc.record(&mut self.meter);
        self.counts(PrimitiveCounts {
            pub_macs: (rows * w.in_dim * w.out_dim) as u64,
            ..Default::default()
        });
        out
    }

    fn gather(&mut self, x: &Vec<u64>, idx: &[usize]) -> Vec<u64> {
        idx.iter().map(|&i| x[i]).collect()
    }

    fn concat(&mut self, parts: &[&Vec<u64>]) -> Vec<u64> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn sum_chunks(&mut self, x: &Vec<u64>, chunk: usize) -> Vec<u64> {
        assert!(chunk > 0 && x.len().is_multiple_of(chunk), "sum_chunks: {chunk} does not divide {}", x.len());
        let r = self.ring;
        let mut acc = OverflowAcc::default();
        let out = x
            .chunks(chunk)
            .map(|c| acc.push(r, c.iter().map(|&v| r.to_signed(v) as i128).sum()))
            .collect();
        acc.record(&mut self.meter);
        out
    }

    fn not(&mut self, b: &Vec<bool>) -> Vec<bool> {
        b.iter().map(|&v| !v).collect()
    }

    fn bits_public(&mut self, v: &[bool]) -> Vec<bool> {
        v.to_vec()
    }

    fn bits_concat(&mut self, parts: &[&Vec<bool>]) -> Vec<bool> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn bits_gather(&mut self, b: &Vec<bool>, idx: &[usize]) -> Vec<bool> {
        idx.iter().map(|&i| b[i]).collect()
    }

    fn ring_bits(&mut self, x: &Vec<u64>) -> Vec<bool> {
        assert!(x.iter().all(|&v| v <= 1), "ring_bits: a value that is not a bit");
        x.iter().map(|&v| v == 1).collect()
    }

    fn mul(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        assert_eq!(a.len(), b.len(), "mul: lengths differ");
        self.counts(PrimitiveCounts { ss_mults: a.len() as u64, ..Default::default() });
        self.zip_checked(a, b, i64::checked_mul, u64::wrapping_mul)
    }

    fn matmul(&mut self, a: &Vec<u64>, b: &Vec<u64>, m: usize, k: usize, n: usize) -> Vec<u64> {
        assert_eq!(a.len(), m * k, "matmul: a is not {m} × {k}");
        assert_eq!(b.len(), k * n, "matmul: b is not {k} × {n}");
        let r = self.ring;
        let a: Vec<i64> = a.iter().map(|&v| r.to_signed(v)).collect();
        let mut bt = vec![0i64; k * n];
        for i in 0..k {
            for j in 0..n {
                bt[j * k + i] = r.to_signed(b[i * n + j]);
            }
        }
        let mut acc = OverflowAcc::default();
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            let ar = &a[i * k..(i + 1) * k];
            for j in 0..n {
                let br = &bt[j * k..(j + 1) * k];
                // Saturating: a sum that large is an overflow in any ring;
                // the ring value itself comes from the wrapping u64 sum.
                let mut exact: i128 = 0;
                let mut wrapped: u64 = 0;
                for (&x, &y) in ar.iter().zip(br) {
                    exact = exact.saturating_add(x as i128 * y as i128);
                    wrapped = wrapped.wrapping_add((x as u64).wrapping_mul(y as u64));
                }
                acc.push(r, exact);
                out.push(r.reduce(wrapped));
            }
        }
        acc.record(&mut self.meter);
        self.counts(PrimitiveCounts { ss_macs: (m * k * n) as u64, ..Default::default() });
        out
    }

    fn truncate(&mut self, a: &Vec<u64>, k: u32) -> Vec<u64> {
        self.counts(PrimitiveCounts { truncations: a.len() as u64, ..Default::default() });
        let r = self.ring;
        match self.truncation {
            Truncation::Exact => a.iter().map(|&v| r.trunc_exact(v, k)).collect(),
            Truncation::Probabilistic { .. } => {
                a.iter().map(|&v| r.trunc_stochastic(v, k, self.rng.next_u64())).collect()
            }
        }
    }

    fn exact_truncation(&self) -> bool {
        self.truncation == Truncation::Exact
    }

    fn msb(&mut self, a: &Vec<u64>) -> Vec<bool> {
        self.counts(PrimitiveCounts { comparisons: a.len() as u64, ..Default::default() });
        let r = self.ring;
        a.iter().map(|&v| r.to_signed(v) < 0).collect()
    }

    fn mux(&mut self, b: &Vec<bool>, if_one: &Vec<u64>, if_zero: &Vec<u64>) -> Vec<u64> {
        assert!(
            b.len() == if_one.len() && b.len() == if_zero.len(),
            "mux: lengths {} {} {}",
            b.len(),
            if_one.len(),
            if_zero.len()
        );
        self.counts(PrimitiveCounts { muxes: b.len() as u64, ..Default::default() });
        b.iter().zip(if_one.iter().zip(if_zero)).map(|(&c, (&x, &y))| if c { x } else { y }).collect()
    }

    fn b2a(&mut self, b: &Vec<bool>) -> Vec<u64> {
        self.counts(PrimitiveCounts { b2a: b.len() as u64, ..Default::default() });
        b.iter().map(|&v| v as u64).collect()
    }

    fn compact_rows(&mut self, x: &Vec<u64>, width: usize, keep: &Vec<bool>) -> Vec<u64> {
        assert_eq!(x.len(), keep.len() * width, "compact_rows: {} rows of {width}", keep.len());
        let kept = keep.iter().filter(|&&k| k).count();
        self.counts(swap_compaction(keep.len(), keep.len() - kept, width));
        x.chunks(width.max(1))
            .zip(keep)
            .filter(|(_, &k)| k)
            .flat_map(|(row, _)| row.iter().copied())
            .collect()
    }

    fn partition(&mut self, low: &Vec<bool>, width: usize) -> PlainPartition {
        let n_low = low.iter().filter(|&&v| v).count();
        self.counts(swap_compaction(low.len(), n_low, width));
        PlainPartition { low: low.clone() }
    }

    fn partition_sizes(&self, p: &PlainPartition) -> (usize, usize) {
        let n_low = p.low.iter().filter(|&&v| v).count();
        (p.low.len() - n_low, n_low)
    }

    fn split_rows(&mut self, x: &Vec<u64>, width: usize, p: &PlainPartition) -> (Vec<u64>, Vec<u64>) {
        assert_eq!(x.len(), p.low.len() * width, "split_rows: {} rows of {width}", p.low.len());
        let (mut hi, mut lo) = (Vec::new(), Vec::new());
        for (row, &l) in x.chunks(width.max(1)).zip(&p.low) {
            if l { &mut lo } else { &mut hi }.extend_from_slice(row);
        }
        (hi, lo)
    }

    fn merge_rows(&mut self, high: &Vec<u64>, low: &Vec<u64>, width: usize, p: &PlainPartition) -> Vec<u64> {
        let (n_hi, n_lo) = self.partition_sizes(p);
        assert!(
            high.len() == n_hi * width && low.len() == n_lo * width,
            "merge_rows: groups of {} and {} elements for {n_hi} + {n_lo} rows of {width}",
            high.len(),
            low.len()
        );
        let (mut hi, mut lo) = (high.chunks(width.max(1)), low.chunks(width.max(1)));
        let mut out = Vec::with_capacity(high.len() + low.len());
        for &l in &p.low {
            out.extend_from_slice(if l { lo.next() } else { hi.next() }.unwrap_or(&[]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::report::OpClass;

    fn backend(ring: Ring) -> PlainBackend {
        PlainBackend::new(ring, Truncation::Exact, 0)
    }

    #[test]
    fn overflow_is_counted_not_hidden() {
        let r = Ring::new(16, 8).unwrap(); // values in [−128, 128)
        let mut b = backend(r);
        b.set_scope(OpClass::Gelu, Some(3));
        let x = b.input(&[r.encode(100.0), r.encode(1.0)]);
        let y = b.add(&x, &x); // 200 does not fit, 2 does
        assert_eq!(r.decode(y[0]), 200.0 - 256.0, "wraps like the ring");
        let p = b.mul(&x, &x); // at 2s = 16 bits nothing ≥ 0.5 fits
        assert_eq!(b.meter().overflow.get(OpClass::Gelu, Some(3)).count, 3);
        assert_eq!(p[1], r.mul(x[1], x[1]));
        assert_eq!(b.meter().cost.get(OpClass::Gelu, Some(3)).ss_mults, 2);
    }

    #[test]
    fn matmul_public_matches_naive_and_checks() {
        let r = Ring::BOLT;
        let mut b = backend(r);
        let w: Vec<i64> = (0..12).map(|i| (i as i64 - 5) * 1000).collect(); // 4 out × 3 in
        let m = PublicMatrix::from_out_in(w.clone(), 3, 4);
        let xs = [1.5f64, -2.0, 0.25, 3.0, 0.0, -1.0];
        let x: Vec<u64> = xs.iter().map(|&v| r.encode(v)).collect();
        let y = b.matmul_public(&x, 2, &m);
        for i in 0..2 {
            for j in 0..4 {
                let want: i128 = (0..3).map(|k| r.to_signed(x[i * 3 + k]) as i128 * w[j * 3 + k] as i128).sum();
                assert_eq!(y[i * 4 + j], r.from_i128(want));
            }
        }
        assert_eq!(b.meter().cost.total().pub_macs, 24);
        assert_eq!(b.meter().overflow.count(), 0);
        // A value outside the 37-bit range is counted.
        let big = vec![r.encode(1_000_000.0); 3];
        b.matmul_public(&big, 1, &m);
        assert!(b.meter().overflow.count() > 0);
    }

    #[test]
    fn offset_kernel_matches_i64() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for k in [1usize, 7, 8, 9, 384, 1537] {
            let x: Vec<i64> = (0..k).map(|_| rng.gen_range(i32::MIN as i64..=i32::MAX as i64)).collect();
            let w: Vec<i64> = (0..k).map(|_| rng.gen_range(-70_000i64..70_000)).collect();
            let xu: Vec<u32> = x.iter().map(|&v| crate::secure::backend::offset32(v)).collect();
            let wu: Vec<u32> = w.iter().map(|&v| crate::secure::backend::offset32(v)).collect();
            let got = dot_offset32(&xu, &wu, x.iter().sum(), w.iter().sum());
            assert_eq!(got, dot_i64(&x, &w), "k = {k}");
        }
    }

    #[test]
    fn secret_matmul_and_rows() {
        let r = Ring::CRYPTEN;
        let mut b = backend(r);
        let a = b.input(&[1, 2, 3, 4, 5, 6].map(|v: i64| r.from_signed(v)));
        let c = b.input(&[1, 0, -1, 2, 1, 0].map(|v: i64| r.from_signed(v)));
        // (2×3)·(3×2)
        let p = b.matmul(&a, &c, 2, 3, 2);
        assert_eq!(p.iter().map(|&v| r.to_signed(v)).collect::<Vec<_>>(), vec![2, 4, 5, 10]);
        let keep = vec![true, false];
        assert_eq!(b.compact_rows(&a, 3, &keep), a[..3].to_vec());
        let part = b.partition(&vec![true, false], 3);
        let (hi, lo) = b.split_rows(&a, 3, &part);
        assert_eq!((hi.clone(), lo.clone()), (a[3..].to_vec(), a[..3].to_vec()));
        assert_eq!(b.merge_rows(&hi, &lo, 3, &part), a);
        let c = b.meter().cost.total();
        assert_eq!(c.ss_macs, 12);
        assert_eq!(c.comparisons, 2, "one swap for the compaction, one for the partition");
        assert_eq!(c.muxes, 12);
    }

    #[test]
    fn probabilistic_truncation_is_seeded_per_example() {
        let r = Ring::BOLT;
        let x: Vec<u64> = (0..1000).map(|i| r.encode(i as f64 * 0.0137)).collect();
        let run = |seed, ex| {
            let mut b = PlainBackend::new(r, Truncation::Probabilistic { seed }, ex);
            b.truncate(&x, 5)
        };
        assert_eq!(run(1, 0), run(1, 0));
        assert_ne!(run(1, 0), run(1, 1));
        assert_ne!(run(1, 0), run(2, 0));
        let exact = backend(r).truncate(&x, 5);
        for (p, e) in run(1, 0).iter().zip(&exact) {
            let d = r.to_signed(*p) - r.to_signed(*e);
            assert!(d == 0 || d == 1);
        }
    }

    /// Ring MACs/s of the secret × public product against an f32 naive
    /// product of the same shape. `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_matmul_public() {
        let r = Ring::BOLT;
        let (rows, k, n) = (32usize, 384usize, 1536usize);
        let w: Vec<i64> = (0..k * n).map(|i| ((i * 7919) % 2001) as i64 - 1000).collect();
        let m = PublicMatrix::from_out_in(w.clone(), k, n);
        let x: Vec<u64> = (0..rows * k).map(|i| r.encode(((i % 97) as f64 - 48.0) / 10.0)).collect();
        let mut b = backend(r);
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            std::hint::black_box(b.matmul_public(&x, rows, &m));
        }
        let ring_rate = (reps * rows * k * n) as f64 / t.elapsed().as_secs_f64();
        let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let xf: Vec<f32> = x.iter().map(|&v| r.decode(v) as f32).collect();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let mut out = vec![0f32; rows * n];
            for i in 0..rows {
                for j in 0..n {
                    out[i * n + j] = xf[i * k..(i + 1) * k].iter().zip(&wf[j * k..(j + 1) * k]).map(|(a, b)| a * b).sum();
                }
            }
            std::hint::black_box(out);
        }
        let f32_rate = (reps * rows * k * n) as f64 / t.elapsed().as_secs_f64();
        println!(
            "ring matmul: {:.2} GMAC/s ({} threads); f32 naive single-thread: {:.2} GMAC/s",
            ring_rate / 1e9,
            rayon::current_num_threads(),
            f32_rate / 1e9
        );
    }
}
