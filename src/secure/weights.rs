//! BERT weights as plain `f32` vectors, loaded from a Hugging Face
//! `model.safetensors` (names with or without the `bert.` prefix, plus
//! `classifier.weight/bias`), and the client's plaintext embedding step.
//!
//! This module knows nothing of tensors libraries: the engine must build and
//! test without candle.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("failed to read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("tensor `{0}` is missing (tried with and without the `bert.` prefix)")]
    Missing(String),
    #[error("tensor `{name}` has shape {got:?}, expected {want:?}")]
    Shape { name: String, got: Vec<usize>, want: Vec<usize> },
    #[error("tensor `{name}` has dtype {dtype}, expected a float type")]
    Dtype { name: String, dtype: String },
    #[error("token id {id} at position {pos} is outside the vocabulary of {vocab}")]
    TokenId { id: u32, pos: usize, vocab: usize },
    #[error("{n} tokens exceed the {max} positions of the model")]
    TooLong { n: usize, max: usize },
}

/// The fields of a Hugging Face BERT `config.json` the engine needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_type_vocab() -> usize {
    2
}

fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads `config.json`; unknown fields are ignored.
    pub fn from_json_file(path: &Path) -> Result<Self, WeightsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WeightsError::Io { path: path.into(), source })?;
        serde_json::from_str(&text)
            .map_err(|e| WeightsError::Format { path: path.into(), msg: e.to_string() })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A dense layer in Hugging Face layout: `weight` is out × in, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub in_dim: usize,
    pub out_dim: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormWeights {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub attn_out: Dense,
    pub attn_ln: LayerNormWeights,
    pub ffn_in: Dense,
    pub ffn_out: Dense,
    pub ffn_ln: LayerNormWeights,
}

/// Word, position and token-type tables (rows of `hidden_size`) and their
/// LayerNorm: the client's part of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingWeights {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub ln: LayerNormWeights,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BertWeights {
    pub config: BertConfig,
    pub embeddings: EmbeddingWeights,
    pub layers: Vec<LayerWeights>,
    pub pooler: Dense,
    /// `num_labels × hidden` (1 label for regression).
    pub classifier: Dense,
}

/// Reads named tensors with shape checks and dtype conversion.
struct Reader<'a> {
    st: SafeTensors<'a>,
}

impl Reader<'_> {
    fn get(&self, name: &str, want: &[usize]) -> Result<Vec<f32>, WeightsError> {
        let view = self
            .st
            .tensor(name)
            .or_else(|_| self.st.tensor(&format!("bert.{name}")))
            .map_err(|_| WeightsError::Missing(name.to_string()))?;
        if view.shape() != want {
            return Err(WeightsError::Shape {
                name: name.into(),
                got: view.shape().to_vec(),
                want: want.to_vec(),
            });
        }
        let d = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => return Err(WeightsError::Dtype { name: name.into(), dtype: format!("{other:?}") }),
        })
    }

    /// `LayerNorm.weight/bias`, or the older `gamma/beta` names.
    fn ln(&self, prefix: &str, d: usize) -> Result<LayerNormWeights, WeightsError> {
        let gamma = self
            .get(&format!("{prefix}.weight"), &[d])
            .or_else(|_| self.get(&format!("{prefix}.gamma"), &[d]))?;
        let beta = self
            .get(&format!("{prefix}.bias"), &[d])
            .or_else(|_| self.get(&format!("{prefix}.beta"), &[d]))?;
        Ok(LayerNormWeights { gamma, beta })
    }

    fn dense(&self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Dense, WeightsError> {
        Ok(Dense {
            in_dim,
            out_dim,
            weight: self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias: self.get(&format!("{prefix}.bias"), &[out_dim])?,
        })
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: renormalise
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

impl BertWeights {
    /// Loads `model.safetensors`; the number of labels comes from
    /// `classifier.weight`.
    pub fn from_safetensors_file(path: &Path, config: BertConfig) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
        Self::from_safetensors_bytes(&bytes, config).map_err(|e| match e {
            WeightsError::Format { msg, .. } => WeightsError::Format { path: path.into(), msg },
            other => other,
        })
    }

    pub fn from_safetensors_bytes(bytes: &[u8], config: BertConfig) -> Result<Self, WeightsError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Format { path: PathBuf::new(), msg: e.to_string() })?;
        let r = Reader { st };
        let c = &config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let embeddings = EmbeddingWeights {
            word: r.get("embeddings.word_embeddings.weight", &[c.vocab_size, d])?,
            position: r.get("embeddings.position_embeddings.weight", &[c.max_position_embeddings, d])?,
            token_type: r.get("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, d])?,
            ln: r.ln("embeddings.LayerNorm", d)?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(LayerWeights {
                query: r.dense(&format!("{p}.attention.self.query"), d, d)?,
                key: r.dense(&format!("{p}.attention.self.key"), d, d)?,
                value: r.dense(&format!("{p}.attention.self.value"), d, d)?,
                attn_out: r.dense(&format!("{p}.attention.output.dense"), d, d)?,
                attn_ln: r.ln(&format!("{p}.attention.output.LayerNorm"), d)?,
                ffn_in: r.dense(&format!("{p}.intermediate.dense"), d, f)?,
                ffn_out: r.dense(&format!("{p}.output.dense"), f, d)?,
                ffn_ln: r.ln(&format!("{p}.output.LayerNorm"), d)?,
            });
        }
        let pooler = r.dense("pooler.dense", d, d)?;
        let labels = r
            .st
            .tensor("classifier.weight")
            .map_err(|_| WeightsError::Missing("classifier.weight".into()))?
            .shape()
            .first()
            .copied()
            .unwrap_or(0);
        let classifier = r.dense("classifier", d, labels)?;
        Ok(BertWeights { config, embeddings, layers, pooler, classifier })
    }

    /// The weights in safetensors form (HF names, no prefix, f32): for
    /// tests and fixtures.
    pub fn to_safetensors_bytes(&self) -> Vec<u8> {
        let mut named: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        let c = &self.config;
        let d = c.hidden_size;
        let e = &self.embeddings;
        named.push(("embeddings.word_embeddings.weight".into(), vec![c.vocab_size, d], &e.word));
        named.push(("embeddings.position_embeddings.weight".into(), vec![c.max_position_embeddings, d], &e.position));
        named.push(("embeddings.token_type_embeddings.weight".into(), vec![c.type_vocab_size, d], &e.token_type));
        fn push_ln<'a>(named: &mut Vec<(String, Vec<usize>, &'a [f32])>, p: String, ln: &'a LayerNormWeights) {
            named.push((format!("{p}.weight"), vec![ln.gamma.len()], &ln.gamma));
            named.push((format!("{p}.bias"), vec![ln.beta.len()], &ln.beta));
        }
        fn push_dense<'a>(named: &mut Vec<(String, Vec<usize>, &'a [f32])>, p: String, w: &'a Dense) {
            named.push((format!("{p}.weight"), vec![w.out_dim, w.in_dim], &w.weight));
            named.push((format!("{p}.bias"), vec![w.out_dim], &w.bias));
        }
        push_ln(&mut named, "embeddings.LayerNorm".into(), &e.ln);
        for (l, w) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            push_dense(&mut named, format!("{p}.attention.self.query"), &w.query);
            push_dense(&mut named, format!("{p}.attention.self.key"), &w.key);
            push_dense(&mut named, format!("{p}.attention.self.value"), &w.value);
            push_dense(&mut named, format!("{p}.attention.output.dense"), &w.attn_out);
            push_ln(&mut named, format!("{p}.attention.output.LayerNorm"), &w.attn_ln);
            push_dense(&mut named, format!("{p}.intermediate.dense"), &w.ffn_in);
            push_dense(&mut named, format!("{p}.output.dense"), &w.ffn_out);
            push_ln(&mut named, format!("{p}.output.LayerNorm"), &w.ffn_ln);
        }
        push_dense(&mut named, "pooler.dense".into(), &self.pooler);
        push_dense(&mut named, "classifier".into(), &self.classifier);
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
            .into_iter()
            .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views = bytes.iter().map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).expect("consistent shape"))
        });
        safetensors::serialize(views, None).expect("serialising in-memory tensors")
    }

    /// A random model for tests and benchmarks: dense weights uniform with
    /// standard deviation 1/√fan_in (activations stay O(1)), biases and β
    /// small, γ near 1, embeddings O(1).
    pub fn random(config: BertConfig, num_labels: usize, seed: u64) -> Self {
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let c = &config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let embeddings = EmbeddingWeights {
            word: uni(rng, c.vocab_size * d, 1.0),
            position: uni(rng, c.max_position_embeddings * d, 0.3),
            token_type: uni(rng, c.type_vocab_size * d, 0.1),
            ln: random_ln(rng, d),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|_| LayerWeights {
                query: random_dense(rng, d, d),
                key: random_dense(rng, d, d),
                value: random_dense(rng, d, d),
                attn_out: random_dense(rng, d, d),
                attn_ln: random_ln(rng, d),
                ffn_in: random_dense(rng, d, f),
                ffn_out: random_dense(rng, f, d),
                ffn_ln: random_ln(rng, d),
            })
            .collect();
        let pooler = random_dense(rng, d, d);
        let classifier = random_dense(rng, d, num_labels);
        BertWeights { config, embeddings, layers, pooler, classifier }
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.out_dim
    }

    /// The client's plaintext step: word + position + token-type embeddings
    /// and the embedding LayerNorm (with the config's ε, in f32 as the float
    /// model computes it). Returns n × hidden, row-major.
    pub fn embed(&self, ids: &[u32], type_ids: Option<&[u32]>) -> Result<Vec<f32>, WeightsError> {
        let c = &self.config;
        let d = c.hidden_size;
        if ids.len() > c.max_position_embeddings {
            return Err(WeightsError::TooLong { n: ids.len(), max: c.max_position_embeddings });
        }
        let e = &self.embeddings;
        let mut out = Vec::with_capacity(ids.len() * d);
        for (pos, &id) in ids.iter().enumerate() {
            let t = type_ids.map_or(0, |t| t[pos]) as usize;
            if id as usize >= c.vocab_size {
                return Err(WeightsError::TokenId { id, pos, vocab: c.vocab_size });
            }
            if t >= c.type_vocab_size {
                return Err(WeightsError::TokenId { id: t as u32, pos, vocab: c.type_vocab_size });
            }
            let row: Vec<f32> = (0..d)
                .map(|k| e.word[id as usize * d + k] + e.position[pos * d + k] + e.token_type[t * d + k])
                .collect();
            let mu = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|x| (x - mu) * (x - mu)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + c.layer_norm_eps as f32).sqrt();
            out.extend(row.iter().enumerate().map(|(k, x)| (x - mu) * inv * e.ln.gamma[k] + e.ln.beta[k]));
        }
        Ok(out)
    }
}

fn uni(rng: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-a..a)).collect()
}

fn random_dense(rng: &mut ChaCha8Rng, in_dim: usize, out_dim: usize) -> Dense {
    Dense {
        in_dim,
        out_dim,
        weight: uni(rng, in_dim * out_dim, (3.0 / in_dim as f32).sqrt()),
        bias: uni(rng, out_dim, 0.1),
    }
}

fn random_ln(rng: &mut ChaCha8Rng, d: usize) -> LayerNormWeights {
    LayerNormWeights { gamma: uni(rng, d, 0.2).into_iter().map(|g| 1.0 + g).collect(), beta: uni(rng, d, 0.1) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny BERT: 2 layers, hidden 16, 2 heads, FFN 32.
    pub(crate) fn tiny_config() -> BertConfig {
        BertConfig {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 32,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    #[test]
    fn safetensors_round_trip_with_and_without_prefix() {
        let w = BertWeights::random(tiny_config(), 3, 5);
        let bytes = w.to_safetensors_bytes();
        let back = BertWeights::from_safetensors_bytes(&bytes, tiny_config()).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.num_labels(), 3);

        // The same tensors under `bert.` (all but the classifier), as
        // BertForSequenceClassification saves them.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (if n.starts_with("classifier") { n } else { format!("bert.{n}") }, v))
            .collect();
        let bytes2 = safetensors::serialize(renamed, None).unwrap();
        assert_eq!(BertWeights::from_safetensors_bytes(&bytes2, tiny_config()).unwrap(), w);
    }

    #[test]
    fn loading_errors_name_the_tensor() {
        let w = BertWeights::random(tiny_config(), 2, 5);
        let mut cfg = tiny_config();
        cfg.intermediate_size = 64;
        let err = BertWeights::from_safetensors_bytes(&w.to_safetensors_bytes(), cfg).unwrap_err();
        assert!(err.to_string().contains("encoder.layer.0.intermediate.dense.weight"), "{err}");
        let mut cfg = tiny_config();
        cfg.num_hidden_layers = 3;
        let err = BertWeights::from_safetensors_bytes(&w.to_safetensors_bytes(), cfg).unwrap_err();
        assert!(matches!(err, WeightsError::Missing(ref n) if n.starts_with("encoder.layer.2")), "{err}");
    }

    #[test]
    fn config_json_and_embeddings() {
        let json = r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32,
            "hidden_act": "gelu", "model_type": "bert"}"#;
        let c: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c, tiny_config());
        let w = BertWeights::random(c, 2, 1);
        let e = w.embed(&[1, 7, 3], None).unwrap();
        assert_eq!(e.len(), 3 * 16);
        // Each row is LayerNorm'd: with γ = 1, β = 0 it would have mean 0.
        assert!(w.embed(&[50], None).is_err());
        assert!(w.embed(&[1; 33], None).is_err());
    }

    #[test]
    fn half_precision_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }
}
