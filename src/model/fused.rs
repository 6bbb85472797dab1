//! The training forward's hot operations as single candle ops with their
//! own backward: the linear layer with its bias, LayerNorm, the erf GELU,
//! the scaled, masked softmax and dropout.
//!
//! Composed from candle's elementwise ops, each of these leaves five to
//! ten nodes in the graph, and backprop visits every one: it allocates a
//! zeroed gradient, adds into it and keeps the node's output alive until
//! the step ends. One op per function reads its inputs once going forward
//! and once going back, and remembers only what the backward needs. Each
//! is held to the composed version and to finite differences by tests.
//!
//! The loops are written to auto-vectorise (no branches, no libm calls in
//! the inner loops) and are compiled a second time for AVX2 + FMA, taken
//! when the CPU has it. Work splits over rows on rayon's pool, the one the
//! matrix products already use.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

pub(crate) type CResult<T> = candle_core::Result<T>;

fn msg(s: &str) -> candle_core::Error {
    candle_core::Error::Msg(s.to_string())
}

pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(msg("fused ops take contiguous f32 tensors")),
    }
}

/// Runs `f` on the contiguous f32 data of `t` (copying only if it is not
/// contiguous already).
pub(crate) fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        candle_core::Storage::Cpu(c) => f(slice(c, l)?),
        _ => Err(msg("fused ops run on the CPU")),
    }
}

pub(crate) fn tensor(v: Vec<f32>, shape: &Shape) -> CResult<Tensor> {
    Tensor::from_vec(v, shape.clone(), &candle_core::Device::Cpu)
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them — if LLVM
/// inlines the closure into the wrapper, which it does for small bodies
/// and not for large ones (check `perf annotate` for `vmulps`); large
/// passes go through [`wide!`] instead.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Runs `$f(args…)` compiled for AVX2 + FMA when the CPU has them, through
/// a target-feature function of its own. ([`simd`]'s closures were not
/// inlined into its wrapper when their bodies were large, and then ran as
/// scalar SSE: the GELU backward passes, 4 % of a step and 7 % of a soft
/// step.)
macro_rules! wide {
    ($f:path, $($a:ident: $t:ty),*) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($a: $t),*) {
                $f($($a),*)
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were just detected.
                unsafe { avx2($($a),*) }
            } else {
                $f($($a),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($a),*)
        }
    }};
}
pub(crate) use wide;

/// Rows handled per rayon task: enough work to hide the hand-off.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (16_384 / cols.max(1)).max(1)
}

/// e^x within 2 ulp for x in [−87.3, 88.7] (Cephes' expf, branch-free),
/// exactly 0 below: a −1e9 mask bias must give exactly zero attention.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer
    // without SSE4.1's roundps.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let scaled = e * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < -87.3 { 0.0 } else { scaled }
}

/// erf(x) to a few ulp: Eigen's rational approximation on [−4, 4]
/// (erf is ±1 in f32 outside).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

// ---------------------------------------------------------------- GELU

struct Gelu;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_forward(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
    }
}

/// GELU'(x) = Φ(x) + x·φ(x), times the incoming gradient.
#[inline(always)]
fn gelu_backward(d: &mut [f32], x: &[f32], g: &[f32]) {
    for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        *d = g * (cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x));
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(16_384).zip(x.par_chunks(16_384)).for_each(|(y, x)| wide!(gelu_forward, y: &mut [f32], x: &[f32]));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let dx = with_data(arg, |x| {
            with_data(grad, |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(16_384).zip(x.par_chunks(16_384).zip(g.par_chunks(16_384))).for_each(|(d, (x, g))| wide!(gelu_backward, d: &mut [f32], x: &[f32], g: &[f32]));
                Ok(dx)
            })
        })?;
        Ok(Some(tensor(dx, arg.shape())?))
    }
}

/// GELU with the exact erf, as BERT's `gelu` (not the tanh form).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

// ----------------------------------------------------------- LayerNorm

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/√(var + ε) of one row.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mu = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() / n;
    (mu, 1.0 / (var + eps).sqrt())
}

/// A LayerNorm-shaped forward over rayon: `row(y, x)` writes one row of d.
pub(crate) fn norm_rows(x: &[f32], d: usize, row: impl Fn(&mut [f32], &[f32]) + Sync) -> Vec<f32> {
    let per = rows_per_task(d) * d;
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(per).zip(x.par_chunks(per)).for_each(|(y, x)| simd(|| y.chunks_exact_mut(d).zip(x.chunks_exact(d)).for_each(|(y, x)| row(y, x))));
    y
}

/// One row of a LayerNorm's backward: (dx to write, x, the output's
/// gradient, γ).
pub(crate) type NormRow<'a> = (&'a mut [f32], &'a [f32], &'a [f32], &'a [f32]);

/// A LayerNorm-shaped backward over rayon: `row((dx, x, g, γ), dγ, dβ)`
/// writes one row's dx and adds into its task's dγ and dβ; the tasks' sums
/// are added up. Returns the gradients of x, γ and β.
pub(crate) fn norm_backward(x: &Tensor, gamma: &Tensor, grad: &Tensor, row: impl Fn(NormRow, &mut [f32], &mut [f32]) + Sync) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let d = gamma.elem_count();
    let per = rows_per_task(d) * d;
    let (dx, dgb) = with_data(x, |x| {
        with_data(gamma, |gamma| {
            with_data(grad, |g| {
                let mut dx = vec![0f32; x.len()];
                let task = |(dx, (x, g)): (&mut [f32], (&[f32], &[f32]))| {
                    simd(|| {
                        let mut acc = vec![0f32; 2 * d];
                        let (dgamma, dbeta) = acc.split_at_mut(d);
                        for ((dx, x), g) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(g.chunks_exact(d)) {
                            row((dx, x, g, gamma), dgamma, dbeta);
                        }
                        acc
                    })
                };
                let add = |mut a: Vec<f32>, b: Vec<f32>| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                };
                // The tasks' partial sums are added in task order: rayon's
                // `reduce` pairs them as the work was stolen, and a float sum
                // in another order gives another γ gradient on every run.
                let parts: Vec<Vec<f32>> = dx.par_chunks_mut(per).zip(x.par_chunks(per).zip(g.par_chunks(per))).map(task).collect();
                let dgb = parts.into_iter().fold(vec![0f32; 2 * d], add);
                Ok((dx, dgb))
            })
        })
    })?;
    let dims = Shape::from(d);
    Ok((Some(tensor(dx, x.shape())?), Some(tensor(dgb[..d].to_vec(), &dims)?), Some(tensor(dgb[d..].to_vec(), &dims)?)))
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let y = norm_rows(x, gamma.len(), |y, x| {
            let (mu, r) = moments(x, self.eps);
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (x - mu) * r * g + b;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·γ; dγ = Σ g·x̂, dβ = Σ g.
        norm_backward(x, gamma, grad, |(dx, x, g, gamma), dgamma, dbeta| {
            let d = x.len() as f32;
            let (mu, r) = moments(x, self.eps);
            let (mut m1, mut m2) = (0f32, 0f32);
            for ((&x, &g), &ga) in x.iter().zip(g).zip(gamma) {
                let xh = (x - mu) * r;
                m1 += g * ga;
                m2 += g * ga * xh;
            }
            let (m1, m2) = (m1 / d, m2 / d);
            for (((((dx, &x), &g), &ga), dga), dbe) in dx.iter_mut().zip(x).zip(g).zip(gamma).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
                let xh = (x - mu) * r;
                *dx = r * (g * ga - m1 - xh * m2);
                *dga += g * xh;
                *dbe += g;
            }
        })
    }
}

/// LayerNorm over the last dim.
///
/// # Shapes
/// x: (..., d); gamma, beta: (d)
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNormOp { eps: eps as f32 })?)
}

// ------------------------------------------------------------- softmax

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, bias) = (slice(s1, l1)?, slice(s2, l2)?);
        let (b, k) = (l2.shape().dims()[0], *l1.shape().dims().last().expect("rank 4"));
        let per_batch = x.len() / b;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(per_batch).zip(x.par_chunks(per_batch)).zip(bias.par_chunks(k)).for_each(|((y, x), bias)| {
            simd(|| {
                for (y, x) in y.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
                    let mut m = f32::NEG_INFINITY;
                    for (&x, &c) in x.iter().zip(bias) {
                        m = m.max(x * self.scale + c);
                    }
                    let mut s = 0f32;
                    for ((y, &x), &c) in y.iter_mut().zip(x).zip(bias) {
                        *y = exp(x * self.scale + c - m);
                        s += *y;
                    }
                    let inv = 1.0 / s;
                    y.iter_mut().for_each(|y| *y *= inv);
                }
            })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, bias: &Tensor, y: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (b, k) = (bias.dim(0)?, x.dim(candle_core::D::Minus1)?);
        // dz = y·(g − Σ g·y); dx = scale·dz; the bias gets Σ over heads and queries of dz.
        let (dx, dbias) = with_data(y, |y| {
            with_data(grad, |g| {
                let per_batch = y.len() / b;
                let mut dx = vec![0f32; y.len()];
                let mut dbias = vec![0f32; b * k];
                dx.par_chunks_mut(per_batch).zip(dbias.par_chunks_mut(k)).zip(y.par_chunks(per_batch).zip(g.par_chunks(per_batch))).for_each(|((dx, db), (y, g))| {
                    simd(|| {
                        for ((dx, y), g) in dx.chunks_exact_mut(k).zip(y.chunks_exact(k)).zip(g.chunks_exact(k)) {
                            let dot: f32 = y.iter().zip(g).map(|(&y, &g)| y * g).sum();
                            for (((dx, &y), &g), db) in dx.iter_mut().zip(y).zip(g).zip(db.iter_mut()) {
                                let dz = y * (g - dot);
                                *db += dz;
                                *dx = dz * self.scale;
                            }
                        }
                    })
                });
                Ok((dx, dbias))
            })
        })?;
        Ok((Some(tensor(dx, x.shape())?), Some(tensor(dbias, bias.shape())?)))
    }
}

/// softmax(scale·x + bias) over the last dim.
///
/// # Shapes
/// x: (b, heads, queries, keys); bias: (b, 1, 1, keys)
pub fn masked_softmax(x: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, _, _, k) = x.dims4()?;
    let bias = bias.broadcast_as((b, 1, 1, k))?.contiguous()?;
    Ok(x.contiguous()?.apply_op2(&bias, MaskedSoftmax { scale: scale as f32 })?)
}

// ----------------------------------------------------- score numerator

/// col[b, k] = Σ_h Σ_q probs[b, h, q, k] · w[b, q].
struct ColumnSums;

impl CustomOp2 for ColumnSums {
    fn name(&self) -> &'static str {
        "fused-column-sums"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (p, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let (b, h, q, k) = l1.shape().dims4()?;
        let mut col = vec![0f32; b * k];
        col.par_chunks_mut(k).zip(p.par_chunks(h * q * k).zip(w.par_chunks(q))).for_each(|(col, (p, w))| {
            // Over q into a head's row, then the heads in turn, each from
            // 0: the order of candle's `sum(2)` then `sum(1)`.
            simd(|| {
                let mut head = vec![0f32; k];
                for p in p.chunks_exact(q * k) {
                    head.iter_mut().for_each(|s| *s = 0.0);
                    for (p, &w) in p.chunks_exact(k).zip(w) {
                        head.iter_mut().zip(p).for_each(|(s, &p)| *s += p * w);
                    }
                    col.iter_mut().zip(&head).for_each(|(c, &s)| *c += s);
                }
            })
        });
        Ok((CpuStorage::F32(col), Shape::from((b, k))))
    }

    fn bwd(&self, probs: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (b, h, q, k) = probs.dims4()?;
        let (dp, dw) = with_data(probs, |p| {
            with_data(w, |w| {
                with_data(grad, |g| {
                    let (mut dp, mut dw) = (vec![0f32; p.len()], vec![0f32; b * q]);
                    let outs = dp.par_chunks_mut(h * q * k).zip(dw.par_chunks_mut(q));
                    outs.zip(p.par_chunks(h * q * k).zip(w.par_chunks(q)).zip(g.par_chunks(k))).for_each(|((dp, dw), ((p, w), g))| {
                        // dw sums over h, then k, as candle's broadcast
                        // backward (a sum over dims 1 and 3, in memory order).
                        // The running sum in a local, the product in a loop of its
                        // own: a store to dw per element, and the two in one loop,
                        // had kept this scalar (as long as the softmax's backward).
                        simd(|| {
                            for (dp, p) in dp.chunks_exact_mut(q * k).zip(p.chunks_exact(q * k)) {
                                for (((dp, p), &w), dw) in dp.chunks_exact_mut(k).zip(p.chunks_exact(k)).zip(w).zip(dw.iter_mut()) {
                                    dp.iter_mut().zip(g).for_each(|(dp, &g)| *dp = g * w);
                                    let mut s = *dw;
                                    for (&p, &g) in p.iter().zip(g) {
                                        s += g * p;
                                    }
                                    *dw = s;
                                }
                            }
                        })
                    });
                    Ok((dp, dw))
                })
            })
        })?;
        Ok((Some(tensor(dp, probs.shape())?), Some(tensor(dw, w.shape())?)))
    }
}

/// The attention each key receives from the queries, weighted per query
/// and summed over the heads: the token score's numerator (DESIGN §2).
/// One pass where `probs.broadcast_mul(w)?.sum(2)?.sum(1)?` made a
/// (b, heads, q, k) product, two reductions and, backward, three more
/// tensors of that size; the sums run in that version's order, so the
/// values are its bits.
///
/// # Shapes
/// probs: (b, heads, q, k); w: (b, q) → (b, k)
pub fn column_sums(probs: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(probs.contiguous()?.apply_op2(&w.contiguous()?, ColumnSums)?)
}

// ------------------------------------------------------------- dropout

/// Multiplies by a fixed 0/keep mask; the mask is data, not a graph input,
/// so backprop neither stores nor differentiates it.
struct Dropout {
    keep: Arc<Vec<bool>>,
    scale: f32,
}

impl Dropout {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(16_384).zip(x.par_chunks(16_384).zip(self.keep.par_chunks(16_384))).for_each(|(y, (x, k))| {
            for ((y, &x), &k) in y.iter_mut().zip(x).zip(k) {
                *y = if k { x * self.scale } else { 0.0 };
            }
        });
        y
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.apply(slice(s, l)?)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(tensor(with_data(grad, |g| Ok(self.apply(g)))?, arg.shape())?))
    }
}

/// x·keep/(1 − p) elementwise, `keep` one flag per element.
pub fn dropout(x: &Tensor, keep: Vec<bool>, p: f64) -> Result<Tensor> {
    assert_eq!(keep.len(), x.elem_count(), "one dropout flag per element");
    Ok(x.contiguous()?.apply_op1(Dropout { keep: Arc::new(keep), scale: (1.0 / (1.0 - p)) as f32 })?)
}

// -------------------------------------------------------------- linear

struct LinearOp;

/// dst (m×n, row stride `dst_rs`) = alpha·dst + lhs·rhs, on gemm's rayon
/// pool; strides are (row, column) in elements.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], read_dst: bool, lhs: &[f32], lhs_rs: usize, lhs_cs: usize, rhs: &[f32], rhs_rs: usize, rhs_cs: usize) {
    assert!(dst.len() >= m * n && lhs.len() >= (m - 1) * lhs_rs + (k - 1) * lhs_cs + 1 && rhs.len() >= (k - 1) * rhs_rs + (n - 1) * rhs_cs + 1, "gemm operands too short");
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the bounds were checked above; dst does not alias lhs or rhs.
    unsafe {
        gemm::gemm(m, n, k, dst.as_mut_ptr(), 1, n as isize, read_dst, lhs.as_ptr(), lhs_cs as isize, lhs_rs as isize, rhs.as_ptr(), rhs_cs as isize, rhs_rs as isize, 1.0, 1.0, false, false, false, par);
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (rows, inp) = l1.shape().dims2()?;
        let out = b.len();
        // The bias is the product's starting value.
        let mut y: Vec<f32> = Vec::with_capacity(rows * out);
        for _ in 0..rows {
            y.extend_from_slice(b);
        }
        gemm(rows, out, inp, &mut y, true, x, inp, 1, w, 1, inp);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, inp) = x.dims2()?;
        let out = w.dim(0)?;
        let (dx, dw, db) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(grad, |g| {
                    let mut dx = vec![0f32; rows * inp];
                    gemm(rows, inp, out, &mut dx, false, g, out, 1, w, inp, 1);
                    // Hugging Face's (out, in) layout straight away: gᵀ·x.
                    let mut dw = vec![0f32; out * inp];
                    gemm(out, inp, rows, &mut dw, false, g, 1, out, x, inp, 1);
                    let mut db = vec![0f32; out];
                    for g in g.chunks_exact(out) {
                        db.iter_mut().zip(g).for_each(|(d, g)| *d += g);
                    }
                    Ok((dx, dw, db))
                })
            })
        })?;
        Ok((Some(tensor(dx, x.shape())?), Some(tensor(dw, w.shape())?), Some(tensor(db, &Shape::from(out))?)))
    }
}

/// `x Wᵀ + b`.
///
/// # Shapes
/// x: (rows, in); w: (out, in); b: (out) → (rows, out)
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp)?)
}

// ------------------------------------------------- attention products

/// One matrix of a batch: rows × cols with the given strides, at `offset`.
#[derive(Clone, Copy)]
struct Mat {
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Mat {
    fn new(rows: usize, cols: usize) -> Self {
        Mat { rows, cols, rs: cols, cs: 1 }
    }

    fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// lhs[i]·rhs[i] for every matrix i of the batch, one product per rayon
/// task: a head's products (64 × 32 × 64 at 64 tokens) are too small for
/// gemm to split, so candle's loop over heads ran on one core.
fn batched(lhs: &[f32], l: Mat, rhs: &[f32], r: Mat) -> Vec<f32> {
    let (m, k, n) = (l.rows, l.cols, r.cols);
    assert_eq!(k, r.rows, "inner dimensions");
    let (lsz, rsz) = (m * k, k * n);
    let mut out = vec![0f32; lhs.len() / lsz * m * n];
    out.par_chunks_mut(m * n).zip(lhs.par_chunks(lsz).zip(rhs.par_chunks(rsz))).for_each(|(o, (a, b))| {
        // SAFETY: each matrix lies inside its chunk (rows·rs + cols·cs within
        // rows × cols elements for both layouts used here); o is m × n.
        unsafe {
            gemm::gemm(m, n, k, o.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), l.cs as isize, l.rs as isize, b.as_ptr(), r.cs as isize, r.rs as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::None);
        }
    });
    out
}

/// lhs·rhs (or lhs·rhsᵀ) over the leading dims.
struct Bmm {
    transpose_rhs: bool,
}

impl Bmm {
    /// (lhs matrix, rhs matrix as stored, rhs as used).
    fn mats(&self, ld: &[usize], rd: &[usize]) -> (Mat, Mat, Mat) {
        let (n2, n1) = (rd.len() - 2, rd.len() - 1);
        let l = Mat::new(ld[ld.len() - 2], ld[ld.len() - 1]);
        let stored = Mat::new(rd[n2], rd[n1]);
        (l, stored, if self.transpose_rhs { stored.t() } else { stored })
    }
}

impl CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (ld, rd) = (l1.shape().dims(), l2.shape().dims());
        let (l, _, r) = self.mats(ld, rd);
        let mut dims = ld.to_vec();
        *dims.last_mut().expect("rank ≥ 2") = r.cols;
        Ok((CpuStorage::F32(batched(slice(s1, l1)?, l, slice(s2, l2)?, r)), Shape::from(dims)))
    }

    fn bwd(&self, lhs: &Tensor, rhs: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (l, stored, r) = self.mats(lhs.dims(), rhs.dims());
        let g = Mat::new(l.rows, r.cols);
        let (dl, dr) = with_data(lhs, |a| {
            with_data(rhs, |b| {
                with_data(grad, |gr| {
                    // C = A·R: dA = G·Rᵀ; dR = Aᵀ·G, stored transposed when R = Bᵀ (dB = Gᵀ·A).
                    let dl = batched(gr, g, b, if self.transpose_rhs { stored } else { stored.t() });
                    let dr = if self.transpose_rhs { batched(gr, g.t(), a, l) } else { batched(a, l.t(), gr, g) };
                    Ok((dl, dr))
                })
            })
        })?;
        Ok((Some(tensor(dl, lhs.shape())?), Some(tensor(dr, rhs.shape())?)))
    }
}

/// The per-head products of attention, heads spread over the cores:
/// `lhs·rhsᵀ` with `transpose_rhs` (scores from Q and K), else `lhs·rhs`.
///
/// # Shapes
/// lhs: (..., m, k); rhs: (..., n, k) with `transpose_rhs`, else (..., k, n)
pub fn batched_matmul(lhs: &Tensor, rhs: &Tensor, transpose_rhs: bool) -> Result<Tensor> {
    Ok(lhs.contiguous()?.apply_op2(&rhs.contiguous()?, Bmm { transpose_rhs })?)
}

#[cfg(test)]
mod tests;
