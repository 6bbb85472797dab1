//! Times one training step's parts on the real model (forward, backward,
//! optimiser) so speed work has numbers: `cargo run --release --example step_timing`.

use std::time::Instant;

use cipherprune::model::{params, Bert, ForwardCtx, Inputs};
use cipherprune::train::finetune::{load_model, task_loss};
use cipherprune::train::optim::{AdamW, Group};

fn main() -> cipherprune::Result<()> {
    let mut m = load_model(cipherprune::config::DEFAULT_MODEL, Some(2), 128, 0)?;
    m.params.make_trainable(|n| n != params::WORD_EMBEDDINGS)?;
    let model = Bert::new(&m.cfg, &m.params, Some(2))?;
    let (b, t) = (32usize, 40usize);
    let ids: Vec<u32> = (0..b * t).map(|i| 1000 + (i as u32 * 7919) % 20000).collect();
    let inputs = Inputs::new(&ids, &vec![0; b * t], &vec![1; b * t], b, t)?;
    let vars: Vec<_> = m.params.vars().iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    let mut opt = AdamW::new(vec![Group { name: "all".into(), vars, lr: 1e-5, weight_decay: 0.01 }])?;
    let labels: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
    for it in 0..4 {
        let mut rng = params::seeded(it);
        let t0 = Instant::now();
        let out = model.forward(&inputs, &mut ForwardCtx { dropout: Some(&mut rng), output_attentions: false })?;
        let loss = task_loss(&out.logits.unwrap(), &labels, false)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads, 1.0, Some(1.0))?;
        let t3 = Instant::now();
        let nodrop = Instant::now();
        let _ = model.forward(&inputs, &mut ForwardCtx::eval())?.logits.unwrap().to_vec2::<f32>()?;
        println!(
            "iter {it}: forward {:.3}s backward {:.3}s optimiser {:.3}s | eval forward {:.3}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            nodrop.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
