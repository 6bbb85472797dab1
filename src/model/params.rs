//! Named weights: frozen tensors plus trainable `Var`s.
//!
//! Names follow Hugging Face's `BertModel` (no `bert.` prefix internally);
//! checkpoints are written with the `BertForSequenceClassification` layout
//! (`bert.` prefix, `classifier.*` at the top) so other tools can load them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The word-embedding table: frozen by default because AdamW over it costs
/// 20x the rest of the step (STYLE.md) and it barely moves in fine-tuning.
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

pub struct Params {
    tensors: BTreeMap<String, Tensor>,
    vars: BTreeMap<String, Var>,
    source: PathBuf,
}

impl Params {
    /// Reads a safetensors file, stripping a `bert.` prefix and dropping
    /// buffers such as `position_ids` and unrelated heads (`cls.*`).
    pub fn load(path: &Path) -> Result<Self> {
        let raw = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            Error::Model(format!("cannot read safetensors `{}`: {e}", path.display()))
        })?;
        let mut tensors = BTreeMap::new();
        for (name, t) in raw {
            let name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
            if name.ends_with("position_ids") || name.starts_with("cls.") {
                continue;
            }
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
        Ok(Params { tensors, vars: BTreeMap::new(), source: path.to_path_buf() })
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>, source: &str) -> Self {
        Params {
            tensors: tensors.into_iter().collect(),
            vars: BTreeMap::new(),
            source: PathBuf::from(source),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name) || self.tensors.contains_key(name)
    }

    /// The tensor `name`, checked against `shape`.
    ///
    /// # Errors
    /// Names the tensor and both shapes when it is missing or mis-shaped.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match self.vars.get(name) {
            Some(v) => v.as_tensor().clone(),
            None => self.tensors.get(name).cloned().ok_or_else(|| {
                Error::Model(format!(
                    "`{}`: missing tensor `{name}` (expected shape {shape:?})",
                    self.source.display()
                ))
            })?,
        };
        if t.dims() != shape {
            return Err(Error::Model(format!(
                "`{}`: tensor `{name}` has shape {:?}, expected {shape:?}",
                self.source.display(),
                t.dims()
            )));
        }
        Ok(t)
    }

    /// Inserts a freshly initialised tensor (normal, std 0.02, or zeros) when
    /// `name` is absent — used for a new classification head.
    pub fn init_if_missing(&mut self, name: &str, shape: &[usize], std: f64, rng: &mut ChaCha8Rng) -> Result<()> {
        if self.contains(name) {
            return Ok(());
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| (std * normal(rng)) as f32).collect();
        self.tensors.insert(name.to_string(), Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    }

    /// Turns every tensor accepted by `trainable` into a `Var`; the model built
    /// afterwards shares their storage, so optimiser updates are seen at once.
    pub fn make_trainable(&mut self, trainable: impl Fn(&str) -> bool) -> Result<()> {
        let names: Vec<String> = self.tensors.keys().filter(|n| trainable(n)).cloned().collect();
        for name in names {
            let t = self.tensors.remove(&name).expect("listed above");
            self.vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(())
    }

    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// All tensors by name, trainable or not.
    pub fn all(&self) -> BTreeMap<String, Tensor> {
        let mut out = self.tensors.clone();
        for (n, v) in &self.vars {
            out.insert(n.clone(), v.as_tensor().clone());
        }
        out
    }

    /// Writes `bert.`-prefixed names (classifier at top level) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let named: HashMap<String, Tensor> = self
            .all()
            .into_iter()
            .map(|(n, t)| {
                let n = if n.starts_with("classifier.") { n } else { format!("bert.{n}") };
                (n, t)
            })
            .collect();
        crate::io::write_atomic_with(path, |tmp| {
            candle_core::safetensors::save(&named, tmp).map_err(Error::from)
        })
    }

    /// Overwrites values (not identity) of already-present tensors, used on
    /// resume so that `Var`s held by the model see the restored weights.
    pub fn restore_from(&self, path: &Path) -> Result<()> {
        let other = Params::load(path)?;
        for (name, var) in &self.vars {
            let shape = var.dims().to_vec();
            var.set(&other.get(name, &shape)?)?;
        }
        Ok(())
    }
}

/// Standard normal by Box–Muller, so initialisation depends only on our seed.
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub fn seeded(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
