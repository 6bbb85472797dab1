//! Fine-tuning: cross-entropy (or MSE for STS-B) on the task head, all
//! weights but the word-embedding table trained.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::eval::{self, Metrics};
use super::optim::{decays, Group};
use super::progress::Observer;
use super::trainer::{self, LoopSpec, Outcome, Stage};
use crate::config::FinetuneConfig;
use crate::data::{batch::Batch, Encoded, Task};
use crate::error::{Error, Result};
use crate::model::{params, Bert, BertConfig, ForwardCtx, Inputs, Masking, Numerics, Params, Plan};
use crate::run::{load_model, load_split, Loaded};

/// Copies the tokenizer files next to saved weights so a run directory is
/// itself a model directory (`--model RUN` / `--checkpoint RUN` both work).
pub fn save_model_dir(dir: &Path, params: &Params, cfg: &BertConfig, source: &Path) -> Result<()> {
    params.save(&dir.join("model.safetensors"))?;
    let json = serde_json::to_string_pretty(cfg).expect("config serialises");
    crate::io::write_atomic(&dir.join("config.json"), json.as_bytes())?;
    for name in ["tokenizer.json", "vocab.txt", "tokenizer_config.json"] {
        let from = source.join(name);
        let to = dir.join(name);
        if from.is_file() && from != to {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            crate::io::write_atomic(&to, &bytes)?;
        }
    }
    Ok(())
}

/// Task loss from logits: cross-entropy, or mean squared error for regression.
pub fn task_loss(logits: &Tensor, labels: &[f32], regression: bool) -> Result<Tensor> {
    let dev = logits.device();
    if regression {
        let y = Tensor::from_slice(labels, (labels.len(),), dev)?;
        Ok(candle_nn::loss::mse(&logits.squeeze(1)?, &y)?)
    } else {
        let y: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        Ok(candle_nn::loss::cross_entropy(logits, &Tensor::from_vec(y, (labels.len(),), dev)?)?)
    }
}

pub fn inputs_of(b: &Batch) -> Result<Inputs> {
    Inputs::new(&b.input_ids, &b.type_ids, &b.attention_mask, b.batch_size, b.seq_len)
}

struct FinetuneStage {
    loaded: Loaded,
    model: Bert,
    task: Task,
    dev: Vec<Encoded>,
    batch_size: usize,
    lr: f64,
    weight_decay: f64,
    length_drop: f64,
}

/// A LengthDrop plan for one batch: the plain model on half the batches,
/// else per layer a share 1 − U(0, p) of the live tokens kept by score.
fn length_drop_plan(p: f64, layers: usize, rng: &mut ChaCha8Rng) -> Plan {
    use rand::Rng;
    if p == 0.0 || rng.gen_bool(0.5) {
        return Plan::exact();
    }
    let keep = (0..layers).map(|_| 1.0 - rng.gen_range(0.0..p)).collect();
    Plan { numerics: Numerics::Exact, masking: Masking::Ratio { keep }, physical: false }
}

impl Stage for FinetuneStage {
    fn loss(&mut self, b: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Vec<(String, f64)>)> {
        let plan = length_drop_plan(self.length_drop, self.loaded.cfg.num_hidden_layers, rng);
        let mut ctx = ForwardCtx { dropout: Some(rng), output_attentions: false };
        let out = self.model.forward_with(&inputs_of(b)?, &plan, &mut ctx)?.base;
        let logits = out.logits.expect("fine-tuned model has a head").to_dtype(DType::F32)?;
        Ok((task_loss(&logits, &b.labels, self.task.is_regression())?, vec![]))
    }

    fn groups(&self) -> Vec<Group> {
        let (decay, no_decay): (Vec<_>, Vec<_>) = self.loaded.params.vars().iter().map(|(n, v)| (n.clone(), v.clone())).partition(|(n, _)| decays(n));
        vec![
            Group { name: "decay".into(), vars: decay, lr: self.lr, weight_decay: self.weight_decay },
            Group { name: "no_decay".into(), vars: no_decay, lr: self.lr, weight_decay: 0.0 },
        ]
    }

    fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Metrics> {
        eval::evaluate(&self.model, self.task, &self.dev, self.batch_size.max(64), observer)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_model_dir(dir, &self.loaded.params, &self.loaded.cfg, &self.loaded.files.dir)
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        self.loaded.params.restore_from(&dir.join("model.safetensors"))
    }
}

/// What `finetune` was asked to do beyond the config.
pub struct FinetuneRun {
    pub cfg: FinetuneConfig,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
}

pub struct FinetuneReport {
    pub outcome: Outcome,
    pub train_examples: usize,
    pub dev_examples: usize,
}

pub fn finetune(run: &FinetuneRun, observer: &mut dyn Observer) -> Result<FinetuneReport> {
    let cfg = &run.cfg;
    cfg.validate()?;
    let task = Task::from_name(&cfg.task)?;
    let mut loaded = load_model(&cfg.model, Some(task.num_labels()), cfg.max_seq_len, cfg.seed)?;
    let train = load_split(&loaded.tokenizer, &cfg.data_dir, task, "train", cfg.limit)?;
    let dev = load_split(&loaded.tokenizer, &cfg.data_dir, task, "dev", cfg.eval_limit)?;
    if train.is_empty() {
        return Err(Error::Config("the training split is empty".into()));
    }
    let freeze = cfg.freeze_word_embeddings;
    loaded.params.make_trainable(|n| !(freeze && n == params::WORD_EMBEDDINGS))?;
    let model = Bert::new(&loaded.cfg, &loaded.params, Some(task.num_labels()))?;
    std::fs::create_dir_all(&run.run_dir).map_err(|e| Error::io(&run.run_dir, e))?;
    crate::config::save_yaml(&run.run_dir.join("config.yaml"), cfg)?;
    let mut stage = FinetuneStage { loaded, model, task, dev, batch_size: cfg.batch_size, lr: cfg.learning_rate, weight_decay: cfg.weight_decay, length_drop: cfg.length_drop };
    let spec = LoopSpec {
        run_dir: run.run_dir.clone(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        warmup_ratio: cfg.warmup_ratio,
        max_grad_norm: cfg.max_grad_norm,
        save_every: cfg.save_every,
        eval_every: cfg.eval_every,
        log_every: cfg.log_every,
        main_metric: task.main_metric().to_string(),
        stop_after: run.stop_after,
        resume: run.resume,
        select_best: true,
        checks_on: "dev",
        average_from: None,
    };
    let (n_train, n_dev) = (train.len(), stage.dev.len());
    let outcome = trainer::run(&spec, &mut stage, &train, observer)?;
    Ok(FinetuneReport { outcome, train_examples: n_train, dev_examples: n_dev })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn length_drop_prunes_half_the_batches_at_random_shares() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert!((0..50).all(|_| matches!(length_drop_plan(0.0, 4, &mut rng).masking, Masking::Off)));
        let plans: Vec<Plan> = (0..400).map(|_| length_drop_plan(0.4, 4, &mut rng)).collect();
        let keeps: Vec<&Vec<f64>> = plans.iter().filter_map(|p| match &p.masking { Masking::Ratio { keep } => Some(keep), _ => None }).collect();
        assert!((160..240).contains(&keeps.len()), "{} of 400 batches pruned", keeps.len());
        let all: Vec<f64> = keeps.iter().flat_map(|k| k.iter().copied()).collect();
        assert!(keeps.iter().all(|k| k.len() == 4) && all.iter().all(|&k| k > 0.6 && k <= 1.0));
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        assert!((mean - 0.8).abs() < 0.02, "mean share kept {mean}");
    }
}
