//! The secure approximations as differentiable candle ops, for threshold
//! learning and the float simulation. Each mirrors its `f64` twin in
//! [`crate::fixed::twin`] step for step with the same constants, so the
//! simulator and the fixed-point engine differ by rounding only; domains,
//! errors against the exact functions and secure costs (products and
//! comparisons, high vs low) are tabulated in [`crate::fixed`] and measured
//! again for these ops by the tests below.
//!
//! Branches (|x| < cut, the exponent z, the reciprocal's octave) are taken
//! on detached values and enter as constant 0/1 masks, so gradients flow
//! through the polynomial that was actually evaluated, as in the protocol.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::fixed::approx::{
    ceil_log2, exp_clip, gelu_high_factored, EXP_HIGH_ABC, EXP_LOW_A, GELU_HIGH_CUT, GELU_LOW_CUT, GELU_LOW_Q2, INV_LN2, LN2,
    RECIP_INIT, RECIP_NEWTON, RSQRT_INIT, RSQRT_MAX_LOG2, RSQRT_MIN_LOG2, RSQRT_NEWTON, TANH_CUT, tanh_scaled,
};
pub use crate::fixed::Degree;

pub mod fused;

/// Which non-linear functions a forward uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// erf GELU, exact softmax, LayerNorm with ε, tanh: the fine-tuned model.
    Exact,
    /// The secure approximations (BOLT's high-degree ones; low-degree ones
    /// where reduction asks for them).
    Approx,
}

/// 1.0 where `cond`, else 0.0, as a constant (no gradient).
fn indicator(cond: Tensor) -> Result<Tensor> {
    Ok(cond.to_dtype(DType::F32)?.detach())
}

/// The f32 comparisons that agree with the twin's f64 ones for every f32
/// input: x < c ⟺ x < (smallest f32 ≥ c); x ≤ c ⟺ x ≤ (largest f32 ≤ c).
fn lt_const(x: &Tensor, c: f64) -> Result<Tensor> {
    let up = if (c as f32) as f64 >= c { c as f32 } else { (c as f32).next_up() };
    indicator(x.detach().lt(up as f64)?)
}

fn le_const(x: &Tensor, c: f64) -> Result<Tensor> {
    let down = if (c as f32) as f64 <= c { c as f32 } else { (c as f32).next_down() };
    indicator(x.detach().le(down as f64)?)
}

/// GELU: 0.5x + P(|x|) inside the cut, ReLU outside (see the twin).
pub fn gelu(x: &Tensor, deg: Degree) -> Result<Tensor> {
    let a = x.abs()?;
    let (cut, poly) = match deg {
        Degree::High => {
            let [al, alp, alq, r, t] = gelu_high_factored();
            let w = ((a.sqr()? * al)? + (&a * alp)?)?.affine(1.0, alq)?;
            (GELU_HIGH_CUT, ((w.sqr()? + (&a * r)?)? + (x * 0.5)?)?.affine(1.0, t)?)
        }
        Degree::Low => {
            let [c0, c1, c2] = GELU_LOW_Q2;
            (GELU_LOW_CUT, ((a.sqr()? * c2)? + (&a * c1)? + (x * 0.5)?)?.affine(1.0, c0)?)
        }
    };
    let inside = lt_const(&a, cut)?;
    Ok(((&poly * &inside)? + (x.relu()? * (1.0 - &inside)?)?)?)
}

/// e^x for x ≤ 0 by range reduction: z = ⌊−x/ln2⌋, 0 if z > clip, else
/// P(x + z·ln2)·2^−z.
pub fn exp_neg(x: &Tensor, deg: Degree) -> Result<Tensor> {
    let (clip, _) = exp_clip(deg);
    let z = (x.detach() * -INV_LN2)?.floor()?;
    let alive = indicator(z.le(clip as f64)?)?;
    // 2^−z for the live entries; dead ones get z = 0 so nothing overflows.
    let scale = ((&z * &alive)? * -LN2)?.exp()?.detach();
    let p = (x + (&z * LN2)?)?;
    let e = match deg {
        Degree::High => {
            let [a, b, c] = EXP_HIGH_ABC;
            (p.affine(1.0, b)?.sqr()? * a)?.affine(1.0, c)?
        }
        Degree::Low => p.affine(EXP_LOW_A[1], EXP_LOW_A[0])?,
    };
    Ok(((e * scale)? * alive)?)
}

/// 1/v for v > 0: octave k = #{j ∈ 1..=max_log2 : v ≥ 2^j} (on detached
/// values), y₀ = (2/3)·2^−k, then Newton y ← y(2 − v·y).
pub fn reciprocal(v: &Tensor, max_log2: u32) -> Result<Tensor> {
    let vd = v.detach();
    let mut k = vd.zeros_like()?;
    for j in 1..=max_log2 {
        k = (k + indicator(vd.ge((j as f64).exp2())?)?)?;
    }
    let mut y = (k * -LN2)?.exp()?.affine(RECIP_INIT, 0.0)?.detach();
    for _ in 0..RECIP_NEWTON {
        let e = (v * &y)?;
        y = (&y * e.affine(-1.0, 2.0)?)?;
    }
    Ok(y)
}

/// Softmax over the last dim: max, subtract, exp, sum, reciprocal,
/// multiply. Entries masked with a large negative bias come out exactly 0,
/// as if removed. The reciprocal's octave range is that of the row length,
/// which gives the same octave as the engine's range for the live count.
pub fn softmax(x: &Tensor, deg: Degree) -> Result<Tensor> {
    let m = x.detach().max_keepdim(D::Minus1)?;
    let e = exp_neg(&x.broadcast_sub(&m)?, deg)?;
    let s = e.sum_keepdim(D::Minus1)?;
    let r = reciprocal(&s, ceil_log2(x.dim(D::Minus1)?))?;
    Ok(e.broadcast_mul(&r)?)
}

/// 1/√v: octave m among RSQRT_MIN_LOG2..=RSQRT_MAX_LOG2, y₀ = √(2/3)·2^(−m/2),
/// Newton y ← y(3 − (v·y)·y)/2.
pub fn rsqrt(v: &Tensor) -> Result<Tensor> {
    let vd = v.detach();
    let mut m = vd.zeros_like()?.affine(1.0, RSQRT_MIN_LOG2 as f64)?;
    for j in RSQRT_MIN_LOG2 + 1..=RSQRT_MAX_LOG2 {
        m = (m + indicator(vd.ge((j as f64).exp2())?)?)?;
    }
    let mut y = (m * (-LN2 / 2.0))?.exp()?.affine(RSQRT_INIT, 0.0)?.detach();
    for _ in 0..RSQRT_NEWTON {
        let u = ((v * &y)? * &y)?;
        y = ((&y * u.affine(-1.0, 3.0)?)? * 0.5)?;
    }
    Ok(y)
}

/// LayerNorm over the last dim without ε, with the approximate 1/√var.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let mu = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let r = rsqrt(&var)?;
    Ok(xc.broadcast_mul(&r)?.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// tanh: sign(x)·Q5(|x|/cut) inside the cut, ±1 outside.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    let a = x.abs()?;
    let c = tanh_scaled();
    let u = (&a * (1.0 / TANH_CUT))?;
    let (u2, u3) = (u.sqr()?, (u.sqr()? * &u)?);
    let (u4, u5) = (u2.sqr()?, (u2.sqr()? * &u)?);
    let q = ((((&u * c[1])? + (&u2 * c[2])?)? + ((&u3 * c[3])? + (&u4 * c[4])?)?)? + (&u5 * c[5])?)?.affine(1.0, c[0])?;
    let inside = le_const(&a, TANH_CUT)?;
    let t = ((&q * &inside)? + (1.0 - &inside)?)?;
    let sign = indicator(x.detach().ge(0.0)?)?.affine(2.0, -1.0)?;
    Ok((t * sign)?)
}

#[cfg(test)]
mod tests;
