//! Durable outbox benchmarks: append throughput with 1, 16 and 256 concurrent
//! publishers (the store alone, and through `Resilient` with the broker down,
//! so every publish is a store append), and publish latency at one publisher,
//! beside the memory buffer and an fsync measured on the same disk.
//!
//! The latency runs come first, each after a `sync` and a second's pause, so
//! that the writeback of earlier runs does not land in their fsyncs.
//!
//! `cargo bench -p flow-events-outbox --bench outbox`

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flow_events_core::{
    Config, Event, EventSink, MemoryStore, PendingStore, PublishOutcome, Resilient,
};
use flow_events_memory::MemoryBroker;
use flow_events_outbox::RedbStore;
use flow_events_testkit::faulty::Faulty;

const PUBLISHERS: [usize; 3] = [1, 16, 256];

fn event(n: usize) -> Event {
    Event::try_new(
        "order.created",
        serde_json::json!({
            "order_id": n,
            "customer": "c-0042",
            "amount_cents": 12_990,
            "currency": "EUR",
            "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        }),
    )
    .expect("a valid event")
}

/// Events per run for `publishers`: enough for about a second or more.
fn total(publishers: usize) -> usize {
    match publishers {
        1 => 3_000,
        16 => 40_000,
        _ => 150_000,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

/// An fsync (`fdatasync` after a 4 KiB write) on the disk the outbox uses:
/// overwriting blocks already written, or appending (the file grows, so the
/// filesystem allocates blocks and commits its journal too).
fn fsync_latency(dir: &Path, grow: bool) -> (Duration, Duration) {
    let path = dir.join(format!("fsync-{grow}.bin"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the fsync file");
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(2_000);
    for i in 0..2_000u64 {
        let block_no = if grow { i } else { i % 256 };
        file.seek(SeekFrom::Start(block_no * 4096)).expect("seek");
        file.write_all(&block).expect("write");
        let t = Instant::now();
        file.sync_data().expect("fdatasync");
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// One redb commit of one record with `Durability::Immediate`, straight on
/// the database (no writer thread): what a lone append costs at the least.
fn redb_commit_latency(dir: &Path) -> (Duration, Duration) {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("pending");
    let db = redb::Database::create(dir.join("raw.redb")).expect("create");
    let record = serde_json::to_vec(&event(0)).expect("encode");
    let mut times = Vec::with_capacity(2_000);
    for seq in 0..2_000u64 {
        let t = Instant::now();
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut table = txn.open_table(TABLE).expect("table");
            table.insert(seq, record.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Grows the file at `path` to hold `n` events, then empties it: later
/// appends reuse its pages instead of growing it.
async fn warm_up(path: &Path, n: usize) {
    let store = Arc::new(RedbStore::open(path).expect("open"));
    store.recover().await.expect("recover");
    let mut tasks = Vec::new();
    for p in 0..256 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for seq in (p..n).step_by(256) {
                store
                    .append(seq as u64 + 1, &event(seq))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    for seq in 1..=n as u64 {
        store.remove(seq);
    }
}

/// Appends straight to a `RedbStore` from `publishers` tasks: a fresh file
/// (it grows with every commit), or a warm one (grown before, then emptied).
async fn store_alone(dir: &Path, publishers: usize, warm: bool) -> (f64, u64) {
    let path = dir.join(format!("alone-{publishers}-{warm}.redb"));
    if warm {
        warm_up(&path, total(publishers)).await;
    }
    let store = Arc::new(RedbStore::open(&path).expect("open"));
    store.recover().await.expect("recover");
    let n = total(publishers);
    let per = n / publishers;
    // Sequence numbers in publish order, as the decorator hands them out.
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let seq = next.fetch_add(1, Ordering::Relaxed) + 1;
                store.append(seq, &event(i)).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let rate = (per * publishers) as f64 / start.elapsed().as_secs_f64();
    (rate, store.durable_commits())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Redb,
    Memory,
    NoStore,
}

/// A decorator over a backend that is down, with the given store.
async fn resilient(dir: &Path, kind: Kind, name: &str) -> Resilient {
    let broker = MemoryBroker::new();
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let config = Config::builder()
        .with_max_pending_events(1_000_000)
        .with_retry_delay(Duration::from_secs(3600))
        .with_max_retry_delay(Duration::from_secs(3600))
        .build()
        .expect("config");
    let builder = Resilient::builder(down).with_config(config);
    let builder = match kind {
        Kind::Redb => builder.with_store(RedbStore::open(dir.join(name)).expect("open")),
        Kind::Memory => builder.with_store(MemoryStore::new()),
        Kind::NoStore => builder,
    };
    builder.start().await.expect("start")
}

/// Publishes from `publishers` tasks through a decorator whose broker is down.
async fn through_resilient(dir: &Path, kind: Kind, publishers: usize) -> f64 {
    let r = resilient(dir, kind, &format!("resilient-{publishers}.redb")).await;
    let per = total(publishers) / publishers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let outcome = r.publish(event(i)).await.expect("publish");
                assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    (per * publishers) as f64 / start.elapsed().as_secs_f64()
}

/// Lets the disk finish writing what earlier measurements left behind (their
/// writeback otherwise lands in the next measurement's fsyncs).
async fn settle() {
    let _ = std::process::Command::new("sync").status();
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Latency of each publish at one publisher; with `RedbStore`, on a fresh
/// file or a warm one (grown before, then emptied, as after an earlier outage).
async fn latency(dir: &Path, kind: Kind, warm: bool) -> (Duration, Duration, Duration) {
    let name = format!("latency-{warm}.redb");
    if warm {
        warm_up(&dir.join(&name), 3_000).await;
    }
    settle().await;
    let r = resilient(dir, kind, &name).await;
    let mut times = Vec::with_capacity(3_000);
    for i in 0..3_000 {
        let e = event(i);
        let t = Instant::now();
        r.publish(e).await.expect("publish");
        times.push(t.elapsed());
    }
    times.sort();
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        *times.last().expect("some"),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let (f50, f99) = fsync_latency(dir.path(), false);
    println!(
        "fsync, 4 KiB overwrite + fdatasync: p50 {} p99 {}",
        micros(f50),
        micros(f99)
    );
    let (g50, g99) = fsync_latency(dir.path(), true);
    println!(
        "fsync, 4 KiB append (file grows) + fdatasync: p50 {} p99 {}",
        micros(g50),
        micros(g99)
    );
    let (r50, r99) = redb_commit_latency(dir.path());
    println!(
        "redb commit of one record (Immediate, no writer thread): p50 {} p99 {}",
        micros(r50),
        micros(r99)
    );

    rt.block_on(async {
        println!("\npublish latency at 1 publisher, broker down (p50 / p99 / max)");
        let runs = [
            (Kind::Redb, false),
            (Kind::Redb, true),
            (Kind::Memory, false),
            (Kind::NoStore, false),
        ];
        for (kind, warm) in runs {
            let (p50, p99, max) = latency(dir.path(), kind, warm).await;
            let kind = match (kind, warm) {
                (Kind::Redb, false) => "Redb, fresh file".to_owned(),
                (Kind::Redb, true) => "Redb, warm file".to_owned(),
                (kind, _) => format!("{kind:?}"),
            };
            let fsyncs = p99.as_secs_f64() / f99.as_secs_f64();
            let growing = p99.as_secs_f64() / g99.as_secs_f64();
            println!(
                "  {kind}: {} / {} / {}  (p99 = {fsyncs:.1} x overwrite fsync p99, {growing:.1} x growing fsync p99)",
                micros(p50),
                micros(p99),
                micros(max)
            );
        }
        println!("\nappend throughput, RedbStore alone (events/s, durable commits)");
        for p in PUBLISHERS {
            for warm in [false, true] {
                let (rate, commits) = store_alone(dir.path(), p, warm).await;
                println!(
                    "  {p:>3} publishers, {} file: {rate:>9.0} events/s  ({} events, {commits} commits)",
                    if warm { "warm " } else { "fresh" },
                    total(p) / p * p
                );
            }
        }
        println!("\npublish throughput through Resilient, broker down (events/s)");
        for p in PUBLISHERS {
            let redb = through_resilient(dir.path(), Kind::Redb, p).await;
            let memory = through_resilient(dir.path(), Kind::Memory, p).await;
            let none = through_resilient(dir.path(), Kind::NoStore, p).await;
            println!(
                "  {p:>3} publishers: redb {redb:>9.0}  MemoryStore {memory:>9.0}  no store {none:>9.0}"
            );
        }
    });
}
