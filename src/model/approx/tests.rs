use candle_core::{Device, Tensor, Var};

use super::*;
use crate::fixed::twin;

fn t(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), v.len(), &Device::Cpu).unwrap()
}

fn vals(x: &Tensor) -> Vec<f64> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect()
}

/// Points as f32 sees them, so both sides take the same branch at a cut.
fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32 as f64).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn elementwise_ops_match_their_f64_twins() {
    let xs = grid(-6.0, 6.0, 2401);
    for deg in [Degree::High, Degree::Low] {
        let g = vals(&gelu(&t(&xs), deg).unwrap());
        let want: Vec<f64> = xs.iter().map(|&x| twin::gelu(x, deg)).collect();
        assert!(max_diff(&g, &want) < 2e-6, "gelu {deg:?}: {}", max_diff(&g, &want));
        let neg: Vec<f64> = xs.iter().map(|x| -x.abs() * 2.0).collect();
        let e = vals(&exp_neg(&t(&neg), deg).unwrap());
        let want: Vec<f64> = neg.iter().map(|&x| twin::exp_neg(x, deg)).collect();
        assert!(max_diff(&e, &want) < 2e-6, "exp {deg:?}: {}", max_diff(&e, &want));
    }
    let th = vals(&tanh(&t(&xs)).unwrap());
    let want: Vec<f64> = xs.iter().map(|&x| twin::tanh(x)).collect();
    assert!(max_diff(&th, &want) < 2e-6, "tanh: {}", max_diff(&th, &want));
}

#[test]
fn row_ops_match_their_f64_twins() {
    let row: Vec<f64> = (0..37).map(|i| ((i * 7919) % 97) as f64 / 12.0 - 4.0).collect();
    for deg in [Degree::High, Degree::Low] {
        let s = vals(&softmax(&t(&row).unsqueeze(0).unwrap(), deg).unwrap());
        assert!(max_diff(&s, &twin::softmax(&row, deg)) < 1e-6, "softmax {deg:?}");
    }
    let gamma: Vec<f64> = (0..37).map(|i| 0.5 + i as f64 / 40.0).collect();
    let beta: Vec<f64> = (0..37).map(|i| i as f64 / 100.0 - 0.2).collect();
    let ln = vals(&layer_norm(&t(&row).unsqueeze(0).unwrap(), &t(&gamma), &t(&beta)).unwrap());
    assert!(max_diff(&ln, &twin::layer_norm(&row, &gamma, &beta)) < 1e-5);
}

#[test]
fn masked_entries_vanish_from_the_approximate_softmax() {
    // A −1e9 bias (padding or a pruned key) gives exactly 0, and the rest
    // equals the softmax of the shorter row: masking is removal.
    let row = [0.3, -1.2, 2.0, 0.0];
    let masked = t(&[0.3, -1.2, -1e9, 2.0, 0.0]);
    for deg in [Degree::High, Degree::Low] {
        let s = vals(&softmax(&masked.unsqueeze(0).unwrap(), deg).unwrap());
        assert_eq!(s[2], 0.0);
        let short = twin::softmax(&row, deg);
        let kept = [s[0], s[1], s[3], s[4]];
        assert!(max_diff(&kept, &short) < 1e-6, "{deg:?}: {kept:?} vs {short:?}");
    }
}

#[test]
fn errors_against_the_exact_functions_are_the_documented_ones() {
    // The bounds of the table in `crate::fixed` (twin vs exact), for the
    // candle versions: GELU on ℝ, softmax on scores in [−8, 8], tanh on ℝ.
    let xs = grid(-8.0, 8.0, 4001);
    let exact: Vec<f64> = xs.iter().map(|&x| twin::gelu_exact(x)).collect();
    let hi = max_diff(&vals(&gelu(&t(&xs), Degree::High).unwrap()), &exact);
    let lo = max_diff(&vals(&gelu(&t(&xs), Degree::Low).unwrap()), &exact);
    assert!(hi < 9.5e-3 && lo < 3.2e-2 && hi < lo, "gelu errors high {hi} low {lo}");
    let th = max_diff(&vals(&tanh(&t(&xs)).unwrap()), &xs.iter().map(|x| x.tanh()).collect::<Vec<_>>());
    assert!(th < 6.7e-3, "tanh error {th}");
    let row: Vec<f64> = (0..64).map(|i| ((i * 31) % 64) as f64 / 4.0 - 8.0).collect();
    let m = row.iter().copied().fold(f64::MIN, f64::max);
    let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
    let exact: Vec<f64> = row.iter().map(|x| (x - m).exp() / z).collect();
    let hi = max_diff(&vals(&softmax(&t(&row).unsqueeze(0).unwrap(), Degree::High).unwrap()), &exact);
    let lo = max_diff(&vals(&softmax(&t(&row).unsqueeze(0).unwrap(), Degree::Low).unwrap()), &exact);
    assert!(hi < 7.8e-4 && lo < 1.6e-2 && hi < lo, "softmax errors high {hi} low {lo}");
}

/// Central finite difference of `f` summed, at every input, in f64 on the twin.
fn check_grad(f: impl Fn(&Tensor) -> Tensor, twin_f: impl Fn(f64) -> f64, xs: &[f64]) {
    let v = Var::from_tensor(&t(xs)).unwrap();
    let y = f(v.as_tensor()).sum_all().unwrap();
    let g = vals(y.backward().unwrap().get(v.as_tensor()).unwrap());
    for (&x, &gx) in xs.iter().zip(&g) {
        let h = 1e-4;
        let fd = (twin_f(x + h) - twin_f(x - h)) / (2.0 * h);
        assert!((gx - fd).abs() < 2e-3 * (1.0 + fd.abs()), "d/dx at {x}: autograd {gx} vs fd {fd}");
    }
}

#[test]
fn gradients_flow_through_the_evaluated_polynomials() {
    // Away from the branch points, where the piecewise functions are smooth.
    let xs = [-3.1, -2.0, -1.3, -0.4, 0.25, 0.9, 1.7, 2.45, 3.3];
    for deg in [Degree::High, Degree::Low] {
        check_grad(|x| gelu(x, deg).unwrap(), |x| twin::gelu(x, deg), &xs);
        check_grad(|x| exp_neg(&x.neg().unwrap().abs().unwrap().neg().unwrap(), deg).unwrap(), |x| twin::exp_neg(-x.abs(), deg), &[-3.1, -2.0, -1.3, -0.4, 0.25, 0.9, 1.7]);
    }
    check_grad(|x| tanh(x).unwrap(), twin::tanh, &xs);
    check_grad(|x| reciprocal(&x.abs().unwrap(), 4).unwrap(), |x| twin::reciprocal(x.abs(), 4), &[1.3, 2.5, 3.9, 7.1, 11.0]);
    check_grad(|x| rsqrt(&x.abs().unwrap()).unwrap(), |x| twin::rsqrt(x.abs()), &[0.05, 0.7, 1.3, 9.0, 300.0]);
}
