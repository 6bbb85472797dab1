//! Our own BERT in candle (HF tensor names), its weights, and where a model
//! comes from (a directory or the Hugging Face cache).

pub mod approx;
pub mod bert;
pub mod config;
pub mod forward;
pub mod fused;
pub mod params;
pub mod source;

pub use bert::{Bert, BertOutput, ForwardCtx, Inputs};
pub use config::BertConfig;
pub use forward::{ForwardOutput, LayerTrace, Masking, Plan};
pub use approx::Numerics;
pub use params::Params;
pub use source::{resolve, ModelFiles};
