//! Local arithmetic on shares: wrapping element-wise operations and matrix
//! products modulo 2^ℓ (a share is a uniformly random ring element, so
//! nothing here checks overflow — the plain engine does that).

use crate::fixed::Ring;
use crate::secure::backend::PublicMatrix;
use rand::RngCore;
use rayon::prelude::*;

/// Below this many MACs a product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 16;

pub fn random_vec(r: Ring, n: usize, rng: &mut impl RngCore) -> Vec<u64> {
    (0..n).map(|_| rng.next_u64() & r.mask()).collect()
}

pub fn add(r: Ring, a: &[u64], b: &[u64]) -> Vec<u64> {
    assert_eq!(a.len(), b.len(), "add: lengths differ");
    a.iter().zip(b).map(|(&x, &y)| r.reduce(x.wrapping_add(y))).collect()
}

pub fn sub(r: Ring, a: &[u64], b: &[u64]) -> Vec<u64> {
    assert_eq!(a.len(), b.len(), "sub: lengths differ");
    a.iter().zip(b).map(|(&x, &y)| r.reduce(x.wrapping_sub(y))).collect()
}

/// `a ⊙ c` with `c` repeating cyclically.
pub fn mul_cyclic(r: Ring, a: &[u64], c: &[u64]) -> Vec<u64> {
    assert!(a.is_empty() || (!c.is_empty() && a.len().is_multiple_of(c.len())), "operand of length {} does not divide {}", c.len(), a.len());
    a.iter().zip(c.iter().cycle()).map(|(&x, &y)| r.reduce(x.wrapping_mul(y))).collect()
}

pub fn add_cyclic(r: Ring, a: &[u64], c: &[u64]) -> Vec<u64> {
    assert!(a.is_empty() || (!c.is_empty() && a.len().is_multiple_of(c.len())), "operand of length {} does not divide {}", c.len(), a.len());
    a.iter().zip(c.iter().cycle()).map(|(&x, &y)| r.reduce(x.wrapping_add(y))).collect()
}

/// Rows of `a` taken `ROWS` at a time, so that each row of `bt` is read
/// from memory once per block instead of once per row (BERT-base's
/// 768 × 768 weights are 4.7 MB, past the caches).
const ROWS: usize = 4;

/// `ROWS` rows (each `k` long, the last ones possibly absent) dotted with
/// one row of `bt`, eight lanes per row: with AVX-512 each lane group is one
/// 64-bit multiply instruction.
#[inline(always)]
fn dot_rows(a: &[u64], rows: usize, k: usize, b: &[u64]) -> [u64; ROWS] {
    let mut acc = [[0u64; 8]; ROWS];
    let full = k - k % 8;
    let mut c = 0;
    while c < full {
        let y = &b[c..c + 8];
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let x = &a[r * k + c..r * k + c + 8];
            for l in 0..8 {
                acc[l] = acc[l].wrapping_add(x[l].wrapping_mul(y[l]));
            }
        }
        c += 8;
    }
    let mut out = [0u64; ROWS];
    for (r, o) in out.iter_mut().enumerate().take(rows) {
        let mut s = acc[r].iter().fold(0u64, |s, &v| s.wrapping_add(v));
        for (x, y) in a[r * k + full..(r + 1) * k].iter().zip(&b[full..k]) {
            s = s.wrapping_add(x.wrapping_mul(*y));
        }
        *o = s;
    }
    out
}

/// One block of up to `ROWS` output rows.
#[inline(always)]
fn block_portable(r: Ring, o: &mut [u64], a: &[u64], bt: &[u64], k: usize, n: usize) {
    let rows = a.len() / k;
    for j in 0..n {
        let d = dot_rows(a, rows, k, &bt[j * k..(j + 1) * k]);
        for i in 0..rows {
            o[i * n + j] = r.reduce(d[i]);
        }
    }
}

/// The same block compiled for AVX-512 (`vpmullq`); chosen at run time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn block_avx512(r: Ring, o: &mut [u64], a: &[u64], bt: &[u64], k: usize, n: usize) {
    block_portable(r, o, a, bt, k, n)
}

fn block(r: Ring, o: &mut [u64], a: &[u64], bt: &[u64], k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has AVX-512 F and DQ (DQ implies F), checked just above.
            return unsafe { block_avx512(r, o, a, bt, k, n) };
        }
    }
    block_portable(r, o, a, bt, k, n)
}

/// Rows of `a` (each `k` long) dotted with rows of `bt` (each `k` long):
/// `out[i][j] = a_i · bt_j` mod 2^ℓ.
pub fn rows_dot(r: Ring, a: &[u64], bt: &[u64], k: usize, n: usize) -> Vec<u64> {
    let m = a.len().checked_div(k).unwrap_or(0);
    let mut out = vec![0u64; m * n];
    if n == 0 || k == 0 {
        return out;
    }
    let run = |(o, ar): (&mut [u64], &[u64])| block(r, o, ar, bt, k, n);
    if m * k * n >= PAR_MIN_MACS {
        out.par_chunks_mut(ROWS * n).zip(a.par_chunks(ROWS * k)).for_each(run);
    } else {
        out.chunks_mut(ROWS * n).zip(a.chunks(ROWS * k)).for_each(run);
    }
    out
}

/// `a · b` for a m × k and b k × n, mod 2^ℓ.
pub fn matmul(r: Ring, a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    assert_eq!(a.len(), m * k, "matmul: a is not {m} × {k}");
    assert_eq!(b.len(), k * n, "matmul: b is not {k} × {n}");
    let mut bt = vec![0u64; k * n];
    for i in 0..k {
        for j in 0..n {
            bt[j * k + i] = b[i * n + j];
        }
    }
    if m == 0 {
        return Vec::new();
    }
    rows_dot(r, a, &bt, k, n)
}

/// `x · W` for x of `rows × w.in_dim` with a public (server) matrix.
pub fn matmul_weights(r: Ring, x: &[u64], rows: usize, w: &PublicMatrix) -> Vec<u64> {
    assert_eq!(x.len(), rows * w.in_dim, "x is not {rows} × {}", w.in_dim);
    let wt: Vec<u64> = w.w_t.iter().map(|&v| v as u64).collect();
    if rows == 0 {
        return Vec::new();
    }
    rows_dot(r, x, &wt, w.in_dim, w.out_dim)
}

/// Rows of `x` (width `w`) permuted: output row i is input row `perm[i]`.
pub fn permute_rows(x: &[u64], w: usize, perm: &[usize]) -> Vec<u64> {
    assert_eq!(x.len(), perm.len() * w, "permute_rows: {} rows of {w}", perm.len());
    let mut out = Vec::with_capacity(x.len());
    for &p in perm {
        out.extend_from_slice(&x[p * w..(p + 1) * w]);
    }
    out
}

pub fn invert_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// A uniformly random permutation (Fisher–Yates).
pub fn random_perm(n: usize, rng: &mut impl RngCore) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Rejection-free enough for n ≪ 2^64: the bias is below n/2^64.
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of four rows and lanes of eight: shapes that fill neither.
    #[test]
    fn blocked_products_match_the_plain_sum() {
        use rand::SeedableRng;
        let r = Ring::BOLT;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (m, k, n) in [(1, 1, 1), (7, 13, 5), (9, 16, 3), (130, 67, 33)] {
            let a = random_vec(r, m * k, &mut rng);
            let bt = random_vec(r, k * n, &mut rng);
            let want: Vec<u64> = (0..m * n).map(|ij| r.reduce((0..k).fold(0u64, |s, c| s.wrapping_add(a[ij / n * k + c].wrapping_mul(bt[ij % n * k + c]))))).collect();
            assert_eq!(rows_dot(r, &a, &bt, k, n), want, "{m} × {k} × {n}");
        }
    }

    #[test]
    fn products_are_ring_products() {
        let r = Ring::BOLT;
        let a: Vec<u64> = [1i64, -2, 3, 4, 5, -6].iter().map(|&v| r.from_signed(v)).collect();
        let b: Vec<u64> = [1i64, 0, -1, 2, 1, 0].iter().map(|&v| r.from_signed(v)).collect();
        let p = matmul(r, &a, &b, 2, 3, 2);
        assert_eq!(p.iter().map(|&v| r.to_signed(v)).collect::<Vec<_>>(), vec![6, -4, -7, 10]);
        let m = PublicMatrix::from_out_in(vec![1, -1, 2, 0, 3, 1], 3, 2);
        let y = matmul_weights(r, &a, 2, &m);
        assert_eq!(y.iter().map(|&v| r.to_signed(v)).collect::<Vec<_>>(), vec![9, -3, -13, 9]);
        let perm = vec![2, 0, 1];
        let x = vec![10, 11, 20, 21, 30, 31];
        let px = permute_rows(&x, 2, &perm);
        assert_eq!(px, vec![30, 31, 10, 11, 20, 21]);
        assert_eq!(permute_rows(&px, 2, &invert_perm(&perm)), x);
    }
}
