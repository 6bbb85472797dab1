//! Our BERT: loading errors name the tensor, and every trainable weight
//! receives a gradient (no op silently cuts the graph).

use cipherprune::model::{Bert, BertConfig, ForwardCtx, Inputs, Params};

use super::fixtures;

#[test]
fn every_trainable_tensor_gets_a_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(dir.path(), 1);
    let cfg = BertConfig::load(&m.join("config.json")).unwrap();
    let mut p = Params::load(&m.join("model.safetensors")).unwrap();
    let mut rng = cipherprune::model::params::seeded(0);
    p.init_if_missing("classifier.weight", &[2, cfg.hidden_size], 0.02, &mut rng).unwrap();
    p.init_if_missing("classifier.bias", &[2], 0.0, &mut rng).unwrap();
    p.make_trainable(|_| true).unwrap();
    let model = Bert::new(&cfg, &p, Some(2)).unwrap();
    // Two rows, the second padded, so the mask path is exercised too.
    let inputs = Inputs::new(&[2, 5, 6, 3, 2, 7, 3, 0], &[0; 8], &[1, 1, 1, 1, 1, 1, 1, 0], 2, 4).unwrap();
    let mut ctx = ForwardCtx { dropout: None, output_attentions: true };
    let out = model.forward(&inputs, &mut ctx).unwrap();
    assert_eq!(out.attentions.len(), cfg.num_hidden_layers);
    assert_eq!(out.attentions[0].dims(), &[2, cfg.num_attention_heads, 4, 4]);
    let loss = out.logits.unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut missing = vec![];
    for (name, var) in p.vars() {
        match grads.get(var) {
            Some(g) if g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0 => {}
            _ => missing.push(name.clone()),
        }
    }
    // Rows of the word table for unused ids get no gradient, but the table as a whole does.
    assert!(missing.is_empty(), "no gradient reached: {missing:?}");
}

#[test]
fn attention_rows_sum_to_one_and_ignore_padding() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(dir.path(), 2);
    let cfg = BertConfig::load(&m.join("config.json")).unwrap();
    let p = Params::load(&m.join("model.safetensors")).unwrap();
    let model = Bert::new(&cfg, &p, None).unwrap();
    let inputs = Inputs::new(&[2, 5, 3, 0, 0], &[0; 5], &[1, 1, 1, 0, 0], 1, 5).unwrap();
    let out = model.forward(&inputs, &mut ForwardCtx { dropout: None, output_attentions: true }).unwrap();
    let a = out.attentions[1].to_vec3::<f32>().unwrap_or_else(|_| out.attentions[1].squeeze(0).unwrap().to_vec3().unwrap());
    for head in &a {
        for row in head {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
            assert!(row[3] < 1e-12 && row[4] < 1e-12, "padding got attention: {row:?}");
        }
    }
    // The real-token outputs must not depend on how much padding follows.
    let short = Inputs::new(&[2, 5, 3], &[0; 3], &[1, 1, 1], 1, 3).unwrap();
    let out2 = model.forward(&short, &mut ForwardCtx::eval()).unwrap();
    let a = out.hidden.narrow(1, 0, 3).unwrap();
    let diff = (a - out2.hidden).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "padding changed real outputs by {diff}");
}

#[test]
fn missing_or_misshaped_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(dir.path(), 3);
    let mut cfg = BertConfig::load(&m.join("config.json")).unwrap();
    let p = Params::load(&m.join("model.safetensors")).unwrap();
    cfg.intermediate_size = 48;
    let err = Bert::new(&cfg, &p, None).err().expect("shape mismatch").to_string();
    assert!(err.contains("encoder.layer.0.intermediate.dense.weight") && err.contains("[64, 32]") && err.contains("[48, 32]"), "{err}");
    cfg.intermediate_size = 64;
    cfg.num_hidden_layers = 3;
    let err = Bert::new(&cfg, &p, None).err().expect("missing layer").to_string();
    assert!(err.contains("missing tensor `encoder.layer.2."), "{err}");
}

#[test]
fn bert_prefixed_checkpoints_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures::tiny_model(dir.path(), 4);
    let p = Params::load(&m.join("model.safetensors")).unwrap();
    // Params::save writes the `bert.` prefix; loading it back strips it.
    let prefixed = dir.path().join("prefixed.safetensors");
    p.save(&prefixed).unwrap();
    let raw = candle_core::safetensors::load(&prefixed, &candle_core::Device::Cpu).unwrap();
    assert!(raw.keys().all(|k| k.starts_with("bert.")));
    let q = Params::load(&prefixed).unwrap();
    assert_eq!(p.all().keys().collect::<Vec<_>>(), q.all().keys().collect::<Vec<_>>());
}

#[test]
fn unknown_hub_id_says_what_was_searched_and_what_to_run() {
    let cache = tempfile::tempdir().unwrap();
    let err = cipherprune::model::source::resolve_in("nobody/no-such-model", cache.path(), false).unwrap_err().to_string();
    assert!(err.contains("nobody/no-such-model") && err.contains(&cache.path().display().to_string()) && err.contains("fetch-assets"), "{err}");
}
