//! What a run directory says about itself: its task, data and sequence
//! length (from `config.yaml` of `finetune` or `prune.yaml` of `prune`), so
//! later commands need no repeated flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use cipherprune::config::{load_yaml, FinetuneConfig};
use cipherprune::prune::config::PruneConfig;

#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub task: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_seq_len: Option<usize>,
    pub prune: Option<PruneConfig>,
}

impl RunInfo {
    pub fn read(dir: &Path) -> Result<RunInfo> {
        let ft = dir.join("config.yaml");
        let pr = dir.join("prune.yaml");
        if pr.is_file() {
            let c: PruneConfig = load_yaml(&pr)?;
            return Ok(RunInfo { task: Some(c.task.clone()), data_dir: Some(c.data_dir.clone()), max_seq_len: Some(c.max_seq_len), prune: Some(c) });
        }
        if ft.is_file() {
            let c: FinetuneConfig = load_yaml(&ft)?;
            return Ok(RunInfo { task: Some(c.task), data_dir: Some(c.data_dir), max_seq_len: Some(c.max_seq_len), prune: None });
        }
        Ok(RunInfo::default())
    }

    /// The flag if given, else the run's value, else an error naming the flag.
    /// A flag naming another task than the run was trained on is an error:
    /// its head would answer a different question.
    pub fn task(&self, flag: &Option<String>) -> Result<String> {
        if let (Some(f), Some(t)) = (flag, &self.task) {
            let (a, b) = (cipherprune::data::Task::from_name(f)?, cipherprune::data::Task::from_name(t)?);
            anyhow::ensure!(a.dir_name() == b.dir_name(), "the checkpoint was trained on {}, not {}: a checkpoint for another task", b.name(), a.name());
        }
        flag.clone().or_else(|| self.task.clone()).context("--task is required (the checkpoint has no config.yaml or prune.yaml)")
    }

    pub fn data_dir(&self, flag: &Option<PathBuf>) -> Result<PathBuf> {
        flag.clone().or_else(|| self.data_dir.clone()).context("--data-dir is required (the checkpoint has no config.yaml or prune.yaml)")
    }
}

/// Which run, and which examples: the flags `eval`, `simulate` and
/// `secure-eval` share. Task, data and length default to the run's own.
#[derive(Args, Debug, Clone)]
pub struct EvalData {
    /// A run directory (`finetune` or `prune`), or a model directory with a task head.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// GLUE task (default: the run's; another task than the run's is refused).
    #[arg(long)]
    pub task: Option<String>,
    /// GLUE root or task folder (default: the run's data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// First N examples of the split only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Default: the run's max_seq_len, else 128.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
}
