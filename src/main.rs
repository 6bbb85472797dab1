//! Thin binary: parse, dispatch, print the error chain, exit non-zero.

mod cli;

use clap::Parser;

/// glibc's defaults hand every large freed tensor back to the kernel (mmap
/// above 128 KiB, per-thread arenas trimmed on free), so each training step
/// faulted fresh zeroed pages in: 16–24 % of a step in `perf`. One arena,
/// heap allocations up to 32 MiB and no trimming keep the pages: ~1 %.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// candle runs elementwise ops on a pool of its own whose callers spin
/// while they wait, beside rayon's pool that runs the matrix products and
/// our fused ops: three busy threads on two cores, and the spinning burns
/// the core a worker needs (18 % of a step in `perf`). With candle's pool
/// at one thread (the caller alone) every parallel op shares rayon's pool;
/// measured on 2 cores, 0.80x the CPU time of a training step. An explicit
/// CANDLE_NUM_THREADS still wins.
fn tune_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called before any thread starts, so no one reads the environment concurrently.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    tune_threads();
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Finetune(a) => cli::finetune::run(a),
        cli::Command::Eval(a) => cli::eval::run(a),
        cli::Command::Bench(a) => cli::bench::run(a),
        cli::Command::Prune(a) => cli::prune::run(a),
        cli::Command::Sweep(a) => cli::sweep::run(a),
        cli::Command::Table(a) => cli::table::run(a),
        cli::Command::Simulate(a) => cli::simulate::run(a),
        cli::Command::Export(a) => cli::export::run(a),
        cli::Command::SecureEval(a) => cli::secure_eval::run(a),
        cli::Command::Bench2pc(a) => cli::bench2pc::run(a),
        cli::Command::Serve(a) => cli::serve::serve(a),
        cli::Command::Client(a) => cli::serve::client(a),
        cli::Command::Dealer(a) => cli::serve::dealer(a),
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
