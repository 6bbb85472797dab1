//! Our own BERT in candle (HF tensor names), its weights, and where a model
//! comes from (a directory or the Hugging Face cache).

pub mod bert;
pub mod config;
pub mod params;
pub mod source;

pub use bert::{Bert, BertOutput, ForwardCtx, Inputs};
pub use config::BertConfig;
pub use params::Params;
pub use source::{resolve, ModelFiles};
