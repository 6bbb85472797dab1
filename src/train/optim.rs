//! AdamW with parameter groups, a warmup + linear-decay schedule, global
//! gradient-norm clipping, and state that can be saved for an exact resume
//! (candle's own AdamW keeps its moments private).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, CpuStorage, InplaceOp2, Layout, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A set of variables sharing a learning rate and weight decay.
pub struct Group {
    pub name: String,
    pub vars: Vec<(String, Var)>,
    pub lr: f64,
    pub weight_decay: f64,
}

/// A parameter's first and second moments.
struct Slot {
    m: Vec<f32>,
    v: Vec<f32>,
    shape: Shape,
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
                let n = var.elem_count();
                slots.insert(slot_key(&g.name, name), Slot { m: vec![0.0; n], v: vec![0.0; n], shape: var.shape().clone() });
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
                let slot = self.slots.get_mut(&slot_key(&g.name, name)).expect("slot per var");
                let k = Coefs::new(clip, b1, b2, c1, c2, self.eps, lr, g.weight_decay);
                let update = Update { m: RefCell::new(&mut slot.m), v: RefCell::new(&mut slot.v), k };
                var.as_tensor().inplace_op2(&gr.contiguous()?, &update)?;
            }
        }
        Ok(norm)
    }

    /// Saves moments and the step counter atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: HashMap<String, Tensor> = HashMap::new();
        let cpu = candle_core::Device::Cpu;
        for (k, s) in &self.slots {
            named.insert(format!("m/{k}"), Tensor::from_slice(&s.m, s.shape.clone(), &cpu)?);
            named.insert(format!("v/{k}"), Tensor::from_slice(&s.v, s.shape.clone(), &cpu)?);
        }
        named.insert("step".into(), Tensor::new(&[self.step as u32], &candle_core::Device::Cpu)?);
        crate::io::write_atomic_with(path, |tmp| candle_core::safetensors::save(&named, tmp).map_err(Error::from))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| Error::Model(format!("cannot read optimizer state `{}`: {e}", path.display())))?;
        let missing = |k: &str| Error::Field { file: path.to_path_buf(), field: k.to_string(), msg: "missing".into() };
        for (k, s) in self.slots.iter_mut() {
            for (which, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let field = format!("{which}/{k}");
                let saved = t.get(&field).ok_or_else(|| missing(&field))?;
                if saved.shape() != &s.shape {
                    let msg = format!("shape {:?}, the model's is {:?}", saved.dims(), s.shape.dims());
                    return Err(Error::Field { file: path.to_path_buf(), field, msg });
                }
                *dst = saved.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
            }
        }
        self.step = t.get("step").ok_or_else(|| missing("step"))?.to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

/// One step's scalars, as candle's scalar ops round them to f32.
#[derive(Clone, Copy)]
struct Coefs {
    clip: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    lr: f32,
    decay: f32,
}

impl Coefs {
    #[allow(clippy::too_many_arguments)]
    fn new(clip: f64, b1: f64, b2: f64, c1: f64, c2: f64, eps: f64, lr: f64, weight_decay: f64) -> Self {
        let f = |x: f64| x as f32;
        Coefs {
            clip: f(clip),
            b1: f(b1),
            one_minus_b1: f(1.0 - b1),
            b2: f(b2),
            one_minus_b2: f(1.0 - b2),
            inv_c1: f(1.0 / c1),
            inv_c2: f(1.0 / c2),
            eps: f(eps),
            lr: f(lr),
            decay: f(1.0 - lr * weight_decay),
        }
    }

    /// The update of one parameter; every operation is the one the composed
    /// candle version made (`x * a + b` for each scalar op, in f32), in its
    /// order, so the result is bit for bit the same.
    #[inline(always)]
    fn apply(&self, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let g = g * self.clip + 0.0;
        *m = (*m * self.b1 + 0.0) + (g * self.one_minus_b1 + 0.0);
        *v = (*v * self.b2 + 0.0) + ((g * g) * self.one_minus_b2 + 0.0);
        let den = (*v * self.inv_c2 + 0.0).sqrt() + self.eps;
        let update = (*m * self.inv_c1 + 0.0) / den;
        *p = (*p * self.decay + 0.0) - (update * self.lr + 0.0);
    }
}

/// AdamW on one parameter in place: one pass over the parameter, its
/// gradient and its moments, where the composed candle ops made a dozen
/// passes and as many temporary tensors (0.08 s of a MiniLM step).
struct Update<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    k: Coefs,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> candle_core::Result<()> {
        let p = match (dst, dst_l.contiguous_offsets()) {
            (CpuStorage::F32(p), Some((a, b))) => &mut p[a..b],
            _ => candle_core::bail!("AdamW updates contiguous f32 parameters"),
        };
        let g = crate::model::fused::slice(g, g_l)?;
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("AdamW: gradient or moments of another size than the parameter");
        }
        const CHUNK: usize = 1 << 14;
        let k = self.k;
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).zip(g.par_chunks(CHUNK)).for_each(|(((p, m), v), g)| {
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                k.apply(p, m, v, g);
            }
        });
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

    /// The update as composed candle ops (this file's code before the fused
    /// pass), the reference the fused one must equal bit for bit.
    struct Composed {
        m: Tensor,
        v: Tensor,
    }

    impl Composed {
        #[allow(clippy::too_many_arguments)]
        fn step(&mut self, var: &Var, gr: &Tensor, clip: f64, step: usize, lr: f64, wd: f64) -> candle_core::Result<()> {
            let (b1, b2, eps) = (0.9, 0.999, 1e-8);
            let (c1, c2) = (1.0 - f64::powi(b1, step as i32), 1.0 - f64::powi(b2, step as i32));
            let gr = (gr * clip)?;
            self.m = ((&self.m * b1)? + (&gr * (1.0 - b1))?)?;
            self.v = ((&self.v * b2)? + (gr.sqr()? * (1.0 - b2))?)?;
            let update = ((&self.m / c1)? / ((&self.v / c2)?.sqrt()? + eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * wd))?;
            var.set(&(decayed - (update * lr)?)?)
        }
    }

    #[test]
    fn the_fused_update_equals_the_composed_ops_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let cpu = candle_core::Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rand = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-s..s)).collect() };
        // 40,000 elements: more than one of the pass's chunks, and a ragged last one.
        let shapes = [(200usize, 200usize), (1, 37)];
        let init: Vec<Vec<f32>> = shapes.iter().map(|&(a, b)| rand(a * b, 1.0)).collect();
        let fused_vars: Vec<Var> = init.iter().zip(&shapes).map(|(x, &s)| Var::from_vec(x.clone(), s, &cpu).unwrap()).collect();
        let ref_vars: Vec<Var> = init.iter().zip(&shapes).map(|(x, &s)| Var::from_vec(x.clone(), s, &cpu).unwrap()).collect();
        // A group with weight decay and one without, as the trainer makes them.
        let group = |var: &Var, name: &str, wd: f64| Group { name: name.into(), vars: vec![(format!("{name}.w"), var.clone())], lr: 1e-3, weight_decay: wd };
        let mut opt = AdamW::new(vec![group(&fused_vars[0], "decay", 0.01), group(&fused_vars[1], "no_decay", 0.0)]).unwrap();
        let mut reference: Vec<Composed> = ref_vars.iter().map(|v| Composed { m: v.zeros_like().unwrap(), v: v.zeros_like().unwrap() }).collect();
        for (step, lr_scale) in [(1usize, 0.5), (2, 1.0), (3, 0.25)] {
            // Gradients as backward hands them over: a loss over both parameters.
            let target: Vec<Tensor> = shapes.iter().map(|&(a, b)| Tensor::from_vec(rand(a * b, 3.0), (a, b), &cpu).unwrap()).collect();
            let loss = |vars: &[Var]| vars.iter().zip(&target).map(|(v, t)| (v.as_tensor() * t).unwrap().sqr().unwrap().sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap();
            let grads = loss(&fused_vars[..]).backward().unwrap();
            let norm = opt.step(&grads, lr_scale, Some(1.0)).unwrap();
            let ref_grads = loss(&ref_vars[..]).backward().unwrap();
            let clip = if norm > 1.0 { 1.0 / (norm + 1e-6) } else { 1.0 };
            assert!(clip < 1.0, "the test's gradients are clipped");
            for (i, (v, r)) in ref_vars.iter().zip(reference.iter_mut()).enumerate() {
                let wd = if i == 0 { 0.01 } else { 0.0 };
                r.step(v, ref_grads.get(v).unwrap(), clip, step, 1e-3 * lr_scale, wd).unwrap();
            }
            for (f, r) in fused_vars.iter().zip(&ref_vars) {
                let (f, r) = (f.flatten_all().unwrap().to_vec1::<f32>().unwrap(), r.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                let differ: Vec<_> = f.iter().zip(&r).enumerate().filter(|(_, (a, b))| a.to_bits() != b.to_bits()).take(3).collect();
                assert!(differ.is_empty(), "step {step}: parameters differ at {differ:?} of {}", f.len());
            }
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((schedule(0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((schedule(55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(schedule(100, 10, 100), 0.0);
    }
}
