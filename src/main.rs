//! Thin binary: parse, dispatch, print the error chain, exit non-zero.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Finetune(a) => cli::finetune::run(a),
        cli::Command::Eval(a) => cli::eval::run(a),
        cli::Command::Bench(a) => cli::bench::run(a),
        cli::Command::Prune(a) => cli::prune::run(a),
        cli::Command::Sweep(a) => cli::sweep::run(a),
        cli::Command::Simulate(a) => cli::simulate::run(a),
        cli::Command::Export(a) => cli::export::run(a),
        cli::Command::SecureEval(a) => cli::secure_eval::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
