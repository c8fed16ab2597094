//! The `hone` command line.

mod cli;

fn main() {
    // candle's own CPU thread pool spin-waits beside rayon's (which our kernels and the GEMM
    // use): with it off, a training step is 3-8% faster here. A user's setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Err(e) = cli::run() {
        // One clear line for the user; no panic backtrace for their mistakes.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
