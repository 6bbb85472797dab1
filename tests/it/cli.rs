//! The binary as a user runs it.

use std::process::Command;

use super::fixtures;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cipherprune"))
}

#[test]
fn help_lists_the_pipeline() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["finetune", "eval", "prune", "simulate", "export", "secure-eval", "bench"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn finetune_then_eval_json_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 11);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 96, 32, 4);
    let run = dir.path().join("run");
    let out = bin()
        .args(["finetune", "--quiet", "--task", "sst2", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--max-seq-len", "32"])
        .arg("--model").arg(&model).arg("--data-dir").arg(&data).arg("--out").arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    assert!(cfg.contains("epochs: 1") && cfg.contains("batch_size: 16"), "{cfg}");
    let out = bin().args(["eval", "--json"]).arg("--checkpoint").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"], "sst2");
    assert_eq!(v["split"], "dev");
    assert_eq!(v["examples"], 32);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // A second finetune into the same directory must not clobber it.
    let again = bin().args(["finetune", "--quiet"]).arg("--model").arg(&model).arg("--data-dir").arg(&data).arg("--out").arg(&run).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn malformed_tsv_fails_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 12);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 8, 8, 5);
    let train = data.join("train.tsv");
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str("a sentence with a bad label\tpositive\n");
    std::fs::write(&train, text).unwrap();
    let out = bin()
        .args(["finetune", "--quiet", "--task", "sst2"])
        .arg("--model").arg(&model).arg("--data-dir").arg(&data).arg("--out").arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.tsv:10") && err.contains("column 2"), "{err}");
}

#[test]
fn missing_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 13);
    let out = bin()
        .args(["finetune", "--quiet", "--task", "mrpc", "--data-dir", "/nonexistent/glue"])
        .arg("--model").arg(&model).arg("--out").arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/glue") && err.contains("train.tsv"), "{err}");
}
