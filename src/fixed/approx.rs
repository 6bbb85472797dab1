//! The non-linear functions in fixed point, written over the protocol
//! primitives of [`Backend`] so that the plain engine and a secret-shared
//! backend run them unchanged. Their float twins, step for step, are in
//! [`super::twin`]; the table of domains, errors and costs is in
//! [`super`]'s module docs, and the tests below measure every number in it.
//!
//! Conventions: inputs and outputs are at scale s; a constant `c` is
//! `round(c · 2^s)` (BOLT's scale-12 integers are exactly these, see the
//! `bolt_constants` test); a product is truncated by s once, after any public
//! terms at scale 2s have been added to it.

use super::Ring;
use crate::secure::backend::{Backend, WeightVector};
use serde::{Deserialize, Serialize};

/// Which of a pair of approximations to use: BOLT's (high) or our cheaper
/// low-degree one for reduced tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degree {
    High,
    Low,
}

// ---- constants (shared with the twin) ---------------------------------------

/// BOLT's GELU: 0.5x + P4(|x|) on |x| < 2.7, coefficients c0..c4.
pub const GELU_HIGH_P4: [f64; 5] = [
    0.001620808531847,
    -0.037981646127142,
    0.541055016636838,
    -0.183525061270827,
    0.020848611754128,
];
pub const GELU_HIGH_CUT: f64 = 2.7;
/// Ours: 0.5x + Q2(|x|) on |x| < 2.2, c0..c2. Minimax (discrete Remez) of
/// |x|(Φ(|x|) − ½) on [0, 2.2]; 2.2 balances the fit error (0.0316) against
/// ReLU's error at the cut (2.2·Φ(−2.2) = 0.0306).
pub const GELU_LOW_Q2: [f64; 3] = [-0.031612858146154915, 0.25976585867974306, 0.11594075261718566];
pub const GELU_LOW_CUT: f64 = 2.2;

pub const LN2: f64 = std::f64::consts::LN_2;
pub const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// BOLT's e^p ≈ a(p + b)² + c on p ∈ (−ln2, 0].
pub const EXP_HIGH_ABC: [f64; 3] = [0.3585, 1.353, 0.344];
/// BOLT's clip of z = ⌊−x/ln2⌋ (4 bits of z are shifted by).
pub const EXP_HIGH_CLIP: u64 = 13;
/// Ours: e^p ≈ a0 + a1·p on (−ln2, 0], minimax in *relative* error (what
/// softmax normalisation sees); the errors at both ends are equal, so the
/// approximation is continuous across octaves.
pub const EXP_LOW_A: [f64; 2] = [0.9701787945539003, 0.6998360678392722];
/// Ours: clip z at 7 (3 bits): e^x is taken as 0 below −8·ln2 ≈ −5.55.
pub const EXP_LOW_CLIP: u64 = 7;

/// Reciprocal: initial guess (2/3)·2^−k for v ∈ [2^k, 2^(k+1)), then Newton.
pub const RECIP_INIT: f64 = 2.0 / 3.0;
pub const RECIP_NEWTON: usize = 4;
/// Reciprocal square root: initial guess √(2/3)·2^(−m/2) for v ∈ [2^m, 2^(m+1)),
/// m found among RSQRT_MIN_LOG2..=RSQRT_MAX_LOG2, then Newton.
pub const RSQRT_INIT: f64 = 0.816496580927726; // √(2/3)
pub const RSQRT_MIN_LOG2: i32 = -12;
pub const RSQRT_MAX_LOG2: i32 = 13;
pub const RSQRT_NEWTON: usize = 3;

/// BOLT's tanh: sign(x)·Q5(|x|) on |x| ≤ 2.855, else ±1; c0..c5.
pub const TANH_Q5: [f64; 6] = [
    -0.0024920889620412097,
    1.0542492677156243,
    -0.17616532856475706,
    -0.20093640347818847,
    0.09948747962825866,
    -0.013232131886235352,
];
pub const TANH_CUT: f64 = 2.855;

/// BOLT's P4 refactored to need two secret products:
/// P4(y) = (α·y² + αp·y + αq)² + r·y + t. Returns [α, αp, αq, r, t].
pub fn gelu_high_factored() -> [f64; 5] {
    let [c0, c1, c2, c3, c4] = GELU_HIGH_P4;
    let p = c3 / (2.0 * c4);
    let q = (c2 / c4 - p * p) / 2.0;
    let r = c1 - 2.0 * c4 * p * q;
    let t = c0 - c4 * q * q;
    let a = c4.sqrt();
    [a, a * p, a * q, r, t]
}

/// Bits of z the exp shifts by, and the clip, per degree.
pub fn exp_clip(deg: Degree) -> (u64, u32) {
    let clip = match deg {
        Degree::High => EXP_HIGH_CLIP,
        Degree::Low => EXP_LOW_CLIP,
    };
    (clip, 64 - clip.leading_zeros())
}

/// Smallest J with 2^J ≥ n (0 for n ≤ 1): the reciprocal's range for a
/// softmax sum over n entries, each at most ≈ 1.
pub fn ceil_log2(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

// ---- helpers ------------------------------------------------------------------

fn enc(r: Ring, c: f64) -> u64 {
    r.encode(c)
}

/// The integer t such that, for every representable a, `a < t` in the ring
/// exactly when the real a < c (and `a ≥ t` when a ≥ c): ⌈c·2^s⌉. Rounding
/// the constant instead would let the fixed point and its twin take
/// different branches at the boundary.
pub fn lt_threshold(r: Ring, c: f64) -> u64 {
    r.from_i128((c * (r.frac() as f64).exp2()).ceil() as i128)
}

/// As [`lt_threshold`] for `a ≤ c`: `a < ⌊c·2^s⌋ + 1`.
pub fn le_threshold(r: Ring, c: f64) -> u64 {
    r.from_i128((c * (r.frac() as f64).exp2()).floor() as i128 + 1)
}

/// `trunc(x · y)`: one secret product and one truncation.
pub fn mul_rescale<B: Backend>(b: &mut B, x: &B::Arith, y: &B::Arith) -> B::Arith {
    let p = b.mul(x, y);
    b.rescale(&p)
}

/// `trunc(Σ c_i·t_i + extra2) + c0`: public coefficients at scale s, an
/// optional secret already at scale 2s, one truncation, a constant.
fn affine<B: Backend>(
    b: &mut B,
    terms: &[(&B::Arith, f64)],
    extra2: Option<&B::Arith>,
    c0: f64,
) -> B::Arith {
    let r = b.ring();
    let mut acc = extra2.cloned();
    for (t, c) in terms {
        let p = b.mul_public(t, &[enc(r, *c)]);
        acc = Some(match acc {
            Some(a) => b.add(&a, &p),
            None => p,
        });
    }
    let acc = acc.expect("affine needs at least one term");
    let y = b.rescale(&acc);
    b.add_public(&y, &[enc(r, c0)])
}

/// (x < 0, |x|): one comparison, one MUX (|x| = x − 2·x·[x < 0]).
fn sign_abs<B: Backend>(b: &mut B, x: &B::Arith) -> (B::Bits, B::Arith) {
    let (sign, p) = b.msb_times(x);
    let p2 = b.add(&p, &p);
    let a = b.sub(x, &p2);
    (sign, a)
}

/// Index vector broadcasting one value per row over rows of `width`.
fn broadcast_idx(rows: usize, width: usize) -> Vec<usize> {
    (0..rows * width).map(|i| i / width).collect()
}

/// Index vector repeating each of `rows` values `times` times (same as a
/// broadcast; named for readability where it builds thermometer codes).
fn repeat_idx(rows: usize, times: usize) -> Vec<usize> {
    broadcast_idx(rows, times)
}

// ---- GELU ---------------------------------------------------------------------

/// GELU(x) ≈ 0.5x + P(|x|) inside the cut, ReLU(x) outside.
///
/// High: P = BOLT's P4 as (αy² + αp·y + αq)² + r·y + t. Low: Q2.
/// Per element: 2 comparisons (sign, segment), 3 MUXes (x·[x < 0], which
/// gives |x| and ReLU; clamp; segment);
/// high 2 products and 3 truncations, low 1 product and 2 truncations.
pub fn gelu<B: Backend>(b: &mut B, x: &B::Arith, deg: Degree) -> B::Arith {
    let n = b.len(x);
    gelu_split(b, x, high_count(deg, n))
}

/// Elements `0..n` high for [`Degree::High`], none for [`Degree::Low`].
fn high_count(deg: Degree, n: usize) -> usize {
    match deg {
        Degree::High => n,
        Degree::Low => 0,
    }
}

/// A constant per element: `hi` for the first `nh`, `lo` for the rest.
fn split_const(n: usize, nh: usize, hi: u64, lo: u64) -> Vec<u64> {
    (0..n).map(|i| if i < nh { hi } else { lo }).collect()
}

/// Elements `range` of a secret (local).
fn part<B: Backend>(b: &mut B, x: &B::Arith, range: std::ops::Range<usize>) -> B::Arith {
    b.gather(x, &range.collect::<Vec<_>>())
}

/// [`gelu`] with the high-degree approximation on the first `nh` elements
/// and the low-degree one on the rest, in the rounds of one evaluation: each
/// element goes through exactly the ring operations of its own degree, so
/// the values are those of two separate calls.
pub fn gelu_split<B: Backend>(b: &mut B, x: &B::Arith, nh: usize) -> B::Arith {
    let r = b.ring();
    let n = b.len(x);
    assert!(nh <= n, "{nh} high of {n} elements");
    // |x| = x − 2p and ReLU(x) = x − p with p = x·[x < 0]: the MUX of x
    // on its own sign, which the comparison's round can carry.
    let (_, p) = b.msb_times(x);
    let relu = b.sub(x, &p);
    let a = b.sub(&relu, &p);
    let cut_t = split_const(n, nh, lt_threshold(r, GELU_HIGH_CUT), lt_threshold(r, GELU_LOW_CUT));
    let d = b.sub_public(&a, &cut_t);
    let inside = b.msb(&d); // |x| < cut
    // The polynomial only matters inside; clamping its argument keeps the
    // discarded branch from overflowing narrow rings for large |x|. (The
    // clamp could ride with the comparison as d·[d < 0], but the twin key
    // costs more compute than the round saves on a LAN.)
    let cut_v = b.constant(&cut_t);
    let a = b.mux(&inside, &a, &cut_v);
    let y2 = mul_rescale(b, &a, &a);
    let [al, alp, alq, rr, t] = gelu_high_factored();
    let [c0, c1, c2] = GELU_LOW_Q2;
    // One affine step for both: high w = al·y² + alp·|x| + alq (then w², below);
    // low Q2 = c2·y² + c1·|x| + 0.5x + c0.
    let t1 = b.mul_public(&y2, &split_const(n, nh, enc(r, al), enc(r, c2)));
    let t2 = b.mul_public(&a, &split_const(n, nh, enc(r, alp), enc(r, c1)));
    let mut acc = b.add(&t1, &t2);
    if nh < n {
        let t3 = b.mul_public(x, &split_const(n, nh, 0, enc(r, 0.5)));
        acc = b.add(&acc, &t3);
    }
    let y = b.rescale(&acc);
    let first = b.add_public(&y, &split_const(n, nh, enc(r, alq), enc(r, c0)));
    let poly = if nh == 0 {
        first
    } else {
        let w = part(b, &first, 0..nh);
        let ww = b.mul(&w, &w);
        let (a_hi, x_hi) = (part(b, &a, 0..nh), part(b, x, 0..nh));
        let p_hi = affine(b, &[(&a_hi, rr), (&x_hi, 0.5)], Some(&ww), t);
        if nh == n {
            p_hi
        } else {
            let p_lo = part(b, &first, nh..n);
            b.concat(&[&p_hi, &p_lo])
        }
    };
    b.mux(&inside, &poly, &relu)
}

// ---- exp and softmax (approx/softmax.rs) -------------------------------------------------

mod softmax;
pub use softmax::{exp_neg, exp_neg_split, reciprocal, row_max, softmax, softmax_split};

/// The initial guess y₀ of [`reciprocal`] and [`rsqrt`] from a
/// thermometer of comparisons c_j = [v ≥ thr_j] (`inits[j]` the guess for
/// c_1..c_j set and the rest not: y₀ = inits[0] + Σ_j c_j·(inits[j] −
/// inits[j−1])), and the product v·y₀ (not truncated) in the same round:
/// v·c_j = v − (d_j + thr_j)·[d_j < 0] with d_j = v − thr_j, whose
/// d_j·[d_j < 0] comes with the comparison ([`Backend::msb_times`]), and
/// v·y₀ = Σ_m inits[m]·(v·c_m − v·c_{m+1}) (c_0 = 1, c_{M+1} = 0): one term
/// is v·inits[m], the others 0, so no partial sum leaves the range the
/// product itself needs.
fn thermometer<B: Backend>(b: &mut B, v: &B::Arith, thr: &[u64], inits: &[u64]) -> (B::Arith, B::Arith) {
    let r = b.ring();
    let rows = b.len(v);
    let jn = thr.len();
    assert_eq!(inits.len(), jn + 1, "thermometer: {jn} thresholds, {} guesses", inits.len());
    if jn == 0 {
        return (b.constant(&vec![inits[0]; rows]), b.mul_public(v, &inits[..1]));
    }
    let deltas: Vec<u64> = (1..=jn).map(|j| r.sub(inits[j], inits[j - 1])).collect();
    let vr = b.gather(v, &repeat_idx(rows, jn));
    let d = b.sub_public(&vr, thr);
    let (below, p) = b.msb_times(&d);
    let ma = b.b2a(&below);
    let ca = b.public_sub(&[1], &ma); // c_j
    let t = b.mul_public(&ca, &deltas);
    let sum = b.sum_chunks(&t, jn);
    let y0 = b.add_public(&sum, &inits[..1]);
    let mt = b.mul_public(&ma, thr);
    let vm = b.add(&p, &mt); // v·(1 − c_j)
    let vc = b.sub(&vr, &vm); // v·c_j
    // Rows of [v, v·c_1, …, v·c_M] and of [v·c_1, …, v·c_M, 0].
    let zero = b.zeros(rows);
    let all = b.concat(&[v, &vc, &zero]);
    let at = |i: usize, j: usize| if j == 0 { i } else if j <= jn { rows + i * jn + j - 1 } else { rows * (jn + 1) + i };
    let lo: Vec<usize> = (0..rows).flat_map(|i| (0..=jn).map(move |j| at(i, j))).collect();
    let hi: Vec<usize> = (0..rows).flat_map(|i| (1..=jn + 1).map(move |j| at(i, j))).collect();
    let (wl, wh) = (b.gather(&all, &lo), b.gather(&all, &hi));
    let one_hot = b.sub(&wl, &wh); // v·[thr_m ≤ v < thr_{m+1}]
    let terms = b.mul_public(&one_hot, inits);
    (y0, b.sum_chunks(&terms, jn + 1))
}

// ---- LayerNorm --------------------------------------------------------------------------

/// x / d for a public positive integer d without losing s-bit precision or
/// headroom: truncate by e = ⌊log2 d⌋ bits, then multiply by enc(2^e/d)
/// (a constant in (½, 1]) and truncate. Two truncations per element.
pub fn div_public<B: Backend>(b: &mut B, x: &B::Arith, d: usize) -> B::Arith {
    assert!(d > 0, "division by zero");
    let r = b.ring();
    let e = usize::BITS - 1 - d.leading_zeros();
    let y = if e > 0 { b.truncate(x, e) } else { x.clone() };
    let c = enc(r, (e as f64).exp2() / d as f64);
    let p = b.mul_public(&y, &[c]);
    b.rescale(&p)
}

/// How LayerNorm trades headroom for precision in a given ring (the float
/// twin has no such choice; these only change rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormPrecision {
    /// Bits the centred values lose before squaring, so that |x − μ| < 2^8
    /// squares without overflow: k = max(0, ⌈(17 + 2s − ℓ)/2⌉), at most s/2.
    /// 2 for 37/12 (BERT's outlier features reach |x − μ| ≈ 220 before the
    /// FFN LayerNorm), 5 for 32/12, 0 for 64/16.
    pub square_shift: u32,
    /// Extra fractional bits of 1/√var (it is small when the variance is
    /// large) and of the Newton intermediates:
    /// e = clamp(min(ℓ − 9 − 2s, ⌊(ℓ − 3 − 2s)/2⌋), 0, s), so that v·y and
    /// (v·y)·y at 2(s + e) bits fit. 4 for 37/12, 0 for 32/12, 14 for 64/16.
    pub rsqrt_extra: u32,
}

impl NormPrecision {
    pub fn for_ring(r: Ring) -> Self {
        let (l, s) = (r.bits() as i64, r.frac() as i64);
        let k = ((17 + 2 * s - l + 1) / 2).clamp(0, s / 2);
        let e = (l - 1 - 2 * s - 8).min((l - 3 - 2 * s) / 2).clamp(0, s);
        NormPrecision { square_shift: k as u32, rsqrt_extra: e as u32 }
    }
}

/// 1/√v, returned at scale s + `extra`, for v in [2^RSQRT_MIN_LOG2,
/// 2^(RSQRT_MAX_LOG2+1)): the leading-one position m among those octaves by
/// a thermometer of comparisons, the initial guess √(2/3)·2^(−m/2)
/// assembled as in [`reciprocal`], then [`RSQRT_NEWTON`] steps
/// y ← y(3 − v·y²)/2, with v·y² computed as (v·y)·y to keep products small,
/// and /2 folded into the truncation.
pub fn rsqrt<B: Backend>(b: &mut B, v: &B::Arith, extra: u32) -> B::Arith {
    let (p, k) = rsqrt_untruncated(b, v, extra);
    b.truncate(&p, k)
}

/// [`rsqrt`] before its last truncation, and the bits it truncates.
fn rsqrt_untruncated<B: Backend>(b: &mut B, v: &B::Arith, extra: u32) -> (B::Arith, u32) {
    let r = b.ring();
    let s = r.frac();
    let ys = s + extra;
    let init = |m: i32| r.encode_at(RSQRT_INIT * (-(m as f64) / 2.0).exp2(), ys).0;
    let js: Vec<i32> = (RSQRT_MIN_LOG2 + 1..=RSQRT_MAX_LOG2).collect();
    let thr: Vec<u64> = js.iter().map(|&j| lt_threshold(r, (j as f64).exp2())).collect();
    let inits: Vec<u64> = (RSQRT_MIN_LOG2..=RSQRT_MAX_LOG2).map(init).collect();
    let (mut y, mut vy) = thermometer(b, v, &thr, &inits);
    // t = ⌊v·y⌋, u = ⌊t·y⌋, y ← ⌊y·(3 − u)⌋ = ⌊3y − y·u⌋, each truncation
    // fused with the product that consumes it: three rounds a step, not six.
    let three = enc(r, 3.0);
    for step in 0..RSQRT_NEWTON {
        let (_, ty) = b.trunc_mul(&y, &vy, s); // t·y, t = v·y at s + extra
        let (_, yu) = b.trunc_mul(&y, &ty, s + 2 * extra); // y·u, u = v·y² at s
        let y3 = b.mul_public(&y, &[three]);
        let p = b.sub(&y3, &yu);
        if step + 1 == RSQRT_NEWTON {
            return (p, s + 1); // y(3 − u)/2 at s + extra once truncated
        }
        (y, vy) = b.trunc_mul(v, &p, s + 1);
    }
    unreachable!("RSQRT_NEWTON > 0")
}

/// LayerNorm over rows of `width`: mean, centred values c, variance (each
/// square truncated before the sum, so the sum is at scale s; see
/// [`NormPrecision`] for the headroom), 1/√var, then γ and β (β at scale 2s,
/// added before the last truncation). No ε: encode(1e-12) is 0 at any
/// s ≤ 39, and BOLT adds none; a constant row (var = 0) gives c = 0 and the
/// output β.
pub fn layer_norm<B: Backend>(
    b: &mut B,
    x: &B::Arith,
    width: usize,
    gamma: &WeightVector,
    beta2: &[u64],
) -> B::Arith {
    let n = b.len(x);
    assert!(width > 0 && n % width == 0, "layer_norm: rows of {width} in {n}");
    assert!(gamma.values.len() == width && beta2.len() == width, "layer_norm: γ/β are not {width} wide");
    let r = b.ring();
    let s = r.frac();
    let prec = NormPrecision::for_ring(r);
    let rows = n / width;
    let bc = broadcast_idx(rows, width);
    let sum = b.sum_chunks(x, width);
    let mu = div_public(b, &sum, width);
    let mub = b.gather(&mu, &bc);
    let c = b.sub(x, &mub);
    let k = prec.square_shift;
    let cs = if k > 0 { b.truncate(&c, k) } else { c.clone() };
    let sq = b.mul(&cs, &cs); // scale 2(s − k)
    let sq = b.truncate(&sq, s - 2 * k);
    let ssum = b.sum_chunks(&sq, width);
    let var = div_public(b, &ssum, width);
    // Each truncation comes in the round of the product that consumes it:
    // 1/√var's last one per element with c (exact truncation gives every
    // copy the same value), then y's with γ, which the server opens masked.
    let (rs, k) = rsqrt_untruncated(b, &var, prec.rsqrt_extra);
    let rsb = b.gather(&rs, &bc);
    let (_, y) = b.trunc_mul(&c, &rsb, k);
    let gw = b.weights_shared(gamma, rows);
    let (_, g) = b.trunc_mul(&gw, &y, s + prec.rsqrt_extra);
    let g = b.add_public(&g, beta2);
    b.rescale(&g)
}

// ---- tanh -------------------------------------------------------------------------------------

/// BOLT's Q5 in the variable u = |x|/cut ∈ [0, 1]: coefficients
/// c_k·cut^k. Same polynomial; but its coefficients are encoded with an
/// error that the powers of u ≤ 1 do not amplify (c5·|x|⁵ with |x| near 2.855
/// would turn the half-ulp rounding of c5 into ~40 ulps at s = 12).
pub fn tanh_scaled() -> [f64; 6] {
    let mut d = TANH_Q5;
    for (k, v) in d.iter_mut().enumerate() {
        *v *= TANH_CUT.powi(k as i32);
    }
    d
}

/// tanh(x) ≈ sign(x)·Q5(|x|) for |x| ≤ 2.855, ±1 outside (BOLT), with Q5
/// evaluated in u = |x|/2.855 (see [`tanh_scaled`]). Powers u², u³ = u²·u,
/// u⁴ = u²·u², u⁵ = u⁴·u: 4 products; 2 comparisons, 4 MUXes (|x|, clamp,
/// ±1, sign), 6 truncations per element.
pub fn tanh<B: Backend>(b: &mut B, x: &B::Arith) -> B::Arith {
    let r = b.ring();
    let (sign, a) = sign_abs(b, x);
    let d = b.sub_public(&a, &[le_threshold(r, TANH_CUT)]);
    let inside = b.msb(&d); // |x| ≤ cut
    // Clamp the argument as in `gelu`: powers of a large |x| would overflow.
    let cut_v = b.constant(&vec![enc(r, TANH_CUT); b.len(x)]);
    let a = b.mux(&inside, &a, &cut_v);
    let u = affine(b, &[(&a, 1.0 / TANH_CUT)], None, 0.0);
    let u2 = mul_rescale(b, &u, &u);
    let u3 = mul_rescale(b, &u2, &u);
    let u4 = mul_rescale(b, &u2, &u2);
    let u5 = mul_rescale(b, &u4, &u);
    let c = tanh_scaled();
    let q = affine(b, &[(&u, c[1]), (&u2, c[2]), (&u3, c[3]), (&u4, c[4]), (&u5, c[5])], None, c[0]);
    let one = b.constant(&vec![r.one(); b.len(x)]);
    let t = b.mux(&inside, &q, &one);
    let nt = b.neg(&t);
    b.mux(&sign, &nt, &t)
}

#[cfg(test)]
mod tests;
