//! Memory per pending event: the resident set size of a fresh process before
//! and after buffering many 1 KiB events while the broker is unreachable.
//!
//! It runs in a child process (the same binary, hidden subcommand
//! `memory-child`) so that the other runs have not grown the heap first.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use flow_events_core::{ConnectionMonitor, EventSink, PublishOutcome};
use serde::{Deserialize, Serialize};

use crate::payload::{BODY_BYTES, Payload};
use flow_events_testkit::proxy::TcpProxy;

use crate::proxy::via;
use crate::sink::{self, SinkSettings};

/// What the child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Memory {
    pub(crate) events: usize,
    pub(crate) body_bytes: usize,
    /// Pending events the sink reported after buffering.
    pub(crate) pending_reported: usize,
    pub(crate) rss_before_kib: u64,
    /// With the events made and held in a `Vec`, not yet published.
    pub(crate) rss_events_made_kib: u64,
    /// With the events buffered by the sink (the `Vec` dropped).
    pub(crate) rss_buffered_kib: u64,
    /// Resident bytes per event held in a `Vec` (the event alone).
    pub(crate) bytes_per_event_alone: f64,
    /// Resident bytes per pending event in the sink: the figure asked for.
    pub(crate) bytes_per_pending_event: f64,
    /// Seconds to buffer them all, one `publish` at a time.
    pub(crate) buffer_seconds: f64,
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// The child's work: buffers `events` events through a sink whose broker is unreachable.
pub(crate) async fn child(
    broker: SocketAddr,
    broker_url: &str,
    events: usize,
) -> anyhow::Result<Memory> {
    let proxy = TcpProxy::start(broker)
        .await
        .context("starting the proxy")?;
    proxy.down();
    let settings = SinkSettings {
        // No connection attempt during the measurement, after the first.
        retry_delay: Duration::from_secs(600),
        max_retry_delay: Duration::from_secs(600),
        max_pending_events: events + 1_000,
        confirm_wait: None,
    };
    let sink = sink::start(
        &via(broker_url, proxy.addr()),
        "flow-events-bench.memory",
        settings,
    )
    .await?;
    let payload = Payload::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.status().reconnect_attempts == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no connection attempt");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Warm up the buffer's and the allocator's paths.
    for _ in 0..1_000 {
        sink.publish(payload.event()).await.ok();
    }
    let warm = sink.status().pending_events;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib()?;
    let made: Vec<_> = (0..events).map(|_| payload.event()).collect();
    let events_made = rss_kib()?;
    let t = Instant::now();
    for event in made {
        match sink.publish(event).await {
            Ok(PublishOutcome::Buffered { .. }) => {}
            other => anyhow::bail!("expected the event to be buffered, got {other:?}"),
        }
    }
    let buffer_seconds = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let buffered = rss_kib()?;
    let pending_reported = sink.status().pending_events - warm;
    let per = |kib: u64| (kib.saturating_sub(before) * 1024) as f64 / events as f64;
    let memory = Memory {
        events,
        body_bytes: BODY_BYTES,
        pending_reported,
        rss_before_kib: before,
        rss_events_made_kib: events_made,
        rss_buffered_kib: buffered,
        bytes_per_event_alone: per(events_made),
        bytes_per_pending_event: per(buffered),
        buffer_seconds,
    };
    sink.shutdown(Duration::ZERO).await;
    Ok(memory)
}

/// Runs the child and reads its result.
pub(crate) async fn measure(broker_url: &str, events: usize) -> anyhow::Result<Memory> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut command = tokio::process::Command::new(exe);
    command.args([
        "--url",
        broker_url,
        "memory-child",
        "--events",
        &events.to_string(),
    ]);
    crate::child::json_result(command, "the memory child").await
}
