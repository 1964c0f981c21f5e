//! `flow-events outbox`: inspect the durable outbox of a stopped service.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Subcommand};
use flow_events_core::{StoreErrorKind, StoredEvent};

/// The outbox file and what to show of it.
#[derive(Debug, Args)]
pub(crate) struct Outbox {
    /// The outbox file (the service's FLOW_EVENTS_OUTBOX_PATH).
    path: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// How many events are pending.
    Count,
    /// The oldest pending event: sequence, when stored, age, id, type.
    Oldest,
    /// One line per pending event: sequence, when stored, id, type.
    List {
        /// Show at most this many (the oldest first).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Every pending event as a JSON line: `{"seq", "stored_at", "event"}`.
    Export,
}

/// Runs the command. A file locked by a running service exits with 2.
pub(crate) fn run(cli: &Outbox) -> ExitCode {
    let recovered = match flow_events_outbox::read(&cli.path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return if e.kind() == StoreErrorKind::Locked {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    if let Some(problem) = &recovered.problem {
        eprintln!(
            "warning: {} records could not be read: {problem}",
            recovered.unreadable
        );
    }
    crate::finish(print(
        &cli.command,
        &recovered.events,
        &mut io::stdout().lock(),
    ))
}

fn print(command: &Command, events: &[StoredEvent], out: &mut impl Write) -> io::Result<()> {
    match command {
        Command::Count => writeln!(out, "{}", events.len())?,
        Command::Oldest => match events.first() {
            None => writeln!(out, "empty")?,
            Some(e) => {
                let age = (Utc::now() - e.stored_at).num_seconds().max(0);
                writeln!(
                    out,
                    "seq {} stored {} ({age}s ago) id {} type {}",
                    e.seq,
                    e.stored_at.to_rfc3339(),
                    e.event.id(),
                    e.event.event_type()
                )?;
            }
        },
        Command::List { limit } => {
            for e in events.iter().take(limit.unwrap_or(usize::MAX)) {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    e.seq,
                    e.stored_at.to_rfc3339(),
                    e.event.id(),
                    e.event.event_type()
                )?;
            }
        }
        Command::Export => {
            for e in events {
                let line = serde_json::json!({
                    "seq": e.seq,
                    "stored_at": e.stored_at,
                    "event": e.event,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()
}
