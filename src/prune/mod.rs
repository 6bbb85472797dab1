//! CipherPrune's thresholds: learning them (soft, then hard stage), the
//! plaintext simulation that really drops tokens, and the threshold file.
//! The masks themselves live in the one forward ([`crate::model::forward`]).

pub mod check;
pub mod config;
pub mod file;
pub mod simulate;
pub mod thresholds;
pub mod work;

pub use file::ThresholdFile;
pub use thresholds::Thresholds;
