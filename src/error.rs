//! The library's error type. Every variant that comes from user input names
//! the file (and where it makes sense, the line, column or field) so the CLI
//! can print one clear line and exit non-zero.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read or write `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A malformed row or value in a data file (GLUE TSV, JSONL, ...).
    #[error("{file}:{line}: column {column}: {msg}")]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },

    /// A field of a YAML/JSON document that is missing, malformed or does not
    /// match what it must match (e.g. a threshold file for another model).
    #[error("`{file}`: field `{field}`: {msg}")]
    Field {
        file: PathBuf,
        field: String,
        msg: String,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("model: {0}")]
    Model(String),

    #[error("tokenizer `{path}`: {msg}")]
    Tokenizer { path: PathBuf, msg: String },

    #[error("training diverged: {0}")]
    Diverged(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
