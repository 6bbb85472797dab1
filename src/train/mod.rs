//! Training: the shared loop, the optimiser, evaluation, and the stages
//! (fine-tuning here; threshold learning builds on the same loop).

pub mod average;
pub mod bench;
pub mod eval;
pub mod finetune;
pub mod optim;
pub mod progress;
pub mod prune;
pub mod trainer;

pub use eval::Metrics;
pub use progress::{Observer, Silent};
