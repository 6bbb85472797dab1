//! What `prune` needs: the fine-tuned run it starts from, the two stages'
//! schedules, and the threshold-learning knobs. Field names are YAML keys;
//! the defaults are the measured ones documented in `configs/prune-*.yaml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    /// The fine-tuned run (or model directory with a task head) to start from.
    pub checkpoint: PathBuf,
    pub task: String,
    pub data_dir: PathBuf,
    /// Soft stage: weights and thresholds together.
    pub soft_epochs: usize,
    /// Hard stage: thresholds frozen, weights adapt to hard masks.
    pub hard_epochs: usize,
    pub batch_size: usize,
    /// Learning rate of the model weights (both stages).
    pub learning_rate: f64,
    /// Learning rate of θ and δ (β = θ + softplus(δ)); their own AdamW group.
    pub threshold_lr: f64,
    /// T of the soft masks σ((S − θ)/T).
    pub temperature: f64,
    /// λ: weight of the mask terms in L_task + λ·(L_prune + α·L_approx).
    pub lambda: f64,
    /// α: weight of the reduction mask against the pruning mask.
    pub alpha: f64,
    /// Initial θ in every layer (0 keeps every token).
    pub theta_init: f64,
    /// Initial β − θ.
    pub beta_gap_init: f64,
    /// Cumulative soft masks (see `Masking::Soft`): a token scaled away stays
    /// away, as with hard masks, and L_prune becomes the soft relative work.
    pub cumulative: bool,
    /// Average L_prune and L_approx per input, then over inputs, as
    /// relative work is averaged (true), or over all live tokens of the
    /// batch, which weighs long inputs more (false).
    pub per_input_loss: bool,
    /// p of the compared score ΣA/(H·n^p) (DESIGN.md §2): 1 is the share
    /// score (scores sum to 1, so a fixed θ prunes long inputs harder), 0
    /// the relative score (mean 1, length-invariant). In [0, 1].
    pub score_exponent: f64,
    /// Learn p per layer with θ (starting from `score_exponent`).
    pub learn_exponent: bool,
    /// Hold the soft masks' expected relative FLOPs at this value with a
    /// Lagrange multiplier (ToP), in both stages, instead of λ·L_prune.
    /// In (0, 1]; `null`: the λ penalty.
    pub target_flops: Option<f64>,
    /// Learning rate of the multipliers of `target_flops` (gradient ascent).
    pub lagrange_lr: f64,
    /// Share of the soft stage over which the target falls linearly from 1
    /// (no pruning) to `target_flops` (CoFi's and ToP's sparsity warmup),
    /// so the masks close while the weights follow. In [0, 1]; 0: the
    /// target from the first step.
    pub target_warmup: f64,
    /// Learn and apply pruning thresholds θ.
    pub prune: bool,
    /// Learn and apply reduction thresholds β (low-degree functions).
    pub reduce: bool,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub max_seq_len: usize,
    pub seed: u64,
    pub limit: Option<usize>,
    /// Training rows with fewer real tokens are skipped (before `limit`).
    /// Thresholds are absolute scores and scores scale as 1/n, so θ learned
    /// on short phrases prunes differently on longer sentences.
    pub min_train_tokens: usize,
    /// Weight w of distillation: the task loss becomes (1 − w)·L(labels) +
    /// w·L(the starting model's exact, unpruned predictions). 0 turns it off.
    pub distill: f64,
    /// The model whose exact predictions are distilled (a fine-tuned run);
    /// default: `checkpoint`. Lets a second round of pruning, started from
    /// a pruned run, still learn from the unpruned model.
    pub teacher: Option<PathBuf>,
    /// Weight of rank distillation (ToP): every layer's scores learn the
    /// ranking of the teacher's last-layer scores over the same live
    /// tokens (a KL between softmaxes of the standardised scores), so
    /// early layers learn which tokens the finished model will need.
    /// Added to the loss in both stages; 0 turns it off.
    pub rank_distill: f64,
    pub eval_limit: Option<usize>,
    /// Set aside this many training rows (the split's last ones, never
    /// trained on) and run the stages' checks on them instead of on dev:
    /// the hard stage's best checkpoint is then chosen without looking at
    /// the dev set it is reported on. `null`: the checks run on dev.
    pub holdout: Option<usize>,
    /// The hard stage's result is the mean of its weights over the steps
    /// after this share of it (tail averaging), checked and saved as such,
    /// instead of its best check: nothing is chosen on the set it is
    /// reported on. In (0, 1); `null`: the best check.
    pub average_from: Option<f64>,
    /// Run the hard stage this many times from the same soft result, with
    /// seeds seed, seed + 1, …, and make the result the uniform mean of
    /// their weights (a model soup; the thresholds are frozen there, so
    /// all share them). 1: one hard stage, its result as it is.
    pub soup: usize,
    /// The tokens a layer prunes are folded into one kept token (their
    /// mean) instead of dropped, in the hard stage and wherever the run is
    /// evaluated: simulation, threshold file, engine and protocol.
    pub merge: bool,
    pub freeze_word_embeddings: bool,
    pub save_every: usize,
    pub eval_every: usize,
    pub log_every: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            checkpoint: PathBuf::from("runs/demo"),
            task: "sst2".into(),
            data_dir: PathBuf::from("data/polarity"),
            soft_epochs: 1,
            hard_epochs: 1,
            batch_size: 32,
            learning_rate: 2e-5,
            threshold_lr: 2e-3,
            temperature: 2e-3,
            lambda: 0.2,
            alpha: 0.5,
            theta_init: 0.0,
            beta_gap_init: 0.02,
            cumulative: false,
            per_input_loss: false,
            score_exponent: 1.0,
            learn_exponent: false,
            target_flops: None,
            lagrange_lr: 5e-2,
            target_warmup: 0.0,
            prune: true,
            reduce: true,
            warmup_ratio: 0.06,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            max_seq_len: 128,
            seed: 42,
            limit: None,
            min_train_tokens: 0,
            distill: 0.0,
            teacher: None,
            rank_distill: 0.0,
            eval_limit: None,
            holdout: None,
            average_from: None,
            soup: 1,
            merge: false,
            freeze_word_embeddings: true,
            save_every: 200,
            eval_every: 0,
            log_every: 20,
        }
    }
}

impl PruneConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        let pos = |v: f64| v > 0.0 && v.is_finite();
        if self.soft_epochs + self.hard_epochs == 0 {
            return bad("soft_epochs + hard_epochs must be at least 1");
        }
        if self.batch_size == 0 || self.save_every == 0 || self.log_every == 0 {
            return bad("batch_size, save_every and log_every must be at least 1");
        }
        if !pos(self.learning_rate) || !pos(self.threshold_lr) || !pos(self.temperature) {
            return bad("learning_rate, threshold_lr and temperature must be positive numbers");
        }
        if !(self.lambda >= 0.0 && self.alpha >= 0.0 && self.lambda.is_finite() && self.alpha.is_finite()) {
            return bad("lambda and alpha must be non-negative numbers");
        }
        if !pos(self.beta_gap_init) || !self.theta_init.is_finite() {
            return bad("beta_gap_init must be positive and theta_init a number");
        }
        if !(0.0..=1.0).contains(&self.score_exponent) {
            return Err(Error::Config(format!("score_exponent is {}, not in [0, 1]", self.score_exponent)));
        }
        if let Some(t) = self.target_flops {
            if !(t > 0.0 && t <= 1.0) {
                return Err(Error::Config(format!("target_flops is {t}, not in (0, 1]")));
            }
        }
        if !(0.0..=1.0).contains(&self.target_warmup) {
            return Err(Error::Config(format!("target_warmup is {}, not in [0, 1]", self.target_warmup)));
        }
        if self.soup == 0 || (self.soup > 1 && self.hard_epochs == 0) {
            return Err(Error::Config(format!("soup is {}: it counts hard stages, so at least 1, and more than 1 needs hard_epochs ≥ 1", self.soup)));
        }
        if !pos(self.lagrange_lr) {
            return bad("lagrange_lr must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.distill) {
            return bad("distill must be in [0, 1]");
        }
        if !(self.rank_distill >= 0.0 && self.rank_distill.is_finite()) {
            return Err(Error::Config(format!("rank_distill is {}, not a non-negative number", self.rank_distill)));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio must be in [0, 1)");
        }
        if self.max_seq_len < 8 || self.max_seq_len > 512 {
            return bad("max_seq_len must be between 8 and 512");
        }
        if let Some(a) = self.average_from {
            if !(a > 0.0 && a < 1.0) {
                return Err(Error::Config(format!("average_from is {a}, not in (0, 1)")));
            }
        }
        if self.holdout == Some(0) {
            return bad("holdout must be at least 1 row (or null: the checks run on dev)");
        }
        if !self.prune && !self.reduce {
            return bad("nothing to learn: both prune and reduce are off");
        }
        Ok(())
    }
}
