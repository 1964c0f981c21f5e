//! Turns redb's errors into the core's [`StoreError`] kinds.

use std::io;
use std::path::Path;

use flow_events_core::{StoreError, StoreErrorKind};

/// Maps a redb error met while using the file at `path`; `doing` says what
/// was being done ("commit", "read").
pub(crate) fn store_error(path: &Path, doing: &str, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::DatabaseAlreadyOpen => StoreErrorKind::Locked,
        redb::Error::Corrupted(_) => StoreErrorKind::Corrupt,
        redb::Error::Io(_) | redb::Error::PreviousIo => StoreErrorKind::Io,
        _ => StoreErrorKind::Other,
    };
    let message = match &e {
        redb::Error::DatabaseAlreadyOpen => locked_message(path),
        _ => format!("{doing} on outbox {}: {e}", path.display()),
    };
    StoreError::new(kind, message).with_source(e)
}

/// An I/O error outside redb (moving a file aside, creating a directory).
pub(crate) fn io_error(path: &Path, doing: &str, e: io::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Io,
        format!("{doing} {}: {e}", path.display()),
    )
    .with_source(e)
}

/// What to say when another process holds the file.
pub(crate) fn locked_message(path: &Path) -> String {
    format!(
        "outbox {} is in use by another process (its file is locked); \
         stop that process or give this one its own FLOW_EVENTS_OUTBOX_PATH",
        path.display()
    )
}

/// Whether a redb error leaves the database unusable until it is opened again
/// (after an I/O error redb refuses every further write).
pub(crate) fn needs_reopen(e: &StoreError) -> bool {
    matches!(
        e.kind(),
        StoreErrorKind::Io | StoreErrorKind::Corrupt | StoreErrorKind::Other
    )
}

/// A copy of `e` for one more waiter (a failed group commit answers all of them).
pub(crate) fn copy_error(e: &StoreError) -> StoreError {
    StoreError::new(e.kind(), message_of(e))
}

/// The message of `e` without its kind prefix.
fn message_of(e: &StoreError) -> String {
    let full = e.to_string();
    let prefix = format!("{}: ", e.kind());
    full.strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(full)
}

/// Turns a redb error into a store error about `path`, for `map_err`.
pub(crate) fn fail<E: Into<redb::Error>>(
    path: &Path,
    doing: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| store_error(path, doing, e)
}
