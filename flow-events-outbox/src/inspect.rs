//! Reading the outbox of a stopped service, for inspection tools.

use std::path::Path;

use flow_events_core::{Recovered, StoreError};

use crate::open::open_existing;
use crate::salvage::scan;

/// Reads every pending event of the outbox at `path`, in sequence order,
/// without moving or rewriting anything (redb may still finish repairing a file
/// left by a crash, as the service itself would).
///
/// Fails with [`flow_events_core::StoreErrorKind::Locked`] while a service has
/// the file open, and with `Corrupt` when redb cannot open it. Records that do
/// not decode are counted in [`Recovered::unreadable`].
pub fn read(path: impl AsRef<Path>) -> Result<Recovered, StoreError> {
    let path = path.as_ref();
    let (db, problem) = open_existing(path)?;
    let scan = scan(&db, path);
    let mut problems: Vec<String> = problem.into_iter().collect();
    if let Some(bad) = scan.bad_summary() {
        problems.push(bad);
    }
    if let Some(broken) = scan.broken {
        problems.push(format!(
            "reading stopped early ({broken}); more may be lost"
        ));
    }
    let events = scan.good.into_iter().map(|(event, _)| event).collect();
    let recovered = Recovered::new(events);
    Ok(if problems.is_empty() {
        recovered
    } else {
        recovered.with_unreadable(scan.bad.len() as u64, problems.join("; "))
    })
}
