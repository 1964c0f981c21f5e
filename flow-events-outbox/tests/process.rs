//! Faults that take a second process: the file lock, and a real write error
//! (a file-size limit, as a full disk would refuse writes).
//!
//! The test binary runs itself again as the child, with [`common::CHILD`] set.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{CHILD, as_child, child, event, recover};
use flow_events_core::PendingStore;
use flow_events_outbox::RedbStore;

const PATH: &str = "FLOW_EVENTS_OUTBOX_TEST_PATH";

/// Child: tries to open the outbox another process holds.
#[test]
fn child_open() {
    as_child("open", async {
        let path = std::env::var(PATH).unwrap();
        match RedbStore::open(&path) {
            Ok(_) => println!("CHILD OPENED"),
            Err(e) => println!("CHILD {:?}: {e}", e.kind()),
        }
        match flow_events_outbox::read(&path) {
            Ok(r) => println!("CHILD READ {}", r.events.len()),
            Err(e) => println!("CHILD READ {:?}: {e}", e.kind()),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_open_in_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let store = RedbStore::open(&path).unwrap();
    recover(&store).await;
    store.append(1, &event(1)).await.unwrap();

    let out = child("child_open", "open")
        .env(PATH, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("CHILD Locked"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("in use by another process"), "{line}");
    assert!(stdout.contains("CHILD READ Locked"), "{stdout}");

    // Once this process lets go, the other can open it.
    drop(store);
    let out = child("child_open", "open")
        .env(PATH, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHILD OPENED"), "{stdout}");
    assert!(stdout.contains("CHILD READ 1"), "{stdout}");
}

/// Child, run under a file-size limit: appends until the disk refuses.
#[test]
fn child_fill_until_refused() {
    as_child("fill", async {
        let path = std::env::var(PATH).unwrap();
        let store = Arc::new(RedbStore::open(&path).unwrap());
        recover(&store).await;
        let big = flow_events_core::Event::try_new(
            "outbox.big",
            serde_json::json!({ "pad": "x".repeat(16 * 1024) }),
        )
        .unwrap();
        let mut stored = 0u64;
        let mut refused = None;
        for seq in 1..=10_000u64 {
            match store.append(seq, &big).await {
                Ok(()) => stored = seq,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("the size limit was never reached");
        println!("CHILD STORED {stored}");
        println!("CHILD REFUSED {:?}: {e}", e.kind());

        // Room again: forget what was stored; appends succeed again.
        for seq in 1..=stored {
            store.remove(seq);
        }
        let mut again = None;
        for attempt in 0..100u64 {
            if store.append(100_000 + attempt, &event(1)).await.is_ok() {
                again = Some(attempt);
                break;
            }
        }
        println!("CHILD AGAIN {again:?}");
        let left = store.recover().await.unwrap();
        println!("CHILD LEFT {}", left.events.len());
    });
}

#[test]
fn a_write_the_disk_refuses_is_an_io_error_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let exe = std::env::current_exe().unwrap();
    // SIGXFSZ ignored (inherited through exec), writes past 16 MiB fail with EFBIG.
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 32768 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([
            "child_fill_until_refused",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "fill")
        .env(PATH, &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let refused = stdout
        .lines()
        .find(|l| l.contains("CHILD REFUSED"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(refused.contains("CHILD REFUSED Io"), "{refused}");
    assert!(refused.contains("too large"), "{refused}");
    assert!(
        !stdout.contains("CHILD STORED 0\n"),
        "some appends fit: {stdout}"
    );
    assert!(stdout.contains("CHILD AGAIN Some("), "{stdout}");
    assert!(stdout.contains("CHILD LEFT 1"), "{stdout}");
}

/// Child: stores ten events, removes five, waits for the flush, then waits
/// to be killed.
#[test]
fn child_remove_then_wait() {
    as_child("remove", async {
        let store = RedbStore::open(std::env::var(PATH).unwrap()).unwrap();
        recover(&store).await;
        for seq in 1..=10 {
            store.append(seq, &event(seq as usize)).await.unwrap();
        }
        let commits = store.durable_commits();
        for seq in 1..=5 {
            store.remove(seq);
        }
        // Removes alone are not fsync'd at once; a flush follows shortly.
        let flushed = common::wait_until(std::time::Duration::from_secs(10), || {
            store.durable_commits() > commits
        });
        println!("CHILD FLUSHED {flushed}");
        // Stay alive (the store open) until killed.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::abort();
    });
}

#[test]
fn removes_become_durable_shortly_without_further_appends() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let mut proc = child("child_remove_then_wait", "remove")
        .env(PATH, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let flushed = lines.find_map(|l| {
        let l = l.ok()?;
        l.find("CHILD FLUSHED ").map(|i| l[i + 14..].to_owned())
    });
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert_eq!(flushed.as_deref(), Some("true"));
    let left: Vec<u64> = flow_events_outbox::read(&path)
        .unwrap()
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, vec![6, 7, 8, 9, 10]);
}
