//! The engine's forward in `f64` with the float twins of its approximations
//! ([`crate::fixed::twin`]) and float thresholds: what the engine computes
//! without rounding. Tests hold the engine to it; the CLI can use it to
//! separate rounding (engine vs this) from approximation (this vs the exact
//! model) without candle.

use super::weights::{BertWeights, Dense};
use crate::fixed::twin;
use crate::fixed::Degree;

/// Same fields as the engine's trace, in floats.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceResult {
    pub logits: Vec<f64>,
    pub live_per_layer: Vec<Vec<usize>>,
    pub kept_per_layer: Vec<Vec<usize>>,
    pub reduced_per_layer: Vec<Vec<usize>>,
    /// ΣA(i) = S(i)·H·n per live token.
    pub scores: Vec<Vec<f64>>,
}

/// `x · Wᵀ + b` (HF layout), all times `factor`; x is rows × in.
fn dense(x: &[f64], w: &Dense, factor: f64) -> Vec<f64> {
    let rows = x.len() / w.in_dim;
    let mut out = Vec::with_capacity(rows * w.out_dim);
    for row in x.chunks(w.in_dim) {
        for j in 0..w.out_dim {
            let wr = &w.weight[j * w.in_dim..(j + 1) * w.in_dim];
            let dot: f64 = row.iter().zip(wr).map(|(a, &b)| a * (b as f64 * factor)).sum();
            out.push(dot + w.bias[j] as f64 * factor);
        }
    }
    out
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// See the module docs. Thresholds are per layer, as in `EngineConfig`;
/// keep(i) ⟺ i = 0 or ΣA(i) ≥ θ·H·n, reduced(i) ⟺ kept and ΣA(i) < β·H·n.
pub fn reference_forward(
    w: &BertWeights,
    thetas: Option<&[f64]>,
    betas: Option<&[f64]>,
    embeddings: &[f32],
    n: usize,
) -> ReferenceResult {
    let c = &w.config;
    let (d, h) = (c.hidden_size, c.num_attention_heads);
    let dh = d / h;
    let q_scale = 1.0 / (dh as f64).sqrt();
    let mut x = f64s(embeddings);
    let mut n = n;
    let mut positions: Vec<usize> = (0..n).collect();
    let mut low_prev = vec![false; n];
    let mut res = ReferenceResult {
        logits: vec![],
        live_per_layer: vec![],
        kept_per_layer: vec![],
        reduced_per_layer: vec![],
        scores: vec![],
    };
    for (l, lw) in w.layers.iter().enumerate() {
        res.live_per_layer.push(positions.clone());
        let q = dense(&x, &lw.query, q_scale);
        let k = dense(&x, &lw.key, 1.0);
        let v = dense(&x, &lw.value, 1.0);
        // probs[hd][qi][kj]
        let mut probs = vec![0.0; h * n * n];
        for hd in 0..h {
            for qi in 0..n {
                let row: Vec<f64> = (0..n)
                    .map(|kj| (0..dh).map(|t| q[qi * d + hd * dh + t] * k[kj * d + hd * dh + t]).sum())
                    .collect();
                let deg = if low_prev[qi] { Degree::Low } else { Degree::High };
                probs[(hd * n + qi) * n..(hd * n + qi + 1) * n].copy_from_slice(&twin::softmax(&row, deg));
            }
        }
        let score: Vec<f64> = (0..n).map(|kj| (0..h * n).map(|r| probs[r * n + kj]).sum()).collect();
        res.scores.push(score.clone());
        let mut z = vec![0.0; n * d];
        for hd in 0..h {
            for qi in 0..n {
                for t in 0..dh {
                    z[qi * d + hd * dh + t] = (0..n).map(|kj| probs[(hd * n + qi) * n + kj] * v[kj * d + hd * dh + t]).sum();
                }
            }
        }
        let z: Vec<f64> = dense(&z, &lw.attn_out, 1.0).iter().zip(&x).map(|(a, b)| a + b).collect();
        let hn = (h * n) as f64;
        let keep: Vec<bool> =
            (0..n).map(|i| i == 0 || thetas.is_none_or(|t| score[i] >= t[l] * hn)).collect();
        let low: Vec<bool> = (0..n).map(|i| keep[i] && betas.is_some_and(|b| score[i] < b[l] * hn)).collect();
        let mut zk = Vec::new();
        let mut low_k = Vec::new();
        let mut pos_k = Vec::new();
        let mut reduced = Vec::new();
        for i in (0..n).filter(|&i| keep[i]) {
            zk.extend_from_slice(&z[i * d..(i + 1) * d]);
            low_k.push(low[i]);
            pos_k.push(positions[i]);
            if low[i] {
                reduced.push(positions[i]);
            }
        }
        positions = pos_k;
        n = positions.len();
        res.kept_per_layer.push(positions.clone());
        res.reduced_per_layer.push(reduced);
        let ln1 = layer_norm_rows(&zk, d, &lw.attn_ln.gamma, &lw.attn_ln.beta);
        let u = dense(&ln1, &lw.ffn_in, 1.0);
        let f = lw.ffn_in.out_dim;
        let g: Vec<f64> = u
            .iter()
            .enumerate()
            .map(|(i, &v)| twin::gelu(v, if low_k[i / f] { Degree::Low } else { Degree::High }))
            .collect();
        let z2: Vec<f64> = dense(&g, &lw.ffn_out, 1.0).iter().zip(&ln1).map(|(a, b)| a + b).collect();
        x = layer_norm_rows(&z2, d, &lw.ffn_ln.gamma, &lw.ffn_ln.beta);
        low_prev = low_k;
    }
    let p = dense(&x[..d], &w.pooler, 1.0);
    let t: Vec<f64> = p.iter().map(|&v| twin::tanh(v)).collect();
    res.logits = dense(&t, &w.classifier, 1.0);
    res
}

fn layer_norm_rows(x: &[f64], d: usize, gamma: &[f32], beta: &[f32]) -> Vec<f64> {
    let (g, b) = (f64s(gamma), f64s(beta));
    x.chunks(d).flat_map(|row| twin::layer_norm(row, &g, &b)).collect()
}
