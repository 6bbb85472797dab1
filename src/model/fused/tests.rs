use candle_core::{Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn random(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    flat(a).iter().zip(flat(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The output of `f` and the gradients of Σ f(inputs)·r for a fixed random r.
fn value_and_grads(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let r = random(y.dims(), 1.0, 99);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    (y.detach(), ts.iter().map(|t| g.get(t).expect("a gradient").clone()).collect())
}

/// Holds the fused op `fused` to the composed `reference` (values and every
/// input's gradient) and to central differences on a few coordinates.
fn check(fused: &dyn Fn(&[Tensor]) -> Tensor, reference: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], tol: f32) {
    check_with_step(fused, reference, inputs, tol, 1e-2)
}

/// [`check`] with the finite differences' step `h`: the approximations are
/// piecewise (octaves, cuts), and a step across a piece's edge measures the
/// jump, not the slope.
fn check_with_step(fused: &dyn Fn(&[Tensor]) -> Tensor, reference: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], tol: f32, h: f32) {
    let (y, g) = value_and_grads(fused, inputs);
    let (y_ref, g_ref) = value_and_grads(reference, inputs);
    assert!(max_diff(&y, &y_ref) < tol, "values differ by {}", max_diff(&y, &y_ref));
    for (i, (a, b)) in g.iter().zip(&g_ref).enumerate() {
        assert!(max_diff(a, b) < tol, "gradient {i} differs by {}", max_diff(a, b));
    }
    let r = random(y.dims(), 1.0, 99);
    let loss = |ts: &[Tensor]| -> f64 { (fused(ts) * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 };
    for (i, x) in inputs.iter().enumerate() {
        let v = flat(x);
        let grad = flat(&g[i]);
        for j in [0, v.len() / 3, v.len() - 1] {
            let at = |d: f32| {
                let mut w = v.clone();
                w[j] += d;
                let mut ts = inputs.to_vec();
                ts[i] = Tensor::from_vec(w, x.shape(), &Device::Cpu).unwrap();
                loss(&ts)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let err = (fd - grad[j] as f64).abs();
            assert!(err < 2e-2 * (1.0 + fd.abs()), "input {i}[{j}]: finite difference {fd}, backward {}", grad[j]);
        }
    }
}

#[test]
fn exp_and_erf_match_libm() {
    let (mut worst_exp, mut worst_erf) = (0f64, 0f64);
    for i in -40_000..=40_000 {
        let x = i as f32 * 2e-3;
        let e = (x as f64).exp();
        worst_exp = worst_exp.max(((exp(x) as f64) - e).abs() / e);
        worst_erf = worst_erf.max(((erf(x) as f64) - libm_erf(x as f64)).abs());
    }
    assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
    assert!(worst_erf < 5e-7, "erf error {worst_erf}");
    assert_eq!(exp(-1e9), 0.0);
    assert_eq!(exp(-87.0), (-87f32).exp());
}

/// erf by its series (converges fast on |x| ≤ 3) and 1 − erfc asymptotics beyond.
fn libm_erf(x: f64) -> f64 {
    if x.abs() > 5.0 {
        return x.signum();
    }
    // Σ (−1)^n x^(2n+1) / (n! (2n+1)) · 2/√π, summed in f64 until it stops moving.
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs().max(1e-300) && n < 200.0 {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn gelu_matches_the_composed_op() {
    let x = random(&[3, 7, 40], 4.0, 1);
    check(&|t| gelu(&t[0]).unwrap(), &|t| t[0].gelu_erf().unwrap(), &[x], 1e-5);
}

#[test]
fn layer_norm_matches_the_composed_op() {
    let x = (random(&[4, 5, 24], 2.0, 2) + 0.5).unwrap();
    let (g, b) = ((random(&[24], 0.5, 3) + 1.0).unwrap(), random(&[24], 0.5, 4));
    check(
        &|t| layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
        &|t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-12).unwrap(),
        &[x, g, b],
        1e-4,
    );
}

#[test]
fn masked_softmax_matches_the_composed_op() {
    let x = random(&[2, 3, 5, 6], 3.0, 5);
    // Two padded keys in the second example, learned soft terms elsewhere.
    let mut bias = flat(&random(&[2, 1, 1, 6], 1.0, 6));
    bias[10] = -1e9;
    bias[11] = -1e9;
    let bias = Tensor::from_vec(bias, (2, 1, 1, 6), &Device::Cpu).unwrap();
    let scale = 0.3;
    let fused = |t: &[Tensor]| masked_softmax(&t[0], &t[1], scale).unwrap();
    let composed = |t: &[Tensor]| candle_nn::ops::softmax(&(&t[0] * scale).unwrap().broadcast_add(&t[1]).unwrap(), D::Minus1).unwrap();
    let (y, g) = value_and_grads(&fused, &[x.clone(), bias.clone()]);
    let (y_ref, g_ref) = value_and_grads(&composed, &[x.clone(), bias.clone()]);
    assert!(max_diff(&y, &y_ref) < 1e-6);
    assert!(max_diff(&g[0], &g_ref[0]) < 1e-5 && max_diff(&g[1], &g_ref[1]) < 1e-5);
    let padded: Vec<f32> = flat(&y.narrow(0, 1, 1).unwrap().narrow(3, 4, 2).unwrap());
    assert!(padded.iter().all(|&p| p == 0.0), "padding got attention");
    // Finite differences without the −1e9 entries (a step there is noise).
    check(&fused, &composed, &[x, random(&[2, 1, 1, 6], 1.0, 7)], 1e-5);
}

#[test]
fn linear_matches_the_composed_op() {
    let x = random(&[10, 12], 1.0, 8);
    let (w, b) = (random(&[7, 12], 0.5, 9), random(&[7], 0.5, 10));
    check(
        &|t| linear(&t[0], &t[1], &t[2]).unwrap(),
        &|t| t[0].matmul(&t[1].t().unwrap()).unwrap().broadcast_add(&t[2]).unwrap(),
        &[x, w, b],
        1e-5,
    );
}

#[test]
fn dropout_scales_the_kept_entries_and_their_gradient() {
    let x = random(&[4, 9], 1.0, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let keep: Vec<bool> = (0..36).map(|_| rng.gen_bool(0.8)).collect();
    let mask = Tensor::from_vec(keep.iter().map(|&k| if k { 1.25f32 } else { 0.0 }).collect::<Vec<_>>(), (4, 9), &Device::Cpu).unwrap();
    let k = keep.clone();
    check(&move |t| dropout(&t[0], k.clone(), 0.2).unwrap(), &|t| (&t[0] * &mask).unwrap(), &[x], 1e-6);
}

mod approx_ops {
    use super::*;
    use crate::model::approx::{self, Degree};

    fn blend(hi: Tensor, lo: Tensor, w: &Tensor) -> Tensor {
        (hi.broadcast_mul(&w.affine(-1.0, 1.0).unwrap()).unwrap() + lo.broadcast_mul(w).unwrap()).unwrap()
    }

    #[test]
    fn approximate_softmax_matches_the_composed_op() {
        // Logits spread over several octaves and past the low degree's clip.
        let raw = random(&[2, 3, 5, 9], 12.0, 20);
        let bias = (random(&[2, 1, 1, 9], 0.5, 21) - 0.5).unwrap();
        let w = (random(&[2, 1, 5, 1], 0.5, 22) + 0.5).unwrap();
        let scale = 0.5;
        let logits = |raw: &Tensor, bias: &Tensor| (raw * scale).unwrap().broadcast_add(bias).unwrap();
        let blended = |t: &[Tensor]| {
            let x = logits(&t[0], &t[1]);
            blend(approx::softmax(&x, Degree::High).unwrap(), approx::softmax(&x, Degree::Low).unwrap(), &t[2])
        };
        // The bias's gradient against the composed op only: a bias entry
        // moves every row's sum, and some row's sum then crosses an octave
        // of the reciprocal, where the approximation jumps.
        let (y, g) = value_and_grads(&|t| approx::fused::softmax(&t[0], &t[1], scale, Some(&t[2])).unwrap(), &[raw.clone(), bias.clone(), w.clone()]);
        let (y_ref, g_ref) = value_and_grads(&blended, &[raw.clone(), bias.clone(), w.clone()]);
        assert!(max_diff(&y, &y_ref) < 2e-6);
        for (a, b) in g.iter().zip(&g_ref) {
            assert!(max_diff(a, b) < 2e-5, "gradients differ by {}", max_diff(a, b));
        }
        let b = bias.clone();
        check_with_step(
            &|t| approx::fused::softmax(&t[0], &b, scale, None).unwrap(),
            &|t| approx::softmax(&logits(&t[0], &b), Degree::High).unwrap(),
            &[raw.clone()],
            2e-5,
            1e-3,
        );
        check_with_step(
            &|t| approx::fused::softmax(&t[0], &b, scale, Some(&t[1])).unwrap(),
            &|t| blended(&[t[0].clone(), b.clone(), t[1].clone()]),
            &[raw, w],
            2e-5,
            1e-3,
        );
    }

    #[test]
    fn approximate_layer_norm_matches_the_composed_op() {
        // Rows whose variances fall in different octaves of the 1/√ guess.
        let x = random(&[3, 4, 24], 3.0, 25);
        let x = x.broadcast_mul(&Tensor::new(&[[[0.05f32]], [[1.0]], [[9.0]]], &Device::Cpu).unwrap()).unwrap();
        let (g, b) = ((random(&[24], 0.5, 26) + 1.0).unwrap(), random(&[24], 0.5, 27));
        check_with_step(
            &|t| approx::fused::layer_norm(&t[0], &t[1], &t[2]).unwrap(),
            &|t| approx::layer_norm(&t[0], &t[1], &t[2]).unwrap(),
            &[x, g, b],
            2e-5,
            1e-3,
        );
    }

    #[test]
    fn approximate_gelu_matches_the_composed_op() {
        // Both cuts (2.2, 2.7) and the ReLU tails inside the range.
        let x = random(&[2, 6, 50], 4.0, 23);
        let w = (random(&[2, 6], 0.5, 24) + 0.5).unwrap();
        check(&|t| approx::fused::gelu(&t[0], None).unwrap(), &|t| approx::gelu(&t[0], Degree::High).unwrap(), &[x.clone()], 1e-5);
        check(
            &|t| approx::fused::gelu(&t[0], Some(&t[1])).unwrap(),
            &|t| blend(approx::gelu(&t[0], Degree::High).unwrap(), approx::gelu(&t[0], Degree::Low).unwrap(), &t[1].unsqueeze(2).unwrap()),
            &[x, w],
            1e-5,
        );
    }
}

#[test]
fn batched_matmul_matches_the_composed_op() {
    let (q, k) = (random(&[2, 3, 5, 4], 1.0, 30), random(&[2, 3, 6, 4], 1.0, 31));
    check(&|t| batched_matmul(&t[0], &t[1], true).unwrap(), &|t| t[0].matmul(&t[1].t().unwrap()).unwrap(), &[q, k], 1e-5);
    let (p, v) = (random(&[2, 3, 5, 6], 1.0, 32), random(&[2, 3, 6, 4], 1.0, 33));
    check(&|t| batched_matmul(&t[0], &t[1], false).unwrap(), &|t| t[0].matmul(&t[1]).unwrap(), &[p, v], 1e-5);
}

/// γ's and β's gradients sum over rows in many tasks; the sum must not
/// depend on how many threads ran them (prune's hard masks turn a last-bit
/// difference into another kept token, and a run into another result).
#[test]
fn layer_norm_gradients_do_not_depend_on_the_threads() {
    let (x, gamma, beta) = (random(&[64, 48, 32], 2.0, 1), random(&[32], 1.0, 2), random(&[32], 1.0, 3));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| value_and_grads(&|t| layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(), &[x.clone(), gamma.clone(), beta.clone()]).1)
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        let many = run(threads);
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(flat(a), flat(b), "{threads} threads");
        }
    }
}

#[test]
fn column_sums_match_the_composed_op_bit_for_bit() {
    // Several heads, a batch, rows of odd lengths; probabilities and weights in [0, 1].
    let probs = (random(&[3, 4, 7, 9], 1.0, 11).abs().unwrap() * 0.5).unwrap();
    let w = random(&[3, 7], 1.0, 12).abs().unwrap();
    let composed = |t: &[Tensor]| t[0].broadcast_mul(&t[1].reshape((3, 1, 7, 1)).unwrap()).unwrap().sum(2).unwrap().sum(1).unwrap();
    check(&|t| column_sums(&t[0], &t[1]).unwrap(), &composed, &[probs.clone(), w.clone()], 1e-6);
    let (y, g) = value_and_grads(&|t| column_sums(&t[0], &t[1]).unwrap(), &[probs.clone(), w.clone()]);
    let (y_ref, g_ref) = value_and_grads(&composed, &[probs, w]);
    let bits = |t: &Tensor| flat(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y), bits(&y_ref), "values");
    assert_eq!(bits(&g[0]), bits(&g_ref[0]), "gradient of the probabilities");
    assert_eq!(bits(&g[1]), bits(&g_ref[1]), "gradient of the weights");
}
