//! The approximate softmax and GELU of the soft stage as single ops with
//! their own backward, optionally blending the high- and low-degree
//! versions by a per-row weight. They compute what the composed ops in
//! [`super`] compute, in the same order and with the same detached
//! branches, but keep only their inputs for the backward: composed, the
//! soft stage's graph held a dozen (batch, heads, seq, seq) tensors per
//! layer, and its step cost 1.6x a plain one.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::Degree;
use crate::error::Result;
use crate::fixed::approx::{
    ceil_log2, exp_clip, gelu_high_factored, EXP_HIGH_ABC, EXP_LOW_A, GELU_HIGH_CUT, GELU_LOW_CUT, GELU_LOW_Q2, INV_LN2, LN2, RECIP_INIT, RECIP_NEWTON,
    RSQRT_INIT, RSQRT_MAX_LOG2, RSQRT_MIN_LOG2, RSQRT_NEWTON,
};
use crate::model::fused::{norm_backward, norm_rows, rows_per_task, simd, slice, tensor, wide, with_data, CResult};

/// 2^−z for an integer-valued z in [0, 126], exactly: 2^23 + (127 − z) holds
/// 127 − z in its mantissa bits, which then move to the exponent. Integer
/// ops only, where `as i32` would stop the loop around it vectorising.
#[inline(always)]
fn pow2_neg(z: f32) -> f32 {
    f32::from_bits(((127.0 - z + 8_388_608.0).to_bits() - 0x4B00_0000) << 23)
}

/// e^t for t ≤ 0 as [`super::exp_neg`] computes it, and its derivative in
/// t with the branch (z) held fixed. Branch-free, so that a row's loop over
/// it runs eight lanes wide.
#[inline(always)]
fn exp_neg(t: f32, deg: Degree) -> (f32, f32) {
    let clip = exp_clip(deg).0 as f32;
    // t ≤ 0, so ⌊−t/ln2⌋ is a truncation; the min keeps masked entries
    // (−1e9) and NaN finite.
    let z = (t * -(INV_LN2 as f32)).min(1e6).trunc();
    let alive = z <= clip;
    let zs = if alive { z } else { 0.0 };
    let scale = if alive { pow2_neg(zs) } else { 0.0 };
    let p = t + z * LN2 as f32;
    let (e, de) = match deg {
        Degree::High => {
            let [a, b, c] = EXP_HIGH_ABC.map(|v| v as f32);
            let u = p + b;
            (u * u * a + c, 2.0 * a * u)
        }
        Degree::Low => {
            let [a0, a1] = EXP_LOW_A.map(|v| v as f32);
            (p * a1 + a0, a1)
        }
    };
    (e * scale, de * scale)
}

/// 1/s by [`super::reciprocal`]'s octave guess and Newton steps, and d(1/s)/ds
/// through the Newton steps (the guess is a constant).
#[inline(always)]
fn reciprocal(s: f32, max_log2: u32) -> (f32, f32) {
    let k = (1..=max_log2).filter(|&j| s >= (j as f32).exp2()).count();
    let mut y = pow2_neg(k as f32) * RECIP_INIT as f32;
    let mut dy = 0f32;
    for _ in 0..RECIP_NEWTON {
        let e = s * y;
        dy = dy * (2.0 - 2.0 * e) - y * y;
        y *= 2.0 - e;
    }
    (y, dy)
}

/// The row's maximum, in eight lanes (a maximum does not depend on order).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let x8 = x.chunks_exact(8);
    let rest = x8.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in x8 {
        for i in 0..8 {
            lanes[i] = lanes[i].max(x[i]);
        }
    }
    lanes.iter().copied().fold(rest, f32::max)
}

/// One row of one degree, given its maximum m: e (masked exponentials) and
/// de/dt into the buffers, and (1/Σe, its derivative). The sum runs in order
/// in a loop of its own, so the exponentials' loop vectorises and the
/// result is the same to the bit as one running loop's.
#[inline(always)]
fn row(x: &[f32], m: f32, deg: Degree, max_log2: u32, e: &mut [f32], de: &mut [f32]) -> (f32, f32) {
    for ((&x, e), de) in x.iter().zip(e.iter_mut()).zip(de.iter_mut()) {
        (*e, *de) = exp_neg(x - m, deg);
    }
    let mut s = 0f32;
    for &e in e.iter() {
        s += e;
    }
    reciprocal(s, max_log2)
}

/// Five rows of length k: the logits, then e at both degrees, then de/dt.
fn row_buffers(buf: &mut [f32], k: usize) -> [&mut [f32]; 5] {
    let mut rows = buf.chunks_exact_mut(k);
    std::array::from_fn(|_| rows.next().expect("five rows"))
}

struct Softmax {
    scale: f32,
    /// Blend high and low by the third input (the low weight per query row).
    blend: bool,
}

impl Softmax {
    /// The logits scale·raw + bias of one row into `buf`.
    #[inline(always)]
    fn logits(&self, raw: &[f32], bias: &[f32], buf: &mut [f32]) {
        for ((b, &x), &c) in buf.iter_mut().zip(raw).zip(bias) {
            *b = x * self.scale + c;
        }
    }

    /// The forward of one batch entry: `q` rows of `k` per head.
    #[inline(always)]
    fn forward_entry(&self, y: &mut [f32], raw: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize) {
        let max_log2 = ceil_log2(k);
        let mut buf = vec![0f32; 5 * k];
        let [x, e_hi, e_lo, d_hi, d_lo] = row_buffers(&mut buf, k);
        for (r, (raw, y)) in raw.chunks_exact(k).zip(y.chunks_exact_mut(k)).enumerate() {
            self.logits(raw, bias, x);
            let m = row_max(x);
            let (r_hi, _) = row(x, m, Degree::High, max_log2, e_hi, d_hi);
            if self.blend {
                let (r_lo, _) = row(x, m, Degree::Low, max_log2, e_lo, d_lo);
                let wl = w[r % q];
                for ((y, &hi), &lo) in y.iter_mut().zip(e_hi.iter()).zip(e_lo.iter()) {
                    *y = hi * r_hi * (1.0 - wl) + lo * r_lo * wl;
                }
            } else {
                for (y, &hi) in y.iter_mut().zip(e_hi.iter()) {
                    *y = hi * r_hi;
                }
            }
        }
    }

    /// The backward of one batch entry (gradients of raw, bias and w).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_entry(&self, draw: &mut [f32], dbias: &mut [f32], dw: &mut [f32], raw: &[f32], g: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize) {
        let max_log2 = ceil_log2(k);
        let mut buf = vec![0f32; 5 * k];
        let [x, e_hi, e_lo, d_hi, d_lo] = row_buffers(&mut buf, k);
        for (r, ((raw, dx), g)) in raw.chunks_exact(k).zip(draw.chunks_exact_mut(k)).zip(g.chunks_exact(k)).enumerate() {
            self.logits(raw, bias, x);
            let m = row_max(x);
            let wl = if self.blend { w[r % q] } else { 0.0 };
            // out = e·R(s): dL/dt = (g·R + R'(s)·Σ g·e)·de/dt. The sums run
            // in order (from −0, as `Sum` does), their chains side by side
            // in one loop; the element-wise passes vectorise.
            let (r_hi, dr_hi) = row(x, m, Degree::High, max_log2, e_hi, d_hi);
            if self.blend {
                let (r_lo, dr_lo) = row(x, m, Degree::Low, max_log2, e_lo, d_lo);
                let (mut a_hi, mut a_lo, mut dwl) = (-0f32, -0f32, 0f32);
                for ((&g, &hi), &lo) in g.iter().zip(e_hi.iter()).zip(e_lo.iter()) {
                    a_hi += g * hi;
                    a_lo += g * lo;
                    dwl += g * (lo * r_lo - hi * r_hi);
                }
                let (a_hi, a_lo) = (a_hi * (1.0 - wl), a_lo * wl);
                for (((dx, &g), &dh), &dl) in dx.iter_mut().zip(g).zip(d_hi.iter()).zip(d_lo.iter()) {
                    *dx = (g * (1.0 - wl) * r_hi + dr_hi * a_hi) * dh + (g * wl * r_lo + dr_lo * a_lo) * dl;
                }
                dw[r % q] += dwl;
            } else {
                let mut a_hi = -0f32;
                for (&g, &hi) in g.iter().zip(e_hi.iter()) {
                    a_hi += g * hi;
                }
                let a_hi = a_hi * (1.0 - wl);
                for ((dx, &g), &d) in dx.iter_mut().zip(g).zip(d_hi.iter()) {
                    *dx = (g * (1.0 - wl) * r_hi + dr_hi * a_hi) * d;
                }
            }
            for (dx, db) in dx.iter_mut().zip(dbias.iter_mut()) {
                *db += *dx;
                *dx *= self.scale;
            }
        }
    }

    fn forward_wide(&self, y: &mut [f32], raw: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize) {
        let op = self;
        wide!(Softmax::forward_entry, op: &Softmax, y: &mut [f32], raw: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_wide(&self, draw: &mut [f32], dbias: &mut [f32], dw: &mut [f32], raw: &[f32], g: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize) {
        let op = self;
        wide!(Softmax::backward_entry, op: &Softmax, draw: &mut [f32], dbias: &mut [f32], dw: &mut [f32], raw: &[f32], g: &[f32], bias: &[f32], w: &[f32], q: usize, k: usize)
    }
}

impl CustomOp3 for Softmax {
    fn name(&self) -> &'static str {
        "fused-approx-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (raw, bias, w) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (_, h, q, k) = l1.shape().dims4()?;
        let mut y = vec![0f32; raw.len()];
        let per = h * q * k;
        y.par_chunks_mut(per).zip(raw.par_chunks(per)).zip(bias.par_chunks(k).zip(w.par_chunks(q))).for_each(|((y, raw), (bias, w))| self.forward_wide(y, raw, bias, w, q, k));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, raw: &Tensor, bias: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, h, q, k) = raw.dims4()?;
        let per = h * q * k;
        let (draw, dbias, dw) = with_data(raw, |raw| {
            with_data(bias, |bias| {
                with_data(w, |w| {
                    with_data(grad, |g| {
                        let (mut draw, mut dbias, mut dw) = (vec![0f32; raw.len()], vec![0f32; b * k], vec![0f32; b * q]);
                        let outs = draw.par_chunks_mut(per).zip(dbias.par_chunks_mut(k)).zip(dw.par_chunks_mut(q));
                        let ins = raw.par_chunks(per).zip(g.par_chunks(per)).zip(bias.par_chunks(k).zip(w.par_chunks(q)));
                        outs.zip(ins).for_each(|(((draw, dbias), dw), ((raw, g), (bias, w)))| self.backward_wide(draw, dbias, dw, raw, g, bias, w, q, k));
                        Ok((draw, dbias, dw))
                    })
                })
            })
        })?;
        let dw = if self.blend { Some(tensor(dw, w.shape())?) } else { None };
        Ok((Some(tensor(draw, raw.shape())?), Some(tensor(dbias, bias.shape())?), dw))
    }
}

/// [`super::softmax`] of scale·raw + bias at the high degree, or with
/// `w_low` the blend (1 − w)·high + w·low per query row.
///
/// # Shapes
/// raw: (b, heads, q, k); bias: (b, 1, 1, k); w_low: (b, 1, q, 1)
pub fn softmax(raw: &Tensor, bias: &Tensor, scale: f64, w_low: Option<&Tensor>) -> Result<Tensor> {
    let (b, _, q, k) = raw.dims4()?;
    let bias = bias.broadcast_as((b, 1, 1, k))?.contiguous()?;
    let w = match w_low {
        Some(w) => w.reshape((b, 1, q, 1))?.contiguous()?,
        None => Tensor::zeros((b, 1, q, 1), candle_core::DType::F32, raw.device())?,
    };
    Ok(raw.contiguous()?.apply_op3(&bias, &w, Softmax { scale: scale as f32, blend: w_low.is_some() })?)
}

/// The f32 bounds that [`super::gelu`]'s comparisons use (`lt_const`).
fn cut_above(c: f64) -> f32 {
    if (c as f32) as f64 >= c { c as f32 } else { (c as f32).next_up() }
}

/// The constants of [`gelu_one`], computed once per call (the factored
/// high-degree coefficients take a square root).
#[derive(Clone, Copy)]
struct GeluConsts {
    high: [f32; 5],
    low: [f32; 3],
    cut_hi: f32,
    cut_lo: f32,
}

impl GeluConsts {
    fn new() -> Self {
        GeluConsts { high: gelu_high_factored().map(|v| v as f32), low: GELU_LOW_Q2.map(|v| v as f32), cut_hi: cut_above(GELU_HIGH_CUT), cut_lo: cut_above(GELU_LOW_CUT) }
    }
}

/// GELU of one degree as [`super::gelu`] computes it, and its derivative
/// with the branch held fixed.
#[inline(always)]
fn gelu_one(x: f32, deg: Degree, c: &GeluConsts) -> (f32, f32) {
    let a = x.abs();
    let sgn = if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { 0.0 };
    let (poly, dpoly, cut) = match deg {
        Degree::High => {
            let [al, alp, alq, r, t] = c.high;
            let w = a * a * al + a * alp + alq;
            (w * w + a * r + x * 0.5 + t, (2.0 * w * (2.0 * al * a + alp) + r) * sgn + 0.5, c.cut_hi)
        }
        Degree::Low => {
            let [c0, c1, c2] = c.low;
            (a * a * c2 + a * c1 + x * 0.5 + c0, (2.0 * c2 * a + c1) * sgn + 0.5, c.cut_lo)
        }
    };
    let relu = if x > 0.0 { (x, 1.0) } else { (0.0, 0.0) };
    if a < cut { (poly, dpoly) } else { relu }
}

struct Gelu {
    blend: bool,
}

impl Gelu {
    /// (value, derivative, d/dw) of one element whose row blends with w.
    #[inline(always)]
    fn one(&self, x: f32, wl: f32, c: &GeluConsts) -> (f32, f32, f32) {
        let (hi, dhi) = gelu_one(x, Degree::High, c);
        if self.blend {
            let (lo, dlo) = gelu_one(x, Degree::Low, c);
            (hi * (1.0 - wl) + lo * wl, dhi * (1.0 - wl) + dlo * wl, lo - hi)
        } else {
            (hi, dhi, 0.0)
        }
    }

    /// Rows of `d`: dx = g·GELU′ and, per row, dw = Σ g·(low − high), summed
    /// in eight lanes so that the loop vectorises (a single running sum
    /// would chain every element; it also made this 6.7 % of a soft step).
    fn backward_rows(&self, x: &[f32], w: &[f32], g: &[f32], d: usize, dx: &mut [f32], dw: &mut [f32]) {
        let op = self;
        wide!(Gelu::rows_backward, op: &Gelu, x: &[f32], w: &[f32], g: &[f32], d: usize, dx: &mut [f32], dw: &mut [f32])
    }

    #[inline(always)]
    fn rows_backward(&self, x: &[f32], w: &[f32], g: &[f32], d: usize, dx: &mut [f32], dw: &mut [f32]) {
        let c = GeluConsts::new();
        for (((x, g), dx), (&wl, dw)) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(w.iter().zip(dw.iter_mut())) {
            let mut acc = [0f32; 8];
            let (x8, g8) = (x.chunks_exact(8), g.chunks_exact(8));
            let (xr, gr) = (x8.remainder(), g8.remainder());
            let mut dx8 = dx.chunks_exact_mut(8);
            for ((x, g), dx) in x8.zip(g8).zip(&mut dx8) {
                for i in 0..8 {
                    let (_, dv, dl) = self.one(x[i], wl, &c);
                    dx[i] = g[i] * dv;
                    acc[i] += g[i] * dl;
                }
            }
            for ((&x, &g), dx) in xr.iter().zip(gr).zip(dx8.into_remainder()) {
                let (_, dv, dl) = self.one(x, wl, &c);
                *dx = g * dv;
                acc[0] += g * dl;
            }
            *dw = acc.iter().sum();
        }
    }
}

impl CustomOp2 for Gelu {
    fn name(&self) -> &'static str {
        "fused-approx-gelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let d = x.len() / w.len();
        let rows = rows_per_task(d);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(rows * d).zip(x.par_chunks(rows * d).zip(w.par_chunks(rows))).for_each(|(y, (x, w))| {
            simd(|| {
                let c = GeluConsts::new();
                for ((y, x), &wl) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(w) {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = self.one(x, wl, &c).0;
                    }
                }
            })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(grad, |g| {
                    let d = x.len() / w.len();
                    let rows = rows_per_task(d);
                    let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
                    dx.par_chunks_mut(rows * d).zip(dw.par_chunks_mut(rows)).zip(x.par_chunks(rows * d).zip(w.par_chunks(rows)).zip(g.par_chunks(rows * d))).for_each(|((dx, dw), ((x, w), g))| {
                        self.backward_rows(x, w, g, d, dx, dw)
                    });
                    Ok((dx, dw))
                })
            })
        })?;
        let dw = if self.blend { Some(tensor(dw, w.shape())?) } else { None };
        Ok((Some(tensor(dx, x.shape())?), dw))
    }
}

/// [`super::gelu`] at the high degree, or with `w_low` the blend
/// (1 − w)·high + w·low per row.
///
/// # Shapes
/// x: (b, t, d); w_low: (b, t)
pub fn gelu(x: &Tensor, w_low: Option<&Tensor>) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let w = match w_low {
        Some(w) => w.reshape((b, t, 1))?.contiguous()?,
        None => Tensor::zeros((b, t, 1), candle_core::DType::F32, x.device())?,
    };
    Ok(x.contiguous()?.apply_op2(&w, Gelu { blend: w_low.is_some() })?)
}

/// 1/√v by [`super::rsqrt`]'s octave guess and Newton steps, and its
/// derivative in v through the Newton steps.
fn rsqrt(v: f32) -> (f32, f32) {
    let m = RSQRT_MIN_LOG2 + (RSQRT_MIN_LOG2 + 1..=RSQRT_MAX_LOG2).filter(|&j| v >= (j as f32).exp2()).count() as i32;
    let mut y = (m as f32 * (-LN2 / 2.0) as f32).exp() * RSQRT_INIT as f32;
    let mut dy = 0f32;
    for _ in 0..RSQRT_NEWTON {
        let u = v * y * y;
        let du = y * y + 2.0 * v * y * dy;
        dy = (dy * (3.0 - u) - y * du) * 0.5;
        y = y * (3.0 - u) * 0.5;
    }
    (y, dy)
}

/// The centred row into `xc`; (1/√var, its derivative) of the row.
#[inline(always)]
fn centre(x: &[f32], xc: &mut [f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mu = x.iter().sum::<f32>() / n;
    let mut var = 0f32;
    for (c, &x) in xc.iter_mut().zip(x) {
        *c = x - mu;
        var += *c * *c;
    }
    rsqrt(var / n)
}

struct LayerNorm;

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-approx-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let y = norm_rows(x, gamma.len(), |y, x| {
            let (r, _) = centre(x, y);
            for ((y, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
                *y = *y * r * g + b;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // y = xc·r(var)·γ + β: dxc = g·γ·r + (Σ g·γ·xc)·r'(var)·2xc/d, then
        // dx = dxc − mean(dxc) (the mean is subtracted).
        norm_backward(x, gamma, grad, |(dx, x, g, gamma), dgamma, dbeta| {
            let d = x.len() as f32;
            let (r, dr) = centre(x, dx);
            let dot: f32 = dx.iter().zip(g).zip(gamma).map(|((&c, &g), &ga)| g * ga * c).sum();
            let k = dot * dr * 2.0 / d;
            let mut mean = 0f32;
            for ((((dx, &g), &ga), dga), dbe) in dx.iter_mut().zip(g).zip(gamma).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
                *dga += g * *dx * r;
                *dbe += g;
                *dx = g * ga * r + k * *dx;
                mean += *dx;
            }
            let mean = mean / d;
            dx.iter_mut().for_each(|v| *v -= mean);
        })
    }
}

/// [`super::layer_norm`] (no ε, the approximate 1/√var) as one op.
///
/// # Shapes
/// x: (..., d); gamma, beta: (d)
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNorm)?)
}
