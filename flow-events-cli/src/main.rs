//! `flow-events`: the command-line tool of flow-events.
//!
//! ```text
//! flow-events outbox <PATH> count|oldest|list [--limit N]|export
//! flow-events dlq list    <SUBSCRIPTION> [--url URL] [--json] [--limit N]
//! flow-events dlq replay  <SUBSCRIPTION> (--id ID | --all) [--yes] [--exchange NAME]
//! flow-events dlq purge   <SUBSCRIPTION> (--id ID | --all) [--yes]
//! ```
//!
//! `outbox` reads the durable outbox of a stopped service: a running service
//! holds the file's lock, and the tool then says so and exits with status 2.
//! `dlq` works on a subscription's dead-letter queue on a live RabbitMQ
//! (`--url`, default `RABBITMQ_URL`). Other errors exit with status 1.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dlq;
mod outbox;

/// The flow-events command-line tool.
#[derive(Debug, Parser)]
#[command(name = "flow-events", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the durable outbox of a stopped service.
    Outbox(outbox::Outbox),
    /// List, replay or purge a subscription's dead letters on RabbitMQ.
    Dlq(dlq::Dlq),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Outbox(o) => outbox::run(o),
        Command::Dlq(d) => dlq::run(d),
    }
}

/// The exit code of a command that wrote its output with `written`.
fn finish(written: io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
