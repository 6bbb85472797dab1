//! The pruned BERT forward over the ring Z_{2^ℓ} — the engine that runs the
//! model exactly as a two-party protocol over additive shares would compute
//! it, in cleartext.
//!
//! - [`backend`]: the protocol primitives (the [`backend::Backend`] trait)
//!   the forward and the approximations are written over.
//! - [`plain`]: the cleartext backend — the engine; counts primitives,
//!   detects overflow.
//! - [`bert`]: the forward ([`bert::forward_on`] over any backend,
//!   [`bert::forward`] on the plain one), the encoded model and the config.
//! - [`mod@reference`]: the same forward in f64 with the float twins, to hold
//!   the engine to.
//! - [`weights`]: BERT weights from `model.safetensors`, the client's
//!   embedding step, random models for tests.
//! - [`report`]: per-(operator class, layer) tallies of costs and overflows.
//!
//! ```
//! use cipherprune::fixed::{Ring, Truncation};
//! use cipherprune::secure::bert::{forward, EngineConfig, EngineModel};
//! use cipherprune::secure::weights::{BertConfig, BertWeights};
//!
//! let config = BertConfig {
//!     vocab_size: 30, hidden_size: 8, num_hidden_layers: 2, num_attention_heads: 2,
//!     intermediate_size: 16, max_position_embeddings: 16, type_vocab_size: 2,
//!     layer_norm_eps: 1e-12,
//! };
//! let weights = BertWeights::random(config, 2, 0);
//! let cfg = EngineConfig {
//!     ring: Ring::BOLT,
//!     truncation: Truncation::Exact,
//!     thetas: Some(vec![0.05, 0.05]),
//!     betas: Some(vec![0.1, 0.1]),
//!     exponents: None, // p = 1: the share score
//!     merge: false,    // pruned rows are dropped
//! };
//! let model = EngineModel::from_weights(&weights, &cfg.ring);
//! let ids = [1, 5, 7, 9, 2];
//! let emb = weights.embed(&ids, None).unwrap(); // the client's plaintext step
//! let out = forward(&model, &cfg, &emb, ids.len(), 0);
//! assert_eq!(out.logits.len(), 2);
//! assert!(out.kept_per_layer[1].contains(&0)); // [CLS] is never pruned
//! assert_eq!(out.overflow.count(), 0);
//! ```

pub mod backend;
pub mod bert;
pub mod plain;
pub mod reference;
pub mod report;
pub mod run;
pub mod weights;
