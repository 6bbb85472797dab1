//! Training-step timing on the real model with synthetic token ids: what
//! `cipherprune bench` reports. Same work as the PyTorch baseline in the
//! README (batch, sequence length, word embeddings frozen, dropout on).

use std::time::Instant;

use serde::Serialize;

use super::finetune::task_loss;
use crate::run::load_model;
use super::optim::{decays, AdamW, Group};
use crate::error::Result;
use crate::model::{params, Bert, ForwardCtx, Inputs, Masking, Numerics, Plan};
use crate::prune::config::PruneConfig;
use crate::prune::Thresholds;

#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub model: String,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Timed steps (after one untimed warm-up step).
    pub steps: usize,
    /// The prune soft stage's step instead of fine-tuning's: soft masks with
    /// learnable θ and β, the secure approximations.
    pub soft_masks: bool,
}

/// Median seconds per part of a step, over the timed steps.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub threads: usize,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    pub step_s: f64,
    pub step_min_s: f64,
    pub step_max_s: f64,
    pub examples_per_second: f64,
    pub soft_masks: bool,
    /// The process's peak resident set so far (model, step and all).
    pub peak_rss_mib: f64,
}

/// The largest resident set this process has had, in MiB (Linux's
/// `ru_maxrss` is in KiB).
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    u.ru_maxrss as f64 / 1024.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub fn run(spec: &BenchSpec, mut on_step: impl FnMut(usize)) -> Result<BenchReport> {
    let (b, t) = (spec.batch_size, spec.seq_len);
    let mut m = load_model(&spec.model, Some(2), t.max(8), 0)?;
    m.params.make_trainable(|n| n != params::WORD_EMBEDDINGS)?;
    let model = Bert::new(&m.cfg, &m.params, Some(2))?;
    // Token ids spread over the vocabulary; [CLS] first, no padding.
    let vocab = m.cfg.vocab_size as u32;
    let ids: Vec<u32> = (0..b * t).map(|i| if i % t == 0 { 101 } else { 1000 + (i as u32 * 7919) % (vocab - 1000) }).collect();
    let inputs = Inputs::new(&ids, &vec![0; b * t], &vec![1; b * t], b, t)?;
    let labels: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
    let (decay, no_decay): (Vec<_>, Vec<_>) = m.params.vars().iter().map(|(n, v)| (n.clone(), v.clone())).partition(|(n, _)| decays(n));
    let mut groups = vec![
        Group { name: "decay".into(), vars: decay, lr: 1e-5, weight_decay: 0.01 },
        Group { name: "no_decay".into(), vars: no_decay, lr: 1e-5, weight_decay: 0.0 },
    ];
    // The soft stage's defaults (PruneConfig): θ from 0, β = θ + 0.02, T = 2e-3.
    let soft = PruneConfig::default();
    let thr = Thresholds::new(m.cfg.num_hidden_layers, soft.theta_init, soft.beta_gap_init)?;
    let plan = if spec.soft_masks {
        groups.push(Group { name: "thresholds".into(), vars: thr.vars().into_iter().filter(|(n, _)| n.ends_with("theta") || n.ends_with("delta")).collect(), lr: soft.threshold_lr, weight_decay: 0.0 });
        Plan {
            numerics: Numerics::Approx,
            masking: Masking::Soft { theta: thr.theta.as_tensor().clone(), beta: thr.beta()?, exponent: None, temperature: soft.temperature, cumulative: soft.cumulative, per_input: soft.per_input_loss },
            physical: false,
        }
    } else {
        Plan::exact()
    };
    let mut opt = AdamW::new(groups)?;
    let (mut fw, mut bw, mut op, mut st) = (vec![], vec![], vec![], vec![]);
    for it in 0..=spec.steps {
        let mut rng = params::seeded(it as u64);
        let t0 = Instant::now();
        let out = model.forward_with(&inputs, &plan, &mut ForwardCtx { dropout: Some(&mut rng), output_attentions: false })?;
        let mut loss = task_loss(out.base.logits.as_ref().expect("head"), &labels, false)?;
        if let (Some(p), Some(a)) = (&out.l_prune, &out.l_approx) {
            loss = (loss + ((p + (a * soft.alpha)?)? * soft.lambda)?)?;
        }
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads, 1.0, Some(1.0))?;
        let t3 = Instant::now();
        if it > 0 {
            fw.push((t1 - t0).as_secs_f64());
            bw.push((t2 - t1).as_secs_f64());
            op.push((t3 - t2).as_secs_f64());
            st.push((t3 - t0).as_secs_f64());
        }
        on_step(it);
    }
    let step_s = median(&mut st);
    Ok(BenchReport {
        model: spec.model.clone(),
        batch_size: b,
        seq_len: t,
        steps: spec.steps,
        threads: candle_core::utils::get_num_threads(),
        forward_s: median(&mut fw),
        backward_s: median(&mut bw),
        optimizer_s: median(&mut op),
        step_min_s: st[0],
        step_max_s: st[st.len() - 1],
        step_s,
        examples_per_second: b as f64 / step_s,
        soft_masks: spec.soft_masks,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Secret × public matrix products in the ring against candle's f32 GEMM
/// (the machine's float rate, the engine's natural ceiling), same shape.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulRates {
    pub rows: usize,
    pub inner: usize,
    pub cols: usize,
    pub ring_gmacs: f64,
    pub f32_gmacs: f64,
}

pub fn matmul_rates(rows: usize, inner: usize, cols: usize, reps: usize) -> Result<MatmulRates> {
    use crate::fixed::{Ring, Truncation};
    use crate::secure::backend::{Backend, PublicMatrix};
    use crate::secure::plain::PlainBackend;
    let r = Ring::BOLT;
    let w: Vec<i64> = (0..inner * cols).map(|i| ((i * 7919) % 2001) as i64 - 1000).collect();
    let m = PublicMatrix::from_out_in(w.clone(), inner, cols);
    let x: Vec<u64> = (0..rows * inner).map(|i| r.encode(((i % 97) as f64 - 48.0) / 10.0)).collect();
    let mut b = PlainBackend::new(r, Truncation::Exact, 0);
    let xs = b.input(&x);
    let macs = (reps * rows * inner * cols) as f64;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(b.matmul_public(&xs, rows, &m));
    }
    let ring = macs / t.elapsed().as_secs_f64();
    let dev = &candle_core::Device::Cpu;
    let xf = candle_core::Tensor::from_vec(x.iter().map(|&v| r.decode(v) as f32).collect::<Vec<_>>(), (rows, inner), dev)?;
    let wf = candle_core::Tensor::from_vec(w.iter().map(|&v| v as f32).collect::<Vec<_>>(), (cols, inner), dev)?.t()?.contiguous()?;
    let _ = xf.matmul(&wf)?;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(xf.matmul(&wf)?);
    }
    let f = macs / t.elapsed().as_secs_f64();
    Ok(MatmulRates { rows, inner, cols, ring_gmacs: ring / 1e9, f32_gmacs: f / 1e9 })
}
