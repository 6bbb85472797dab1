//! The flags that pick a run and its examples, shared by `eval`,
//! `simulate` and `secure-eval`; the run itself is [`cipherprune::run`].

use std::path::PathBuf;

use clap::Args;

use cipherprune::run::RunSpec;

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

impl EvalData {
    /// The library's description of the same choice, with a threshold file.
    pub fn spec(&self, thresholds: Option<PathBuf>) -> RunSpec {
        RunSpec {
            checkpoint: self.checkpoint.clone(),
            thresholds,
            task: self.task.clone(),
            data_dir: self.data_dir.clone(),
            split: self.split.clone(),
            limit: self.limit,
            max_seq_len: self.max_seq_len,
        }
    }
}
