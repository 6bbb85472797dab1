//! Every approximation three ways: fixed point (plain backend) against its
//! f64 twin in ulps, the twin against the exact function, and its primitive
//! counts. The numbers printed here (`--nocapture`) are the table in
//! `fixed/mod.rs`.

use super::*;
use crate::fixed::cost::PrimitiveCounts;
use crate::fixed::{twin, Ring, Truncation};
use crate::secure::backend::Backend;
use crate::secure::plain::PlainBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const RINGS: [Ring; 2] = [Ring::BOLT, Ring::CRYPTEN];

fn backend(r: Ring) -> PlainBackend {
    PlainBackend::new(r, Truncation::Exact, 0)
}

/// Run `f` on the encodings of `xs`; returns decoded outputs and the exact
/// inputs the fixed point saw (decoded encodings), and the counts.
fn run(
    r: Ring,
    xs: &[f64],
    f: impl FnOnce(&mut PlainBackend, &Vec<u64>) -> Vec<u64>,
) -> (Vec<f64>, Vec<f64>, PrimitiveCounts) {
    let mut b = backend(r);
    let enc: Vec<u64> = xs.iter().map(|&x| r.encode(x)).collect();
    let x = b.input(&enc);
    let y = f(&mut b, &x);
    let seen = enc.iter().map(|&v| r.decode(v)).collect();
    let out = y.iter().map(|&v| r.decode(v)).collect();
    assert_eq!(b.meter().overflow.count(), 0, "no overflow expected on the test grid");
    (out, seen, b.meter().cost.total())
}

fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..=n).map(|i| lo + (hi - lo) * i as f64 / n as f64).collect()
}

fn ulps(r: Ring, a: f64, b: f64) -> f64 {
    (a - b).abs() * (r.frac() as f64).exp2()
}

/// Max over the grid of |fixed − twin| in ulps.
fn max_ulps(r: Ring, fixed: &[f64], twin: &[f64]) -> f64 {
    fixed.iter().zip(twin).map(|(&a, &b)| ulps(r, a, b)).fold(0.0, f64::max)
}

fn max_abs_err(xs: &[f64], f: impl Fn(f64) -> f64, g: impl Fn(f64) -> f64) -> f64 {
    xs.iter().map(|&x| (f(x) - g(x)).abs()).fold(0.0, f64::max)
}

#[test]
fn bolt_constants() {
    // BOLT's scale-12 exp constants are exactly round(c · 4096).
    let r = Ring::BOLT;
    assert_eq!(r.encode(INV_LN2), 5909);
    assert_eq!(r.encode(LN2), 2839);
    assert_eq!(r.encode(EXP_HIGH_ABC[0]), 1468);
    assert_eq!(r.encode(EXP_HIGH_ABC[1]), 5542);
    assert_eq!(r.encode(EXP_HIGH_ABC[2]), 1409);
    // The factored P4 is P4.
    let [a, ap, aq, rr, t] = gelu_high_factored();
    for y in grid(0.0, 2.7, 50) {
        let w = a * y * y + ap * y + aq;
        let p4: f64 = GELU_HIGH_P4.iter().enumerate().map(|(j, c)| c * y.powi(j as i32)).sum();
        assert!((w * w + rr * y + t - p4).abs() < 1e-12);
    }
}

#[test]
fn gelu_fixed_vs_twin_vs_exact() {
    let xs = grid(-100.0, 100.0, 200_000);
    for deg in [Degree::High, Degree::Low] {
        let twin_err = max_abs_err(&xs, |x| twin::gelu(x, deg), twin::gelu_exact);
        let cut = if deg == Degree::High { GELU_HIGH_CUT } else { GELU_LOW_CUT };
        let inner: Vec<f64> = xs.iter().copied().filter(|x| x.abs() < cut).collect();
        let inner_err = max_abs_err(&inner, |x| twin::gelu(x, deg), twin::gelu_exact);
        println!("gelu {deg:?}: twin vs exact max {twin_err:.5} (inside the cut {inner_err:.5})");
        let bound = if deg == Degree::High { 0.0094 } else { 0.0317 };
        assert!(twin_err < bound, "{deg:?}: {twin_err}");
        for r in RINGS {
            let (out, seen, _) = run(r, &xs, |b, x| gelu(b, x, deg));
            let tw: Vec<f64> = seen.iter().map(|&x| twin::gelu(x, deg)).collect();
            let u = max_ulps(r, &out, &tw);
            println!("gelu {deg:?} {r}: fixed vs twin {u} ulps");
            assert!(u <= 4.0, "gelu {deg:?} {r}: {u} ulps");
        }
    }
}

#[test]
fn exp_fixed_vs_twin_vs_exact() {
    let xs = grid(-16.0, 0.0, 20_000);
    for deg in [Degree::High, Degree::Low] {
        let twin_err = max_abs_err(&xs, |x| twin::exp_neg(x, deg), f64::exp);
        let rel: f64 = xs
            .iter()
            .filter(|&&x| twin::exp_neg(x, deg) > 0.0)
            .map(|&x| (twin::exp_neg(x, deg) / x.exp() - 1.0).abs())
            .fold(0.0, f64::max);
        println!("exp {deg:?}: twin vs exact max abs {twin_err:.5}, max rel where not clipped {rel:.5}");
        let (abs_bound, rel_bound) = if deg == Degree::High { (0.0032, 0.0032) } else { (0.0299, 0.0299) };
        assert!(twin_err < abs_bound && rel < rel_bound);
        for r in RINGS {
            let (out, seen, _) = run(r, &xs, |b, x| exp_neg(b, x, deg));
            let tw: Vec<f64> = seen.iter().map(|&x| twin::exp_neg(x, deg)).collect();
            let u = max_ulps(r, &out, &tw);
            println!("exp {deg:?} {r}: fixed vs twin {u} ulps");
            assert!(u <= 3.0, "exp {deg:?} {r}: {u} ulps");
        }
    }
}

#[test]
fn reciprocal_and_rsqrt_fixed_vs_twin() {
    let vs = grid(0.97, 63.0, 5_000);
    for r in RINGS {
        let (out, seen, _) = run(r, &vs, |b, x| reciprocal(b, x, 5));
        let tw: Vec<f64> = seen.iter().map(|&v| twin::reciprocal(v, 5)).collect();
        let u = max_ulps(r, &out, &tw);
        println!("reciprocal {r}: fixed vs twin {u} ulps");
        assert!(u <= 2.0);
    }
    let vs: Vec<f64> = grid(-12.0, 13.99, 5_000).iter().map(|e| e.exp2()).collect();
    let rel = vs.iter().map(|&v| (twin::rsqrt(v) * v.sqrt() - 1.0).abs()).fold(0.0, f64::max);
    println!("rsqrt: twin vs exact max rel {rel:.2e} on [2^-12, 2^14)");
    assert!(rel < 2e-5);
    for r in RINGS {
        let extra = NormPrecision::for_ring(r).rsqrt_extra;
        let (out, seen, _) = run(r, &vs, |b, x| rsqrt(b, x, extra));
        let out: Vec<f64> = out.iter().map(|&y| y / (extra as f64).exp2()).collect();
        // 1/√v spans 2^-7 .. 2^6: compare relative to the twin, per range of v.
        let mut worst = [0.0f64; 3];
        for ((o, &v), tw) in out.iter().zip(&seen).zip(seen.iter().map(|&v| twin::rsqrt(v))) {
            let rel_ulps = ((o - tw) / tw).abs() * (r.frac() as f64).exp2();
            let bucket = if v < 1.0 / 16.0 { 0 } else if v < 256.0 { 1 } else { 2 };
            worst[bucket] = worst[bucket].max(rel_ulps);
        }
        println!(
            "rsqrt {r} (+{extra} bits): fixed vs twin, relative error in units of 2^-s: {:.1} for v < 1/16, {:.1} for v in [1/16, 256), {:.1} above",
            worst[0], worst[1], worst[2]
        );
        assert!(worst[0] <= 4.0 && worst[1] <= 2.0 && worst[2] <= 10.0, "rsqrt {r}: {worst:?}");
    }
}

#[test]
fn softmax_fixed_vs_twin_vs_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for deg in [Degree::High, Degree::Low] {
        let mut twin_err: f64 = 0.0;
        for r in RINGS {
            let mut worst: f64 = 0.0;
            for n in [1usize, 2, 3, 7, 16, 25, 40, 64] {
                let rows = 8;
                let xs: Vec<f64> = (0..rows * n).map(|_| rng.gen_range(-8.0..8.0)).collect();
                let (out, seen, _) = run(r, &xs, |b, x| softmax(b, x, n, deg));
                for (o_row, s_row) in out.chunks(n).zip(seen.chunks(n)) {
                    let tw = twin::softmax(s_row, deg);
                    worst = worst.max(max_ulps(r, o_row, &tw));
                    let m = s_row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let ex: Vec<f64> = s_row.iter().map(|&x| (x - m).exp()).collect();
                    let z: f64 = ex.iter().sum();
                    for (t, e) in tw.iter().zip(&ex) {
                        twin_err = twin_err.max((t - e / z).abs());
                    }
                }
            }
            println!("softmax {deg:?} {r}: fixed vs twin {worst} ulps");
            assert!(worst <= 6.0, "softmax {deg:?} {r}: {worst} ulps");
        }
        println!("softmax {deg:?}: twin vs exact max abs {twin_err:.5}");
        assert!(twin_err < if deg == Degree::High { 0.0025 } else { 0.03 });
    }
}

#[test]
fn layer_norm_fixed_vs_twin() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let d = 64;
    let gamma: Vec<f64> = (0..d).map(|_| rng.gen_range(0.5..1.5)).collect();
    let beta: Vec<f64> = (0..d).map(|_| rng.gen_range(-0.5..0.5)).collect();
    for r in RINGS {
        let g: Vec<u64> = gamma.iter().map(|&v| r.encode(v)).collect();
        let bt: Vec<u64> = beta.iter().map(|&v| r.encode_at(v, 2 * r.frac()).0).collect();
        let mut worst: f64 = 0.0;
        let mut exact_err: f64 = 0.0;
        for scale in [0.5, 1.0, 5.0, 20.0, 100.0] {
            let xs: Vec<f64> = (0..8 * d).map(|_| rng.gen_range(-scale..scale) + 0.3).collect();
            let (out, seen, _) = run(r, &xs, |b, x| layer_norm(b, x, d, &crate::secure::backend::WeightVector::new(g.clone()), &bt));
            let gq: Vec<f64> = g.iter().map(|&v| r.decode(v)).collect();
            let bq = beta.clone();
            for (o, s) in out.chunks(d).zip(seen.chunks(d)) {
                let tw = twin::layer_norm(s, &gq, &bq);
                worst = worst.max(max_ulps(r, o, &tw));
                let mu = s.iter().sum::<f64>() / d as f64;
                let sd = (s.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / d as f64).sqrt();
                for ((x, t), (gg, bb)) in s.iter().zip(&tw).zip(gq.iter().zip(&bq)) {
                    exact_err = exact_err.max((t - ((x - mu) / sd * gg + bb)).abs());
                }
            }
            println!("  scale {scale}: worst so far {worst}");
        }
        println!("layer_norm {r}: fixed vs twin {worst} ulps; twin vs exact {exact_err:.2e}");
        // Dominated by the floor bias of the variance (≈ −1 ulp: each square
        // and the division truncate down), ×|output| ≤ √d·γ.
        assert!(worst <= 40.0, "layer_norm {r}: {worst} ulps");
        assert!(exact_err < 1e-3);
    }
}

#[test]
fn tanh_fixed_vs_twin_vs_exact() {
    let xs = grid(-100.0, 100.0, 200_000);
    let twin_err = max_abs_err(&xs, twin::tanh, f64::tanh);
    let inner: Vec<f64> = xs.iter().copied().filter(|x| x.abs() <= TANH_CUT).collect();
    let inner_err = max_abs_err(&inner, twin::tanh, f64::tanh);
    println!("tanh: twin vs exact max {twin_err:.5} (inside the cut {inner_err:.5})");
    assert!(twin_err < 0.0067 && inner_err < 0.0026);
    for r in RINGS {
        let (out, seen, _) = run(r, &xs, tanh);
        let tw: Vec<f64> = seen.iter().map(|&x| twin::tanh(x)).collect();
        let u = max_ulps(r, &out, &tw);
        println!("tanh {r}: fixed vs twin {u} ulps");
        assert!(u <= 10.0, "tanh {r}: {u} ulps");
    }
}

/// Per-element costs; the low variants must be strictly cheaper in secret
/// products and no dearer in comparisons.
#[test]
fn primitive_counts_per_element() {
    let r = Ring::BOLT;
    let count = |f: &dyn Fn(&mut PlainBackend, &Vec<u64>) -> Vec<u64>| run(r, &[-0.5], |b, x| f(b, x)).2;
    let gh = count(&|b, x| gelu(b, x, Degree::High));
    let gl = count(&|b, x| gelu(b, x, Degree::Low));
    let eh = count(&|b, x| exp_neg(b, x, Degree::High));
    let el = count(&|b, x| exp_neg(b, x, Degree::Low));
    let th = count(&|b, x| tanh(b, x));
    for (name, c) in [("gelu high", gh), ("gelu low", gl), ("exp high", eh), ("exp low", el), ("tanh", th)] {
        println!(
            "{name}: mults {} cmp {} mux {} trunc {} b2a {}",
            c.ss_mults, c.comparisons, c.muxes, c.truncations, c.b2a
        );
    }
    // |x| and ReLU(x) are one MUX, x·[x < 0] (then x − 2p and x − p).
    assert_eq!((gh.ss_mults, gh.comparisons, gh.muxes, gh.truncations), (2, 2, 3, 3));
    assert_eq!((gl.ss_mults, gl.comparisons, gl.muxes, gl.truncations), (1, 2, 3, 2));
    // exp: z's bits are truncations (4 high, 3 low), two comparisons (the
    // clip, the top bit), and each bit's MUX two products (y1·u, y2·⌊u⌋).
    assert_eq!((eh.ss_mults, eh.comparisons, eh.muxes, eh.truncations, eh.b2a), (9, 2, 0, 10, 2));
    assert_eq!((el.ss_mults, el.comparisons, el.muxes, el.truncations, el.b2a), (6, 2, 0, 7, 2));
    assert_eq!((th.ss_mults, th.comparisons, th.muxes, th.truncations), (4, 2, 4, 6));
    assert!(gl.ss_mults < gh.ss_mults && gl.comparisons <= gh.comparisons);
    assert!(el.ss_mults < eh.ss_mults && el.comparisons <= eh.comparisons);

    // Softmax per row of n: (n−1) + n·exp + J comparisons, n·exp + n +
    // 2·RECIP_NEWTON − 1 products (the first v·y comes with the
    // thermometer's comparisons).
    for n in [1usize, 25] {
        let xs = vec![0.1; n];
        let sh = run(r, &xs, |b, x| softmax(b, x, n, Degree::High)).2;
        let sl = run(r, &xs, |b, x| softmax(b, x, n, Degree::Low)).2;
        let j = ceil_log2(n) as u64;
        let n = n as u64;
        assert_eq!(sh.comparisons, (n - 1) + 2 * n + j);
        assert_eq!(sl.comparisons, (n - 1) + 2 * n + j);
        assert_eq!(sh.ss_mults, 9 * n + n + 2 * RECIP_NEWTON as u64 - 1);
        assert_eq!(sl.ss_mults, 6 * n + n + 2 * RECIP_NEWTON as u64 - 1);
        println!(
            "softmax row of {n}: high mults {} cmp {}; low mults {} cmp {}",
            sh.ss_mults, sh.comparisons, sl.ss_mults, sl.comparisons
        );
    }
    // LayerNorm per row of d: 3d products (the square, 1/√var and γ) +
    // 3·RSQRT_NEWTON − 1 (the first v·y comes with the comparisons), one
    // comparison per octave.
    let d = 16;
    let g = vec![r.one(); d];
    let bt = vec![0; d];
    let xs: Vec<f64> = (0..d).map(|i| i as f64 / 4.0).collect();
    let ln = run(r, &xs, |b, x| layer_norm(b, x, d, &crate::secure::backend::WeightVector::new(g.clone()), &bt)).2;
    let octaves = (RSQRT_MAX_LOG2 - RSQRT_MIN_LOG2) as u64;
    assert_eq!(ln.ss_mults, 3 * d as u64 + 3 * RSQRT_NEWTON as u64 - 1);
    assert_eq!(ln.comparisons, octaves);
    println!("layer_norm row of {d}: mults {} cmp {} trunc {}", ln.ss_mults, ln.comparisons, ln.truncations);
}

#[test]
fn row_max_handles_odd_widths() {
    let r = Ring::BOLT;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for n in 1..20 {
        let xs: Vec<f64> = (0..3 * n).map(|_| rng.gen_range(-5.0..5.0)).collect();
        let (out, seen, c) = run(r, &xs, |b, x| row_max(b, x, n));
        for (o, s) in out.iter().zip(seen.chunks(n)) {
            assert_eq!(*o, s.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
        assert_eq!(c.comparisons, 3 * (n as u64 - 1));
    }
}


/// Mixing degrees in one evaluation changes nothing but the rounds: the
/// values and the primitive counts are those of two separate calls.
#[test]
fn split_degrees_equal_separate_calls() {
    let r = Ring::BOLT;
    let row = 6;
    let xs: Vec<f64> = grid(-7.0, 3.0, 6 * row - 1);
    for nh_rows in [0usize, 2, 6] {
        let nh = nh_rows * row;
        let (split, _, c_split) = run(r, &xs, |b, x| {
            let g = gelu_split(b, x, nh);
            let s = softmax_split(b, x, row, nh);
            b.concat(&[&g, &s])
        });
        let (sep, _, c_sep) = run(r, &xs, |b, x| {
            let n = b.len(x);
            let (hi, lo) = (b.gather(x, &(0..nh).collect::<Vec<_>>()), b.gather(x, &(nh..n).collect::<Vec<_>>()));
            let mut parts = Vec::new();
            for (deg, v) in [(Degree::High, &hi), (Degree::Low, &lo)] {
                if b.len(v) > 0 {
                    parts.push(gelu(b, v, deg));
                }
            }
            for (deg, v) in [(Degree::High, &hi), (Degree::Low, &lo)] {
                if b.len(v) > 0 {
                    parts.push(softmax(b, v, row, deg));
                }
            }
            b.concat(&parts.iter().collect::<Vec<_>>())
        });
        assert_eq!(split, sep, "{nh_rows} high rows");
        assert_eq!(c_split, c_sep, "{nh_rows} high rows: counts");
    }
}
