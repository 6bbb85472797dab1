//! What a run directory says about itself: its task, data and sequence
//! length (from `config.yaml` of `finetune` or `prune.yaml` of `prune`), so
//! later commands need no repeated flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
    pub fn task(&self, flag: &Option<String>) -> Result<String> {
        flag.clone().or_else(|| self.task.clone()).context("--task is required (the checkpoint has no config.yaml or prune.yaml)")
    }

    pub fn data_dir(&self, flag: &Option<PathBuf>) -> Result<PathBuf> {
        flag.clone().or_else(|| self.data_dir.clone()).context("--data-dir is required (the checkpoint has no config.yaml or prune.yaml)")
    }
}
