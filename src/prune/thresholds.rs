//! The learnable per-layer thresholds: θ_l directly, β_l = θ_l + softplus(δ_l)
//! so that β ≥ θ holds by construction (DESIGN.md §2), and each layer's
//! length exponent p of the score ΣA/(H·n^p), fixed or learned.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};

pub struct Thresholds {
    pub theta: Var,
    pub delta: Var,
    /// p per layer; learned only when the caller gives it to an optimiser.
    /// Runs saved before p existed load with p = 1 (the share score).
    pub exponent: Var,
    /// The Lagrange multipliers (λ₁, λ₂) of a FLOPs target; zero until a
    /// target is trained. Saved with the thresholds so a resumed run goes
    /// on where it stopped.
    pub lagrange: Var,
}

/// The tensor name of p in `thresholds.safetensors`.
const EXPONENT: &str = "thresholds.exponent";
const LAGRANGE: &str = "thresholds.lagrange";

/// log(1 + eˣ), computed without overflow for any x.
fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Inverse of softplus for y > 0.
fn softplus_inv(y: f64) -> f64 {
    if y > 20.0 { y } else { y.exp_m1().ln() }
}

impl Thresholds {
    /// θ_l = `theta`, β_l = `theta + gap` in every layer.
    pub fn new(layers: usize, theta: f64, gap: f64) -> Result<Self> {
        Self::from_values(&vec![theta; layers], &vec![theta + gap; layers])
    }

    /// From explicit values; every β_l must exceed θ_l.
    pub fn from_values(theta: &[f64], beta: &[f64]) -> Result<Self> {
        if theta.len() != beta.len() || theta.is_empty() {
            return Err(Error::Config(format!("{} θ values but {} β values", theta.len(), beta.len())));
        }
        if let Some(l) = (0..theta.len()).find(|&l| !(beta[l] > theta[l])) {
            return Err(Error::Config(format!("layer {l}: β = {} is not above θ = {}", beta[l], theta[l])));
        }
        let dev = &Device::Cpu;
        let t: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
        let d: Vec<f32> = theta.iter().zip(beta).map(|(t, b)| softplus_inv(b - t) as f32).collect();
        let p = vec![1f32; theta.len()];
        Ok(Thresholds {
            theta: Var::from_tensor(&Tensor::new(t, dev)?)?,
            delta: Var::from_tensor(&Tensor::new(d, dev)?)?,
            exponent: Var::from_tensor(&Tensor::new(p, dev)?)?,
            lagrange: Var::zeros(2, candle_core::DType::F32, dev)?,
        })
    }

    /// Sets p in every layer (one value) or per layer.
    pub fn set_exponent(&self, p: &[f64]) -> Result<()> {
        let layers = self.layers();
        let v: Vec<f32> = match p.len() {
            1 => vec![p[0] as f32; layers],
            n if n == layers => p.iter().map(|&v| v as f32).collect(),
            n => return Err(Error::Config(format!("score_exponent: {n} values for {layers} layers"))),
        };
        Ok(self.exponent.set(&Tensor::new(v, &Device::Cpu)?)?)
    }

    /// p as the forward uses it: clamped to [0, 1] (a learned p stops at
    /// the ends of the range DESIGN.md §2 gives it).
    pub fn exponent_tensor(&self) -> Result<Tensor> {
        Ok(self.exponent.as_tensor().clamp(0f32, 1f32)?)
    }

    /// Current p per layer (clamped as the forward sees it).
    pub fn exponents(&self) -> Result<Vec<f64>> {
        Ok(self.exponent_tensor()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
    }

    pub fn layers(&self) -> usize {
        self.theta.dim(0).unwrap_or(0)
    }

    /// β as a tensor that carries gradients to θ and δ.
    pub fn beta(&self) -> Result<Tensor> {
        Ok((self.theta.as_tensor() + softplus(self.delta.as_tensor())?)?)
    }

    /// Current (θ, β) values.
    pub fn values(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let f = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_vec1::<f32>()?.into_iter().map(f64::from).collect()) };
        Ok((f(self.theta.as_tensor())?, f(&self.beta()?)?))
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![("thresholds.theta".into(), self.theta.clone()), ("thresholds.delta".into(), self.delta.clone()), (EXPONENT.into(), self.exponent.clone()), (LAGRANGE.into(), self.lagrange.clone())]
    }

    /// Written next to a checkpoint's weights (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        crate::io::write_atomic_with(path, |tmp| Ok(candle_core::safetensors::save(&map, tmp)?))
    }

    pub fn restore_from(&self, path: &Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Model(format!("`{}`: {e}", path.display())))?;
        for (name, var) in self.vars() {
            if name == EXPONENT && !map.contains_key(&name) {
                // Saved before p existed: the share score, p = 1.
                self.set_exponent(&[1.0])?;
                continue;
            }
            if name == LAGRANGE && !map.contains_key(&name) {
                var.set(&var.zeros_like()?)?;
                continue;
            }
            let t = map.get(&name).ok_or_else(|| Error::Field { file: path.to_path_buf(), field: name.clone(), msg: "missing".into() })?;
            if t.dims() != var.dims() {
                return Err(Error::Field { file: path.to_path_buf(), field: name, msg: format!("shape {:?}, expected {:?}", t.dims(), var.dims()) });
            }
            var.set(t)?;
        }
        Ok(())
    }
}
