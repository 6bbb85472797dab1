//! The threshold file of DESIGN.md §6: one versioned YAML document per
//! (model, task) run, readable by people and by other MPC backends.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fixed::Ring;
use crate::model::BertConfig;

pub const FORMAT: &str = "cipherprune-thresholds/1";

pub const SCORE: &str = "S_l(i) = sum_heads sum_{live queries q} A_l[h,q,i] / (H*n^p_l), n = live tokens entering layer l, \
p_l = the layer's exponent (1: scores sum to 1; 0: they average 1); \
keep i iff S_l(i) >= theta_l ([CLS] always kept; pruning is cumulative); \
reduce kept i iff S_l(i) < beta_l (low-degree GELU in layer l, low-degree softmax row in layer l+1). \
In the ring: keep iff sum_h sum_q A >= round(theta_ring*H*n^p_l) (n public, so n^p_l is a public constant; exactly theta_ring*H*n at p = 1).";

pub const MERGE: &str = "merge: true: in each pruning layer the pruned tokens' rows z = attention output + input (before the LayerNorm) \
are replaced by one kept row, their mean, placed after the kept rows (at the first pruned position in a masked batch); \
in the ring: (sum of all rows - sum of kept rows) * round(2^s/k) truncated by s, k = the public number pruned.";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// Where the weights came from (a run directory or hub id).
    pub name: String,
    pub layers: usize,
    pub heads: usize,
    pub hidden: usize,
    /// sha256 of the model.safetensors these thresholds were learned with.
    pub weights_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSpec {
    pub bits: u32,
    pub frac: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerEntry {
    pub layer: usize,
    pub theta: f64,
    pub beta: f64,
    /// round(θ·2^s) and round(β·2^s) in the file's ring.
    pub theta_ring: i64,
    pub beta_ring: i64,
    /// p of the score this layer's θ and β compare with (files written
    /// before p existed have none: p = 1).
    #[serde(default = "one")]
    pub exponent: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approximations {
    pub high: Vec<String>,
    pub low: Vec<String>,
}

impl Default for Approximations {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Approximations {
            high: s(&["gelu: BOLT 0.5x+P4(|x|) on |x|<2.7, ReLU outside", "exp: BOLT a(p+b)^2+c, z<=13", "softmax: max, exp, 1/sum by 4 Newton steps", "layernorm: 1/sqrt by 3 Newton steps, no eps", "tanh: BOLT Q5 on |x|<=2.855"]),
            low: s(&["gelu: 0.5x+Q2(|x|) on |x|<2.2, ReLU outside", "exp: a0+a1*p, z<=7"]),
        }
    }
}

/// What the thresholds achieved when exported (the simulation's numbers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub split: String,
    pub examples: usize,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub tokens_kept_per_layer: Vec<f64>,
    pub reduced_per_layer: Vec<f64>,
    pub relative_work: f64,
    /// Absent in files written before the FLOPs view existed.
    #[serde(default)]
    pub relative_flops: Option<f64>,
    /// Online bytes and rounds of the two-party protocol over the
    /// unpruned model's, computed from the shapes (absent in older files).
    #[serde(default)]
    pub secure_bytes_ratio: Option<f64>,
    #[serde(default)]
    pub secure_rounds_ratio: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFile {
    pub format: String,
    pub model: ModelIdentity,
    pub task: String,
    pub score: String,
    pub temperature: f64,
    pub ring: RingSpec,
    pub layers: Vec<LayerEntry>,
    /// Each pruning layer's pruned tokens become one kept token, their mean
    /// after attention ([`MERGE`]); absent (false): they are dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge: bool,
    pub approximations: Approximations,
    pub measured: Option<Measured>,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

impl ThresholdFile {
    #[allow(clippy::too_many_arguments)]
    pub fn new(model: ModelIdentity, task: &str, temperature: f64, ring: Ring, theta: &[f64], beta: &[f64], exponent: &[f64], measured: Option<Measured>) -> Self {
        let s = ring.frac();
        let layers = theta
            .iter()
            .zip(beta)
            .zip(exponent)
            .enumerate()
            .map(|(layer, ((&t, &b), &p))| LayerEntry { layer, theta: t, beta: b, theta_ring: Ring::round_scaled(t, s) as i64, beta_ring: Ring::round_scaled(b, s) as i64, exponent: p })
            .collect();
        ThresholdFile {
            format: FORMAT.into(),
            model,
            task: task.into(),
            score: SCORE.into(),
            temperature,
            ring: RingSpec { bits: ring.bits(), frac: ring.frac() },
            layers,
            merge: false,
            approximations: Approximations::default(),
            measured,
        }
    }

    /// The same thresholds with pruned tokens merged ([`MERGE`], appended
    /// to `score` so the file says what it means).
    pub fn with_merge(mut self, merge: bool) -> Self {
        if merge && !self.merge {
            self.score = format!("{} {MERGE}", self.score);
        }
        self.merge = merge;
        self
    }

    pub fn thetas(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.theta).collect()
    }

    pub fn betas(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.beta).collect()
    }

    pub fn exponents(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.exponent).collect()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::config::save_yaml(path, self)
    }

    /// Reads and checks a file on its own: format, one entry per layer in
    /// order, β ≥ θ, ring integers consistent with the floats.
    pub fn load(path: &Path) -> Result<Self> {
        let f: ThresholdFile = crate::config::load_yaml(path)?;
        let bad = |field: String, msg: String| Err(Error::Field { file: path.to_path_buf(), field, msg });
        if f.format != FORMAT {
            return bad("format".into(), format!("`{}` is not `{FORMAT}`", f.format));
        }
        if f.layers.len() != f.model.layers {
            return bad("layers".into(), format!("{} entries for a {}-layer model", f.layers.len(), f.model.layers));
        }
        let ring = Ring::new(f.ring.bits, f.ring.frac).map_err(|e| Error::Field { file: path.to_path_buf(), field: "ring".into(), msg: e.to_string() })?;
        for (i, e) in f.layers.iter().enumerate() {
            if e.layer != i {
                return bad(format!("layers[{i}].layer"), format!("{} (expected {i})", e.layer));
            }
            if !(0.0..=1.0).contains(&e.exponent) {
                return bad(format!("layers[{i}].exponent"), format!("p = {} is not in [0, 1]", e.exponent));
            }
            if !(e.theta.is_finite() && e.beta.is_finite()) || e.beta < e.theta {
                return bad(format!("layers[{i}].beta"), format!("β = {} must be a number ≥ θ = {}", e.beta, e.theta));
            }
            for (name, v, r) in [("theta_ring", e.theta, e.theta_ring), ("beta_ring", e.beta, e.beta_ring)] {
                let want = Ring::round_scaled(v, ring.frac()) as i64;
                if r != want {
                    return bad(format!("layers[{i}].{name}"), format!("{r} but round(value·2^{}) = {want}", ring.frac()));
                }
            }
        }
        Ok(f)
    }

    /// Fails naming the first field that does not match the model.
    pub fn check_model(&self, path: &Path, cfg: &BertConfig, weights_sha256: &str) -> Result<()> {
        let m = &self.model;
        let checks: [(&str, String, String); 4] = [
            ("model.layers", m.layers.to_string(), cfg.num_hidden_layers.to_string()),
            ("model.heads", m.heads.to_string(), cfg.num_attention_heads.to_string()),
            ("model.hidden", m.hidden.to_string(), cfg.hidden_size.to_string()),
            ("model.weights_sha256", m.weights_sha256.clone(), weights_sha256.to_string()),
        ];
        for (field, file, model) in checks {
            if file != model {
                return Err(Error::Field { file: path.to_path_buf(), field: field.into(), msg: format!("the file says {file}, the model has {model}: these thresholds belong to another model") });
            }
        }
        Ok(())
    }
}
