//! exp and softmax: range reduction and the shift by z, the row max, the
//! reciprocal, and softmax over rows (either degree or both in one pass).

use super::*;

/// e^x for x ≤ 0 (after max subtraction) by range reduction:
/// z = ⌊−x/ln2⌋ (one truncation by 2s of −x·(1/ln2)), p = x + z·ln2,
/// e^p by a polynomial, then a secret right shift by z done bit by bit,
/// high bit first (a MUX between the value and its truncation by 2^k), and
/// 0 where z exceeds the clip. With exact truncation z's low bits come
/// from truncations of −x/ln2 by 2s + j, in z's round, and each bit's MUX
/// rides with its truncation ([`Backend::trunc_lincomb`]): one round a bit.
/// With probabilistic truncation (which could round those differently)
/// each bit is a comparison of z with 2^k, then a subtraction, as BOLT.
///
/// Per element, exact truncation, high (clip 13, 4 bits): 2 comparisons,
/// 9 products, 10 truncations, 2 B2A. Low (clip 7, 3 bits, linear): 2
/// comparisons, 6 products, 7 truncations, 2 B2A. Probabilistic: high 5
/// comparisons, 1 product, 7 truncations, 5 MUXes, 3 B2A; low 4, 0, 5, 4, 2.
pub fn exp_neg<B: Backend>(b: &mut B, x: &B::Arith, deg: Degree) -> B::Arith {
    let n = b.len(x);
    exp_neg_split(b, x, high_count(deg, n))
}

/// [`exp_neg`], high degree on the first `nh` elements, low on the rest
/// (as [`gelu_split`]).
pub fn exp_neg_split<B: Backend>(b: &mut B, x: &B::Arith, nh: usize) -> B::Arith {
    let r = b.ring();
    let s = r.frac();
    let n = b.len(x);
    assert!(nh <= n, "{nh} high of {n} elements");
    let (clip_h, bits_h) = exp_clip(Degree::High);
    let (clip_l, bits_l) = exp_clip(Degree::Low);
    let nx = b.neg(x);
    let z2 = b.mul_public(&nx, &[enc(r, INV_LN2)]);
    let z = b.truncate(&z2, 2 * s); // an integer, not scaled
    // With exact truncation z's low bits come from ⌊z / 2^j⌋, truncations
    // in the polynomial's round; a probabilistic truncation rounds each its
    // own way, so there the shift finds z's bits by comparisons instead.
    let exact = b.exact_truncation();
    let widest = if nh > 0 { bits_h.max(bits_l) } else { bits_l };
    // Elements of the degrees that have bit j: high j < 4, low j < 3.
    let at = |j: u32| -> std::ops::Range<usize> { (if j < bits_h { 0 } else { nh })..(if j < bits_l { n } else { nh }) };
    let over = b.sub_public(&z, &split_const(n, nh, clip_h + 1, clip_l + 1));
    let zl = b.mul_public(&z, &[enc(r, LN2)]);
    let p = b.add(x, &zl);
    let [a, bb, c] = EXP_HIGH_ABC;
    // High: a·(p + b)² + c; low: A1·p + A0 — one truncation for both.
    let mut terms = Vec::new();
    if nh > 0 {
        let p_hi = part(b, &p, 0..nh);
        let q = b.add_public(&p_hi, &[enc(r, bb)]);
        let q2 = mul_rescale(b, &q, &q);
        terms.push(b.mul_public(&q2, &[enc(r, a)]));
    }
    if nh < n {
        let p_lo = part(b, &p, nh..n);
        terms.push(b.mul_public(&p_lo, &[enc(r, EXP_LOW_A[1])]));
    }
    let acc = b.concat(&terms.iter().collect::<Vec<_>>());
    let e0 = |b: &mut B, y: &B::Arith| b.add_public(y, &split_const(n, nh, enc(r, c), enc(r, EXP_LOW_A[0])));
    if !exact {
        // z ≤ clip does not depend on the polynomial: its comparison shares
        // a round with the polynomial's truncation.
        let (in_range, y) = b.msb_and_truncate(&over, &acc, s);
        let e = e0(b, &y);
        let e = shift_by_comparisons(b, z, e, widest, at);
        let zero = b.zeros(n);
        return b.mux(&in_range, &e, &zero);
    }
    // z ≤ clip and z < 2^(bits−1) (the top bit, which a z past the clip
    // may also have) do not depend on the polynomial either.
    let below_top = b.sub_public(&z, &split_const(n, nh, 1 << (bits_h - 1), 1 << (bits_l - 1)));
    let both = b.concat(&[&over, &below_top]);
    // ⌊z / 2^j⌋ where the degree has bit j (for b_j below), j ≥ 1.
    let zj: Vec<B::Arith> = (1..widest).map(|j| part(b, &z, at(j))).collect();
    let mut parts: Vec<(&B::Arith, u32)> = vec![(&acc, s)];
    parts.extend(zj.iter().zip(1..).map(|(w, j)| (w, j)));
    let (cmp, mut ts) = b.msb_and_truncate_each(&both, &parts);
    let y = ts.remove(0);
    let zs: Vec<B::Arith> = std::iter::once(z.clone()).chain(ts).collect();
    let cmp = b.b2a(&cmp);
    let e = e0(b, &y);
    let in_range = part(b, &cmp, 0..n);
    let below = part(b, &cmp, n..2 * n);
    // The top bit's step also zeroes e past the clip:
    // e·[z < top] + ⌊e / 2^(2^k)⌋·([z ≤ clip] − [z < top]).
    let top_step = b.sub(&in_range, &below);
    let one = b.constant(&vec![1; n]);
    let mut e = e;
    for k in (0..widest).rev() {
        let range = at(k);
        if range.is_empty() {
            continue;
        }
        // b_k = ⌊z / 2^k⌋ − 2⌊z / 2^(k+1)⌋ where the degree has bit k + 1.
        let lower = at(k + 1);
        let bit_k = if lower.is_empty() {
            None
        } else {
            let off = at(k).start;
            let zk = part(b, &zs[k as usize], lower.start - off..lower.end - off);
            let twice = b.add(&zs[k as usize + 1], &zs[k as usize + 1]);
            Some(b.sub(&zk, &twice))
        };
        let (mut y1, mut y2) = (Vec::new(), Vec::new());
        for (sub, bits) in [(range.start..range.end.min(nh), bits_h), (range.start.max(nh)..range.end, bits_l)] {
            if sub.is_empty() {
                continue;
            }
            if k + 1 == bits {
                y1.push(part(b, &below, sub.clone()));
                y2.push(part(b, &top_step, sub));
            } else {
                let bk = part(b, bit_k.as_ref().expect("a lower bit"), sub.start - lower.start..sub.end - lower.start);
                let o = part(b, &one, sub);
                y1.push(b.sub(&o, &bk));
                y2.push(bk);
            }
        }
        let y1 = b.concat(&y1.iter().collect::<Vec<_>>());
        let y2 = b.concat(&y2.iter().collect::<Vec<_>>());
        // e ← b ? ⌊e / 2^(2^k)⌋ : e, the MUX's factors opened beside the
        // truncation: one round a bit.
        e = on_range(b, &e, range, |b, er| b.trunc_lincomb(&y1, &y2, er, 1u32 << k));
    }
    e
}

/// `f` applied to elements `range` of `x`, the rest unchanged.
fn on_range<B: Backend>(b: &mut B, x: &B::Arith, range: std::ops::Range<usize>, f: impl FnOnce(&mut B, &B::Arith) -> B::Arith) -> B::Arith {
    let n = b.len(x);
    if range.start == 0 && range.end == n {
        return f(b, x);
    }
    let mid = part(b, x, range.clone());
    let mid = f(b, &mid);
    let (head, tail) = (part(b, x, 0..range.start), part(b, x, range.end..n));
    b.concat(&[&head, &mid, &tail])
}

/// The shift of [`exp_neg_split`] by z bit by bit, high bit first, for
/// probabilistic truncation: compare z with 2^k, subtract, MUX between the
/// value and its truncation by 2^k (the comparison and the truncation in
/// one round). `at(k)`: the elements whose degree has bit k.
fn shift_by_comparisons<B: Backend>(
    b: &mut B,
    mut z: B::Arith,
    mut e: B::Arith,
    widest: u32,
    at: impl Fn(u32) -> std::ops::Range<usize>,
) -> B::Arith {
    for k in (0..widest).rev() {
        let range = at(k);
        if range.is_empty() {
            continue;
        }
        let mut zr = part(b, &z, range.clone());
        let er = part(b, &e, range.clone());
        let d = b.sub_public(&zr, &[1u64 << k]);
        let (below, shifted) = b.msb_and_truncate(&d, &er, 1 << k);
        let bit = b.not(&below);
        if k > 0 {
            let ba = b.b2a(&bit);
            let step = b.mul_public(&ba, &[1u64 << k]);
            zr = b.sub(&zr, &step);
            z = on_range(b, &z, range.clone(), |_, _| zr);
        }
        let er = b.mux(&bit, &shifted, &er);
        e = on_range(b, &e, range, |_, _| er);
    }
    e
}

/// Maximum of each row of `row_len` by a tree of pairwise comparisons,
/// all rows at once: row_len − 1 comparisons and MUXes per row.
pub fn row_max<B: Backend>(b: &mut B, x: &B::Arith, row_len: usize) -> B::Arith {
    let rows = b.len(x) / row_len;
    let mut cur = x.clone();
    let mut width = row_len;
    while width > 1 {
        let half = width / 2;
        let left: Vec<usize> = (0..rows).flat_map(|i| (0..half).map(move |j| i * width + 2 * j)).collect();
        let right: Vec<usize> = left.iter().map(|&i| i + 1).collect();
        let l = b.gather(&cur, &left);
        let rt = b.gather(&cur, &right);
        // max = l − d·[d < 0] with d = l − rt: the MUX on d's own sign.
        let d = b.sub(&l, &rt);
        let (_, p) = b.msb_times(&d);
        let m = b.sub(&l, &p);
        cur = if width % 2 == 1 {
            // The odd last element of each row goes up a level unchanged.
            let tails: Vec<usize> = (0..rows).map(|i| i * width + width - 1).collect();
            let t = b.gather(&cur, &tails);
            let both = b.concat(&[&m, &t]);
            let idx: Vec<usize> = (0..rows)
                .flat_map(|i| (0..half).map(move |j| i * half + j).chain(std::iter::once(rows * half + i)))
                .collect();
            b.gather(&both, &idx)
        } else {
            m
        };
        width = half + width % 2;
    }
    cur
}

/// 1/v for v in [≈0.5, 2^(max_log2+1)) (a softmax sum of up to 2^max_log2
/// terms ≤ 1): thermometer code c_j = [v ≥ 2^j], j = 1..=max_log2
/// (comparisons), initial guess (2/3)·2^−k assembled without truncation as
/// enc(2/3) + Σ_j b2a(c_j)·(enc((2/3)2^−j) − enc((2/3)2^−(j−1))), then
/// [`RECIP_NEWTON`] steps y ← y(2 − v·y) (two products each; v·y₀ comes
/// with the comparisons, see [`thermometer`]).
pub fn reciprocal<B: Backend>(b: &mut B, v: &B::Arith, max_log2: u32) -> B::Arith {
    let (p, k) = reciprocal_untruncated(b, v, max_log2);
    b.truncate(&p, k)
}

/// [`reciprocal`] before its last truncation, and the bits it truncates:
/// the caller fuses that truncation with the product that consumes it.
fn reciprocal_untruncated<B: Backend>(b: &mut B, v: &B::Arith, max_log2: u32) -> (B::Arith, u32) {
    let r = b.ring();
    let s = r.frac();
    let init = |k: i32| enc(r, RECIP_INIT * (-k as f64).exp2());
    let js: Vec<i32> = (1..=max_log2 as i32).collect();
    let thr: Vec<u64> = js.iter().map(|&j| lt_threshold(r, (j as f64).exp2())).collect();
    let inits: Vec<u64> = (0..=max_log2 as i32).map(init).collect();
    let (mut y, mut vy) = thermometer(b, v, &thr, &inits);
    // y ← y·(2 − ⌊v·y⌋) = 2y − y·⌊v·y⌋, each truncation fused with the
    // product that consumes it: two rounds a step instead of four.
    let two = enc(r, 2.0);
    for step in 0..RECIP_NEWTON {
        let (_, ye) = b.trunc_mul(&y, &vy, s);
        let y2 = b.mul_public(&y, &[two]);
        let p = b.sub(&y2, &ye);
        if step + 1 == RECIP_NEWTON {
            return (p, s);
        }
        (y, vy) = b.trunc_mul(v, &p, s);
    }
    unreachable!("RECIP_NEWTON > 0")
}


/// Softmax of each row of `row_len`: row max (tree), subtract, exp, row sum,
/// one reciprocal per row, one product per element.
pub fn softmax<B: Backend>(b: &mut B, x: &B::Arith, row_len: usize, deg: Degree) -> B::Arith {
    let n = b.len(x);
    softmax_split(b, x, row_len, high_count(deg, n))
}

/// [`softmax`] with the high-degree exp on the first `nh` elements (whole
/// rows) and the low-degree one on the rest, in the rounds of one evaluation.
pub fn softmax_split<B: Backend>(b: &mut B, x: &B::Arith, row_len: usize, nh: usize) -> B::Arith {
    let n = b.len(x);
    assert!(row_len > 0 && n.is_multiple_of(row_len) && nh.is_multiple_of(row_len), "softmax: rows of {row_len} in {n} ({nh} high)");
    let rows = n / row_len;
    let m = row_max(b, x, row_len);
    let bc = broadcast_idx(rows, row_len);
    let mb = b.gather(&m, &bc);
    let d = b.sub(x, &mb);
    let e = exp_neg_split(b, &d, nh);
    let sum = b.sum_chunks(&e, row_len);
    // The reciprocal's last truncation, taken per element, comes in the
    // round of the product with e (exact truncation gives every copy the
    // same value).
    let (rcp, k) = reciprocal_untruncated(b, &sum, ceil_log2(row_len));
    let rb = b.gather(&rcp, &bc);
    let (_, p) = b.trunc_mul(&e, &rb, k);
    b.rescale(&p)
}
