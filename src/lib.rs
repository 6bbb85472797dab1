//! cipherprune: learn CipherPrune's token-pruning (θ) and polynomial-reduction
//! (β) thresholds for a BERT model on a GLUE task, and check accuracy on the
//! arithmetic a two-party protocol computes.
//!
//! Crate map (dependencies point one way):
//! - [`data`]: GLUE readers, metrics, tokenisation and batching.
//! - [`model`]: our BERT in candle (HF tensor names) and where models come from.
//! - [`train`]: the shared training loop, optimiser, evaluation, stages.
//! - [`run`]: a run directory loaded once for every command: model, task,
//!   data, thresholds, and the evaluation plans built from them.
//! - [`prune`]: thresholds, their file, the simulation and work accounting.
//! - [`fixed`], [`secure`], [`mpc`]: the ring, the engine's forward over a
//!   backend, and the two-party protocol.
//! - [`config`], [`io`], [`error`]: resolved YAML configs, atomic writes, typed errors.

pub mod config;
pub mod data;
pub mod error;
pub mod fixed;
pub mod io;
pub mod model;
pub mod mpc;
pub mod plot;
pub mod prune;
pub mod run;
pub mod secure;
pub mod train;

pub use error::{Error, Result};
