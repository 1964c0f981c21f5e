//! Opening the file: the lock, redb's own checks, and moving an unreadable
//! file aside so the service can start on a fresh one.

use std::any::Any;
use std::ffi::OsString;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use chrono::Utc;
use flow_events_core::{StoreError, StoreErrorKind};
use redb::{Database, DatabaseError, StorageError};

use crate::error::{io_error, locked_message, store_error};
use crate::salvage::{Scan, rewrite, scan};

/// A database ready for use, and what was found on the way.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) db: Database,
    /// Records known lost and what happened, when something could not be read
    /// (the file was repaired, rewritten or moved aside).
    pub(crate) problem: Option<(u64, String)>,
}

/// What one attempt to open the file gave.
enum Attempt {
    Opened(Database, Option<String>),
    /// redb opens the file but its integrity check fails; why. Records may
    /// still be readable one by one.
    Damaged(String),
    /// The file is there but redb cannot open it; why.
    Unreadable(String),
    Failed(StoreError),
}

/// Opens (or creates) the outbox at `path` for the store.
///
/// A file that fails redb's integrity check is read record by record, what
/// could be read is written to a fresh file, and the old one is moved aside to
/// `<path>.corrupt-<time>`. A file redb cannot open at all is moved aside and
/// a fresh one started.
pub(crate) fn open_for_store(path: &Path) -> Result<Opened, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| io_error(dir, "cannot create the directory", e))?;
    }
    let why = match attempt(path, true) {
        Attempt::Opened(db, problem) => {
            return Ok(Opened {
                db,
                problem: problem.map(|p| (0, p)),
            });
        }
        Attempt::Failed(e) => return Err(e),
        Attempt::Damaged(why) => match read_damaged(path) {
            Some(scan) => return rescue(path, &why, &scan),
            None => why,
        },
        Attempt::Unreadable(why) => why,
    };
    let aside = move_aside(path)?;
    tracing::error!(
        path = %path.display(), moved_to = %aside.display(),
        "outbox {} cannot be read ({why}); moved it aside to {} and starting a fresh one",
        path.display(), aside.display()
    );
    let problem = format!(
        "outbox {} could not be opened ({why}); it was moved aside to {} and a fresh outbox \
         started; how many events it held is unknown",
        path.display(),
        aside.display()
    );
    match attempt(path, true) {
        Attempt::Opened(db, _) => Ok(Opened {
            db,
            problem: Some((0, problem)),
        }),
        Attempt::Failed(e) => Err(e),
        Attempt::Damaged(why) | Attempt::Unreadable(why) => Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "a fresh outbox at {} cannot be opened: {why}",
                path.display()
            ),
        )),
    }
}

/// Writes what could be read of a damaged file to a fresh one.
fn rescue(path: &Path, why: &str, scan: &Scan) -> Result<Opened, StoreError> {
    let (db, aside) = rewrite(path, scan)?;
    let lost = match &scan.broken {
        Some(broken) => {
            format!("reading stopped early ({broken}); how many more it held is unknown")
        }
        None => "no other record was lost".to_owned(),
    };
    let mut problem = format!(
        "outbox {} failed redb's integrity check ({why}); the {} events that could be read were \
         kept in a fresh file and the old one moved aside to {}; {lost}",
        path.display(),
        scan.good.len(),
        aside.display()
    );
    if let Some(bad) = scan.bad_summary() {
        problem.push_str(&format!("; {bad}"));
    }
    tracing::error!(path = %path.display(), moved_to = %aside.display(), "{problem}");
    Ok(Opened {
        db,
        problem: Some((scan.unreadable(), problem)),
    })
}

/// Opens a file that failed the integrity check without checking it, and
/// reads what it can; `None` when even that fails.
fn read_damaged(path: &Path) -> Option<Scan> {
    let db = catch_unwind(AssertUnwindSafe(|| Database::builder().open(path)))
        .ok()?
        .ok()?;
    Some(scan(&db, path))
}

/// Opens an existing outbox without moving anything: for inspection.
pub(crate) fn open_existing(path: &Path) -> Result<(Database, Option<String>), StoreError> {
    if !path.exists() {
        return Err(StoreError::new(
            StoreErrorKind::Io,
            format!("no outbox at {}", path.display()),
        ));
    }
    match attempt(path, false) {
        Attempt::Opened(db, problem) => Ok((db, problem)),
        Attempt::Failed(e) => Err(e),
        Attempt::Damaged(why) => {
            let db = catch_unwind(AssertUnwindSafe(|| Database::builder().open(path)))
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!("outbox {} cannot be read: {why}", path.display()),
                    )
                })?;
            Ok((
                db,
                Some(format!(
                    "outbox {} failed redb's integrity check ({why})",
                    path.display()
                )),
            ))
        }
        Attempt::Unreadable(why) => Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!("outbox {} cannot be read: {why}", path.display()),
        )),
    }
}

/// Creates the directories of `dir` that are missing, readable by their
/// owner only (0700): pending events may hold personal data.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the file at `path`, empty and readable by its owner only (0600),
/// unless it exists; redb then lays out a new database in it.
pub(crate) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(path, "cannot create the outbox", e)),
    }
}

fn attempt(path: &Path, create: bool) -> Attempt {
    if let Err(e) = create.then(|| create_private_file(path)).transpose() {
        return Attempt::Failed(e);
    }
    // redb reports damage as errors, but a damaged file can also make it
    // panic; either way the file is unusable, and the caller decides.
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let builder = Database::builder();
        if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
    }));
    let mut db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return classify(path, e),
        Err(panic) => return Attempt::Unreadable(panic_message(panic.as_ref())),
    };
    match catch_unwind(AssertUnwindSafe(|| db.check_integrity())) {
        Ok(Ok(true)) => Attempt::Opened(db, None),
        Ok(Ok(false)) => Attempt::Opened(
            db,
            Some(format!(
                "outbox {} was damaged and redb repaired it; events of the damaged part may be \
                 lost (how many is unknown)",
                path.display()
            )),
        ),
        Ok(Err(e)) => {
            drop(db);
            match classify(path, e) {
                Attempt::Unreadable(why) => Attempt::Damaged(why),
                other => other,
            }
        }
        Err(panic) => Attempt::Damaged(panic_message(panic.as_ref())),
    }
}

fn classify(path: &Path, e: DatabaseError) -> Attempt {
    match e {
        DatabaseError::DatabaseAlreadyOpen => Attempt::Failed(
            StoreError::new(StoreErrorKind::Locked, locked_message(path))
                .with_source(DatabaseError::DatabaseAlreadyOpen),
        ),
        DatabaseError::Storage(StorageError::Io(e)) if is_content_error(&e) => {
            Attempt::Unreadable(e.to_string())
        }
        DatabaseError::Storage(StorageError::Io(e)) => {
            Attempt::Failed(io_error(path, "cannot open outbox", e))
        }
        // An older file format is not damage: the file is left as it is.
        DatabaseError::UpgradeRequired(version) => Attempt::Failed(StoreError::new(
            StoreErrorKind::Other,
            format!(
                "outbox {} is in redb file format version {version}, which this build reads \
                 only after a format upgrade; it was left as it is: upgrade it (redb's \
                 Database::upgrade) or drain it with the release that wrote it",
                path.display()
            ),
        )),
        e @ (DatabaseError::Storage(StorageError::Corrupted(_)) | DatabaseError::RepairAborted) => {
            Attempt::Unreadable(e.to_string())
        }
        e => Attempt::Failed(store_error(path, "cannot open outbox", e)),
    }
}

/// A short file or garbage where redb expects its header reads as these.
fn is_content_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
    )
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("redb failed reading it: {what}")
}

/// Renames `path` to `<path>.corrupt-<time>`; the new name.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut n = 0u32;
    let aside = loop {
        let mut name = OsString::from(path.as_os_str());
        name.push(".corrupt-");
        name.push(&stamp);
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    std::fs::rename(path, &aside).map_err(|e| io_error(path, "cannot move aside", e))?;
    Ok(aside)
}
