//! A publisher killed with SIGKILL at random points loses no event it was
//! told is buffered: every id it wrote to its ledger after `publish` answered
//! `Buffered` is in the outbox after the crash, and is delivered once the
//! broker is there.
//!
//! The child is this test binary run again with [`common::CHILD`] set. It
//! publishes through `Resilient` over a backend that is down, with a
//! `RedbStore`, and appends each id to the ledger file (one `write` per line)
//! after the publish returned. The parent kills it after a random number of
//! ledger lines, several rounds over the same outbox, then restarts with the
//! broker up and a consumer subscribed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    as_child, child, consume, publish_buffered, shutdown_drained, start_with_outbox, wait_until,
};
use flow_events_core::{Config, Event, EventId, PendingStore};
use flow_events_memory::MemoryBroker;
use flow_events_outbox::RedbStore;
use flow_events_testkit::faulty::Faulty;

const OUTBOX: &str = "FLOW_EVENTS_OUTBOX_TEST_PATH";
const LEDGER: &str = "FLOW_EVENTS_OUTBOX_TEST_LEDGER";
const PUBLISHERS: usize = 8;

fn config() -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(50))
        .with_max_retry_delay(Duration::from_millis(200))
        .with_max_pending_events(1_000_000)
        .build()
        .unwrap()
}

/// Child: publishes until killed.
#[test]
fn child_publish_until_killed() {
    as_child("crash", async {
        let broker = MemoryBroker::new();
        let (down, faults) = Faulty::wrap(broker.backend());
        faults.go_down();
        let outbox = std::env::var(OUTBOX).unwrap();
        let events = start_with_outbox(down, config(), Path::new(&outbox)).await;
        let ledger = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(std::env::var(LEDGER).unwrap())
            .unwrap();
        let ledger = Arc::new(Mutex::new(ledger));
        println!("CHILD READY");
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let events = events.clone();
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let e = Event::try_new("crash.test", serde_json::json!({ "p": p, "n": n }))
                        .unwrap();
                    let id = publish_buffered(&events, e).await;
                    // One write per line: a kill cannot leave half of it.
                    let line = format!("{id}\n");
                    ledger.lock().unwrap().write_all(line.as_bytes()).unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Complete ledger lines (a line without its newline was not written whole).
fn ledger_ids(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill_and_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.redb");
    let ledger = dir.path().join("ledger.txt");
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    for round in 0..5 {
        let before = ledger_ids(&ledger).len();
        let target = before + rng.usize(1..2_000);
        let mut proc = child("child_publish_until_killed", "crash")
            .env(OUTBOX, &outbox)
            .env(LEDGER, &ledger)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let ready = lines.any(|l| l.is_ok_and(|l| l.contains("CHILD READY")));
        assert!(ready, "round {round}: the child did not start");
        let reached = wait_until(Duration::from_secs(60), || {
            ledger_ids(&ledger).len() >= target
        });
        assert!(reached, "round {round}: the child stopped publishing");
        proc.kill().unwrap();
        proc.wait().unwrap();
        println!(
            "round {round}: killed at {} ledger lines",
            ledger_ids(&ledger).len()
        );
    }

    // After the crashes: every ledgered id is in the outbox, readable.
    let ids = ledger_ids(&ledger);
    let stored = {
        let store = RedbStore::open(&outbox).unwrap();
        let got = store.recover().await.unwrap();
        assert_eq!(got.unreadable, 0);
        assert!(got.problem.is_none(), "{:?}", got.problem);
        got.events
    };
    let stored_ids: HashSet<String> = stored.iter().map(|s| s.event.id().to_string()).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !stored_ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost: {missing:?}",
        missing.len()
    );

    // A restart with the broker up delivers them all, in stored order.
    let broker = MemoryBroker::new();
    let (_consumer, _sub, mut rx) = consume(&broker, "crash", "crash.#").await;
    let events = start_with_outbox(broker.backend(), config(), &outbox).await;
    let got = rx.ids(stored.len(), Duration::from_secs(60)).await;
    let stored_order: Vec<EventId> = stored.iter().map(|s| s.event.id()).collect();
    assert_eq!(got, stored_order);
    shutdown_drained(&events).await;
    drop(events);

    // Confirmed events were removed from the outbox.
    let store = RedbStore::open(&outbox).unwrap();
    assert!(store.recover().await.unwrap().events.is_empty());
}
