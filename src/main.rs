//! The `ethpaxos` command (cli/ holds one module per subcommand).

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    // Timestamped log lines (RFC 3339, UTC) on stderr, so a leader change can be lined up
    // with anything else an operator sees.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, never a backtrace: a config error is not a crash, whatever
            // RUST_BACKTRACE says.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
