//! Tail averaging (Polyak–Ruppert; SWA's constant-schedule cousin): the
//! uniform mean of the weights over a stage's last steps. A stage that
//! averages checks, saves and reports the mean instead of its last
//! iterate, so no checkpoint has to be chosen on the set it is reported on.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};

use crate::model::params::Params;

use crate::error::{Error, Result};

pub struct Average {
    /// The mean covers the steps after this many (steps start+1..=now).
    start: usize,
    vars: Vec<(String, Var)>,
    /// Empty until the first step past `start`.
    mean: Vec<Tensor>,
    steps: usize,
}

impl Average {
    pub fn new(vars: Vec<(String, Var)>, start: usize) -> Self {
        Average { start, vars, mean: vec![], steps: 0 }
    }

    /// How many steps the mean holds (0: not started).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Folds in the weights as they are after `step` steps.
    pub fn update(&mut self, step: usize) -> Result<()> {
        if step <= self.start {
            return Ok(());
        }
        self.steps = step - self.start;
        // Detached throughout: a copy of a Var records its source, and a mean
        // that recorded its predecessor would keep every step's mean alive
        // (the first version grew to 24 GB in 200 steps of MiniLM).
        if self.mean.is_empty() {
            self.mean = self.vars.iter().map(|(_, v)| Ok(v.as_tensor().copy()?.detach())).collect::<Result<_>>()?;
            return Ok(());
        }
        let k = 1.0 / self.steps as f64;
        for ((_, v), m) in self.vars.iter().zip(self.mean.iter_mut()) {
            *m = (&*m + ((v.as_tensor().detach() - &*m)? * k)?)?.detach();
        }
        Ok(())
    }

    /// Runs `f` with the mean in the weights, then puts the iterate back.
    pub fn with_mean<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        if self.mean.is_empty() {
            return f();
        }
        let iterate: Vec<Tensor> = self.vars.iter().map(|(_, v)| Ok(v.as_tensor().copy()?.detach())).collect::<Result<_>>()?;
        for ((_, v), m) in self.vars.iter().zip(&self.mean) {
            v.set(m)?;
        }
        let r = f();
        for ((_, v), t) in self.vars.iter().zip(&iterate) {
            v.set(t)?;
        }
        r
    }

    /// Writes the mean atomically (nothing before it has started).
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.mean.is_empty() {
            return Ok(());
        }
        let mut named: HashMap<String, Tensor> = self.vars.iter().zip(&self.mean).map(|((n, _), m)| (format!("mean/{n}"), m.clone())).collect();
        named.insert("steps".into(), Tensor::new(&[self.steps as u32], &candle_core::Device::Cpu)?);
        crate::io::write_atomic_with(path, |tmp| candle_core::safetensors::save(&named, tmp).map_err(Error::from))
    }

    /// Restores the mean a checkpoint taken after `step` steps must hold.
    pub fn load(&mut self, path: &Path, step: usize) -> Result<()> {
        self.mean.clear();
        self.steps = 0;
        if step <= self.start {
            return Ok(());
        }
        let field = |f: &str, msg: String| Error::Field { file: path.to_path_buf(), field: f.to_string(), msg };
        if !path.is_file() {
            return Err(field("<file>", format!("missing: the checkpoint is {} steps into averaging", step - self.start)));
        }
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| field("<file>", e.to_string()))?;
        let steps = t.get("steps").ok_or_else(|| field("steps", "missing".into()))?.to_vec1::<u32>()?[0] as usize;
        if steps != step - self.start {
            return Err(field("steps", format!("{steps}, the checkpoint is {} steps into averaging", step - self.start)));
        }
        for (n, v) in &self.vars {
            let key = format!("mean/{n}");
            let m = t.get(&key).ok_or_else(|| field(&key, "missing".into()))?;
            if m.dims() != v.dims() {
                return Err(field(&key, format!("shape {:?}, the model's is {:?}", m.dims(), v.dims())));
            }
            self.mean.push(m.clone());
        }
        self.steps = steps;
        Ok(())
    }
}

/// A model soup (Wortsman et al. 2022): sets every trainable tensor of
/// `params` to its uniform mean over the runs saved in `dirs`. The runs
/// start from one model and differ only in their seeds, so their weights
/// lie close enough that the mean is itself a model of the same kind —
/// whether a better one is measured in docs/RESULTS.md, not assumed.
pub fn soup(params: &Params, dirs: &[std::path::PathBuf]) -> Result<()> {
    let runs = dirs.iter().map(|d| Params::load(&d.join("model.safetensors"))).collect::<Result<Vec<_>>>()?;
    for (name, var) in params.vars() {
        let shape = var.dims().to_vec();
        let mut sum = Tensor::zeros(shape.as_slice(), DType::F64, var.device())?;
        for r in &runs {
            sum = (sum + r.get(name, &shape)?.to_dtype(DType::F64)?)?;
        }
        var.set(&(sum / runs.len() as f64)?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_mean_covers_the_steps_after_the_start_and_survives_a_checkpoint() {
        let v = Var::new(&[0f32, 10.0], &Device::Cpu).unwrap();
        let mut a = Average::new(vec![("w".into(), v.clone())], 2);
        // Iterates after steps 1..=6: 1, 2, …, 6 times (1, −1); steps 3..6 count.
        for step in 1..=6usize {
            v.set(&Tensor::new(&[step as f32, -(step as f32)], &Device::Cpu).unwrap()).unwrap();
            a.update(step).unwrap();
            if step == 4 {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("average.safetensors");
                a.save(&p).unwrap();
                let mut b = Average::new(vec![("w".into(), v.clone())], 2);
                b.load(&p, 4).unwrap();
                assert_eq!(b.steps(), 2);
                assert!(b.load(&p, 5).unwrap_err().to_string().contains("steps"));
                assert!(b.load(&dir.path().join("none"), 4).unwrap_err().to_string().contains("missing"));
            }
        }
        assert_eq!(a.steps(), 4);
        // The mean records no graph (one that did kept every step's mean alive).
        assert!(a.mean.iter().all(|m| !m.track_op()));
        let seen = a.with_mean(|| Ok(v.as_tensor().to_vec1::<f32>().unwrap())).unwrap();
        assert_eq!(seen, vec![4.5, -4.5]);
        // The iterate is back afterwards.
        assert_eq!(v.as_tensor().to_vec1::<f32>().unwrap(), vec![6.0, -6.0]);
    }
}
