//! The outage run: publishes at a fixed rate, the broker cut for a while
//! through the proxy, then restored. Records every caller's latency, and the
//! state and pending events every 100 ms.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use flow_events_core::{ConnectionMonitor, ConnectionState, EventSink, PublishOutcome};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::payload::Payload;
use flow_events_testkit::proxy::TcpProxy;

use crate::proxy::via;
use crate::sink::{self, SinkSettings};
use crate::stats::{Latency, ms};
use crate::topology::Topology;

/// Settings of the outage run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct OutagePlan {
    /// Publishes per second, started whether or not earlier ones have returned.
    pub(crate) rate: u32,
    /// Steady load before the cut.
    pub(crate) before_ms: u64,
    /// How long the broker is unreachable.
    pub(crate) outage_ms: u64,
    /// Load kept after the buffer is empty again.
    pub(crate) after_ms: u64,
}

/// One sample of the timeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_ms: f64,
    pub(crate) state: ConnectionState,
    pub(crate) pending: usize,
    pub(crate) confirmed: u64,
    pub(crate) buffered: u64,
}

/// A state change, as seen by a watcher of the sink.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Change {
    pub(crate) t_ms: f64,
    pub(crate) state: ConnectionState,
}

/// Callers' latencies by phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Phases {
    /// Publishes started while the sink was connected, before the cut (confirm latency).
    pub(crate) connected_before_cut: Latency,
    /// Publishes started while the sink was not connected: the goal's figure.
    pub(crate) while_disconnected: Latency,
    /// Every publish started between the cut and the restore, including those
    /// started before the sink noticed the loss.
    pub(crate) cut_window: Latency,
    /// Publishes started after `connected` again while the buffer drained
    /// (they join the buffer, behind the older events).
    pub(crate) while_draining: Latency,
}

/// Counts of outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Outcomes {
    pub(crate) confirmed: usize,
    pub(crate) buffered: usize,
    pub(crate) dropped: usize,
    pub(crate) failed: usize,
}

/// The result of the outage run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outage {
    pub(crate) plan: OutagePlan,
    pub(crate) retry_delay_ms: f64,
    pub(crate) max_retry_delay_ms: f64,
    pub(crate) published: usize,
    pub(crate) outcomes: Outcomes,
    pub(crate) cut_at_ms: f64,
    pub(crate) restored_at_ms: f64,
    /// When the sink noticed the loss, after the cut.
    pub(crate) loss_noticed_ms: f64,
    /// From the restore to `connected`.
    pub(crate) reconnect_ms: f64,
    /// Events pending when the sink was connected again.
    pub(crate) backlog: usize,
    /// From `connected` until that backlog was confirmed (the drain goes in
    /// publish order; publishes meanwhile join the buffer behind it).
    pub(crate) drain_ms: f64,
    /// From `connected` to the first publish confirmed directly again (the
    /// sink publishes directly only once its buffer is empty, in flight
    /// included); `None` if that did not happen while the load ran.
    pub(crate) direct_again_ms: Option<f64>,
    pub(crate) peak_pending: usize,
    /// Reconnections of the sink: more than one means something else closed
    /// its connection (the run is repeated).
    pub(crate) reconnects: u64,
    pub(crate) phases: Phases,
    pub(crate) changes: Vec<Change>,
    pub(crate) timeline: Vec<Sample>,
}

struct Call {
    start: Duration,
    nanos: u64,
    connected: bool,
    outcome: u8,
}

const CONFIRMED: u8 = 0;
const BUFFERED: u8 = 1;
const DROPPED: u8 = 2;
const FAILED: u8 = 3;

/// Runs the outage scenario on a fresh proxy and sink.
pub(crate) async fn run(
    broker: SocketAddr,
    broker_url: &str,
    topo: &Topology,
    payload: &Payload,
    settings: SinkSettings,
    plan: OutagePlan,
) -> anyhow::Result<Outage> {
    let proxy = TcpProxy::start(broker)
        .await
        .context("starting the proxy")?;
    let sink = sink::start(&via(broker_url, proxy.addr()), &topo.exchange, settings).await?;
    sink::connected(&sink, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    let since = move |t: Instant| ms(t.saturating_duration_since(t0));
    let stop = CancellationToken::new();

    // State changes, as they happen.
    let watcher = tokio::spawn({
        let mut rx = sink.watch_state();
        let stop = stop.clone();
        async move {
            let mut changes = vec![Change {
                t_ms: 0.0,
                state: *rx.borrow_and_update(),
            }];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return changes,
                    changed = rx.changed() => {
                        if changed.is_err() { return changes; }
                        let state = *rx.borrow_and_update();
                        changes.push(Change { t_ms: since(Instant::now()), state });
                    }
                }
            }
        }
    });

    // The timeline, every 100 ms.
    let sampler = tokio::spawn({
        let sink = sink.clone();
        let stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut samples = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return samples,
                    _ = tick.tick() => {
                        let s = sink.status();
                        samples.push(Sample {
                            t_ms: since(Instant::now()),
                            state: s.state,
                            pending: s.pending_events,
                            confirmed: s.confirmed,
                            buffered: s.buffered,
                        });
                    }
                }
            }
        }
    });

    // The load: `rate` publishes a second, each its own task.
    let stop_load = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    let load = tokio::spawn({
        let sink = sink.clone();
        let payload = payload.clone();
        let stop_load = stop_load.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let per_ms = f64::from(plan.rate) / 1_000.0;
            let mut owed = 0.0;
            loop {
                tokio::select! {
                    _ = stop_load.cancelled() => return,
                    _ = tick.tick() => {}
                }
                owed += per_ms;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let event = payload.event();
                    let sink = sink.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let connected = sink.state() == ConnectionState::Connected;
                        let start = t0.elapsed();
                        let t = Instant::now();
                        let result = sink.publish(event).await;
                        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        let outcome = match result {
                            Ok(PublishOutcome::Confirmed) => CONFIRMED,
                            Ok(PublishOutcome::Buffered { .. }) => BUFFERED,
                            Ok(_) => DROPPED,
                            Err(_) => FAILED,
                        };
                        let _ = tx.send(Call {
                            start,
                            nanos,
                            connected,
                            outcome,
                        });
                    });
                }
            }
        }
    });

    tokio::time::sleep_until((t0 + Duration::from_millis(plan.before_ms)).into()).await;
    let cut_at = Instant::now();
    proxy.down();
    proxy.cut();
    tokio::time::sleep_until((cut_at + Duration::from_millis(plan.outage_ms)).into()).await;
    let restored_at = Instant::now();
    proxy.up();
    sink::connected(&sink, Duration::from_secs(120)).await?;
    let connected_at = Instant::now();
    let at_connect = sink.status();
    let backlog = at_connect.pending_events;
    let drained_at = sink::backlog_cleared(
        &sink,
        at_connect.confirmed,
        backlog,
        Duration::from_millis(1),
        Duration::from_secs(300),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(plan.after_ms)).await;
    stop_load.cancel();
    load.await.context("the load task")?;
    let mut calls = Vec::new();
    while let Some(call) = rx.recv().await {
        calls.push(call);
    }
    sink::drained(&sink, Duration::from_millis(1), Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let changes = watcher.await.context("the state watcher")?;
    let timeline = sampler.await.context("the sampler")?;
    let reconnects = sink.status().reconnects;
    sink.shutdown(Duration::from_secs(10)).await;
    drop(proxy);
    topo.purge().await?;

    let cut_ms = since(cut_at);
    let restored_ms = since(restored_at);
    let connected_ms = since(connected_at);
    let loss_noticed_ms = changes
        .iter()
        .find(|c| c.t_ms >= cut_ms && c.state != ConnectionState::Connected)
        .map_or(f64::NAN, |c| c.t_ms - cut_ms);
    let drained_ms = since(drained_at);
    let pick = |f: &dyn Fn(&Call) -> bool| {
        Latency::from_nanos(calls.iter().filter(|c| f(c)).map(|c| c.nanos).collect())
    };
    let start_ms = |c: &Call| ms(c.start);
    let phases = Phases {
        connected_before_cut: pick(&|c| c.connected && start_ms(c) < cut_ms),
        while_disconnected: pick(&|c| !c.connected),
        cut_window: pick(&|c| (cut_ms..restored_ms).contains(&start_ms(c))),
        while_draining: pick(&|c| c.connected && (connected_ms..drained_ms).contains(&start_ms(c))),
    };
    let direct_again_ms = calls
        .iter()
        .filter(|c| c.outcome == CONFIRMED && start_ms(c) >= connected_ms)
        .map(|c| start_ms(c) - connected_ms)
        .min_by(f64::total_cmp);
    let mut outcomes = Outcomes::default();
    for c in &calls {
        match c.outcome {
            CONFIRMED => outcomes.confirmed += 1,
            BUFFERED => outcomes.buffered += 1,
            DROPPED => outcomes.dropped += 1,
            _ => outcomes.failed += 1,
        }
    }
    Ok(Outage {
        plan,
        retry_delay_ms: ms(settings.retry_delay),
        max_retry_delay_ms: ms(settings.max_retry_delay),
        published: calls.len(),
        outcomes,
        cut_at_ms: cut_ms,
        restored_at_ms: restored_ms,
        loss_noticed_ms,
        reconnect_ms: connected_ms - restored_ms,
        backlog,
        drain_ms: drained_ms - connected_ms,
        direct_again_ms,
        peak_pending: timeline.iter().map(|s| s.pending).max().unwrap_or(0),
        reconnects,
        phases,
        changes,
        timeline,
    })
}
