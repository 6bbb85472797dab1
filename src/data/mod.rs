//! GLUE data: from the task's TSV files to padded batches, plus the metrics.
//!
//! The pipeline, one step per submodule:
//!
//! 1. [`glue`]: [`read_split`] reads a split of a [`Task`] into [`Example`]s
//!    (text, optional second text, label).
//! 2. [`tokenize`]: [`load_tokenizer`] loads the model's tokenizer without
//!    padding; [`encode_examples`] turns examples into unpadded [`Encoded`]
//!    rows.
//! 3. [`batch`]: [`epoch_batches`] groups row indices by length for one
//!    epoch; [`collate`] pads a group into a [`Batch`].
//! 4. [`metrics`]: [`metrics::compute`] scores predictions with the task's
//!    GLUE metrics.
//!
//! ```no_run
//! # fn main() -> cipherprune::error::Result<()> {
//! use cipherprune::data::{self, Task};
//! use std::path::Path;
//!
//! let task = Task::from_name("sst2")?;
//! let examples = data::read_split(Path::new("data/glue"), task, "train")?;
//! let tok = data::load_tokenizer(Path::new("models/bert-base-uncased"), 128)?;
//! let rows = data::encode_examples(&tok, &examples)?;
//! for indices in data::epoch_batches(&data::lengths(&rows), 32, 42, 0, true) {
//!     let batch = data::collate(&rows, &indices);
//!     // batch.input_ids is batch.batch_size × batch.seq_len, row-major
//! }
//! # Ok(()) }
//! ```

pub mod batch;
pub mod glue;
pub mod metrics;
pub mod tokenize;

pub use batch::{collate, epoch_batches, lengths, Batch, PAD_ID};
pub use glue::{read_split, read_tsv, resolve_split_path, Example, Label, Task};
pub use tokenize::{encode_examples, load_tokenizer, Encoded};

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// The GLUE copy shared next to the crate; `CIPHERPRUNE_GLUE_DIR` overrides it.
    pub fn shared_glue_dir() -> PathBuf {
        match std::env::var_os("CIPHERPRUNE_GLUE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/glue")),
        }
    }

    /// [`shared_glue_dir`] if it exists; otherwise prints why `test` is skipped.
    pub fn glue_dir_or_skip(test: &str) -> Option<PathBuf> {
        let dir = shared_glue_dir();
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping {test}: no GLUE data at {}", dir.display());
            None
        }
    }
}
