//! The pruned BERT forward over the ring, written once over [`Backend`],
//! and the engine's entry point [`forward`] on the plain backend.
//!
//! Per layer l with n live tokens X (n × d), in protocol order:
//! 1. Q, K, V = trunc(X·W + b) (1/√d_head folded into W_q, b_q at encoding).
//! 2. Per head S = trunc(Q_h K_hᵀ); softmax per query row — the LOW
//!    approximation for rows of tokens the previous layer reduced, HIGH
//!    otherwise (layer 0: all high).
//! 3. Score ΣA(i) = Σ_h Σ_q A[h, q, i] (local); keep(i) ⟺ ΣA(i) ≥
//!    round(θ_ring·H·n^p) with θ_ring = round(θ·2^s) — n is public, so the
//!    right side is a public constant and the test one integer comparison
//!    (θ_ring·H·n exactly at p = 1); `[CLS]` (row 0) is kept without a
//!    comparison (so n − 1 comparisons).
//! 4. ctx = A·V, attention output dense, + X: computed for all n rows (they
//!    are row-wise, so dropping rows first or after gives the same ring
//!    values), then the kept rows are compacted (the order is preserved).
//! 5. reduced(i) ⟺ ΣA(i) < β_ring·H·n over the kept rows, then the
//!    partition into high and low groups (sizes revealed). Where the layer
//!    prunes too, this comparison runs on all n rows in the pruning's
//!    round and its bit moves with the kept rows (a payload column).
//! 6. LayerNorm, FFN with GELU (LOW for this layer's reduced tokens), +
//!    residual, LayerNorm.
//!
//! After the last layer: row 0 → pooler dense → tanh → classifier → reveal
//! (to the client only: [`Backend::reveal_output`]).

use super::backend::{Backend, PublicLinear, PublicMatrix, WeightVector};
use super::plain::PlainBackend;
use super::report::{CostTally, OpClass, OverflowCount, OverflowTally, Scope};
use super::weights::{BertWeights, Dense, LayerNormWeights};
use crate::fixed::approx::{gelu, gelu_split, layer_norm, softmax, softmax_split, tanh, Degree};
use crate::fixed::{Ring, Truncation};
use serde::{Deserialize, Serialize};

/// What the CLI chooses for one engine run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub ring: Ring,
    pub truncation: Truncation,
    /// Pruning thresholds θ_l per layer (on the score S ∈ [0, 1]); `None`:
    /// no pruning.
    pub thetas: Option<Vec<f64>>,
    /// Reduction thresholds β_l per layer; `None`: no reduction.
    pub betas: Option<Vec<f64>>,
    /// The score's length exponent p_l per layer; `None`: p = 1.
    #[serde(default)]
    pub exponents: Option<Vec<f64>>,
    /// Each pruning layer folds the rows it prunes into one kept row, their
    /// mean (DESIGN.md §2); false: they are dropped.
    #[serde(default)]
    pub merge: bool,
}

/// A LayerNorm's γ at scale s and β at scale 2s.
#[derive(Clone, Debug)]
struct EncodedLayerNorm {
    gamma: WeightVector,
    beta2: Vec<u64>,
}

#[derive(Clone, Debug)]
struct EncodedLayer {
    query: PublicLinear,
    key: PublicLinear,
    value: PublicLinear,
    attn_out: PublicLinear,
    attn_ln: EncodedLayerNorm,
    ffn_in: PublicLinear,
    ffn_out: PublicLinear,
    ffn_ln: EncodedLayerNorm,
}

/// The server's model encoded in one ring.
#[derive(Clone, Debug)]
pub struct EngineModel {
    ring: Ring,
    hidden: usize,
    heads: usize,
    ffn: usize,
    layers: Vec<EncodedLayer>,
    pooler: PublicLinear,
    classifier: PublicLinear,
    /// Weights that did not fit the ring when encoded.
    encode_overflow: OverflowTally,
}

/// Encodes weights and biases, counting those that do not fit.
struct Encoder<'a> {
    ring: Ring,
    overflow: &'a mut OverflowTally,
    scope: Scope,
    /// Ids given so far (each weight matrix and γ gets the next one).
    next_id: u32,
}

impl Encoder<'_> {
    fn value(&mut self, x: f64, scale: u32) -> u64 {
        let (v, fits) = self.ring.encode_at(x, scale);
        if !fits {
            let bits = super::report::signed_bits(Ring::round_scaled(x, scale));
            self.overflow.add(self.scope, OverflowCount { count: 1, max_bits: bits });
        }
        v
    }

    /// Weights at s (times `factor`), bias at 2s (times `factor`).
    fn dense(&mut self, w: &Dense, factor: f64) -> PublicLinear {
        let s = self.ring.frac();
        let r = self.ring;
        let w_t = w.weight.iter().map(|&v| r.to_signed(self.value(v as f64 * factor, s))).collect();
        let bias2 = w.bias.iter().map(|&v| self.value(v as f64 * factor, 2 * s)).collect();
        let mut matrix = PublicMatrix::from_out_in(w_t, w.in_dim, w.out_dim);
        matrix.id = self.id();
        PublicLinear { matrix, bias2 }
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn ln(&mut self, ln: &LayerNormWeights) -> EncodedLayerNorm {
        let s = self.ring.frac();
        let values = ln.gamma.iter().map(|&v| self.value(v as f64, s)).collect();
        EncodedLayerNorm {
            gamma: WeightVector { id: self.id(), values },
            beta2: ln.beta.iter().map(|&v| self.value(v as f64, 2 * s)).collect(),
        }
    }

    fn at(&mut self, class: OpClass, layer: Option<usize>) -> &mut Self {
        self.scope = Scope { class, layer };
        self
    }
}

impl EngineModel {
    /// Encode the server's weights: dense weights and LayerNorm γ at scale
    /// s, biases and β at 2s (they are added to 2s-scaled products before
    /// the one truncation). 1/√d_head is folded into W_q and b_q here, so
    /// scores need no extra product. Values that do not fit are counted and
    /// reported with every forward's overflows.
    pub fn from_weights(w: &BertWeights, ring: &Ring) -> Self {
        let c = &w.config;
        assert_eq!(c.hidden_size % c.num_attention_heads, 0, "hidden size not divisible by heads");
        let mut overflow = OverflowTally::default();
        let mut e = Encoder {
            ring: *ring,
            overflow: &mut overflow,
            scope: Scope { class: OpClass::Linear, layer: None },
            next_id: 0,
        };
        let q_scale = 1.0 / (c.head_dim() as f64).sqrt();
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(l, lw)| EncodedLayer {
                query: e.at(OpClass::Linear, Some(l)).dense(&lw.query, q_scale),
                key: e.dense(&lw.key, 1.0),
                value: e.dense(&lw.value, 1.0),
                attn_out: e.dense(&lw.attn_out, 1.0),
                ffn_in: e.dense(&lw.ffn_in, 1.0),
                ffn_out: e.dense(&lw.ffn_out, 1.0),
                attn_ln: e.at(OpClass::LayerNorm, Some(l)).ln(&lw.attn_ln),
                ffn_ln: e.ln(&lw.ffn_ln),
            })
            .collect();
        let pooler = e.at(OpClass::PoolerTanh, None).dense(&w.pooler, 1.0);
        let classifier = e.at(OpClass::Classifier, None).dense(&w.classifier, 1.0);
        EngineModel {
            ring: *ring,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            ffn: c.intermediate_size,
            layers,
            pooler,
            classifier,
            encode_overflow: overflow,
        }
    }

    pub fn ring(&self) -> Ring {
        self.ring
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.matrix.out_dim
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The weight matrix with this id (see [`PublicMatrix::id`]).
    pub fn matrix_by_id(&self, id: u32) -> Option<&PublicMatrix> {
        self.layers
            .iter()
            .flat_map(|l| [&l.query, &l.key, &l.value, &l.attn_out, &l.ffn_in, &l.ffn_out])
            .chain([&self.pooler, &self.classifier])
            .map(|d| &d.matrix)
            .find(|m| m.id == id)
    }

    /// The γ vector with this id.
    pub fn vector_by_id(&self, id: u32) -> Option<&[u64]> {
        self.layers
            .iter()
            .flat_map(|l| [&l.attn_ln.gamma, &l.ffn_ln.gamma])
            .find(|g| g.id == id)
            .map(|g| g.values.as_slice())
    }

    /// The same architecture with every weight zeroed: what the client of
    /// a two-party run holds (shapes and ids, no values).
    pub fn public_shape(&self) -> EngineModel {
        fn zero_dense(d: &PublicLinear) -> PublicLinear {
            let m = &d.matrix;
            let mut matrix = PublicMatrix::from_out_in(vec![0; m.w_t.len()], m.in_dim, m.out_dim);
            matrix.id = m.id;
            PublicLinear { matrix, bias2: vec![0; d.bias2.len()] }
        }
        fn zero_ln(n: &EncodedLayerNorm) -> EncodedLayerNorm {
            EncodedLayerNorm {
                gamma: WeightVector { id: n.gamma.id, values: vec![0; n.gamma.values.len()] },
                beta2: vec![0; n.beta2.len()],
            }
        }
        EngineModel {
            ring: self.ring,
            hidden: self.hidden,
            heads: self.heads,
            ffn: self.ffn,
            layers: self
                .layers
                .iter()
                .map(|l| EncodedLayer {
                    query: zero_dense(&l.query),
                    key: zero_dense(&l.key),
                    value: zero_dense(&l.value),
                    attn_out: zero_dense(&l.attn_out),
                    attn_ln: zero_ln(&l.attn_ln),
                    ffn_in: zero_dense(&l.ffn_in),
                    ffn_out: zero_dense(&l.ffn_out),
                    ffn_ln: zero_ln(&l.ffn_ln),
                })
                .collect(),
            pooler: zero_dense(&self.pooler),
            classifier: zero_dense(&self.classifier),
            encode_overflow: OverflowTally::default(),
        }
    }

    /// Overflows of the weight encoding alone.
    pub fn encode_overflow(&self) -> &OverflowTally {
        &self.encode_overflow
    }
}

/// Thresholds of one layer as ring integers (round(θ·2^s)), or none, and
/// the exponent p of the score they compare with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerThresholds {
    pub theta: Option<i64>,
    pub beta: Option<i64>,
    pub exponent: f64,
    /// The pruned rows become one kept row, their mean (public: the client
    /// knows it as it knows that the layer prunes).
    pub merge: bool,
}

impl Default for LayerThresholds {
    fn default() -> Self {
        LayerThresholds { theta: None, beta: None, exponent: 1.0, merge: false }
    }
}

/// The public right side of the test ΣA(i) ≥ θ·H·n^p in the ring:
/// round(t_ring·H·n^p) for a threshold t_ring = round(t·2^s). At p = 1 it is
/// the integer t_ring·H·n exactly (no float involved).
pub fn threshold_bound(t_ring: i64, heads: usize, n: usize, p: f64) -> i128 {
    let hn = (heads * n) as i128;
    if p == 1.0 {
        t_ring as i128 * hn
    } else {
        (t_ring as f64 * heads as f64 * (n as f64).powf(p)).round() as i128
    }
}

impl LayerThresholds {
    /// Per-layer ring thresholds from the float ones of a config.
    ///
    /// # Panics
    /// If a list's length is not the number of layers (the CLI validates
    /// threshold files against the model before).
    pub fn from_config(cfg: &EngineConfig, layers: usize) -> Vec<LayerThresholds> {
        let s = cfg.ring.frac();
        let enc = |v: &Option<Vec<f64>>, what: &str, l: usize| {
            v.as_ref().map(|v| {
                assert_eq!(v.len(), layers, "{what}: {} values for {layers} layers", v.len());
                Ring::round_scaled(v[l], s) as i64
            })
        };
        let p = |l: usize| cfg.exponents.as_ref().map_or(1.0, |v| {
            assert_eq!(v.len(), layers, "exponents: {} values for {layers} layers", v.len());
            v[l]
        });
        (0..layers)
            .map(|l| LayerThresholds { theta: enc(&cfg.thetas, "thetas", l), beta: enc(&cfg.betas, "betas", l), exponent: p(l), merge: cfg.merge && cfg.thetas.is_some() })
            .collect()
    }
}

/// What the forward saw, for reports (positions are original token
/// positions; `scores_ring[l][j]` belongs to `live_per_layer[l][j]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The revealed logits (ring elements).
    pub logits_ring: Vec<u64>,
    /// Live tokens entering each layer.
    pub live_per_layer: Vec<Vec<usize>>,
    /// Tokens kept after each layer's pruning.
    pub kept_per_layer: Vec<Vec<usize>>,
    /// Tokens each layer reduced (among the kept).
    pub reduced_per_layer: Vec<Vec<usize>>,
    /// ΣA(i) = Σ_h Σ_q A[h, q, i] per live token (scale s): S(i)·H·n.
    pub scores_ring: Vec<Vec<i64>>,
    /// Per layer: did its pruned rows become one kept row (the
    /// last of `kept_per_layer`, at the first pruned position)?
    #[serde(default)]
    pub merged_per_layer: Vec<bool>,
}

/// The mean of the rows of `all` (`n_all` × d) that are not among `kept`
/// (`n_kept` × d, a subset of them): all rows' sum less the kept rows'
/// (local: no message), times the public 1/(n_all − n_kept), truncated.
fn pruned_mean<B: Backend>(b: &mut B, all: &B::Arith, n_all: usize, kept: &B::Arith, n_kept: usize, d: usize) -> B::Arith {
    let column_sums = |b: &mut B, x: &B::Arith, rows: usize| {
        let by_col: Vec<usize> = (0..rows * d).map(|i| rc(i % rows, i / rows, d)).collect();
        let t = b.gather(x, &by_col);
        b.sum_chunks(&t, rows)
    };
    let total = column_sums(b, all, n_all);
    let rest = column_sums(b, kept, n_kept);
    let sum = b.sub(&total, &rest);
    let r = b.ring();
    let inv = r.from_i128(Ring::round_scaled(1.0 / (n_all - n_kept) as f64, r.frac()) as i128);
    let m = b.mul_public(&sum, &[inv]);
    b.rescale(&m)
}

/// Index of element (row, col) of a row-major matrix with `cols` columns.
fn rc(row: usize, col: usize, cols: usize) -> usize {
    row * cols + col
}

/// The forward over any backend; `x` is the client's n × d input at scale
/// s. Costs and overflows accumulate in the backend's meter.
///
/// # Panics
/// If the backend's ring is not the model's, `thresholds` does not have one
/// entry per layer, or n = 0.
pub fn forward_on<B: Backend>(
    b: &mut B,
    model: &EngineModel,
    thresholds: &[LayerThresholds],
    x: B::Arith,
    n: usize,
) -> Trace {
    let r = b.ring();
    assert_eq!(r, model.ring, "model encoded in {} but backend runs {}", model.ring, r);
    assert_eq!(thresholds.len(), model.layers.len(), "thresholds for {} layers", thresholds.len());
    assert!(n >= 1, "empty sequence");
    let (d, h, f) = (model.hidden, model.heads, model.ffn);
    let dh = d / h;
    let mut x = x;
    let mut n = n;
    let mut positions: Vec<usize> = (0..n).collect();
    let mut reduced_rows: Option<B::Partition> = None;
    let mut trace = Trace::default();

    for (l, (layer, thr)) in model.layers.iter().zip(thresholds).enumerate() {
        let at = Some(l);
        trace.live_per_layer.push(positions.clone());

        b.set_scope(OpClass::Linear, at);
        b.note_elements(3 * n * d);
        // Q, K, V truncated together (element-wise: the same values, fewer rounds).
        let pre: Vec<B::Arith> = [&layer.query, &layer.key, &layer.value]
            .iter()
            .map(|lin| {
                let y = b.matmul_public(&x, n, &lin.matrix);
                b.add_public(&y, &lin.bias2)
            })
            .collect();
        let qkv = b.concat(&pre.iter().collect::<Vec<_>>());
        let qkv = b.rescale(&qkv);
        let q = b.gather(&qkv, &(0..n * d).collect::<Vec<_>>());
        let k = b.gather(&qkv, &(n * d..2 * n * d).collect::<Vec<_>>());
        let v = b.gather(&qkv, &(2 * n * d..3 * n * d).collect::<Vec<_>>());

        // Scores per head, then laid out token-major [q][h][key] so that a
        // token's query rows are contiguous (the reduction's partition
        // splits whole tokens).
        b.set_scope(OpClass::AttentionMatmul, at);
        b.note_elements(h * n * n);
        // All heads' products at once, then one truncation (element-wise,
        // so the same values as truncating head by head, in fewer rounds).
        let mut pairs = Vec::with_capacity(h);
        for hd in 0..h {
            let qi: Vec<usize> = (0..n * dh).map(|i| rc(i / dh, hd * dh + i % dh, d)).collect();
            let kti: Vec<usize> = (0..dh * n).map(|i| rc(i % n, hd * dh + i / n, d)).collect();
            pairs.push((b.gather(&q, &qi), b.gather(&k, &kti)));
        }
        let s2 = b.matmul_many(&pairs, n, dh, n);
        let s2 = b.concat(&s2.iter().collect::<Vec<_>>());
        let all = b.rescale(&s2); // [h][q][key]
        let tok_major: Vec<usize> =
            (0..h * n * n).map(|i| (i / n % h) * n * n + (i / (h * n)) * n + i % n).collect();
        let scores = b.gather(&all, &tok_major);

        b.set_scope(OpClass::Softmax, at);
        b.note_elements(h * n * n);
        let probs = match &reduced_rows {
            None => softmax(b, &scores, n, Degree::High),
            Some(p) => {
                // Both groups in one evaluation (the rounds of one softmax).
                let (hi, lo) = b.split_rows(&scores, h * n, p);
                let nh = b.len(&hi);
                let both = b.concat(&[&hi, &lo]);
                let a = softmax_split(b, &both, n, nh);
                let total = b.len(&a);
                let a_hi = b.gather(&a, &(0..nh).collect::<Vec<_>>());
                let a_lo = b.gather(&a, &(nh..total).collect::<Vec<_>>());
                b.merge_rows(&a_hi, &a_lo, h * n, p)
            }
        };

        // Importance: column sums of all heads' probabilities (local).
        let by_key: Vec<usize> = (0..n * n * h).map(|i| (i % (n * h)) * n + i / (n * h)).collect();
        let cols = b.gather(&probs, &by_key);
        let score = b.sum_chunks(&cols, n * h);
        let peeked = b.peek(&score).unwrap_or_default();
        trace.scores_ring.push(peeked.iter().map(|&v| r.to_signed(v)).collect());

        b.set_scope(OpClass::AttentionMatmul, at);
        b.note_elements(n * d);
        let mut pairs = Vec::with_capacity(h);
        for hd in 0..h {
            let ai: Vec<usize> = (0..n * n).map(|i| (i / n) * h * n + hd * n + i % n).collect();
            let vi: Vec<usize> = (0..n * dh).map(|i| rc(i / dh, hd * dh + i % dh, d)).collect();
            pairs.push((b.gather(&probs, &ai), b.gather(&v, &vi)));
        }
        let c2 = b.matmul_many(&pairs, n, n, dh);
        let c2 = b.concat(&c2.iter().collect::<Vec<_>>());
        let all = b.rescale(&c2); // [h][q][c]
        let ctx_idx: Vec<usize> = (0..n * d).map(|i| (i % d / dh) * n * dh + (i / d) * dh + i % dh).collect();
        let ctx = b.gather(&all, &ctx_idx);

        b.set_scope(OpClass::Linear, at);
        b.note_elements(n * d);
        let attn = b.linear(&ctx, n, &layer.attn_out);
        let z = b.add(&attn, &x);

        // Pruning: compare, then compact the rows of z keeping order. Where
        // the layer reduces too, the reduction's comparison shares the
        // pruning's round (on all n scores, β's bound at this n) and its bit
        // rides through the compaction as a column [z | low].
        let beta_bound = thr.beta.map(|beta| r.from_i128(threshold_bound(beta, h, n, thr.exponent)));
        let (z, low) = match thr.theta {
            None => {
                trace.merged_per_layer.push(false);
                (z, None)
            }
            Some(theta) => {
                b.set_scope(OpClass::Pruning, at);
                b.note_elements(n);
                let t = r.from_i128(threshold_bound(theta, h, n, thr.exponent));
                let rest = b.gather(&score, &(1..n).collect::<Vec<_>>());
                let rest_d = b.sub_public(&rest, &[t]);
                let (keep_rest, low) = match beta_bound {
                    None => (b.msb(&rest_d), None),
                    Some(tb) => {
                        let below = b.sub_public(&score, &[tb]);
                        let both = b.concat(&[&rest_d, &below]);
                        let m = b.msb(&both);
                        let lo = b.bits_gather(&m, &(n - 1..2 * n - 1).collect::<Vec<_>>());
                        (b.bits_gather(&m, &(0..n - 1).collect::<Vec<_>>()), Some(b.b2a(&lo)))
                    }
                };
                let keep_rest = b.not(&keep_rest);
                let cls = b.bits_public(&[true]);
                let keep = b.bits_concat(&[&cls, &keep_rest]);
                let w = d + usize::from(low.is_some());
                let payload = match &low {
                    None => z.clone(),
                    Some(l) => {
                        let all = b.concat(&[&z, l]);
                        let rows: Vec<usize> = (0..n * w).map(|i| if i % w < d { rc(i / w, i % w, d) } else { n * d + i / w }).collect();
                        b.gather(&all, &rows)
                    }
                };
                let packed = b.compact_rows(&payload, w, &keep);
                let n_in = n;
                n = b.len(&packed) / w;
                // Which positions were kept is known only to an analysing backend.
                let bits = b.peek_bits(&keep);
                let first_pruned = bits.as_ref().and_then(|bits| bits.iter().position(|&k| !k)).map(|j| positions[j]);
                positions = match &bits {
                    Some(bits) => positions.iter().zip(bits).filter(|(_, &k)| k).map(|(&p, _)| p).collect(),
                    None => (0..n).collect(),
                };
                let low = low.map(|_| {
                    let l = b.gather(&packed, &(0..n).map(|i| i * w + d).collect::<Vec<_>>());
                    b.ring_bits(&l)
                });
                let kept = if low.is_some() { b.gather(&packed, &(0..n * d).map(|i| (i / d) * w + i % d).collect::<Vec<_>>()) } else { packed };
                let merging = thr.merge && n < n_in;
                trace.merged_per_layer.push(merging);
                if merging {
                    // The pruned rows' mean becomes one more kept row (reduced: no).
                    let mean = pruned_mean(b, &z, n_in, &kept, n, d);
                    positions.push(first_pruned.unwrap_or(n));
                    n += 1;
                    let no = b.bits_public(&[false]);
                    (b.concat(&[&kept, &mean]), low.map(|l| b.bits_concat(&[&l, &no])))
                } else {
                    (kept, low)
                }
            }
        };
        trace.kept_per_layer.push(positions.clone());

        // Reduction among the kept rows.
        let part = beta_bound.map(|t| {
            b.set_scope(OpClass::Reduction, at);
            b.note_elements(n);
            let low = match low {
                Some(l) => l,
                None => {
                    let below = b.sub_public(&score, &[t]);
                    b.msb(&below)
                }
            };
            let bits = b.peek_bits(&low).unwrap_or_default();
            trace.reduced_per_layer.push(positions.iter().zip(&bits).filter(|(_, &lo)| lo).map(|(&p, _)| p).collect());
            b.partition(&low, d)
        });
        if part.is_none() {
            trace.reduced_per_layer.push(Vec::new());
        }

        b.set_scope(OpClass::LayerNorm, at);
        b.note_elements(n * d);
        let h1 = layer_norm(b, &z, d, &layer.attn_ln.gamma, &layer.attn_ln.beta2);

        b.set_scope(OpClass::Linear, at);
        b.note_elements(n * f);
        let u = b.linear(&h1, n, &layer.ffn_in);
        b.set_scope(OpClass::Gelu, at);
        b.note_elements(n * f);
        let g = match &part {
            None => gelu(b, &u, Degree::High),
            Some(p) => {
                let (hi, lo) = b.split_rows(&u, f, p);
                let nh = b.len(&hi);
                let both = b.concat(&[&hi, &lo]);
                let g = gelu_split(b, &both, nh);
                let total = b.len(&g);
                let g_hi = b.gather(&g, &(0..nh).collect::<Vec<_>>());
                let g_lo = b.gather(&g, &(nh..total).collect::<Vec<_>>());
                b.merge_rows(&g_hi, &g_lo, f, p)
            }
        };
        b.set_scope(OpClass::Linear, at);
        b.note_elements(n * d);
        let o = b.linear(&g, n, &layer.ffn_out);
        let z2 = b.add(&o, &h1);
        b.set_scope(OpClass::LayerNorm, at);
        b.note_elements(n * d);
        x = layer_norm(b, &z2, d, &layer.ffn_ln.gamma, &layer.ffn_ln.beta2);
        reduced_rows = part;
    }

    b.set_scope(OpClass::PoolerTanh, None);
    b.note_elements(d);
    let cls = b.gather(&x, &(0..d).collect::<Vec<_>>());
    let p = b.linear(&cls, 1, &model.pooler);
    let t = tanh(b, &p);
    b.set_scope(OpClass::Classifier, None);
    b.note_elements(model.num_labels());
    let logits = b.linear(&t, 1, &model.classifier);
    trace.logits_ring = b.reveal_output(&logits);
    trace
}

/// The client's embeddings encoded at scale s, and how many did not fit.
pub fn encode_input(r: Ring, embeddings_f32: &[f32]) -> (Vec<u64>, OverflowCount) {
    let mut bad = OverflowCount::default();
    let enc = embeddings_f32
        .iter()
        .map(|&v| {
            let (e, fits) = r.encode_at(v as f64, r.frac());
            if !fits {
                bad.count += 1;
                bad.max_bits = bad.max_bits.max(super::report::signed_bits(Ring::round_scaled(v as f64, r.frac())));
            }
            e
        })
        .collect();
    (enc, bad)
}

/// One example's result on the plain engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForwardResult {
    /// Decoded logits (num_labels; 1 for regression).
    pub logits: Vec<f64>,
    pub logits_ring: Vec<u64>,
    /// Original positions kept after each layer.
    pub kept_per_layer: Vec<Vec<usize>>,
    /// Original positions reduced in each layer.
    pub reduced_per_layer: Vec<Vec<usize>>,
    /// Per layer: is the last of `kept_per_layer` the pruned rows' mean?
    pub merged_per_layer: Vec<bool>,
    /// Original positions live entering each layer (aligned with `scores_ring`).
    pub live_per_layer: Vec<Vec<usize>>,
    /// ΣA per live token per layer (= S·H·n at scale s), for flip analysis.
    pub scores_ring: Vec<Vec<i64>>,
    /// Values that left the ring, per operator class and layer (the weight
    /// encoding's included).
    pub overflow: OverflowTally,
    /// This example's own overflows (without the weight encoding's).
    pub run_overflow: OverflowTally,
    pub cost: CostTally,
}

/// Run one example through the engine: the client's embeddings (n × d, f32,
/// the output of the HF embeddings module) are encoded at s, then the
/// forward runs on the plain backend. Probabilistic truncation draws from
/// ChaCha20(seed) on stream `example_index`, so a result depends only on
/// (seed, example index), not on threads or on other examples.
///
/// # Panics
/// If the config's ring is not the model's, threshold lists do not have one
/// value per layer, or the embeddings are not n × hidden.
pub fn forward(
    model: &EngineModel,
    cfg: &EngineConfig,
    embeddings_f32: &[f32],
    n_tokens: usize,
    example_index: u64,
) -> ForwardResult {
    let r = cfg.ring;
    assert_eq!(embeddings_f32.len(), n_tokens * model.hidden, "embeddings are not {n_tokens} × {}", model.hidden);
    let thresholds = LayerThresholds::from_config(cfg, model.layers.len());
    let mut b = PlainBackend::new(r, cfg.truncation, example_index);
    b.set_scope(OpClass::Input, None);
    let (enc, bad) = encode_input(r, embeddings_f32);
    b.meter().overflow(bad.count, bad.max_bits);
    let x = b.input(&enc);
    let trace = forward_on(&mut b, model, &thresholds, x, n_tokens);
    let meter = b.into_meter();
    let mut overflow = model.encode_overflow.clone();
    overflow.merge(&meter.overflow);
    let run_overflow = meter.overflow;
    ForwardResult {
        logits: trace.logits_ring.iter().map(|&v| r.decode(v)).collect(),
        logits_ring: trace.logits_ring,
        kept_per_layer: trace.kept_per_layer,
        merged_per_layer: trace.merged_per_layer,
        reduced_per_layer: trace.reduced_per_layer,
        live_per_layer: trace.live_per_layer,
        scores_ring: trace.scores_ring,
        overflow,
        run_overflow,
        cost: meter.cost,
    }
}

#[cfg(test)]
mod tests;
