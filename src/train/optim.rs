//! AdamW with parameter groups, a warmup + linear-decay schedule, global
//! gradient-norm clipping, and state that can be saved for an exact resume
//! (candle's own AdamW keeps its moments private).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::{Error, Result};

/// A set of variables sharing a learning rate and weight decay.
pub struct Group {
    pub name: String,
    pub vars: Vec<(String, Var)>,
    pub lr: f64,
    pub weight_decay: f64,
}

struct Slot {
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub groups: Vec<Group>,
    slots: HashMap<String, Slot>,
    pub step: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// Learning-rate multiplier: linear warmup to 1, then linear decay to 0.
pub fn schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        1.0
    } else {
        ((total - step) as f64 / (total - warmup) as f64).max(0.0)
    }
}

impl AdamW {
    pub fn new(groups: Vec<Group>) -> Result<Self> {
        let mut slots = HashMap::new();
        for g in &groups {
            for (name, var) in &g.vars {
                let z = var.as_tensor().zeros_like()?;
                slots.insert(slot_key(&g.name, name), Slot { m: z.clone(), v: z });
            }
        }
        Ok(AdamW { groups, slots, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8 })
    }

    /// One update with every group's lr multiplied by `lr_scale`.
    /// Returns the global gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr_scale: f64, max_grad_norm: Option<f64>) -> Result<f64> {
        let mut sq = 0.0f64;
        for g in &self.groups {
            for (_, var) in &g.vars {
                if let Some(gr) = grads.get(var) {
                    sq += gr.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                }
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::Diverged(format!("gradient norm is {norm} at step {}", self.step)));
        }
        let clip = match max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for g in &self.groups {
            let lr = g.lr * lr_scale;
            for (name, var) in &g.vars {
                let Some(gr) = grads.get(var) else { continue };
                let gr = (gr * clip)?;
                let slot = self.slots.get_mut(&slot_key(&g.name, name)).expect("slot per var");
                slot.m = ((&slot.m * b1)? + (&gr * (1.0 - b1))?)?;
                slot.v = ((&slot.v * b2)? + (gr.sqr()? * (1.0 - b2))?)?;
                let update = ((&slot.m / c1)? / ((&slot.v / c2)?.sqrt()? + self.eps)?)?;
                let decayed = (var.as_tensor() * (1.0 - lr * g.weight_decay))?;
                var.set(&(decayed - (update * lr)?)?)?;
            }
        }
        Ok(norm)
    }

    /// Saves moments and the step counter atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: HashMap<String, Tensor> = HashMap::new();
        for (k, s) in &self.slots {
            named.insert(format!("m/{k}"), s.m.clone());
            named.insert(format!("v/{k}"), s.v.clone());
        }
        named.insert("step".into(), Tensor::new(&[self.step as u32], &candle_core::Device::Cpu)?);
        crate::io::write_atomic_with(path, |tmp| candle_core::safetensors::save(&named, tmp).map_err(Error::from))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| Error::Model(format!("cannot read optimizer state `{}`: {e}", path.display())))?;
        let missing = |k: &str| Error::Field { file: path.to_path_buf(), field: k.to_string(), msg: "missing".into() };
        for (k, s) in self.slots.iter_mut() {
            s.m = t.get(&format!("m/{k}")).ok_or_else(|| missing(&format!("m/{k}")))?.clone();
            s.v = t.get(&format!("v/{k}")).ok_or_else(|| missing(&format!("v/{k}")))?.clone();
        }
        self.step = t.get("step").ok_or_else(|| missing("step"))?.to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

fn slot_key(group: &str, var: &str) -> String {
    format!("{group}/{var}")
}

/// Biases and LayerNorm parameters get no weight decay (as in BERT's recipe).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((schedule(0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((schedule(55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(schedule(100, 10, 100), 0.0);
    }
}
