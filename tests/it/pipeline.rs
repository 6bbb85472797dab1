//! The whole pipeline through the binary on a tiny model: finetune →
//! prune → simulate → export → simulate from the file → secure-eval, and
//! the errors a user meets on the way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::fixtures;

fn cp(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cipherprune"));
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// The command failed and its error says `msg`.
fn refused(o: &Output, msg: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(msg), "wanted a failure saying {msg:?}, got: {err}");
}

/// The lines of a run's `metrics.jsonl` of one kind ("train", "eval").
fn metric_lines(file: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["kind"] == kind).collect()
}

/// A tiny model (seed `model_seed`) fine-tuned for one epoch on 96
/// separable sentences (seed `data_seed`): the directory holding it all,
/// the data and the run.
fn tiny_finetuned(model_seed: u64, data_seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixtures::tiny_model(&d.join("m"), model_seed);
    let data = fixtures::sentiment_tsvs(&d.join("d"), 96, 16, data_seed);
    let ft = d.join("ft");
    ok(&cp(&["finetune", "-q", "--task", "sst2", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3"], &[("--model", &model), ("--data-dir", &data), ("--out", &ft)]));
    (dir, data, ft)
}

#[test]
fn finetune_prune_simulate_export_secure_eval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixtures::tiny_model(&d.join("m"), 21);
    let data = fixtures::sentiment_tsvs(&d.join("d"), 128, 48, 6);
    let (ft, pr) = (d.join("ft"), d.join("pr"));
    ok(&cp(&["finetune", "-q", "--task", "sst2", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--max-seq-len", "32"], &[("--model", &model), ("--data-dir", &data), ("--out", &ft)]));
    // Task, data and length come from the fine-tuned run.
    let p = cp(&["prune", "-q", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--threshold-lr", "5e-3", "--temperature", "0.01", "--lambda", "1.0", "--log-every", "2"], &[("--checkpoint", &ft), ("--out", &pr)]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    for f in ["prune.yaml", "metrics.jsonl", "model.safetensors", "thresholds.safetensors", "soft/metrics.jsonl", "soft/model.safetensors"] {
        assert!(pr.join(f).is_file(), "prune run lacks {f}");
    }
    let soft_log = std::fs::read_to_string(pr.join("soft/metrics.jsonl")).unwrap();
    assert!(soft_log.contains("\"l_prune\"") && soft_log.contains("\"kept_ratio_1\"") && soft_log.contains("\"theta\""), "{soft_log}");
    // A soft stage alone is a finished run too: its directory is the result.
    let so = d.join("soft-only");
    ok(&cp(&["prune", "-q", "--soft-epochs", "1", "--hard-epochs", "0", "--batch-size", "16", "--lambda", "1.0"], &[("--checkpoint", &ft), ("--out", &so)]));
    assert!(so.join("summary.json").is_file() && so.join("soft/prune.yaml").is_file());
    let soft_sim = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &so.join("soft"))]));
    assert_eq!(soft_sim["examples"], 48);

    let sim = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &pr)]));
    assert_eq!(sim["examples"], 48);
    for key in ["accuracy", "relative_work", "tokens_kept_per_layer", "reduced_per_layer"] {
        assert!(!sim[key].is_null(), "simulate --json lacks {key}: {sim}");
    }
    let rw = sim["relative_work"].as_f64().unwrap();
    assert!(rw > 0.0 && rw <= 1.0, "relative work {rw}");
    assert_eq!(sim["tokens_kept_per_layer"].as_array().unwrap().len(), 2);
    // The length groups split the 48 examples, shortest first, and recombine
    // to the totals (equal sizes, so plain means).
    let groups = sim["by_length"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    assert_eq!(groups.iter().map(|g| g["examples"].as_u64().unwrap()).sum::<u64>(), 48);
    for w in groups.windows(2) {
        assert!(w[0]["max_tokens"].as_u64() <= w[1]["min_tokens"].as_u64(), "{w:?}");
    }
    let mean = |key: &str, f: &dyn Fn(&serde_json::Value) -> f64| groups.iter().map(f).sum::<f64>() / 4.0 - sim[key].as_f64().unwrap();
    assert!(mean("relative_work", &|g| g["relative_work"].as_f64().unwrap()).abs() < 1e-9);
    assert!(mean("accuracy", &|g| g["metrics"]["accuracy"].as_f64().unwrap()).abs() < 1e-9);
    // Ablation rows: the exact model and the unpruned approximations do all the work.
    let exact = ok(&cp(&["simulate", "--json", "--exact"], &[("--checkpoint", &pr)]));
    assert_eq!(exact["relative_work"].as_f64().unwrap(), 1.0);
    let high = ok(&cp(&["simulate", "--json", "--no-prune", "--no-reduce"], &[("--checkpoint", &pr)]));
    assert_eq!(high["relative_work"].as_f64().unwrap(), 1.0);
    assert!(high["reduced_per_layer"].as_array().unwrap().iter().all(|v| v.as_f64() == Some(0.0)));
    // Removing tokens and masking them agree.
    let batched = ok(&cp(&["simulate", "--json", "--batched"], &[("--checkpoint", &pr)]));
    assert_eq!(batched["accuracy"], sim["accuracy"]);
    assert_eq!(batched["tokens_kept_per_layer"], sim["tokens_kept_per_layer"]);
    // The fixed-schedule baseline: half of the live tokens after each layer.
    let fixed = ok(&cp(&["simulate", "--json", "--keep-ratio", "0.5"], &[("--checkpoint", &pr)]));
    assert_eq!(fixed["mode"], "approximations + fixed keep-ratio schedule");
    let (rw, kept) = (fixed["relative_work"].as_f64().unwrap(), fixed["tokens_kept_per_layer"].as_array().unwrap());
    assert!(rw > 0.5 && rw < 0.85, "two layers at keep 0.5: relative work {rw}");
    assert!(kept[1].as_f64() < kept[0].as_f64(), "{kept:?}");
    let e = cp(&["simulate", "--keep-ratio", "0.5,0.5,0.5"], &[("--checkpoint", &pr)]);
    refused(&e, "--keep-ratio: 3 values for a model of 2 layers");
    // Three work views, always together; FLOPs charge the FFN at the kept
    // tokens, so they fall below relative work once anything is pruned.
    for key in ["relative_flops", "secure_bytes_ratio", "secure_rounds_ratio"] {
        let v = sim[key].as_f64().unwrap_or_else(|| panic!("simulate --json lacks {key}: {sim}"));
        assert!(v > 0.0 && v < 1.5, "{key} {v}");
    }
    assert!(sim["relative_flops"].as_f64() <= sim["relative_work"].as_f64(), "{sim}");
    assert!((high["secure_bytes_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-12, "no masks, the unpruned protocol's bytes: {high}");
    // Zero-shot thresholds on the plain fine-tuned run, on a ramp and per
    // layer, with a length exponent; no reduction.
    let zs = ok(&cp(&["simulate", "--json", "--theta-ramp", "2.0", "--exponent", "0"], &[("--checkpoint", &ft)]));
    assert_eq!(zs["mode"], "approximations + pruning");
    assert_eq!(zs["tokens_kept_per_layer"][0], zs["tokens_entering_per_layer"][0], "the ramp starts at 0: layer 0 keeps all");
    assert!(zs["tokens_kept_per_layer"][1].as_f64() < zs["tokens_entering_per_layer"][1].as_f64(), "θ_1 = 1 on the relative score prunes: {zs}");
    assert!(zs["reduced_per_layer"].as_array().unwrap().iter().all(|v| v.as_f64() == Some(0.0)));
    let zs1 = ok(&cp(&["simulate", "--json", "--theta", "0,1", "--exponent", "0"], &[("--checkpoint", &ft)]));
    assert_eq!(zs1["tokens_kept_per_layer"], zs["tokens_kept_per_layer"], "--theta 0,1 is the same ramp");
    let e = cp(&["simulate", "--theta", "0.1", "--exponent", "1.5"], &[("--checkpoint", &ft)]);
    refused(&e, "--exponent is 1.5, not in [0, 1]");

    let file = d.join("thresholds.yaml");
    ok(&cp(&["export", "-q"], &[("--checkpoint", &pr), ("--out", &file)]));
    let text = std::fs::read_to_string(&file).unwrap();
    for field in ["format: cipherprune-thresholds/1", "weights_sha256", "theta_ring", "beta_ring", "measured:", "tokens_kept_per_layer"] {
        assert!(text.contains(field), "threshold file lacks {field}:\n{text}");
    }
    assert!(text.contains("exponent: 1.0") && text.contains("relative_flops") && text.contains("secure_bytes_ratio"), "{text}");
    // A file for another score (p) than the run's is refused, naming the field.
    let other_p = d.join("other-p.yaml");
    std::fs::write(&other_p, text.replace("exponent: 1.0", "exponent: 0.5")).unwrap();
    let e = cp(&["simulate"], &[("--checkpoint", &pr), ("--thresholds", &other_p)]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("layers[0].exponent") && msg.contains("other-p.yaml"), "{msg}");
    // A file written before p existed still loads (p = 1).
    let old = d.join("old.yaml");
    std::fs::write(&old, text.lines().filter(|l| !l.trim_start().starts_with("exponent:")).collect::<Vec<_>>().join("\n")).unwrap();
    let from_old = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &pr), ("--thresholds", &old)]));
    assert_eq!(from_old["accuracy"], sim["accuracy"]);
    let again = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    for key in ["accuracy", "relative_work", "tokens_kept_per_layer", "reduced_per_layer"] {
        assert_eq!(again[key], sim[key], "{key} differs when loaded from the file");
    }
    // The same file against the fine-tuned weights (another model) fails, naming the field.
    let other = cp(&["simulate", "--json"], &[("--checkpoint", &ft), ("--thresholds", &file)]);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("model.weights_sha256") && err.contains("thresholds.yaml"), "{err}");
    // A tampered ring integer is caught too.
    let bad = d.join("bad.yaml");
    std::fs::write(&bad, text.replacen("theta_ring: ", "theta_ring: 9", 1)).unwrap();
    let e = cp(&["simulate"], &[("--checkpoint", &pr), ("--thresholds", &bad)]);
    refused(&e, "layers[0].theta_ring");

    let se = ok(&cp(&["secure-eval", "--json"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    for key in ["agreement", "simulation", "engine", "flips_per_layer", "overflows", "examples_per_second"] {
        assert!(!se[key].is_null(), "secure-eval --json lacks {key}: {se}");
    }
    assert_eq!(se["simulation"]["accuracy"], sim["accuracy"]);
    assert!(se["agreement"].as_f64().unwrap() >= 0.9, "{se}");
    assert!(pr.join("secure-eval-dev-37-12.json").is_file());
    let rows = se["cost_by_layer"]["pruned"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["layer"] == 1 && r["class"] == "gelu" && r["ss_mults"].as_u64().unwrap() > 0), "no per-layer costs: {rows:?}");
    // The same examples through the two-party protocol: bit for bit, and what it costs.
    let sh = ok(&cp(&["secure-eval", "--json", "--backend", "shares", "--limit", "6", "--compaction", "shuffle"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    assert_eq!(sh["bit_identical"], true, "{sh}");
    assert!(sh["bytes_sent"]["total"].as_u64().unwrap() > 0 && sh["rounds"].as_u64().unwrap() > 0, "{sh}");
    let ops = sh["per_operator"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["class"] == "softmax" && o["pruned"]["total"]["bytes"].as_u64().unwrap() > 0), "{ops:?}");
    // Pruning's own protocol costs something, and only in the pruned run.
    let pruning = ops.iter().find(|o| o["class"] == "pruning").expect("a pruning row");
    assert!(pruning["pruned"]["total"]["bytes"].as_u64().unwrap() > 0 && pruning["unpruned"]["total"]["bytes"] == 0, "{pruning}");
    assert!(pr.join("secure-eval-dev-37-12-shares.json").is_file());
    // An offline phase, reported apart, that the online run never had to top up.
    let off = &sh["offline"]["pruned"];
    assert!(off["total"]["server_to_client_bytes"].as_u64().unwrap() > 0 && off["total"]["dealer_bytes"].as_u64().unwrap() > 0, "{sh}");
    assert_eq!(off["online_refills"], 0, "{sh}");
    // With the dealer's DCF keys: the same logits in fewer rounds, the keys offline.
    let fss = ok(&cp(&["secure-eval", "--json", "--backend", "shares", "--limit", "6", "--protocol", "fss"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    assert_eq!(fss["bit_identical"], true, "{fss}");
    assert!(fss["rounds"].as_u64().unwrap() * 3 < sh["rounds"].as_u64().unwrap(), "{} vs {} rounds", fss["rounds"], sh["rounds"]);
    let keys = &fss["offline"]["pruned"];
    assert!(keys["key_bytes"].as_u64().unwrap() > 0 && keys["keygen_seconds"].as_f64().unwrap() > 0.0, "{keys}");
    assert_eq!(keys["online_refills"], 0, "{fss}");
    assert_eq!(sh["offline"]["pruned"]["key_bytes"], 0, "no keys without --protocol fss");
    assert!(pr.join("secure-eval-dev-37-12-shares-fss.json").is_file(), "its own report file");
    serve_and_ask(&pr);
    // A ring too small for the model overflows, and says so first.
    let small = cp(&["secure-eval", "--ring-bits", "16", "--frac-bits", "8"], &[("--checkpoint", &pr)]);
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stderr));
    assert!(String::from_utf8_lossy(&small.stdout).starts_with("OVERFLOW"), "{}", String::from_utf8_lossy(&small.stdout));
}

#[test]
fn pruning_a_model_without_a_task_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures::tiny_model(&dir.path().join("m"), 22);
    let data = fixtures::sentiment_tsvs(&dir.path().join("d"), 16, 8, 7);
    let out = cp(&["prune", "-q", "--task", "sst2"], &[("--checkpoint", &model), ("--data-dir", &data), ("--out", &dir.path().join("pr"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fine-tune it") , "{err}");
}

#[test]
fn an_interrupted_prune_resumes_to_the_same_thresholds() {
    let (dir, data, ft) = tiny_finetuned(23, 8);
    let d = dir.path();
    let flags = ["prune", "-q", "--epochs", "1", "--batch-size", "16", "--threshold-lr", "5e-3", "--temperature", "0.01", "--lambda", "1.0", "--save-every", "2", "--distill", "0.5", "--min-train-tokens", "9"];
    let (a, b) = (d.join("a"), d.join("b"));
    let first = cp(&flags, &[("--checkpoint", &ft), ("--out", &a)]);
    ok(&first);
    // Only rows of at least 9 tokens ([CLS] words . [SEP]) train.
    let long = std::fs::read_to_string(data.join("train.tsv")).unwrap().lines().skip(1).filter(|l| l.split('\t').next().unwrap().split_whitespace().count() + 2 >= 9).count();
    assert!(long > 10 && long < 96, "{long} long rows");
    assert!(String::from_utf8_lossy(&first.stdout).contains(&format!("({long} train examples)")), "{}", String::from_utf8_lossy(&first.stdout));
    // Stopped in the soft stage, then resumed: the soft stage ends, the hard one runs.
    let mut stop = flags.to_vec();
    stop.extend(["--stop-after", "3"]);
    ok(&cp(&stop, &[("--checkpoint", &ft), ("--out", &b)]));
    assert!(!b.join("thresholds.safetensors").exists());
    let refused = cp(&flags, &[("--checkpoint", &ft), ("--out", &b)]);
    assert!(!refused.status.success(), "a second run into the same directory must be refused");
    let mut resume = flags.to_vec();
    resume.push("--resume");
    ok(&cp(&resume, &[("--checkpoint", &ft), ("--out", &b)]));
    let read = |p: &Path| std::fs::read(p.join("thresholds.safetensors")).unwrap();
    assert_eq!(read(&a), read(&b), "resumed thresholds differ");
    assert_eq!(std::fs::read(a.join("model.safetensors")).unwrap(), std::fs::read(b.join("model.safetensors")).unwrap(), "resumed weights differ");
}

/// With `--average-from` the hard stage's result is the mean of its weights
/// over the steps after that share of it: every check from then on is of
/// the mean, the result differs from the last iterate, and an interrupted
/// run resumes to the same bytes.
#[test]
fn the_hard_stage_can_average_its_weights() {
    let (dir, _, ft) = tiny_finetuned(26, 11);
    let d = dir.path();
    // 96 rows in batches of 16: 6 steps an epoch, 12 in all; the mean covers steps 7–12.
    let flags = ["prune", "-q", "--soft-epochs", "0", "--hard-epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--eval-every", "2", "--save-every", "2", "--average-from", "0.5"];
    let (a, b) = (d.join("a"), d.join("b"));
    ok(&cp(&flags, &[("--checkpoint", &ft), ("--out", &a)]));
    let checks: Vec<(u64, Option<u64>)> = metric_lines(&a.join("metrics.jsonl"), "eval").into_iter().map(|v| (v["step"].as_u64().unwrap(), v["averaged_steps"].as_u64())).collect();
    assert_eq!(checks, vec![(2, None), (4, None), (6, None), (8, Some(2)), (10, Some(4)), (12, Some(6))]);
    let bytes = |p: PathBuf| std::fs::read(p).unwrap();
    let last = a.join("checkpoints/step-0000012");
    assert!(last.join("average.safetensors").is_file());
    assert_ne!(bytes(a.join("model.safetensors")), bytes(last.join("model.safetensors")), "the result is the last iterate, not the mean");
    let mut stop = flags.to_vec();
    stop.extend(["--stop-after", "9"]);
    ok(&cp(&stop, &[("--checkpoint", &ft), ("--out", &b)]));
    let mut resume = flags.to_vec();
    resume.push("--resume");
    ok(&cp(&resume, &[("--checkpoint", &ft), ("--out", &b)]));
    assert_eq!(bytes(a.join("model.safetensors")), bytes(b.join("model.safetensors")), "resumed mean differs");
    let e = cp(&["prune", "-q", "--average-from", "1.5"], &[("--checkpoint", &ft), ("--out", &d.join("c"))]);
    refused(&e, "average_from is 1.5, not in (0, 1)");
}

/// With `--soup 2` the hard stage runs twice from the same start (seeds 7
/// and 8) and the result is the mean of their weights, with the thresholds
/// they share; the first is the hard stage a run without the soup trains,
/// and an interrupted soup resumes to the same bytes.
#[test]
fn a_soup_is_the_mean_of_several_hard_stages() {
    let (dir, _, ft) = tiny_finetuned(28, 13);
    let d = dir.path();
    let flags = ["prune", "-q", "--soft-epochs", "0", "--batch-size", "16", "--lr", "1e-3", "--theta-init", "0.02", "--seed", "7", "--log-every", "1"];
    let with = |extra: &[&'static str]| [&flags[..], extra].concat();
    let (plain, a, b) = (d.join("plain"), d.join("a"), d.join("b"));
    ok(&cp(&flags, &[("--checkpoint", &ft), ("--out", &plain)]));
    let out = cp(&with(&["--soup", "2"]), &[("--checkpoint", &ft), ("--out", &a)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("hard stages on dev: seed 7 ") && text.contains(", seed 8 ") && text.contains("the result is the mean of their weights"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let weights = |p: PathBuf| cipherprune::model::Params::load(&p.join("model.safetensors")).unwrap().all();
    let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
    let (w7, w8, mean) = (weights(a.join("hard-seed-7")), weights(a.join("hard-seed-8")), weights(a.clone()));
    assert_eq!(w7.keys().collect::<Vec<_>>(), mean.keys().collect::<Vec<_>>());
    let mut differ = 0;
    for (name, m) in &mean {
        let (x, y) = (values(&w7[name]), values(&w8[name]));
        differ += usize::from(x != y);
        for ((m, x), y) in values(m).iter().zip(&x).zip(&y) {
            assert!((m - (x + y) / 2.0).abs() <= 1e-6 * (1.0 + x.abs()), "{name}: {m} is not the mean of {x} and {y}");
        }
    }
    assert!(differ > 0, "the two hard stages trained identically: the seed did not reach them");
    let plain_w = weights(plain.clone());
    assert!(plain_w.iter().all(|(n, t)| values(t) == values(&w7[n])), "the first hard stage is the run without a soup");
    let thr = |p: PathBuf| std::fs::read(p.join("thresholds.safetensors")).unwrap();
    let theta = |p: PathBuf| values(&candle_core::safetensors::load(p.join("thresholds.safetensors"), &candle_core::Device::Cpu).unwrap()["thresholds.theta"]);
    assert_eq!(theta(a.clone()), theta(a.join("hard-seed-8")), "the soup keeps the thresholds its hard stages share");
    assert!(a.join("summary.json").is_file() && std::fs::read_to_string(a.join("loss.svg")).unwrap().contains("hard (seed 8)"));
    // Stopped inside the first hard stage, then resumed: the same soup.
    ok(&cp(&with(&["--soup", "2", "--stop-after", "3"]), &[("--checkpoint", &ft), ("--out", &b)]));
    assert!(!b.join("hard-seed-8").exists() && !b.join("model.safetensors").exists());
    refused(&cp(&with(&["--soup", "2"]), &[("--checkpoint", &ft), ("--out", &b)]), "already holds a run; pass --resume");
    ok(&cp(&with(&["--soup", "2", "--resume"]), &[("--checkpoint", &ft), ("--out", &b)]));
    assert_eq!(std::fs::read(a.join("model.safetensors")).unwrap(), std::fs::read(b.join("model.safetensors")).unwrap(), "resumed soup differs");
    assert_eq!(thr(a.clone()), thr(b.clone()));
    let e = cp(&with(&["--soup", "0"]), &[("--checkpoint", &ft), ("--out", &d.join("c"))]);
    refused(&e, "soup is 0");
}

/// Merging keeps one token per layer for what it prunes, in training,
/// simulation, the threshold file, the engine and the two-party protocol.
#[test]
fn a_merging_run_goes_from_training_to_the_protocol() {
    let (dir, _, ft) = tiny_finetuned(27, 12);
    let d = dir.path();
    let zs = |merge: bool| {
        let mut flags = vec!["simulate", "--json", "--theta-ramp", "2.0", "--exponent", "0"];
        flags.extend(merge.then_some("--merge"));
        ok(&cp(&flags, &[("--checkpoint", &ft)]))
    };
    let (dropped, merged) = (zs(false), zs(true));
    let kept = |v: &serde_json::Value| v["tokens_kept_per_layer"][1].as_f64().unwrap();
    assert!(kept(&dropped) < dropped["tokens_entering_per_layer"][1].as_f64().unwrap(), "nothing pruned: {dropped}");
    assert!(kept(&merged) > kept(&dropped) && kept(&merged) <= kept(&dropped) + 1.0, "merged {merged}, dropped {dropped}");
    assert!(merged["secure_bytes_ratio"].as_f64() > dropped["secure_bytes_ratio"].as_f64(), "a merged row costs bytes");
    assert_eq!(merged["mode"], "approximations + pruning (merged)");
    refused(&cp(&["simulate", "--merge", "--no-prune"], &[("--checkpoint", &ft)]), "cannot be used with");

    let pr = d.join("pr");
    ok(&cp(&["prune", "-q", "--epochs", "1", "--batch-size", "16", "--theta-init", "0.12", "--merge"], &[("--checkpoint", &ft), ("--out", &pr)]));
    assert!(std::fs::read_to_string(pr.join("prune.yaml")).unwrap().contains("merge: true"));
    let sim = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &pr)]));
    assert!(sim["tokens_kept_per_layer"][0].as_f64() < sim["tokens_entering_per_layer"][0].as_f64(), "θ = 0.12 prunes: {sim}");
    let file = d.join("t.yaml");
    ok(&cp(&["export", "-q"], &[("--checkpoint", &pr), ("--out", &file)]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("merge: true") && text.contains("sum of all rows - sum of kept rows"), "{text}");
    let se = ok(&cp(&["secure-eval", "--json"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    assert_eq!(se["simulation"]["accuracy"], sim["accuracy"]);
    assert!(se["agreement"].as_f64().unwrap() >= 0.9, "{se}");
    let sh = ok(&cp(&["secure-eval", "--json", "--backend", "shares", "--limit", "4"], &[("--checkpoint", &pr), ("--thresholds", &file)]));
    assert_eq!(sh["bit_identical"], true, "{sh}");
    // Over the network the client learns from the server that layers merge
    // and follows it (otherwise the parties' messages would not line up).
    let (mut dealer, _dealer_out, dealer_addr) = spawn_listening(&["dealer", "--listen", "127.0.0.1:0", "--timeout", "8", "--seed", "2"], None, "dealer listening on ");
    let (mut server, _out, addr) = spawn_listening(&["serve", "--listen", "127.0.0.1:0", "--sessions", "1", "--seed", "1", "--dealer", &dealer_addr], Some(&pr), "listening on ");
    let v = ok(&cp(&["client", "--json", "--connect", &addr, "--dealer", &dealer_addr, "--sentence", "good fine great bad awful poor good", "--seed", "3"], &[("--checkpoint", &pr)]));
    assert_eq!(v["logits"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["kept_per_layer"][0], 2, "[CLS] and the merged token: {v}");
    assert!(server.wait().unwrap().success());
    dealer.kill().unwrap();
    dealer.wait().unwrap();
}

/// With a holdout the stages check themselves on training rows set aside,
/// never trained on, and the dev set is only reported.
#[test]
fn a_holdout_replaces_dev_in_the_stages_checks() {
    let (dir, _, ft) = tiny_finetuned(25, 10);
    let pr = dir.path().join("pr");
    let flags = ["prune", "-q", "--epochs", "1", "--batch-size", "16", "--lambda", "1.0", "--limit", "64", "--holdout", "24"];
    let out = cp(&flags, &[("--checkpoint", &ft), ("--out", &pr)]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(64 train examples)") && stdout.contains("hard stage best on held-out training rows"), "{stdout}");
    for file in ["soft/metrics.jsonl", "metrics.jsonl"] {
        let evals = metric_lines(&pr.join(file), "eval");
        assert!(!evals.is_empty(), "{file} has no checks");
        for e in &evals {
            assert_eq!((e["split"].as_str(), e["examples"].as_f64()), (Some("held-out"), Some(24.0)), "{file}: {e}");
        }
    }
    // The final report is still the dev set's (16 rows).
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pr.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["examples"].as_f64(), Some(16.0), "{summary}");
    // 64 to train on and 40 set aside need 104 of the 96 rows.
    let e = cp(&["prune", "-q", "--epochs", "1", "--limit", "64", "--holdout", "40"], &[("--checkpoint", &ft), ("--out", &dir.path().join("pr2"))]);
    refused(&e, "holdout: 40 rows set aside and 64 to train on need 104 training rows, the split has 96");
    let e = cp(&["prune", "-q", "--holdout", "0"], &[("--checkpoint", &ft), ("--out", &dir.path().join("pr3"))]);
    refused(&e, "holdout must be at least 1 row");
}

/// With a warmup the target falls linearly from 1 over the first part of
/// the soft stage, then holds; the hard stage holds it from its first step.
#[test]
fn a_flops_target_can_warm_up() {
    let (dir, _, ft) = tiny_finetuned(24, 9);
    let pr = dir.path().join("pr");
    let flags = ["prune", "-q", "--epochs", "1", "--batch-size", "16", "--target-flops", "0.4", "--target-warmup", "0.5", "--log-every", "1"];
    ok(&cp(&flags, &[("--checkpoint", &ft), ("--out", &pr)]));
    let targets = |file: &str| -> Vec<f64> {
        metric_lines(&pr.join(file), "train").into_iter().map(|v| v["flops_target"].as_f64().unwrap()).collect()
    };
    let soft = targets("soft/metrics.jsonl");
    assert_eq!(soft.len(), 6, "{soft:?}");
    // Steps 0..6 of 6, warmup over 3: 1 − 0.6·min(1, k/3).
    for (k, t) in soft.iter().enumerate() {
        let want = 1.0 - 0.6 * (k as f64 / 3.0).min(1.0);
        assert!((t - want).abs() < 1e-9, "step {k}: target {t}, want {want} ({soft:?})");
    }
    assert!(targets("metrics.jsonl").iter().all(|&t| t == 0.4));
}

/// A FLOPs target instead of λ: the multiplier rises while the soft
/// masks' expected FLOPs sit above the target and the masks come down; p
/// learned per layer from 0. Bad values are refused before anything is
/// written.
#[test]
fn a_flops_target_is_held_by_a_lagrange_multiplier() {
    let (dir, _, ft) = tiny_finetuned(24, 9);
    let d = dir.path();
    let pr = d.join("pr");
    let flags = ["prune", "-q", "--epochs", "1", "--batch-size", "8", "--threshold-lr", "0.2", "--temperature", "0.2", "--target-flops", "0.5", "--lagrange-lr", "0.5", "--score-exponent", "0", "--learn-exponent", "--log-every", "1"];
    ok(&cp(&flags, &[("--checkpoint", &ft), ("--out", &pr)]));
    let rows = metric_lines(&pr.join("soft/metrics.jsonl"), "train");
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r}"));
    assert!(rows.len() >= 10, "{} logged steps", rows.len());
    assert!(f(&rows[0], "flops_soft") > 0.5, "θ starts at 0: every token kept, expected FLOPs near 1: {}", rows[0]);
    // Gradient ascent: λ₁ grows while E[FLOPs] > target.
    let (first, last) = (&rows[0], rows.last().unwrap());
    assert!(f(last, "lagrange_1") > f(first, "lagrange_1"), "λ₁ {} → {}", f(first, "lagrange_1"), f(last, "lagrange_1"));
    assert!(f(last, "flops_soft") < f(first, "flops_soft"), "E[FLOPs] {} → {}", f(first, "flops_soft"), f(last, "flops_soft"));
    assert!(rows.iter().any(|r| f(r, "exponent_1") != 0.0), "p is learned: {last}");
    // The hard stage keeps the multiplier term (θ frozen, weights adapt).
    let hard = std::fs::read_to_string(pr.join("metrics.jsonl")).unwrap();
    assert!(hard.contains("\"flops_soft\"") && hard.contains("\"lagrange_1\""), "{hard}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pr.join("summary.json")).unwrap()).unwrap();
    assert!(summary["relative_flops"].as_f64().unwrap() < 1.0, "{summary}");
    // Simulating the run uses its learned p (written with its thresholds).
    let sim = ok(&cp(&["simulate", "--json"], &[("--checkpoint", &pr)]));
    assert_eq!(sim["relative_flops"], summary["relative_flops"]);

    for (flag, value, says) in [("--target-flops", "1.5", "target_flops is 1.5, not in (0, 1]"), ("--target-flops", "0", "target_flops is 0"), ("--score-exponent", "1.5", "score_exponent is 1.5, not in [0, 1]"), ("--target-warmup", "1.5", "target_warmup is 1.5, not in [0, 1]")] {
        let out = d.join("refused");
        let e = cp(&["prune", "-q", flag, value], &[("--checkpoint", &ft), ("--out", &out)]);
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && msg.contains(says), "{flag} {value}: {msg}");
        assert!(!out.exists(), "{flag} {value}: nothing may be written");
    }
    // A teacher that is not there is found before anything is written, so
    // the corrected command needs no --resume.
    let out = d.join("no-teacher");
    let e = cp(&["prune", "-q", "--distill", "0.5"], &[("--checkpoint", &ft), ("--teacher", &d.join("no-such-teacher")), ("--out", &out)]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("no-such-teacher"), "{msg}");
    assert!(!out.exists(), "a run whose teacher is missing writes nothing: {msg}");
    // A sweep over one target, with the zero-shot and keep-ratio baselines
    // and the first sweep drawn beside it.
    let sw1 = d.join("sweep1");
    let mut sweep = flags.to_vec();
    sweep[0] = "sweep";
    let at = sweep.iter().position(|f| *f == "--target-flops").unwrap();
    sweep.drain(at..at + 2);
    sweep.extend(["--targets", "0.6", "--zero-shot", "1,2", "--keep-ratios", "0.7"]);
    let mut first_sweep = sweep.clone();
    first_sweep.push("--engine");
    let out = cp(&first_sweep, &[("--checkpoint", &ft), ("--out", &sw1)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("target 0.6") && text.contains("zero-shot ramp") && text.contains("keep ratio 0.7"), "{text}");
    let base = std::fs::read_to_string(sw1.join("baselines.jsonl")).unwrap();
    assert_eq!(base.lines().count(), 3, "{base}");
    let svg = std::fs::read_to_string(sw1.join("sweep.svg")).unwrap();
    assert!(svg.contains("zero-shot") && svg.contains("keep-ratio") && svg.contains("online bytes"), "the picture lacks a curve");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(sw1.join("sweep.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["target_flops"], 0.6);
    assert!(line["secure_bytes_ratio"].as_f64().is_some(), "{line}");
    // --engine: the point on the fixed-point engine, which agrees with the
    // float simulation on nearly every example.
    let (engine, agreement) = (line["engine"].as_f64().unwrap(), line["agreement"].as_f64().unwrap());
    assert!(agreement >= 0.8 && (engine - line["accuracy"].as_f64().unwrap()).abs() <= 0.2, "{line}");
    assert!(text.contains("engine 37/12"), "{text}");
    // Over two seeds, drawn beside the first sweep: a run per seed, and
    // sweep.jsonl's line is their mean with its spread.
    let sw2 = d.join("sweep2");
    let mut again = sweep.clone();
    again.extend(["--zero-shot", "1", "--keep-ratios", "0.9", "--seeds", "1,2", "--baseline", sw1.to_str().unwrap()]);
    let out = cp(&again, &[("--checkpoint", &ft), ("--out", &sw2)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("target 0.6   mean of 2 seeds"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(std::fs::read_to_string(sw2.join("sweep.svg")).unwrap().contains("sweep1"));
    let runs: Vec<serde_json::Value> = [1, 2]
        .iter()
        .map(|s| {
            let run = sw2.join(format!("target-0.6-seed-{s}"));
            assert!(std::fs::read_to_string(run.join("prune.yaml")).unwrap().contains(&format!("seed: {s}\n")), "the run is trained with its seed");
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
        })
        .collect();
    let text = std::fs::read_to_string(sw2.join("sweep.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "one line per target: {text}");
    let line: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(line["seeds"], serde_json::json!([1, 2]));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let (a, b) = (f(&runs[0], "accuracy"), f(&runs[1], "accuracy"));
    assert!((f(&line, "accuracy") - (a + b) / 2.0).abs() < 1e-12, "{line}");
    assert!((f(&line, "accuracy_sd") - (a - b).abs() / 2f64.sqrt()).abs() < 1e-12, "{line}");
    assert_eq!((f(&line, "accuracy_min"), f(&line, "accuracy_max")), (a.min(b), a.max(b)));
    assert!((f(&line, "relative_flops") - (f(&runs[0], "relative_flops") + f(&runs[1], "relative_flops")) / 2.0).abs() < 1e-12, "{line}");
    assert_eq!(line["runs"][1]["accuracy"], runs[1]["accuracy"]);
    // The same command again reads the finished runs back; with another
    // setting it is refused, naming it, and the runs stay as they were.
    let before = std::fs::read_to_string(sw2.join("target-0.6-seed-1/summary.json")).unwrap();
    let out = cp(&again, &[("--checkpoint", &ft), ("--out", &sw2)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(sw2.join("sweep.jsonl")).unwrap(), text, "the same runs give the same line");
    let mut other = again.clone();
    other.extend(["--distill", "0.25"]);
    let e = cp(&other, &[("--checkpoint", &ft), ("--out", &sw2)]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("target-0.6-seed-1") && msg.contains("distill: 0.0 there, 0.25 here"), "{msg}");
    assert_eq!(std::fs::read_to_string(sw2.join("target-0.6-seed-1/summary.json")).unwrap(), before);
    // The same seed twice, or --seeds beside --seed: refused, nothing written.
    for (flags, says) in [(vec!["--seeds", "3,3"], "3 is given twice"), (vec!["--seeds", "3", "--seed", "4"], "--seed")] {
        let out = d.join("twice");
        let mut bad = sweep.clone();
        bad.extend(flags);
        let e = cp(&bad, &[("--checkpoint", &ft), ("--out", &out)]);
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(!e.status.success() && msg.contains(says), "{msg}");
        assert!(!out.exists(), "nothing may be written: {msg}");
    }
    let sw = d.join("sweep");
    let e = cp(&["sweep", "--targets", "0.4,0.6"], &[("--checkpoint", &d.join("no-such-run")), ("--out", &sw)]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("no-such-run"), "{msg}");
    assert!(!sw.exists(), "a sweep over a missing checkpoint writes nothing");
}

/// A spawned `cipherprune` process and the address it printed first.
fn spawn_listening(args: &[&str], run: Option<&Path>, prefix: &str) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>, String) {
    use std::io::BufRead;
    let mut c = Command::new(env!("CARGO_BIN_EXE_cipherprune"));
    c.args(args);
    if let Some(run) = run {
        c.arg("--checkpoint").arg(run);
    }
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.strip_prefix(prefix).and_then(|l| l.split_whitespace().next()).unwrap_or_else(|| panic!("{line}")).to_string();
    (child, out, addr)
}

/// A loopback proxy to the dealer that forwards one connection and cuts
/// both ends at the first online request (a permutation or an online
/// fill): the dealer "dies" mid-run, after the offline phase.
fn dying_dealer_proxy(dealer: String) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut d = std::net::TcpStream::connect(dealer).unwrap();
        let (mut c2, mut d2) = (c.try_clone().unwrap(), d.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut d2, &mut c2);
        });
        loop {
            let mut len = [0u8; 4];
            if c.read_exact(&mut len).is_err() {
                break;
            }
            let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
            if c.read_exact(&mut buf).is_err() {
                break;
            }
            let word = |i: usize| buf.get(8 * i..8 * i + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
            let online = buf.len().is_multiple_of(8) && (word(0) == Some(4) || (word(0) == Some(1) && word(1).is_some_and(|k| k & 0x100 != 0)));
            if online {
                break;
            }
            d.write_all(&len).unwrap();
            d.write_all(&buf).unwrap();
        }
        let _ = c.shutdown(std::net::Shutdown::Both);
        let _ = d.shutdown(std::net::Shutdown::Both);
    });
    addr
}

/// `dealer`, `serve` and `client` as three processes on loopback: two
/// sentences, then a peer that sends garbage (the server reports it and
/// goes on), a dealer that dies mid-run and a client that never reaches the
/// dealer (both parties end with an error naming the peer), then a client
/// with no server (a clear error).
fn serve_and_ask(run: &Path) {
    use std::io::{Read, Write};
    // No dealer, no server.
    let no = cp(&["serve", "--listen", "127.0.0.1:0"], &[("--checkpoint", run)]);
    assert!(!no.status.success() && String::from_utf8_lossy(&no.stderr).contains("--dealer"), "{}", String::from_utf8_lossy(&no.stderr));
    let (mut dealer, mut dealer_out, dealer_addr) = spawn_listening(&["dealer", "--listen", "127.0.0.1:0", "--timeout", "8", "--seed", "2"], None, "dealer listening on ");
    let (mut server, mut out, addr) = spawn_listening(
        &["serve", "--listen", "127.0.0.1:0", "--sessions", "6", "--seed", "1", "--timeout", "20", "--dealer", &dealer_addr],
        Some(run),
        "listening on ",
    );
    let mut logits = vec![];
    // The third is the first again with its offline phase prepared for 16
    // tokens before its length is known: more offline bytes, the same
    // online forward and logits.
    for (sentence, ahead) in [("good fine great", None), ("bad awful poor bad", None), ("good fine great", Some("16"))] {
        let mut args = vec!["client", "--json", "--connect", &addr, "--dealer", &dealer_addr, "--sentence", sentence, "--seed", "3"];
        args.extend(ahead.iter().flat_map(|n| ["--offline-tokens", *n]));
        let v = ok(&cp(&args, &[("--checkpoint", run)]));
        logits.push(v.clone());
        assert!(["0", "1"].contains(&v["prediction"].as_str().unwrap()), "SST-2's labels: {v}");
        assert_eq!(v["logits"].as_array().unwrap().len(), 2);
        assert_eq!(v["kept_per_layer"].as_array().unwrap().len(), 2);
        assert!(v["bytes_sent"].as_u64().unwrap() > 0 && v["rounds"].as_u64().unwrap() > 0, "{v}");
        assert!(v["offline"]["bytes_received"].as_u64().unwrap() > 0 && v["offline"]["dealer_bytes"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["pool_refills"], 0, "{v}");
    }
    let off = |v: &serde_json::Value| v["offline"]["dealer_bytes"].as_u64().unwrap();
    assert_eq!(logits[2]["logits"], logits[0]["logits"], "prepared ahead, the same result");
    assert_eq!(logits[2]["kept_per_layer"], logits[0]["kept_per_layer"]);
    assert!(off(&logits[2]) > off(&logits[0]), "16 tokens prepared, more than 5 need: {} vs {}", off(&logits[2]), off(&logits[0]));
    let over = cp(&["client", "--connect", &addr, "--dealer", &dealer_addr, "--sentence", "good fine great", "--offline-tokens", "3"], &[("--checkpoint", run)]);
    assert!(!over.status.success() && String::from_utf8_lossy(&over.stderr).contains("more than the 3"), "{}", String::from_utf8_lossy(&over.stderr));
    // Garbage instead of a hello.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']).unwrap();
    drop(s);
    // The dealer dies mid-run (its connection to the client is cut at the
    // first online request).
    let proxy = dying_dealer_proxy(dealer_addr.clone());
    let t = std::time::Instant::now();
    let c = cp(&["client", "--connect", &addr, "--dealer", &proxy, "--sentence", "good fine great", "--seed", "4"], &[("--checkpoint", run)]);
    assert!(!c.status.success());
    let e = String::from_utf8_lossy(&c.stderr);
    assert!(e.contains("dealer") && e.contains("hung up"), "{e}");
    // A client that never connects to the dealer: the dealer gives up on
    // the session after its timeout, and the server says so.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let hello = br#"{"protocol":"cipherprune-2pc/3","role":"party","tokens":5}"#;
    s.write_all(&(hello.len() as u32).to_le_bytes()).unwrap();
    s.write_all(hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let status = server.wait().unwrap();
    assert!(t.elapsed().as_secs() < 60, "no hang");
    drop(s);
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.matches("session").count(), 3, "{rest}");
    assert!(rest.contains("online") && rest.contains("offline"), "{rest}");
    let mut err = String::new();
    server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("session 4 failed") && err.contains("hello"), "{err}");
    assert!(err.contains("session 5 failed") && err.contains("client"), "the server names the client: {err}");
    assert!(err.contains("session 6 failed") && err.contains("dealer") && err.contains("did not connect"), "{err}");
    // A server on the dealer's DCF keys: its client follows it; the same
    // result in fewer rounds.
    let (mut fss, _fss_out, fss_addr) = spawn_listening(
        &["serve", "--listen", "127.0.0.1:0", "--sessions", "1", "--seed", "1", "--dealer", &dealer_addr, "--protocol", "fss"],
        Some(run),
        "listening on ",
    );
    let v = ok(&cp(&["client", "--json", "--connect", &fss_addr, "--dealer", &dealer_addr, "--sentence", "good fine great", "--seed", "3"], &[("--checkpoint", run)]));
    assert_eq!(v["logits"], logits[0]["logits"], "{v}");
    assert!(v["rounds"].as_u64().unwrap() * 3 < logits[0]["rounds"].as_u64().unwrap(), "{} vs {}", v["rounds"], logits[0]["rounds"]);
    assert!(fss.wait().unwrap().success());
    // The dealer logs a session once it has seen it end, which can be after
    // the client returns: read until the fourth line (the DCF session)
    // before stopping it. A watchdog kills it if the line never comes (its
    // pid stays ours until the wait below).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pid, flag) = (dealer.id(), done.clone());
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !flag.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut dealt = String::new();
    while dealt.matches("dealt").count() < 4 {
        use std::io::BufRead;
        if dealer_out.read_line(&mut dealt).unwrap() == 0 {
            break;
        }
    }
    dealer.kill().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    dealer.wait().unwrap();
    assert_eq!(dealt.matches("dealt").count(), 4, "{dealt}");
    // Nobody listens there any more.
    let c = cp(&["client", "--connect", &addr, "--dealer", &dealer_addr, "--sentence", "good"], &[("--checkpoint", run)]);
    assert!(!c.status.success());
    assert!(String::from_utf8_lossy(&c.stderr).contains("cannot connect"), "{}", String::from_utf8_lossy(&c.stderr));
}

/// Rank distillation: the layers' score rankings move towards the
/// teacher's last-layer ranking (the logged KL falls), in both stages; a
/// negative weight is refused before anything is written.
#[test]
fn rank_distillation_pulls_every_layers_ranking_towards_the_teachers() {
    let (dir, _, ft) = tiny_finetuned(25, 10);
    let d = dir.path();
    let pr = d.join("pr");
    let flags = ["prune", "-q", "--soft-epochs", "3", "--hard-epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--temperature", "0.01", "--lambda", "0.1", "--rank-distill", "5", "--log-every", "1"];
    ok(&cp(&flags, &[("--checkpoint", &ft), ("--out", &pr)]));
    let rank = |file: &str| -> Vec<f64> {
        metric_lines(&pr.join(file), "train").into_iter().map(|v| v["rank_loss"].as_f64().unwrap_or_else(|| panic!("no rank_loss in {v}"))).collect()
    };
    let soft = rank("soft/metrics.jsonl");
    assert!(soft.len() >= 12, "{} logged steps", soft.len());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&soft[..3]), mean(&soft[soft.len() - 3..]));
    assert!(last < 0.8 * first, "rank KL {first} → {last}");
    assert!(!rank("metrics.jsonl").is_empty());
    let out = d.join("refused");
    let e = cp(&["prune", "-q", "--rank-distill=-1"], &[("--checkpoint", &ft), ("--out", &out)]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("rank_distill is -1"), "{msg}");
    assert!(!out.exists(), "nothing may be written");
}
