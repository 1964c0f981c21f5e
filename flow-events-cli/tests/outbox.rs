//! `flow-events outbox` against real outbox files.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use flow_events_core::{Event, PendingStore};
use flow_events_outbox::RedbStore;

fn run(path: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flow-events"))
        .arg("outbox")
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

async fn outbox(path: &Path, n: u64) -> Vec<Event> {
    let store = RedbStore::open(path).unwrap();
    store.recover().await.unwrap();
    let mut events = Vec::new();
    for seq in 1..=n {
        let e = Event::try_new("order.created", serde_json::json!({ "n": seq })).unwrap();
        store.append(seq, &e).await.unwrap();
        events.push(e);
    }
    events
}

#[tokio::test]
async fn count_oldest_list_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let events = outbox(&path, 5).await;

    let out = run(&path, &["count"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "5\n");

    let oldest = stdout(&run(&path, &["oldest"]));
    assert!(oldest.starts_with("seq 1 stored "), "{oldest}");
    assert!(oldest.contains(&events[0].id().to_string()), "{oldest}");
    assert!(oldest.contains("type order.created"), "{oldest}");

    let list = stdout(&run(&path, &["list", "--limit", "2"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("2\t"));
    assert!(lines[1].contains(&events[1].id().to_string()));
    assert_eq!(stdout(&run(&path, &["list"])).lines().count(), 5);

    let export = stdout(&run(&path, &["export"]));
    let back: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back.len(), 5);
    for (i, line) in back.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        let event: Event = serde_json::from_value(line["event"].clone()).unwrap();
        assert_eq!(event, events[i]);
        assert!(line["stored_at"].is_string());
    }
}

#[tokio::test]
async fn an_empty_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    outbox(&path, 0).await;
    assert_eq!(stdout(&run(&path, &["count"])), "0\n");
    assert_eq!(stdout(&run(&path, &["oldest"])), "empty\n");
    assert_eq!(stdout(&run(&path, &["export"])), "");
}

#[tokio::test]
async fn an_outbox_in_use_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = RedbStore::open(&path).unwrap();
    store.recover().await.unwrap();
    let out = run(&path, &["count"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_or_unreadable_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(&dir.path().join("none.redb"), &["count"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no outbox at"));

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let out = run(&garbage, &["count"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be read"));
    assert!(garbage.exists(), "inspection moves nothing");
}
