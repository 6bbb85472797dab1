//! How the library reports progress without knowing about terminals: the CLI
//! implements `Observer` with progress bars, tests use `Silent`.

pub trait Observer {
    /// A new phase of `total` units (steps, examples) begins.
    fn begin(&mut self, _phase: &str, _total: u64) {}
    /// `done` units of the current phase are complete; `status` is a short
    /// human summary (loss, examples/s).
    fn update(&mut self, _done: u64, _status: &str) {}
    fn end(&mut self) {}
    /// A line worth showing a person (epoch results, checkpoints).
    fn note(&mut self, _line: &str) {}
}

pub struct Silent;

impl Observer for Silent {}
