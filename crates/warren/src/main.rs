//! The `warren` command: server (`serve`), guest images (`image`), benchmarks (`bench`),
//! API keys (`key`) and a client for sandboxes, snapshots and files.
//!
//! Exit codes: 0 success, 1 the operation failed (the error and its causes go to stderr on
//! one line), 2 usage error (from clap), and `sandbox exec` exits with the command's own code.

mod bench;
mod cli;
mod image;
mod serve;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.command.is_server());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => exit_code(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `WARREN_LOG` (e.g. `warren=debug`); servers default to
/// `info`, client commands to `warn` so their output stays clean.
fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A process exit status from a command's exit code; codes outside 0..=255 (e.g. a
/// negative code for a signal) become 1.
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}
