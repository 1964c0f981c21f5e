//! `flow-events-relay-bench`: the Postgres outbox relay against RabbitMQ,
//! side by side with the resilient sink's direct publishing in the same run.
//!
//! - Throughput: N committed outbox rows published by one relay (from its
//!   start to the last row confirmed and deleted), against N direct
//!   `publish` calls of the same sink with as many in flight as the relay's
//!   batch; rounds alternate which goes first. Both send the same 1 KiB
//!   persistent events to one durable queue.
//! - Latency at low load: one writer commits one event at a time at a fixed
//!   rate; a consumer on the queue takes the time from the writer's commit
//!   returning to the message's arrival (commit to delivery: an upper bound
//!   of commit to publish). The direct publish's call-to-delivery time at the
//!   same rate is measured beside it.
//!
//! See BENCHMARKS.md ("Transactional outbox relay").

// The shared modules of the benchmarks crate are compiled into this binary
// as well; not everything in them is used here.
#![allow(dead_code)]

#[path = "../payload.rs"]
mod payload;
#[path = "../stats.rs"]
mod stats;
#[path = "../topology.rs"]
mod topology;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, EventSink, PublishOutcome, Resilient,
};
use flow_events_postgres::sqlx::PgPool;
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Outbox, Relay, Tables, drop_tables, migrate};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

use crate::payload::Payload;
use crate::stats::{Latency, median};
use crate::topology::Topology;

/// Benchmarks the Postgres outbox relay against direct publishing.
#[derive(Debug, Parser)]
#[command(name = "flow-events-relay-bench", version)]
struct Args {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// The database (its own tables are created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Rounds of the throughput comparison; the report gives medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events per throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// The relay's batch, and the direct publishers in flight.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Events of the latency measurement.
    #[arg(long, default_value_t = 1_000)]
    latency_events: usize,
    /// Commits a second in the latency measurement.
    #[arg(long, default_value_t = 100)]
    latency_rate: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/relay.json"))]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rounds > 0 && args.events > 0 && args.batch > 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

struct Bench {
    args: Args,
    pool: PgPool,
    tables: Tables,
    topo: Topology,
    sink: Resilient,
    payload: Payload,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let run_id = format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        fastrand::u16(..)
    );
    let topo = Topology::create(&args.url, &run_id).await?;
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let tables = Tables::new(&format!("bench_{}", run_id.replace('-', "_")))?;
    migrate(&pool, &tables).await?;
    eprintln!(
        "exchange and queue: {}; outbox: {}",
        topo.exchange,
        tables.outbox()
    );
    let config = Config::builder().with_max_in_flight(args.batch).build()?;
    let amqp = AmqpConfig::builder()
        .with_url(&args.url)
        .with_exchange(&topo.exchange)
        .build()?;
    let sink = Resilient::builder(AmqpBackend::new(&config, amqp))
        .with_config(config)
        .start()
        .await?;
    tokio::time::timeout(
        Duration::from_secs(20),
        sink.watch_state()
            .wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .context("connecting to the broker")??;
    let bench = Bench {
        args,
        pool,
        tables,
        topo,
        sink,
        payload: Payload::new(),
    };
    let outcome = tokio::select! {
        r = measure(&bench) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    bench.sink.shutdown(Duration::from_secs(5)).await;
    let dropped = drop_tables(&bench.pool, &bench.tables).await;
    let deleted = bench.topo.delete().await;
    let report = outcome?;
    dropped?;
    deleted?;
    if let Some(dir) = bench.args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &bench.args.out,
        serde_json::to_string_pretty(&report)? + "\n",
    )
    .with_context(|| format!("writing {}", bench.args.out.display()))?;
    eprintln!("results written to {}", bench.args.out.display());
    Ok(())
}

async fn measure(b: &Bench) -> anyhow::Result<serde_json::Value> {
    let mut rounds = Vec::new();
    for round in 0..b.args.rounds {
        let relay_first = round % 2 == 1;
        eprintln!("throughput: round {} of {}", round + 1, b.args.rounds);
        let (direct, relay) = if relay_first {
            let relay = relay_throughput(b).await?;
            (direct_throughput(b).await?, relay)
        } else {
            let direct = direct_throughput(b).await?;
            (direct, relay_throughput(b).await?)
        };
        rounds.push(serde_json::json!({
            "direct_msg_s": direct,
            "relay_msg_s": relay.rate,
            "relay_batches": relay.batches,
            "rows_inserted_per_s": relay.insert_rate,
            "ratio": relay.rate / direct,
            "relay_first": relay_first,
        }));
    }
    let col = |k: &str| -> Vec<f64> { rounds.iter().filter_map(|r| r[k].as_f64()).collect() };
    eprintln!(
        "latency: {} commits at {}/s",
        b.args.latency_events, b.args.latency_rate
    );
    let relay_latency = relay_latency(b).await?;
    let direct_latency = direct_latency(b).await?;

    println!(
        "\n== relay throughput, {} events of 1 KiB, batch / in flight {}",
        b.args.events, b.args.batch
    );
    println!("| round | direct msg/s | relay msg/s | relay / direct |");
    println!("|---|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {}{} | {:.0} | {:.0} | {:.2} |",
            i + 1,
            if r["relay_first"].as_bool() == Some(true) {
                " (relay first)"
            } else {
                ""
            },
            r["direct_msg_s"].as_f64().unwrap_or(f64::NAN),
            r["relay_msg_s"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "| median | {:.0} | {:.0} | {:.2} |",
        median(&col("direct_msg_s")),
        median(&col("relay_msg_s")),
        median(&col("ratio"))
    );
    println!(
        "\n== latency at {} events/s, {} events",
        b.args.latency_rate, b.args.latency_events
    );
    println!("| path | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, l) in [
        ("commit -> delivery through the relay", relay_latency),
        ("publish call -> delivery, direct", direct_latency),
    ] {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            l.p50_us / 1e3,
            l.p99_us / 1e3,
            l.max_us / 1e3
        );
    }
    Ok(serde_json::json!({
        "settings": {
            "events": b.args.events, "batch": b.args.batch, "rounds": b.args.rounds,
            "latency_events": b.args.latency_events, "latency_rate": b.args.latency_rate,
            "body_bytes": payload::BODY_BYTES,
        },
        "throughput": rounds,
        "median_ratio": median(&col("ratio")),
        "latency": { "relay_commit_to_delivery": relay_latency, "direct_publish_to_delivery": direct_latency },
    }))
}

/// Direct publishing: `batch` callers, each awaiting `Confirmed` before its next.
async fn direct_throughput(b: &Bench) -> anyhow::Result<f64> {
    b.topo.purge().await?;
    let n = b.args.events;
    let callers = b.args.batch.min(n);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let sink = b.sink.clone();
            let payload = b.payload.clone();
            let share = n / callers + usize::from(c < n % callers);
            tokio::spawn(async move {
                for _ in 0..share {
                    match sink.publish(payload.event()).await {
                        Ok(PublishOutcome::Confirmed) => {}
                        other => anyhow::bail!("a direct publish was not confirmed: {other:?}"),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    eprintln!("  direct: {rate:.0} msg/s");
    Ok(rate)
}

struct RelayRun {
    rate: f64,
    insert_rate: f64,
    batches: u64,
}

/// The relay: N rows committed first (1 000 per transaction), then one relay
/// started, timed until the last row is confirmed and deleted.
async fn relay_throughput(b: &Bench) -> anyhow::Result<RelayRun> {
    b.topo.purge().await?;
    let n = b.args.events;
    let outbox = Outbox::new(&b.tables).without_notify();
    let inserting = Instant::now();
    let mut left = n;
    while left > 0 {
        let mut tx = b.pool.begin().await?;
        for _ in 0..left.min(1_000) {
            outbox.enqueue(&mut tx, &b.payload.event()).await?;
        }
        tx.commit().await?;
        left = left.saturating_sub(1_000);
    }
    let insert_rate = n as f64 / inserting.elapsed().as_secs_f64();
    let started = Instant::now();
    let relay = Relay::builder(b.pool.clone(), &b.tables, b.sink.clone())
        .with_batch_size(b.args.batch)
        .start();
    let mut status = relay.watch_status();
    tokio::time::timeout(
        Duration::from_secs(300),
        status.wait_for(|s| s.published as usize >= n),
    )
    .await
    .context("the relay did not publish every row within 300 s")??;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let s = relay.status();
    relay.shutdown().await;
    anyhow::ensure!(
        s.failed_publishes == 0 && s.marked_dead == 0,
        "the relay's publishes failed: {s:?}"
    );
    let depth = b.topo.depth().await?;
    anyhow::ensure!(depth as usize >= n, "only {depth} of {n} in the queue");
    eprintln!(
        "  relay: {rate:.0} msg/s in {} batches (rows inserted at {insert_rate:.0}/s)",
        s.batches
    );
    Ok(RelayRun {
        rate,
        insert_rate,
        batches: s.batches,
    })
}

/// Arrival times by message id, from a consumer on the run's queue.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn consume(b: &Bench) -> anyhow::Result<(lapin::Connection, lapin::Channel, Arrivals)> {
    b.topo.purge().await?;
    let conn =
        lapin::Connection::connect(&b.args.url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let mut consumer = channel
        .basic_consume(
            b.topo.queue.as_str().into(),
            "relay-bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            if let (Some(id), Ok(mut seen)) = (d.properties.message_id(), seen.lock()) {
                seen.insert(id.to_string(), now);
            }
        }
    });
    Ok((conn, channel, arrivals))
}

async fn latencies(
    arrivals: &Arrivals,
    sent: &HashMap<String, Instant>,
) -> anyhow::Result<Latency> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let complete = arrivals
            .lock()
            .map(|a| a.len() >= sent.len())
            .unwrap_or(false);
        if complete {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every event arrived within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let nanos = sent
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|a| a.saturating_duration_since(*at)))
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    Ok(Latency::from_nanos(nanos))
}

/// One writer committing one event at a time at the latency rate, with the
/// relay running (notified on commit, polling every second as well).
async fn relay_latency(b: &Bench) -> anyhow::Result<Latency> {
    let (conn, channel, arrivals) = consume(b).await?;
    let relay = Relay::builder(b.pool.clone(), &b.tables, b.sink.clone())
        .with_batch_size(b.args.batch)
        .start();
    let mut status = relay.watch_status();
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.listening)).await??;
    let outbox = Outbox::new(&b.tables);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / b.args.latency_rate.max(1));
    let mut sent = HashMap::new();
    for _ in 0..b.args.latency_events {
        tick.tick().await;
        let event = b.payload.event();
        let mut tx = b.pool.begin().await?;
        outbox.enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        sent.insert(event.id().to_string(), Instant::now());
    }
    let latency = latencies(&arrivals, &sent).await;
    relay.shutdown().await;
    let _ = channel
        .basic_cancel("relay-bench".into(), BasicCancelOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    latency
}

/// The same rate through the sink's `publish`, from the call to the arrival.
async fn direct_latency(b: &Bench) -> anyhow::Result<Latency> {
    let (conn, channel, arrivals) = consume(b).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / b.args.latency_rate.max(1));
    let mut sent = HashMap::new();
    for _ in 0..b.args.latency_events {
        tick.tick().await;
        let event = b.payload.event();
        let id = event.id().to_string();
        let at = Instant::now();
        b.sink.publish(event).await?;
        sent.insert(id, at);
    }
    let latency = latencies(&arrivals, &sent).await;
    let _ = channel
        .basic_cancel("relay-bench".into(), BasicCancelOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    latency
}
