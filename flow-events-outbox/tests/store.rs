//! The store on its own: append, remove, recover across reopenings, group
//! commit, and the order of removes and appends.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{event, fill, recover};
use flow_events_core::PendingStore;
use flow_events_outbox::RedbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_come_back_in_order_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/outbox.redb");
    let before = chrono::Utc::now();
    let events = {
        let store = Arc::new(RedbStore::open(&path).unwrap());
        let first = recover(&store).await;
        assert!(first.events.is_empty());
        assert_eq!(first.unreadable, 0);
        assert!(first.problem.is_none());
        fill(&store, 300).await
    };
    let store = RedbStore::open(&path).unwrap();
    let got = recover(&store).await;
    assert!(got.problem.is_none(), "{:?}", got.problem);
    let seqs: Vec<u64> = got.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    for (stored, original) in got.events.iter().zip(&events) {
        assert_eq!(&stored.event, original);
        assert!(stored.stored_at >= before - chrono::Duration::seconds(1));
        assert!(stored.stored_at <= chrono::Utc::now());
    }
    assert_eq!(store.path(), path);
    assert!(store.describe().contains("outbox.redb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_events_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    {
        let store = Arc::new(RedbStore::open(&path).unwrap());
        recover(&store).await;
        fill(&store, 20).await;
        for seq in (2..=20).step_by(2) {
            store.remove(seq);
        }
        // A remove of something never stored is harmless.
        store.remove(1_000);
    }
    let store = RedbStore::open(&path).unwrap();
    let seqs: Vec<u64> = recover(&store).await.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=20).step_by(2).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("outbox.redb")).unwrap());
    recover(&store).await;
    fill(&store, 2_000).await;
    assert_eq!(store.appends(), 2_000);
    let commits = store.durable_commits();
    assert!(
        commits < 1_000,
        "2000 concurrent appends took {commits} durable commits; they should share them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_before_its_append_keeps_the_append_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        recover(&store).await;
        // The decorator dropped event 5 (a bound) before its append was queued.
        store.remove(5);
        store.append(5, &event(5)).await.unwrap();
        store.append(6, &event(6)).await.unwrap();
        // In arrival order within one batch: append then remove.
        let seven = event(7);
        let (a, ()) = tokio::join!(store.append(7, &seven), async {
            tokio::task::yield_now().await;
            store.remove(7);
        });
        a.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let seqs: Vec<u64> = recover(&store).await.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_forgets_removes_of_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("outbox.redb")).unwrap();
    recover(&store).await;
    store.remove(3);
    // A new run over the same store (sequence numbers start again): its
    // event 3 is a different event and must be kept.
    recover(&store).await;
    let three = event(3);
    store.append(3, &three).await.unwrap();
    let got = recover(&store).await;
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].event, three);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_releases_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = RedbStore::open(&path).unwrap();
    store.append(1, &event(1)).await.unwrap();
    drop(store);
    let again = RedbStore::open(&path).unwrap();
    assert_eq!(recover(&again).await.events.len(), 1);
}
