//! Progress bars for the library's `Observer` (hidden when not a terminal
//! or with `--quiet`, so logs and `--json` output stay clean).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cipherprune::train::Observer;

pub struct Bars {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Bars { bar: None, quiet }
    }
}

impl Observer for Bars {
    fn begin(&mut self, phase: &str, total: u64) {
        let bar = ProgressBar::new(total);
        if self.quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix:>6} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}")
                .expect("static template"),
        );
        bar.set_prefix(phase.to_string());
        self.bar = Some(bar);
    }

    fn update(&mut self, done: u64, status: &str) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            if !status.is_empty() {
                b.set_message(status.to_string());
            }
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn note(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}
