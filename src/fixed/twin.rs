//! The approximations of [`super::approx`] in `f64`, step for step and with
//! the same constants, but without rounding: what the fixed-point versions
//! compute when s → ∞. Tests hold the fixed-point versions to these within a
//! few ulps, and the float simulator mirrors these functions, so "simulated"
//! and "secure" differ by rounding only.
//!
//! Also the exact functions (erf, GELU) the approximation errors are
//! measured against.

use super::approx::{
    ceil_log2, exp_clip, gelu_high_factored, Degree, EXP_HIGH_ABC, EXP_LOW_A, GELU_HIGH_CUT,
    GELU_LOW_CUT, GELU_LOW_Q2, INV_LN2, LN2, RECIP_INIT, RECIP_NEWTON, RSQRT_INIT, RSQRT_MAX_LOG2,
    RSQRT_MIN_LOG2, RSQRT_NEWTON, TANH_CUT, tanh_scaled,
};

/// GELU: 0.5x + P(|x|) for |x| < cut (P evaluated in the same factored
/// form), ReLU outside.
pub fn gelu(x: f64, deg: Degree) -> f64 {
    let a = x.abs();
    let y2 = a * a;
    match deg {
        Degree::High => {
            if a < GELU_HIGH_CUT {
                let [al, alp, alq, r, t] = gelu_high_factored();
                let w = al * y2 + alp * a + alq;
                w * w + r * a + 0.5 * x + t
            } else {
                x.max(0.0)
            }
        }
        Degree::Low => {
            if a < GELU_LOW_CUT {
                let [c0, c1, c2] = GELU_LOW_Q2;
                c2 * y2 + c1 * a + 0.5 * x + c0
            } else {
                x.max(0.0)
            }
        }
    }
}

/// e^x for x ≤ 0: z = ⌊−x·(1/ln2)⌋, 0 if z > clip, else P(x + z·ln2)·2^−z.
pub fn exp_neg(x: f64, deg: Degree) -> f64 {
    let (clip, _) = exp_clip(deg);
    let z = (-x * INV_LN2).floor();
    if z > clip as f64 {
        return 0.0;
    }
    let p = x + z * LN2;
    let e = match deg {
        Degree::High => {
            let [a, b, c] = EXP_HIGH_ABC;
            a * (p + b) * (p + b) + c
        }
        Degree::Low => EXP_LOW_A[0] + EXP_LOW_A[1] * p,
    };
    e * (-z).exp2()
}

/// 1/v: k = #{j ∈ 1..=max_log2 : v ≥ 2^j}, y = (2/3)·2^−k, Newton steps.
pub fn reciprocal(v: f64, max_log2: u32) -> f64 {
    let k = (1..=max_log2).filter(|&j| v >= (j as f64).exp2()).count() as i32;
    let mut y = RECIP_INIT * (-k as f64).exp2();
    for _ in 0..RECIP_NEWTON {
        let e = v * y;
        y *= 2.0 - e;
    }
    y
}

/// Softmax of one row: max, subtract, exp, sum, reciprocal, multiply.
pub fn softmax(row: &[f64], deg: Degree) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&x| exp_neg(x - m, deg)).collect();
    let r = reciprocal(e.iter().sum(), ceil_log2(row.len()));
    e.iter().map(|&v| v * r).collect()
}

/// 1/√v: m = RSQRT_MIN_LOG2 + #{j : v ≥ 2^j}, y = √(2/3)·2^(−m/2), Newton
/// steps y ← y(3 − (v·y)·y)/2.
pub fn rsqrt(v: f64) -> f64 {
    let k = (RSQRT_MIN_LOG2 + 1..=RSQRT_MAX_LOG2).filter(|&j| v >= (j as f64).exp2()).count() as i32;
    let m = RSQRT_MIN_LOG2 + k;
    let mut y = RSQRT_INIT * (-(m as f64) / 2.0).exp2();
    for _ in 0..RSQRT_NEWTON {
        let t = v * y;
        let u = t * y;
        y = y * (3.0 - u) / 2.0;
    }
    y
}

/// LayerNorm of one row (no ε), with the approximate 1/√var.
pub fn layer_norm(row: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let d = row.len() as f64;
    let mu = row.iter().sum::<f64>() / d;
    let var = row.iter().map(|&x| (x - mu) * (x - mu)).sum::<f64>() / d;
    let r = rsqrt(var);
    row.iter().zip(gamma.iter().zip(beta)).map(|(&x, (&g, &b))| (x - mu) * r * g + b).collect()
}

/// tanh: sign(x)·Q5(|x|) for |x| ≤ 2.855, ±1 outside; Q5 evaluated in
/// u = |x|/2.855 as the fixed point does.
pub fn tanh(x: f64) -> f64 {
    let a = x.abs();
    let t = if a <= TANH_CUT {
        let c = tanh_scaled();
        let u = a * (1.0 / TANH_CUT);
        let (u2, u3) = (u * u, u * u * u);
        let (u4, u5) = (u2 * u2, u2 * u2 * u);
        c[0] + c[1] * u + c[2] * u2 + c[3] * u3 + c[4] * u4 + c[5] * u5
    } else {
        1.0
    };
    if x < 0.0 {
        -t
    } else {
        t
    }
}

// ---- exact references ---------------------------------------------------------------

/// The error function, to about 1e-15 (Taylor series below 3, continued
/// fraction for erfc above). `std` has none.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 {
                break;
            }
        }
        return sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    let mut f = x;
    for k in (1..80).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    1.0 - (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// The exact (erf) GELU that BERT uses.
pub fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.5, 0.5204998778130465), (1.0, 0.8427007929497149), (2.0, 0.9953222650189527), (3.5, 0.9999992569016276)] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn newton_converges_in_domain() {
        for i in 0..1000 {
            let v = 0.97 + i as f64 * 0.03; // softmax sums up to ~31
            let rel = (reciprocal(v, 5) * v - 1.0).abs();
            assert!(rel < 1e-7, "1/{v}: rel err {rel}");
        }
        for i in 0..=2200 {
            let v = (i as f64 / 100.0 - 8.0).exp2(); // 2^-8 .. 2^14
            let rel = (rsqrt(v) * v.sqrt() - 1.0).abs();
            assert!(rel < 5e-5, "rsqrt({v}): rel err {rel}");
        }
    }
}
