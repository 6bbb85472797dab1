//! Run configuration: a YAML file, overridden by command-line flags, resolved
//! once into a typed struct and saved next to the run's outputs.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default model: a real pretrained BERT (6 layers, hidden 384).
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Everything `finetune` needs. Field names are the YAML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// A model directory or a Hugging Face hub id.
    pub model: String,
    /// GLUE task name (sst2, mrpc, rte, stsb, cola, qnli, qqp, mnli, wnli).
    pub task: String,
    /// A GLUE root (holding SST-2/, MRPC/, …) or one task's folder.
    pub data_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub max_seq_len: usize,
    pub seed: u64,
    /// Use only the first N training examples.
    pub limit: Option<usize>,
    /// Use only the first N dev examples when evaluating during training.
    pub eval_limit: Option<usize>,
    /// Keep the 30k-row word-embedding table fixed (20x cheaper optimiser step).
    pub freeze_word_embeddings: bool,
    /// Write a resumable checkpoint every N optimiser steps (and each epoch end).
    pub save_every: usize,
    /// Evaluate on dev every N steps as well as at each epoch end (0 = epochs only).
    pub eval_every: usize,
    /// Append a metrics line every N steps.
    pub log_every: usize,
    /// LengthDrop (LAT, with PoWER-BERT's selection): on half the batches,
    /// after each layer keep only the highest-scoring share 1 − U(0, p) of
    /// the live tokens (a random length per layer and batch), so that the
    /// model learns to work on what pruning leaves. In [0, 1); 0 is off.
    pub length_drop: f64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            model: DEFAULT_MODEL.into(),
            task: "sst2".into(),
            data_dir: PathBuf::from("data/polarity"),
            epochs: 3,
            batch_size: 32,
            learning_rate: 5e-5,
            warmup_ratio: 0.06,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            max_seq_len: 128,
            seed: 42,
            limit: None,
            eval_limit: None,
            freeze_word_embeddings: true,
            save_every: 500,
            eval_every: 0,
            log_every: 20,
            length_drop: 0.0,
        }
    }
}

impl FinetuneConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate must be a positive number");
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio must be in [0, 1)");
        }
        if self.max_seq_len < 8 || self.max_seq_len > 512 {
            return bad("max_seq_len must be between 8 and 512");
        }
        if self.save_every == 0 || self.log_every == 0 {
            return bad("save_every and log_every must be at least 1");
        }
        if !(0.0..1.0).contains(&self.length_drop) {
            return Err(Error::Config(format!("length_drop is {}, not in [0, 1)", self.length_drop)));
        }
        Ok(())
    }
}

/// Reads a YAML document into `T`; unknown keys are errors naming the key.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::io::read_to_string(path)?;
    serde_yaml_ng::from_str(&text).map_err(|e| {
        let field = e.to_string().split('`').nth(1).unwrap_or("<document>").to_string();
        Error::Field { file: path.to_path_buf(), field, msg: e.to_string() }
    })
}

pub fn save_yaml<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| Error::Config(e.to_string()))?;
    crate::io::write_atomic(path, text.as_bytes())
}
