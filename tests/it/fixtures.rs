//! Fixtures built in code: a tiny random BERT with a WordPiece vocabulary,
//! and small SST-2/MRPC-format TSVs, written to a temp dir.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cipherprune::model::{params, BertConfig};

/// Words of the synthetic sentiment task; "good"/"bad" decide the label.
pub const WORDS: &[&str] = &["the", "movie", "was", "a", "plot", "actor", "good", "great", "bad", "awful", "and", "very", "film", "it", "is", "not"];

pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v.extend([".", ","].iter().map(|s| s.to_string()));
    v
}

/// Writes config.json, vocab.txt and a seeded random model.safetensors
/// (no classifier head, like a pretrained checkpoint) into `dir`.
pub fn tiny_model(dir: &Path, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = vocab();
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let cfg = BertConfig::tiny(vocab.len());
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut rng = params::seeded(seed);
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![cfg.vocab_size, d]),
        ("embeddings.position_embeddings.weight".into(), vec![cfg.max_position_embeddings, d]),
        ("embeddings.token_type_embeddings.weight".into(), vec![cfg.type_vocab_size, d]),
        ("pooler.dense.weight".into(), vec![d, d]),
        ("pooler.dense.bias".into(), vec![d]),
    ];
    let mut ln = vec!["embeddings.LayerNorm".to_string()];
    for l in 0..cfg.num_hidden_layers {
        let n = format!("encoder.layer.{l}");
        for (name, o, i) in [("attention.self.query", d, d), ("attention.self.key", d, d), ("attention.self.value", d, d), ("attention.output.dense", d, d), ("intermediate.dense", f, d), ("output.dense", d, f)] {
            shapes.push((format!("{n}.{name}.weight"), vec![o, i]));
            shapes.push((format!("{n}.{name}.bias"), vec![o]));
        }
        ln.push(format!("{n}.attention.output.LayerNorm"));
        ln.push(format!("{n}.output.LayerNorm"));
    }
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| (0.1 * params::normal(&mut rng)) as f32).collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    }
    for name in ln {
        tensors.insert(format!("{name}.weight"), Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap());
        tensors.insert(format!("{name}.bias"), Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// A synthetic, learnable SST-2-format task in `dir/train.tsv` and `dir/dev.tsv`:
/// the label is 1 iff the sentence contains "good" or "great".
pub fn sentiment_tsvs(dir: &Path, n_train: usize, n_dev: usize, seed: u64) -> PathBuf {
    use rand::Rng;
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = params::seeded(seed);
    let filler = ["the", "movie", "was", "a", "plot", "actor", "and", "very", "film", "it", "is"];
    let mut make = |n: usize| {
        let mut s = String::from("sentence\tlabel\n");
        for _ in 0..n {
            let label = rng.gen_bool(0.5) as u32;
            let key = if label == 1 { ["good", "great"][rng.gen_range(0..2)] } else { ["bad", "awful"][rng.gen_range(0..2)] };
            let len = rng.gen_range(3..10);
            let at = rng.gen_range(0..len);
            let words: Vec<&str> = (0..len).map(|i| if i == at { key } else { filler[rng.gen_range(0..filler.len())] }).collect();
            s.push_str(&format!("{} .\t{label}\n", words.join(" ")));
        }
        s
    };
    let train = make(n_train);
    let dev = make(n_dev);
    std::fs::write(dir.join("train.tsv"), train).unwrap();
    std::fs::write(dir.join("dev.tsv"), dev).unwrap();
    dir.to_path_buf()
}

/// Real SST-2-format sentences for the real-model tests: the GLUE files
/// beside the repository (`CIPHERPRUNE_GLUE_DIR` overrides the place, as for
/// the unit tests), else the Rotten Tomatoes split that
/// `scripts/fetch-assets.sh` writes to `data/polarity`, so a clone anywhere
/// runs them.
pub fn real_sst2() -> PathBuf {
    let glue = std::env::var_os("CIPHERPRUNE_GLUE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/glue"));
    let polarity = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/polarity");
    if glue.is_dir() {
        glue
    } else {
        assert!(polarity.join("train.tsv").is_file(), "no GLUE data at {} and no {} (set CIPHERPRUNE_GLUE_DIR, or run scripts/fetch-assets.sh)", glue.display(), polarity.display());
        polarity
    }
}

/// The real pretrained model, installed by `scripts/fetch-assets.sh`.
/// Tests that need it fail with the fix when it is missing (CI installs it).
pub fn real_model() -> cipherprune::model::ModelFiles {
    cipherprune::model::resolve(cipherprune::config::DEFAULT_MODEL)
        .unwrap_or_else(|e| panic!("{e}\n(run scripts/fetch-assets.sh first)"))
}
