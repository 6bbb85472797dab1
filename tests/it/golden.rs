//! Our BERT and tokenizer against Hugging Face transformers on the real
//! all-MiniLM-L6-v2. Golden numbers: tests/golden/minilm_l6.json, made by
//! `scripts/golden_hf.py` (PyTorch + transformers; see its header).

use candle_core::{Tensor, D};
use cipherprune::model::{Bert, BertConfig, ForwardCtx, Inputs, Params};

use super::fixtures;

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/minilm_l6.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f32s2(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn max_diff(ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter().zip(theirs).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0.0, f32::max)
}

#[test]
fn real_minilm_matches_hugging_face_within_1e4() {
    let files = fixtures::real_model();
    let g = golden();
    let cfg = BertConfig::load(&files.config).unwrap();
    let model = Bert::new(&cfg, &Params::load(&files.weights).unwrap(), None).unwrap();
    let inputs = g["inputs"].as_array().unwrap();
    let seq = inputs[0]["input_ids"].as_array().unwrap().len();
    let (mut ids, mut types, mut mask) = (vec![], vec![], vec![]);
    for x in inputs {
        ids.extend(u32s(&x["input_ids"]));
        types.extend(u32s(&x["token_type_ids"]));
        mask.extend(u32s(&x["attention_mask"]));
    }
    let batch = Inputs::new(&ids, &types, &mask, inputs.len(), seq).unwrap();
    let out = model.forward(&batch, &mut ForwardCtx { dropout: None, output_attentions: true }).unwrap();
    let (mut worst_hidden, mut worst_pool, mut worst_attn) = (0f32, 0f32, 0f32);
    for (i, x) in inputs.iter().enumerate() {
        let n = x["num_real_tokens"].as_u64().unwrap() as usize;
        let hidden: Vec<Vec<f32>> = out.hidden.get(i).unwrap().narrow(0, 0, n).unwrap().to_vec2().unwrap();
        worst_hidden = worst_hidden.max(max_diff(&hidden, &f32s2(&x["last_hidden_state"])));
        let pooled: Vec<f32> = out.pooled.get(i).unwrap().to_vec1().unwrap();
        let theirs: Vec<f32> = x["pooler_output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        worst_pool = worst_pool.max(max_diff(&[pooled], &[theirs]));
        for (layer, key) in [(0usize, "attention_layer0_mean_heads"), (5, "attention_layer5_mean_heads")] {
            let a: Tensor = out.attentions[layer].get(i).unwrap().mean(0).unwrap();
            let a: Vec<Vec<f32>> = a.narrow(0, 0, n).unwrap().narrow(1, 0, n).unwrap().to_vec2().unwrap();
            worst_attn = worst_attn.max(max_diff(&a, &f32s2(&x[key])));
        }
    }
    eprintln!("max |ours - HF|: hidden {worst_hidden:.2e}, pooler {worst_pool:.2e}, attention {worst_attn:.2e}");
    assert!(worst_hidden <= 1e-4, "final hidden states differ by {worst_hidden}");
    assert!(worst_pool <= 1e-4, "pooler output differs by {worst_pool}");
    assert!(worst_attn <= 1e-4, "attention probabilities differ by {worst_attn}");
    // Sanity: the outputs are not trivially small.
    let norm = out.hidden.get(0).unwrap().sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(norm > 0.5, "hidden states suspiciously small: {norm}");
}

#[test]
fn our_tokenizer_matches_hugging_face_ids() {
    let files = fixtures::real_model();
    let tok = cipherprune::data::load_tokenizer(&files.dir, 128).unwrap();
    for x in golden()["inputs"].as_array().unwrap() {
        let n = x["num_real_tokens"].as_u64().unwrap() as usize;
        let text = x["text"].to_string();
        let enc = match &x["text"] {
            serde_json::Value::Array(p) => tok.encode((p[0].as_str().unwrap(), p[1].as_str().unwrap()), true),
            t => tok.encode(t.as_str().unwrap(), true),
        }
        .unwrap();
        assert_eq!(enc.get_ids(), &u32s(&x["input_ids"])[..n], "ids of {text:?}");
        assert_eq!(enc.get_type_ids(), &u32s(&x["token_type_ids"])[..n], "type ids of {text:?}");
    }
}
