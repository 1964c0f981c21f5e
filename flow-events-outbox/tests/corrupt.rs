//! Damaged files: the store still opens, keeps what can be read, and says
//! what was lost.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{fill, recover};
use flow_events_core::{PendingStore, StoreErrorKind};
use flow_events_outbox::RedbStore;

const PENDING: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("pending");
const UNREADABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("unreadable");

/// Files beside `path` whose name starts with its name and `.corrupt-`.
fn moved_aside(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.corrupt-", path.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

async fn outbox_with(path: &Path, n: usize) -> Vec<flow_events_core::Event> {
    let store = Arc::new(RedbStore::open(path).unwrap());
    recover(&store).await;
    fill(&store, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_redb_cannot_open_is_moved_aside_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let garbage = vec![0x5a_u8; 10_000];
    std::fs::write(&path, &garbage).unwrap();

    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert!(got.events.is_empty());
    let problem = got.problem.unwrap();
    assert!(problem.contains("moved aside"), "{problem}");
    assert!(problem.contains("unknown"), "{problem}");
    let aside = moved_aside(&path);
    assert_eq!(aside.len(), 1);
    assert!(
        problem.contains(&aside[0].display().to_string()),
        "{problem}"
    );
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "kept as it was");

    // The fresh outbox works, and the next start finds nothing wrong.
    store.append(1, &common::event(1)).await.unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert_eq!(got.events.len(), 1);
    assert!(got.problem.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    outbox_with(&path, 200).await;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..100]).unwrap();

    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert!(got.events.is_empty());
    assert!(got.problem.unwrap().contains("moved aside"));
    assert_eq!(moved_aside(&path).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_loses_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let events = outbox_with(&path, 1_000).await;

    // Overwrite the id of event 500 in place: the page's checksum no longer
    // matches, and that one record no longer decodes.
    let mut bytes = std::fs::read(&path).unwrap();
    let id = events[499].id().to_string();
    let at = bytes
        .windows(id.len())
        .position(|w| w == id.as_bytes())
        .unwrap();
    bytes[at..at + id.len()].fill(b'Z');
    std::fs::write(&path, &bytes).unwrap();

    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    let problem = got.problem.unwrap();
    assert!(problem.contains("integrity check"), "{problem}");
    assert_eq!(got.unreadable, 1, "{problem}");
    let ids: Vec<_> = got.events.iter().map(|e| e.event.id()).collect();
    let expected: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 499)
        .map(|(_, e)| e.id())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        moved_aside(&path).len(),
        1,
        "the damaged file is kept aside"
    );

    // The fresh file is sound: the next start reports nothing.
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    let again = recover(&store).await;
    assert!(again.problem.is_none(), "{:?}", again.problem);
    assert_eq!(again.events.len(), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_counted_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    outbox_with(&path, 10).await;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(PENDING).unwrap();
            table.insert(5, b"\x01not an event".as_slice()).unwrap();
            table.insert(11, b"".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert_eq!(got.unreadable, 2);
    let problem = got.problem.unwrap();
    assert!(
        problem.contains("2 records could not be decoded"),
        "{problem}"
    );
    let seqs: Vec<u64> = got.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    drop(store);

    // Set aside, not reported again; still there to look at.
    let store = RedbStore::open(&path).unwrap();
    let again = recover(&store).await;
    assert_eq!(again.unreadable, 0);
    assert!(again.problem.is_none());
    assert_eq!(again.events.len(), 9);
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let kept = txn.open_table(UNREADABLE).unwrap();
    assert_eq!(kept.get(5).unwrap().unwrap().value(), b"\x01not an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_a_fresh_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    std::fs::write(&path, b"").unwrap();
    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert!(got.events.is_empty());
    assert!(got.problem.is_none());
}

#[test]
fn reading_for_inspection_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    std::fs::write(&path, vec![0x5a_u8; 10_000]).unwrap();
    let err = flow_events_outbox::read(&path).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
    assert!(moved_aside(&path).is_empty());
    assert!(path.exists());

    let missing = flow_events_outbox::read(dir.path().join("none.redb")).unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::Io);
    assert!(missing.to_string().contains("no outbox at"), "{missing}");
}

#[test]
fn a_directory_that_cannot_be_created_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = RedbStore::open(file.join("outbox.redb")).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Io, "{err}");
}
