//! Reading the table record by record, and rewriting what could be read into
//! a fresh file when the old one is damaged.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use flow_events_core::{StoreError, StoreErrorKind, StoredEvent};
use redb::{Database, Durability, ReadableTable, TableError};

use crate::error::{fail, store_error};
use crate::open::move_aside;
use crate::record::{PENDING, UNREADABLE, decode};

/// What a read of the table found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Decoded events, in order, with their raw records.
    pub(crate) good: Vec<(StoredEvent, Vec<u8>)>,
    /// Records that did not decode: sequence, why, raw bytes.
    pub(crate) bad: Vec<(u64, String, Vec<u8>)>,
    /// Set when the table could not be read to the end.
    pub(crate) broken: Option<String>,
}

impl Scan {
    /// Records that could not be used.
    pub(crate) fn unreadable(&self) -> u64 {
        self.bad.len() as u64
    }

    /// Says what did not decode, if anything did not.
    pub(crate) fn bad_summary(&self) -> Option<String> {
        self.bad.first().map(|(_, why, _)| {
            format!(
                "{} records could not be decoded (first: {why})",
                self.bad.len()
            )
        })
    }
}

/// Reads the pending table in order. A damaged file can make redb fail or
/// panic part-way: what was read before that is kept and `broken` says why.
pub(crate) fn scan(db: &Database, path: &Path) -> Scan {
    let mut out = Scan::default();
    let read = catch_unwind(AssertUnwindSafe(|| read_into(db, path, &mut out)));
    let failure = match read {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("redb panicked reading it".to_owned()),
    };
    if let Some(why) = failure {
        out.broken = Some(match out.good.last() {
            Some((event, _)) => format!("after record {}: {why}", event.seq),
            None => why,
        });
    }
    out
}

fn read_into(db: &Database, path: &Path, out: &mut Scan) -> Result<(), StoreError> {
    let txn = db.begin_read().map_err(fail(path, "begin read"))?;
    let table = match txn.open_table(PENDING) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(store_error(path, "open table", e)),
    };
    for row in table.iter().map_err(fail(path, "read"))? {
        let (key, value) = row.map_err(fail(path, "read"))?;
        let seq = key.value();
        let raw = value.value();
        match decode(seq, raw) {
            Ok(event) => out.good.push((event, raw.to_vec())),
            Err(why) => out.bad.push((seq, why, raw.to_vec())),
        }
    }
    Ok(())
}

/// Moves undecodable records from the pending table to the unreadable one,
/// where they are kept for inspection and not reported again.
pub(crate) fn set_aside(db: &Database, path: &Path, scan: &Scan) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(fail(path, "begin write"))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut pending = txn.open_table(PENDING).map_err(fail(path, "open table"))?;
        let mut unreadable = txn
            .open_table(UNREADABLE)
            .map_err(fail(path, "open table"))?;
        for (seq, _, raw) in &scan.bad {
            pending.remove(*seq).map_err(fail(path, "remove"))?;
            unreadable
                .insert(*seq, raw.as_slice())
                .map_err(fail(path, "write"))?;
        }
    }
    txn.commit().map_err(fail(path, "commit"))
}

/// Moves the file at `path` aside and writes what `scan` read into a fresh
/// one (undecodable records into its unreadable table). The database must be
/// closed. Gives the fresh database and the old file's new name.
pub(crate) fn rewrite(path: &Path, scan: &Scan) -> Result<(Database, PathBuf), StoreError> {
    let aside = move_aside(path)?;
    crate::open::create_private_file(path)?;
    let db = Database::builder().create(path).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("cannot create a fresh outbox at {}: {e}", path.display()),
        )
        .with_source(e)
    })?;
    let mut txn = db.begin_write().map_err(fail(path, "begin write"))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut pending = txn.open_table(PENDING).map_err(fail(path, "open table"))?;
        for (event, raw) in &scan.good {
            pending
                .insert(event.seq, raw.as_slice())
                .map_err(fail(path, "write"))?;
        }
        let mut unreadable = txn
            .open_table(UNREADABLE)
            .map_err(fail(path, "open table"))?;
        for (seq, _, raw) in &scan.bad {
            unreadable
                .insert(*seq, raw.as_slice())
                .map_err(fail(path, "write"))?;
        }
    }
    txn.commit().map_err(fail(path, "commit"))?;
    Ok((db, aside))
}
