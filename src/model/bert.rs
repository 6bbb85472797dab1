//! Our BERT in candle: post-LayerNorm encoder, pooler and a task head, with
//! every op differentiable (candle's own fused LayerNorm and softmax have no
//! backward, STYLE.md; ours in [`super::fused`] do).
//!
//! `h = LN(x + Attn(x)); y = LN(h + FFN(h))`, FFN = `W2 · GELU(W1 · h)`.

use candle_core::{DType, Device, Module, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::BertConfig;
use super::fused;
use super::params::Params;
use crate::error::Result;

/// `y = x Wᵀ + b`.
///
/// # Shapes
/// x: (..., in) → (..., out); W: (out, in); b: (out).
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    fn load(p: &Params, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            weight: p.get(&format!("{name}.weight"), &[out, inp])?,
            bias: p.get(&format!("{name}.bias"), &[out])?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inp = *dims.last().expect("linear input has a last dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = fused::linear(&x.reshape((rows, inp))?, &self.weight, &self.bias).map_err(candle_core::Error::wrap)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

/// LayerNorm over the last dim, one op with its own backward.
#[derive(Clone)]
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    fn load(p: &Params, name: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            gamma: p.get(&format!("{name}.weight"), &[d])?,
            beta: p.get(&format!("{name}.bias"), &[d])?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::layer_norm(x, &self.gamma, &self.beta, self.eps).map_err(candle_core::Error::wrap)
    }
}

#[derive(Clone)]
pub struct Embeddings {
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub norm: LayerNorm,
}

#[derive(Clone)]
pub struct Layer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub ffn_norm: LayerNorm,
}

/// The head on top of the pooled [CLS] vector: classes, or one score (STS-B).
#[derive(Clone)]
pub struct Head {
    pub pooler: Linear,
    pub classifier: Option<Linear>,
}

#[derive(Clone)]
pub struct Bert {
    pub cfg: BertConfig,
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    pub head: Head,
}

/// Per-call switches. `dropout` carries the RNG that draws the masks, so a
/// training step is a pure function of (weights, batch, rng seed).
pub struct ForwardCtx<'a> {
    pub dropout: Option<&'a mut ChaCha8Rng>,
    pub output_attentions: bool,
}

impl ForwardCtx<'_> {
    pub fn eval() -> Self {
        ForwardCtx { dropout: None, output_attentions: false }
    }
}

pub struct BertOutput {
    /// (batch, seq, hidden)
    pub hidden: Tensor,
    /// (batch, hidden) after the pooler's tanh.
    pub pooled: Tensor,
    /// (batch, num_labels) when the model has a head.
    pub logits: Option<Tensor>,
    /// One (batch, heads, seq, seq) tensor per layer if requested.
    pub attentions: Vec<Tensor>,
}

/// Inputs of one padded batch.
///
/// # Shapes
/// all (batch, seq); `mask` is 1.0 for real tokens and 0.0 for padding.
pub struct Inputs {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub mask: Tensor,
}

impl Inputs {
    pub fn new(ids: &[u32], type_ids: &[u32], mask: &[u32], batch: usize, seq: usize) -> Result<Self> {
        let dev = &Device::Cpu;
        let maskf: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
        Ok(Inputs {
            ids: Tensor::from_slice(ids, (batch, seq), dev)?,
            type_ids: Tensor::from_slice(type_ids, (batch, seq), dev)?,
            mask: Tensor::from_vec(maskf, (batch, seq), dev)?,
        })
    }
}

impl Bert {
    /// Builds the model from `params`; `num_labels` > 0 requires (or, if
    /// absent, the caller must first initialise) `classifier.*`.
    pub fn new(cfg: &BertConfig, p: &Params, num_labels: Option<usize>) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let embeddings = Embeddings {
            word: p.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?,
            position: p.get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, d])?,
            token_type: p.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, d])?,
            norm: LayerNorm::load(p, "embeddings.LayerNorm", d, eps)?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let n = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: Linear::load(p, &format!("{n}.attention.self.query"), d, d)?,
                    key: Linear::load(p, &format!("{n}.attention.self.key"), d, d)?,
                    value: Linear::load(p, &format!("{n}.attention.self.value"), d, d)?,
                    attn_out: Linear::load(p, &format!("{n}.attention.output.dense"), d, d)?,
                    attn_norm: LayerNorm::load(p, &format!("{n}.attention.output.LayerNorm"), d, eps)?,
                    ffn_in: Linear::load(p, &format!("{n}.intermediate.dense"), cfg.intermediate_size, d)?,
                    ffn_out: Linear::load(p, &format!("{n}.output.dense"), d, cfg.intermediate_size)?,
                    ffn_norm: LayerNorm::load(p, &format!("{n}.output.LayerNorm"), d, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = match num_labels {
            Some(k) => Some(Linear::load(p, "classifier", k, d)?),
            None => None,
        };
        let head = Head { pooler: Linear::load(p, "pooler.dense", d, d)?, classifier };
        Ok(Bert { cfg: cfg.clone(), embeddings, layers, head })
    }

    pub fn num_heads(&self) -> usize {
        self.cfg.num_attention_heads
    }

    /// Word + position + token-type embeddings, then LayerNorm.
    ///
    /// # Shapes
    /// ids, type_ids: (batch, seq) → (batch, seq, hidden)
    pub fn embed(&self, inputs: &Inputs, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, t) = inputs.ids.dims2()?;
        let e = &self.embeddings;
        let word = e.word.index_select(&inputs.ids.flatten_all()?, 0)?;
        let ty = e.token_type.index_select(&inputs.type_ids.flatten_all()?, 0)?;
        let d = self.cfg.hidden_size;
        let pos = e.position.narrow(0, 0, t)?.unsqueeze(0)?;
        let x = (word + ty)?.reshape((b, t, d))?.broadcast_add(&pos)?;
        let x = e.norm.forward(&x)?;
        self.dropout(&x, ctx)
    }

    pub(crate) fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let h = self.num_heads();
        Ok(x.reshape((b, t, h, self.cfg.head_dim()))?.transpose(1, 2)?.contiguous()?)
    }

    pub(crate) fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, t, dh) = x.dims4()?;
        Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * dh))?)
    }

    pub fn dropout(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.dropout_p(x, self.cfg.hidden_dropout_prob, ctx)
    }

    pub(crate) fn dropout_p(&self, x: &Tensor, p: f64, ctx: &mut ForwardCtx) -> Result<Tensor> {
        match ctx.dropout.as_deref_mut() {
            Some(rng) if p > 0.0 => {
                // Block-filled u32 draws compared with p·2³²: a fifth of the
                // cost of one f64 draw per element (millions per step).
                let cut = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
                let mut bits = vec![0u32; x.elem_count()];
                rng.fill(&mut bits[..]);
                fused::dropout(x, bits.iter().map(|&b| b >= cut).collect(), p)
            }
            _ => Ok(x.clone()),
        }
    }
}

/// Additive attention bias: 0 for real keys, a large negative for padding.
///
/// # Shapes
/// mask: (batch, seq) → (batch, 1, 1, seq)
pub fn attention_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    Ok(((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?)
}
