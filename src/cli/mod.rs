//! The command line: one file per subcommand, each turning flags into the
//! library's typed options. Only this layer knows clap, bars and exit codes.

pub mod bench;
pub mod bench2pc;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod progress;
pub mod prune;
pub mod report;
pub mod runinfo;
pub mod secure_eval;
pub mod serve;
pub mod simulate;
pub mod sweep;
pub mod table;

use clap::{Parser, Subcommand};

/// Learn CipherPrune token-pruning thresholds for a BERT model on a GLUE task,
/// then check accuracy on ciphertext-equivalent fixed-point arithmetic.
#[derive(Parser, Debug)]
#[command(name = "cipherprune", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune a pretrained BERT on a GLUE task (writes a run directory).
    Finetune(finetune::FinetuneArgs),
    /// Evaluate a fine-tuned run on a split.
    Eval(eval::EvalArgs),
    /// Learn pruning (θ) and reduction (β) thresholds from a fine-tuned run.
    Prune(prune::PruneArgs),
    /// Threshold learning for several FLOPs targets (or λ), and the accuracy-versus-FLOPs picture.
    Sweep(sweep::SweepArgs),
    /// Evaluate with hard masks and secure approximations, pruned tokens removed.
    Simulate(simulate::SimArgs),
    /// The paper's Table 2 on real dev sets: exact / high-degree / + pruning / + reduction, float and engine.
    Table(table::TableArgs),
    /// Write a pruned run's thresholds as a versioned YAML file.
    Export(export::ExportArgs),
    /// Float simulation vs the fixed-point engine (and with --backend shares the real two-party protocol): accuracy, agreement, cost.
    SecureEval(secure_eval::SecureEvalArgs),
    /// Serve the pruned model as the server party of a two-party computation (TCP).
    Serve(serve::ServeArgs),
    /// Classify a sentence against a `serve` server without revealing it.
    Client(serve::ClientArgs),
    /// The dealer of two-party sessions, its own process: correlated randomness, never a weight or an input.
    Dealer(serve::DealerArgs),
    /// What the two-party protocol costs: oblivious compactions, BERT shapes pruned vs unpruned.
    #[command(name = "bench-2pc")]
    Bench2pc(bench2pc::Bench2pcArgs),
    /// Time training steps on the real model (step time, examples/s).
    Bench(bench::BenchArgs),
}
