//! Fine-tuning behaviour: it learns, it resumes exactly, it stops on NaN.

use std::path::Path;

use cipherprune::config::FinetuneConfig;
use cipherprune::train::finetune::{finetune, FinetuneRun};
use cipherprune::train::Silent;

use super::fixtures;

fn tiny_cfg(model: &Path, data: &Path) -> FinetuneConfig {
    FinetuneConfig {
        model: model.display().to_string(),
        task: "sst2".into(),
        data_dir: data.to_path_buf(),
        epochs: 2,
        batch_size: 16,
        learning_rate: 2e-3,
        max_seq_len: 32,
        save_every: 5,
        log_every: 1,
        freeze_word_embeddings: false,
        ..FinetuneConfig::default()
    }
}

fn lines(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn tiny_model_learns_a_separable_task() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 7);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 480, 120, 1);
    let cfg = FinetuneConfig { epochs: 4, ..tiny_cfg(&model, &data) };
    let run = FinetuneRun { cfg, run_dir: dir.path().join("run"), resume: false, stop_after: None };
    let report = finetune(&run, &mut Silent).unwrap();
    let acc = report.outcome.state.best["accuracy"];
    assert!(acc >= 0.9, "dev accuracy only {acc}");
    let train = lines(&run.run_dir, "train");
    let first = train[..5].iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / 5.0;
    let last = train[train.len() - 5..].iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / 5.0;
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
    for f in ["config.yaml", "config.json", "model.safetensors", "vocab.txt", "checkpoints/LATEST"] {
        assert!(run.run_dir.join(f).is_file(), "run directory lacks {f}");
    }
}

#[test]
fn length_drop_still_learns_and_then_survives_pruning() {
    use cipherprune::model::{Masking, Numerics, Plan};
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 7);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 480, 120, 1);
    let cfg = FinetuneConfig { epochs: 4, length_drop: 0.5, ..tiny_cfg(&model, &data) };
    let run = FinetuneRun { cfg, run_dir: dir.path().join("run"), resume: false, stop_after: None };
    let acc = finetune(&run, &mut Silent).unwrap().outcome.state.best["accuracy"];
    assert!(acc >= 0.9, "dev accuracy only {acc}");
    // Half the tokens dropped by score after every layer still classifies.
    let spec = cipherprune::run::RunSpec { checkpoint: run.run_dir.clone(), data_dir: Some(data), split: "dev".into(), ..Default::default() };
    let r = cipherprune::run::Run::load(&spec).unwrap();
    let plan = Plan { numerics: Numerics::Exact, masking: Masking::Ratio { keep: vec![0.5; r.layers()] }, physical: false };
    let sim = cipherprune::prune::simulate::simulate(&r.model, &plan, r.task, &r.data, 64, r.max_seq_len, &mut Silent).unwrap();
    assert!(sim.metrics["accuracy"] >= 0.85 && sim.relative_work < 0.8, "{:?} at work {}", sim.metrics, sim.relative_work);
}

#[test]
fn resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 8);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 120, 40, 2);
    let cfg = tiny_cfg(&model, &data);
    let full = FinetuneRun { cfg: cfg.clone(), run_dir: dir.path().join("full"), resume: false, stop_after: None };
    finetune(&full, &mut Silent).unwrap();
    // Interrupt mid-epoch (step 11 of 16, between checkpoints), then resume.
    let cut = FinetuneRun { cfg: cfg.clone(), run_dir: dir.path().join("cut"), resume: false, stop_after: Some(11) };
    assert!(finetune(&cut, &mut Silent).unwrap().outcome.interrupted);
    let resumed = FinetuneRun { resume: true, stop_after: None, ..cut };
    let report = finetune(&resumed, &mut Silent).unwrap();
    assert_eq!(report.outcome.state.global_step, 16);
    let a = candle_core::safetensors::load(full.run_dir.join("checkpoints/step-0000016/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(resumed.run_dir.join("checkpoints/step-0000016/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let d = (ta - &b[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d <= 1e-6, "{name} differs by {d} after resume");
    }
    let la: Vec<f64> = lines(&full.run_dir, "train").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    let lb: Vec<f64> = lines(&resumed.run_dir, "train").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "loss curves differ: {x} vs {y}");
    }
}

#[test]
fn divergence_is_an_error_that_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 9);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 64, 16, 3);
    let cfg = FinetuneConfig { learning_rate: 1e30, warmup_ratio: 0.0, max_grad_norm: 1e30, ..tiny_cfg(&model, &data) };
    let run = FinetuneRun { cfg, run_dir: dir.path().join("run"), resume: false, stop_after: None };
    let err = finetune(&run, &mut Silent).err().expect("must diverge").to_string();
    assert!(err.contains("diverged") && err.contains("step"), "{err}");
}

/// A short fine-tune of the real pretrained model on real SST-2 sentences.
#[test]
fn real_minilm_short_finetune_lowers_the_loss() {
    let files = fixtures::real_model();
    let dir = tempfile::tempdir().unwrap();
    let cfg = FinetuneConfig {
        model: files.dir.display().to_string(),
        task: "sst2".into(),
        data_dir: fixtures::real_sst2(),
        epochs: 1,
        batch_size: 16,
        learning_rate: 1e-4,
        limit: Some(640),
        eval_limit: Some(200),
        log_every: 8,
        save_every: 1000,
        ..FinetuneConfig::default()
    };
    let run = FinetuneRun { cfg, run_dir: dir.path().join("run"), resume: false, stop_after: None };
    let report = finetune(&run, &mut Silent).unwrap();
    let train = lines(&run.run_dir, "train");
    let first = train[0]["loss"].as_f64().unwrap();
    let last = train.last().unwrap()["loss"].as_f64().unwrap();
    assert!(last < first - 0.05, "loss {first} -> {last}");
    let acc = report.outcome.state.best["accuracy"];
    assert!(acc > 0.65, "dev accuracy after 40 steps: {acc}");
}
