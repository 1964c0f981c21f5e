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

/// The same on a current-thread runtime, where the commit runs on the
/// blocking pool.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_appends_share_commits_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = Arc::new(RedbStore::open(&path).unwrap());
    recover(&store).await;
    fill(&store, 500).await;
    assert_eq!(store.appends(), 500);
    let commits = store.durable_commits();
    assert!(
        commits < 250,
        "500 concurrent appends took {commits} commits"
    );
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(recover(&store).await.events.len(), 500);
}

/// Appends whose callers give up (their tasks aborted while they wait or
/// lead) neither block the others nor leave the store stuck: every append
/// that answered `Ok` is stored, and the store keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_appends_do_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = Arc::new(RedbStore::open(&path).unwrap());
    recover(&store).await;
    let mut tasks = Vec::new();
    for seq in 1..=400u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append(seq, &event(seq as usize)).await.map(|()| seq)
        }));
    }
    // Abort every third one, wherever it is (queued, waiting, leading).
    for (i, t) in tasks.iter().enumerate() {
        if i % 3 == 0 {
            t.abort();
        }
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Ok(result) = tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .expect("no append hangs")
        {
            acknowledged.push(result.unwrap());
        }
    }
    assert!(
        acknowledged.len() >= 266,
        "{} acknowledged",
        acknowledged.len()
    );
    store.append(1_000, &event(1_000)).await.unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    let stored: std::collections::HashSet<u64> =
        recover(&store).await.events.iter().map(|e| e.seq).collect();
    for seq in acknowledged.iter().chain(&[1_000]) {
        assert!(stored.contains(seq), "acknowledged append {seq} not stored");
    }
}

/// A new outbox file is grown ahead of use (so early commits do not grow it),
/// and what it was grown with does not show as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_outbox_is_grown_ahead_of_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = RedbStore::open(&path).unwrap();
    let grown = std::fs::metadata(&path).unwrap().len();
    assert!(grown >= 3 << 20, "the file is {grown} bytes");
    let first = recover(&store).await;
    assert!(first.events.is_empty() && first.problem.is_none());
    fill(&Arc::new(store), 100).await;
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        grown,
        "appends reuse the room"
    );
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(recover(&store).await.events.len(), 100);
}
