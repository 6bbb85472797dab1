//! The one forward of our BERT, for every use: fine-tuning (exact
//! functions, no masks), threshold learning (soft masks), and inference
//! and simulation (hard masks, the secure approximations, optionally
//! removing pruned rows for real). Semantics: DESIGN.md §2.
//!
//! In layer l, once the attention probabilities A are known, the score of
//! live token i is S(i) = Σ_h Σ_{live q} A[h, q, i] / (H·n^p), p the
//! layer's length exponent (1: scores sum to 1; 0: they average 1). With hard masks
//! tokens with S < θ_l leave (position 0, [CLS], never does) and kept
//! tokens with S < β_l are reduced: low-degree GELU in layer l and
//! low-degree softmax for their query row in layer l + 1. With soft masks
//! σ((S − θ_l)/T) scales token i's layer output and σ((S − β_l)/T) blends
//! the high- and low-degree functions.
//!
//! Batched runs keep pruned tokens in place but mask them out as keys and
//! queries (a −1e9 bias gives them exactly zero attention); `physical`
//! (batch 1) gathers the kept rows instead, as the engine does. A test
//! holds the two to the same logits.

use candle_core::{DType, Device, Module, Tensor};

use super::approx::{self, Numerics};
use super::bert::{attention_bias, Bert, BertOutput, ForwardCtx, Inputs};
use super::fused;
use crate::error::{Error, Result};

/// Which tokens live, and with which function degree.
#[derive(Clone, Debug)]
pub enum Masking {
    /// Every real token is live in every layer; no reduction.
    Off,
    /// Threshold learning: per-layer θ and β as (layers,) tensors that may
    /// carry gradients, and the temperature T. `cumulative` makes the soft
    /// masks follow the hard ones' "never live again": token i's output is
    /// scaled by Π_{k≤l} Mθ_k, and in later layers its attention weight as a
    /// key and its weight as a query in the score are scaled by it too.
    /// Otherwise (LTP) a token scaled away in layer l comes back in layer
    /// l + 1 as a mixture of the others, which a hard mask never does.
    /// `per_input` averages L_prune and L_approx over each input's live
    /// tokens, then over inputs, as relative work is averaged; otherwise
    /// over all live tokens of the batch, where a 50-token input weighs five
    /// times a 10-token one and its tokens are pushed out just as hard,
    /// though each is worth a fifth of the work.
    /// `exponent` holds each layer's p (it may carry gradients too);
    /// `None` for p = 1 everywhere.
    Soft { theta: Tensor, beta: Tensor, exponent: Option<Tensor>, temperature: f64, cumulative: bool, per_input: bool },
    /// Inference: per-layer thresholds; `None` turns pruning or reduction
    /// off. `exponent`: each layer's p, `None` for p = 1 everywhere.
    /// `merge`: the tokens a layer prunes are not dropped but folded into
    /// one kept token, their mean after attention (ToMe's merging; a plain
    /// mean, not an attention-weighted one, because the protocol gets it
    /// without a message: all rows' sum less the kept rows', times the
    /// public 1/count), which sits at the first pruned position.
    Hard { theta: Option<Vec<f64>>, beta: Option<Vec<f64>>, exponent: Option<Vec<f64>>, merge: bool },
    /// The baseline that learned thresholds are judged against: a fixed
    /// schedule ranking by the same score. After layer l each input keeps
    /// its round(keep[l] · n) highest-scoring live tokens ([CLS] always, at
    /// least one); no reduction.
    Ratio { keep: Vec<f64> },
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub numerics: Numerics,
    pub masking: Masking,
    /// Drop pruned rows for real (batch size 1 only).
    pub physical: bool,
}

impl Plan {
    /// The fine-tuned model as Hugging Face computes it.
    pub fn exact() -> Self {
        Plan { numerics: Numerics::Exact, masking: Masking::Off, physical: false }
    }

    /// The same plan with pruned tokens merged instead of dropped; only
    /// thresholds that prune can merge.
    pub fn merging(self) -> Result<Self> {
        match self.masking {
            Masking::Hard { theta: Some(theta), beta, exponent, .. } => Ok(Plan { masking: Masking::Hard { theta: Some(theta), beta, exponent, merge: true }, ..self }),
            _ => Err(Error::Config("merging needs pruning thresholds (a pruned run, --theta or --theta-ramp)".into())),
        }
    }
}

/// What one layer did to each example of the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTrace {
    /// Live tokens entering the layer, per example.
    pub entering: Vec<usize>,
    /// Original positions kept after the layer (hard masks; with soft
    /// masks, the tokens a hard mask would keep), per example.
    pub kept: Vec<Vec<usize>>,
    /// How many kept tokens were reduced, per example.
    pub reduced: Vec<usize>,
    /// Per example: is one of `kept` the merge of the pruned tokens? Empty
    /// when the plan does not merge.
    pub merged: Vec<bool>,
}

pub struct ForwardOutput {
    pub base: BertOutput,
    /// Per layer, (batch, seq) scores of live tokens (0 elsewhere), at the
    /// layer's own row positions (compacted ones when `physical`). Empty
    /// with `Masking::Off`.
    pub scores: Vec<Tensor>,
    /// Per layer, (batch, seq): Mθ with soft masks, the 0/1 keep mask with
    /// hard ones. Empty with `Masking::Off`.
    pub keep_masks: Vec<Tensor>,
    /// Empty with `Masking::Off`.
    pub layers: Vec<LayerTrace>,
    /// Soft masks only: mean Mθ and mean Mβ over layers and live tokens.
    pub l_prune: Option<Tensor>,
    pub l_approx: Option<Tensor>,
}

/// σ(x) through tanh, whose gradient stays finite for any x.
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(((x * 0.5)?.tanh()? + 1.0)?.affine(0.5, 0.0)?)
}

/// The soft keep mask Mθ(i) = σ((S(i) − θ)/T) of live tokens, [CLS]
/// (position 0) always 1: `scores` and `live` are (b, seq), `theta` is
/// broadcast (a (1,) slice of the learned θ, or a constant).
pub fn soft_keep(scores: &Tensor, theta: &Tensor, temperature: f64, live: &Tensor) -> Result<Tensor> {
    let seq = scores.dim(1)?;
    let cls = Tensor::from_vec((0..seq).map(|i| if i == 0 { 1f32 } else { 0.0 }).collect::<Vec<_>>(), (1, seq), scores.device())?;
    let m = sigmoid(&(scores.broadcast_sub(theta)? / temperature)?)?;
    Ok((m.broadcast_mul(&cls.affine(-1.0, 1.0)?)?.broadcast_add(&cls)? * live)?)
}

/// Rows `idx` of dim 1 (batch 1), as the engine's compaction does.
fn gather(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    Ok(x.index_select(idx, 1)?)
}

impl Bert {
    /// Full forward of the fine-tuned model, exact functions, no pruning
    /// (see [`Bert::forward_with`] for the rest).
    pub fn forward(&self, inputs: &Inputs, ctx: &mut ForwardCtx) -> Result<BertOutput> {
        Ok(self.forward_with(inputs, &Plan::exact(), ctx)?.base)
    }

    /// See the module docs. The token positions in traces are original
    /// input positions.
    pub fn forward_with(&self, inputs: &Inputs, plan: &Plan, ctx: &mut ForwardCtx) -> Result<ForwardOutput> {
        let (b, t) = inputs.ids.dims2()?;
        if plan.physical && b != 1 {
            return Err(Error::Config(format!("physical token removal runs one example at a time, got a batch of {b}")));
        }
        let approx = plan.numerics == Numerics::Approx;
        let heads = self.num_heads() as f64;
        let dev = Device::Cpu;
        let mut x = self.embed(inputs, ctx)?;
        let mut live = inputs.mask.to_dtype(DType::F32)?;
        let mut positions: Vec<usize> = (0..t).collect(); // physical mode
        let mut w_low_prev: Option<Tensor> = None; // (b, seq): weight of the low softmax per query row
        let mut soft_live: Option<Tensor> = None; // (b, seq): Π_k Mθ_k of cumulative soft masks
        let (mut scores_out, mut traces, mut attentions, mut keep_masks) = (vec![], vec![], vec![], vec![]);
        let (mut l_prune, mut l_approx) = (vec![], vec![]);

        for (l, layer) in self.layers.iter().enumerate() {
            let seq = x.dim(1)?;
            let mut bias = attention_bias(&live)?;
            if let Some(m) = &soft_live {
                bias = bias.broadcast_add(&m.clamp(1e-6f32, 1f32)?.log()?.reshape((b, 1, 1, seq))?)?;
            }
            let (q, k, v) = (self.split_heads(&layer.query.forward(&x)?)?, self.split_heads(&layer.key.forward(&x)?)?, self.split_heads(&layer.value.forward(&x)?)?);
            let scale = 1.0 / (self.cfg.head_dim() as f64).sqrt();
            let raw = fused::batched_matmul(&q, &k, true)?;
            let probs = if approx { approx::fused::softmax(&raw, &bias, scale, w_low_prev.as_ref())? } else { fused::masked_softmax(&raw, &bias, scale)? };
            if ctx.output_attentions {
                attentions.push(probs.clone());
            }

            // Score, keep and reduce decisions.
            let mut keep_idx: Option<Tensor> = None;
            let mut w_low: Option<Tensor> = None;
            let mut out_scale: Option<Tensor> = None;
            let mut score = None;
            let mut merge: Option<(Tensor, Tensor)> = None; // (slot, weight), (b, seq) each
            if !matches!(plan.masking, Masking::Off) {
                let weight = soft_live.as_ref().unwrap_or(&live);
                let n = weight.sum_keepdim(1)?; // (b, 1)
                let col = fused::column_sums(&probs, weight)?; // (b, seq)
                // H·n^p = H·exp(p·ln n); n ≥ 1 ([CLS] is always live).
                let norm = match &plan.masking {
                    Masking::Soft { exponent: Some(p), .. } => n.clamp(1f32, f32::MAX)?.log()?.broadcast_mul(&p.narrow(0, l, 1)?)?.exp()?,
                    Masking::Hard { exponent: Some(p), .. } if p[l] != 1.0 => n.clamp(1f32, f32::MAX)?.log()?.affine(p[l], 0.0)?.exp()?,
                    _ => n,
                };
                let s = col.broadcast_div(&(norm * heads)?)?;
                let cls = Tensor::from_vec((0..seq).map(|i| if i == 0 { 1f32 } else { 0.0 }).collect::<Vec<_>>(), (1, seq), &dev)?;
                let (hard_keep, reduced) = match &plan.masking {
                    Masking::Off => unreachable!(),
                    Masking::Soft { theta, beta, temperature, cumulative, per_input, .. } => {
                        let (th, be) = (theta.narrow(0, l, 1)?, beta.narrow(0, l, 1)?);
                        let m_theta = soft_keep(&s, &th, *temperature, &live)?;
                        let m_theta = match (cumulative, &soft_live) {
                            (false, _) => m_theta,
                            (true, None) => m_theta,
                            (true, Some(prev)) => (prev * &m_theta)?,
                        };
                        if *cumulative {
                            soft_live = Some(m_theta.clone());
                        }
                        let denom = if *per_input { live.sum(1)? } else { live.sum_all()? };
                        let average = |m: &Tensor| -> Result<Tensor> {
                            Ok(if *per_input { m.sum(1)?.div(&denom)?.mean_all()? } else { m.sum_all()?.div(&denom)? })
                        };
                        l_prune.push(average(&m_theta)?);
                        keep_masks.push(m_theta.clone());
                        out_scale = Some(m_theta);
                        let hard_keep = (s.broadcast_ge(&th.detach())?.to_dtype(DType::F32)?.broadcast_add(&cls)?.clamp(0f32, 1f32)? * &live)?;
                        if approx {
                            let m_beta = (sigmoid(&(s.broadcast_sub(&be)? / *temperature)?)? * &live)?;
                            l_approx.push(average(&m_beta)?);
                            w_low = Some((m_beta.affine(-1.0, 1.0)? * &live)?);
                        }
                        let reduced = (&hard_keep * s.broadcast_lt(&be.detach())?.to_dtype(DType::F32)?)?;
                        (hard_keep, reduced)
                    }
                    Masking::Hard { theta, beta, .. } => {
                        let keep = match theta {
                            Some(th) => (s.ge(th[l])?.to_dtype(DType::F32)?.broadcast_add(&cls)?.clamp(0f32, 1f32)? * &live)?,
                            None => live.clone(),
                        };
                        let reduced = match (beta, approx) {
                            (Some(be), true) => (&keep * s.lt(be[l])?.to_dtype(DType::F32)?)?,
                            _ => keep.zeros_like()?,
                        };
                        keep_masks.push(keep.clone());
                        if approx && beta.is_some() {
                            w_low = Some(reduced.clone());
                        }
                        (keep, reduced)
                    }
                    Masking::Ratio { keep } => {
                        let keep = top_share(&s, &live, keep[l])?;
                        keep_masks.push(keep.clone());
                        let reduced = keep.zeros_like()?;
                        (keep, reduced)
                    }
                };
                let mut keep_v = hard_keep.to_vec2::<f32>()?;
                let mut hard_keep = hard_keep;
                let mut merged_flags = vec![];
                if matches!(plan.masking, Masking::Hard { theta: Some(_), merge: true, .. }) {
                    let (slot, weight, flags) = merge_slots(&live, &mut keep_v)?;
                    merged_flags = flags;
                    hard_keep = (hard_keep + &slot)?;
                    if let Some(last) = keep_masks.last_mut() {
                        *last = hard_keep.clone();
                    }
                    merge = Some((slot, weight));
                }
                let red_v = reduced.sum(1)?.to_vec1::<f32>()?;
                let orig = |j: usize| if plan.physical { positions[j] } else { j };
                let kept: Vec<Vec<usize>> = keep_v.iter().map(|row| row.iter().enumerate().filter(|(_, &k)| k > 0.5).map(|(j, _)| orig(j)).collect()).collect();
                traces.push(LayerTrace {
                    entering: live.sum(1)?.to_vec1::<f32>()?.iter().map(|&v| v.round() as usize).collect(),
                    kept,
                    reduced: red_v.iter().map(|&v| v.round() as usize).collect(),
                    merged: merged_flags,
                });
                if matches!(plan.masking, Masking::Hard { theta: Some(_), .. } | Masking::Ratio { .. }) {
                    if plan.physical {
                        let idx: Vec<u32> = keep_v[0].iter().enumerate().filter(|(_, &k)| k > 0.5).map(|(j, _)| j as u32).collect();
                        positions = idx.iter().map(|&j| positions[j as usize]).collect();
                        keep_idx = Some(Tensor::from_vec(idx, positions.len(), &dev)?);
                    } else {
                        live = hard_keep;
                    }
                }
                score = Some(s);
            }
            if let Some(s) = score {
                scores_out.push(s);
            }

            // The rest of the layer.
            let p = self.dropout_p(&probs, self.cfg.attention_probs_dropout_prob, ctx)?;
            let a = self.dropout(&layer.attn_out.forward(&self.merge_heads(&fused::batched_matmul(&p, &v, false)?)?)?, ctx)?;
            let mut z = (a + &x)?;
            if let Some((slot, weight)) = &merge {
                z = merged(&z, slot, weight)?;
            }
            if let Some(idx) = &keep_idx {
                z = gather(&z, idx)?;
                live = gather(&live, idx)?;
                w_low = w_low.map(|w| gather(&w, idx)).transpose()?;
            }
            let ln = |y: &Tensor, norm: &super::bert::LayerNorm| -> Result<Tensor> {
                if approx { approx::fused::layer_norm(y, &norm.gamma, &norm.beta) } else { Ok(norm.forward(y)?) }
            };
            let h = ln(&z, &layer.attn_norm)?;
            let u = layer.ffn_in.forward(&h)?;
            let g = if approx { approx::fused::gelu(&u, w_low.as_ref())? } else { fused::gelu(&u)? };
            let f = self.dropout(&layer.ffn_out.forward(&g)?, ctx)?;
            x = ln(&(f + h)?, &layer.ffn_norm)?;
            if let Some(m) = out_scale {
                x = x.broadcast_mul(&m.unsqueeze(2)?)?;
            }
            w_low_prev = w_low;
        }

        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let d = self.head.pooler.forward(&cls)?;
        let pooled = if approx { approx::tanh(&d)? } else { d.tanh()? };
        let logits = match &self.head.classifier {
            Some(c) => Some(c.forward(&self.dropout(&pooled, ctx)?)?),
            None => None,
        };
        let mean = |v: Vec<Tensor>| -> Result<Option<Tensor>> {
            if v.is_empty() { Ok(None) } else { let k = v.len() as f64; Ok(Some((Tensor::stack(&v, 0)?.sum_all()? / k)?)) }
        };
        Ok(ForwardOutput {
            base: BertOutput { hidden: x, pooled, logits, attentions },
            scores: scores_out,
            keep_masks,
            layers: traces,
            l_prune: mean(l_prune)?,
            l_approx: mean(l_approx)?,
        })
    }
}

/// Where each example's merged token goes and what it averages: the
/// first live position this layer prunes becomes a kept slot (added to
/// `keep`), and the weights are 1 on the pruned tokens. (b, seq) each,
/// and per example whether it has a slot (not if it prunes nothing).
fn merge_slots(live: &Tensor, keep: &mut [Vec<f32>]) -> Result<(Tensor, Tensor, Vec<bool>)> {
    let (b, seq) = live.dims2()?;
    let lv = live.to_vec2::<f32>()?;
    let mut slot = vec![0f32; b * seq];
    let mut pruned = vec![0f32; b * seq];
    let mut flags = vec![false; b];
    for (i, (alive, kept)) in lv.iter().zip(keep.iter_mut()).enumerate() {
        let gone: Vec<usize> = (0..seq).filter(|&j| alive[j] > 0.5 && kept[j] < 0.5).collect();
        for &j in &gone {
            pruned[i * seq + j] = 1.0;
        }
        if let Some(&j) = gone.first() {
            slot[i * seq + j] = 1.0;
            kept[j] = 1.0;
            flags[i] = true;
        }
    }
    let slot = Tensor::from_vec(slot, (b, seq), live.device())?;
    let weight = Tensor::from_vec(pruned, (b, seq), live.device())?;
    Ok((slot, weight, flags))
}

/// `z` (b, seq, d) with each example's slot row replaced by the
/// `weight`-weighted mean of its rows.
fn merged(z: &Tensor, slot: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let total = weight.sum_keepdim(1)?.clamp(1e-12f32, f32::MAX)?; // (b, 1)
    let mean = weight.broadcast_div(&total)?.unsqueeze(1)?.matmul(&z.contiguous()?)?; // (b, 1, d)
    let slot = slot.unsqueeze(2)?;
    Ok((z.broadcast_mul(&slot.affine(-1.0, 1.0)?)? + slot.broadcast_mul(&mean)?)?)
}

/// Keep mask (b, seq) of the round(share · n) live tokens with the highest
/// scores per row, [CLS] first and always; ties go to the earlier position.
fn top_share(s: &Tensor, live: &Tensor, share: f64) -> Result<Tensor> {
    let (sv, lv) = (s.to_vec2::<f32>()?, live.to_vec2::<f32>()?);
    let mut out = Vec::with_capacity(sv.len() * sv.first().map_or(0, Vec::len));
    for (row, alive) in sv.iter().zip(&lv) {
        let mut rest: Vec<usize> = (1..row.len()).filter(|&j| alive[j] > 0.5).collect();
        let k = ((share * (rest.len() + 1) as f64).round() as usize).max(1);
        rest.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let mut keep = vec![0f32; row.len()];
        keep[0] = 1.0;
        for &j in rest.iter().take(k - 1) {
            keep[j] = 1.0;
        }
        out.extend(keep);
    }
    Ok(Tensor::from_vec(out, s.dims2()?, s.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_row_is_the_pruned_rows_mean_and_the_rest_stay() {
        let dev = Device::Cpu;
        // One example, four live tokens, two dimensions; layer keeps 0 and 2.
        let z = Tensor::new(&[[[1f32, 2.], [3., 5.], [7., 11.], [13., 17.]]], &dev).unwrap();
        let live = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 1., 0.]], &dev).unwrap();
        let mut keep = vec![vec![1f32, 0., 1., 0.], vec![1., 1., 1., 0.]];
        let (slot, weight, flags) = merge_slots(&live, &mut keep).unwrap();
        assert_eq!(keep, vec![vec![1f32, 1., 1., 0.], vec![1., 1., 1., 0.]]);
        assert_eq!(slot.to_vec2::<f32>().unwrap(), vec![vec![0f32, 1., 0., 0.], vec![0.; 4]]);
        assert_eq!(flags, vec![true, false], "the second example prunes nothing: no merged token");
        let out = merged(&z, &slot.narrow(0, 0, 1).unwrap(), &weight.narrow(0, 0, 1).unwrap()).unwrap().to_vec3::<f32>().unwrap();
        // The mean of rows 1 and 3.
        let want = [(3. + 13.) / 2., (5. + 17.) / 2.];
        assert!((out[0][1][0] - want[0]).abs() < 1e-5 && (out[0][1][1] - want[1]).abs() < 1e-5, "{:?}", out[0][1]);
        assert_eq!(out[0][0], vec![1f32, 2.]);
        assert_eq!(out[0][2], vec![7f32, 11.]);
    }
}
