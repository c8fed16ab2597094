//! The `hone` command line.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        // One clear line for the user; no panic backtrace for their mistakes.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
