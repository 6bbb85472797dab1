//! Evaluation of a (possibly pruned) model on an encoded split.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::data::{batch, metrics, Encoded, Task};
use crate::error::Result;
use crate::model::{Bert, ForwardCtx, Inputs};
use crate::train::progress::Observer;

pub type Metrics = BTreeMap<String, f64>;

/// Predictions as f32: the class index for classification, the score for
/// regression.
pub fn predictions(logits: &Tensor, regression: bool) -> Result<Vec<f32>> {
    if regression {
        Ok(logits.squeeze(1)?.to_vec1::<f32>()?)
    } else {
        Ok(logits.argmax(1)?.to_vec1::<u32>()?.into_iter().map(|i| i as f32).collect())
    }
}

/// Runs `f` over `data` in length-sorted batches under a progress bar and
/// puts its per-row results back in data order.
pub fn map_batches<T: Clone + Default>(
    label: &str,
    data: &[Encoded],
    batch_size: usize,
    observer: &mut dyn Observer,
    mut f: impl FnMut(&batch::Batch) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let order = batch::epoch_batches(&batch::lengths(data), batch_size, 0, 0, false);
    let mut out = vec![T::default(); data.len()];
    observer.begin(label, data.len() as u64);
    let mut done = 0u64;
    for idx in order {
        let rows = f(&batch::collate(data, &idx))?;
        for (k, row) in rows.into_iter().enumerate() {
            out[idx[k]] = row;
        }
        done += idx.len() as u64;
        observer.update(done, "");
    }
    observer.end();
    Ok(out)
}

/// Runs `logits_of` over `data` in length-sorted batches and returns the
/// task's metrics with `examples` added; `preds` come back in data order.
pub fn evaluate_with(
    task: Task,
    data: &[Encoded],
    batch_size: usize,
    observer: &mut dyn Observer,
    mut logits_of: impl FnMut(&batch::Batch) -> Result<Tensor>,
) -> Result<(Metrics, Vec<f32>)> {
    let preds = map_batches("eval", data, batch_size, observer, |b| predictions(&logits_of(b)?, task.is_regression()))?;
    let labels: Vec<f32> = data.iter().map(|e| e.label).collect();
    let mut m = metrics::compute(task, &preds, &labels);
    m.insert("examples".into(), data.len() as f64);
    Ok((m, preds))
}

/// Metrics of the plain (unpruned, exact) model.
pub fn evaluate(model: &Bert, task: Task, data: &[Encoded], batch_size: usize, observer: &mut dyn Observer) -> Result<Metrics> {
    let (m, _) = evaluate_with(task, data, batch_size, observer, |b| {
        let inputs = Inputs::new(&b.input_ids, &b.type_ids, &b.attention_mask, b.batch_size, b.seq_len)?;
        let out = model.forward(&inputs, &mut ForwardCtx::eval())?;
        Ok(out.logits.expect("evaluated models have a head"))
    })?;
    Ok(m)
}
