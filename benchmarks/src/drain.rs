//! Drain after reconnect: events buffered while the broker is unreachable
//! (through a proxy that is down), then the proxy comes up. Measures the time
//! from "broker back" to `connected`, against the backoff delay in force, and
//! the drain rate, against the steady rate of the same sink through the same
//! proxy, measured in the same round.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use flow_events_core::{ConnectionMonitor, ConnectionState, EventSink, PublishOutcome};
use serde::Serialize;

use crate::payload::Payload;
use crate::proxy::Proxy;
use crate::sink::{self, SinkSettings};
use crate::stats::ms;
use crate::steady;
use crate::topology::Topology;

/// In flight for the steady comparison: the drain's window (`max_in_flight`, 1024 by default).
pub(crate) const STEADY_IN_FLIGHT: usize = 1024;

/// One round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrainRound {
    pub(crate) events: usize,
    /// Whether the steady comparison ran before the drain (rounds alternate).
    pub(crate) steady_first: bool,
    /// Events per second from `connected` until nothing was pending.
    pub(crate) drain_rate: f64,
    pub(crate) drain_ms: f64,
    /// The same sink through the same proxy, 1024 publishes in flight.
    pub(crate) steady_rate: f64,
    pub(crate) drain_to_steady: f64,
    /// Consecutive failed attempts when the broker came back.
    pub(crate) failures_before_up: u32,
    /// The ceiling of the backoff delay after that many failures.
    pub(crate) backoff_ceiling_ms: f64,
    /// The delay in force, measured at the proxy: from the last refused
    /// attempt to the next attempt.
    pub(crate) backoff_in_force_ms: f64,
    /// From "broker back" to the first attempt that reached it.
    pub(crate) wait_for_attempt_ms: f64,
    /// From that attempt to `connected` (two connections, channel, declare, confirm mode).
    pub(crate) connect_ms: f64,
    /// From "broker back" to `connected`.
    pub(crate) reconnect_ms: f64,
    /// `reconnect_ms <= backoff_in_force_ms + 200`.
    pub(crate) reconnect_within_goal: bool,
    /// Reconnections of the sink in the round: one more than planned means
    /// something else closed its connection (the round is repeated).
    pub(crate) reconnects: u64,
    pub(crate) planned_reconnects: u64,
}

/// The ceiling of the delay after the `failures`-th consecutive failure
/// (the decorator draws the delay in `[0, ceiling]`).
pub(crate) fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    base.checked_mul(1u32 << exp).map_or(cap, |d| d.min(cap))
}

/// Runs one round on a fresh proxy and sink.
pub(crate) async fn round(
    broker: SocketAddr,
    broker_url: &str,
    topo: &Topology,
    payload: &Payload,
    settings: SinkSettings,
    events: usize,
    steady_first: bool,
) -> anyhow::Result<DrainRound> {
    let proxy = Proxy::start(broker, steady_first).await?;
    let sink = sink::start(&proxy.url(broker_url), &topo.exchange, settings).await?;
    let mut steady_rate = None;
    if steady_first {
        sink::connected(&sink, Duration::from_secs(30)).await?;
        steady_rate = Some(
            steady::resilient(&sink, payload, events, STEADY_IN_FLIGHT)
                .await
                .rate,
        );
        proxy.down();
        let mut state = sink.watch_state();
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s != ConnectionState::Connected),
        )
        .await
        .context("the sink did not notice the cut")??;
    }
    let down_since = Instant::now();
    for _ in 0..events {
        match sink.publish(payload.event()).await {
            Ok(PublishOutcome::Buffered { .. }) => {}
            other => anyhow::bail!("expected the event to be buffered, got {other:?}"),
        }
    }
    // Come back in the middle of a backoff: after at least two refused attempts.
    let refused_since = |proxy: &Proxy| {
        proxy
            .attempts()
            .iter()
            .filter(|a| a.at >= down_since && !a.forwarded)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused_since(&proxy) < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sink made no connection attempts"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let up_at = Instant::now();
    proxy.up();
    sink::connected(&sink, Duration::from_secs(120)).await?;
    let connected_at = Instant::now();
    let empty_at = sink::drained(&sink, Duration::from_millis(1), Duration::from_secs(300)).await?;

    let attempts = proxy.attempts();
    let last_refused = attempts
        .iter()
        .filter(|a| !a.forwarded && a.at < up_at)
        .map(|a| a.at)
        .max()
        .context("no refused attempt")?;
    // Every refused attempt since the last forwarded one is a consecutive
    // failure (the proxy logs an attempt before the sink counts it).
    let last_forwarded = attempts
        .iter()
        .filter(|a| a.forwarded && a.at < up_at)
        .map(|a| a.at)
        .max();
    let failures_before_up = attempts
        .iter()
        .filter(|a| !a.forwarded && a.at < up_at && last_forwarded.is_none_or(|f| a.at > f))
        .count();
    let failures_before_up = u32::try_from(failures_before_up).unwrap_or(u32::MAX);
    let first_after = attempts
        .iter()
        .filter(|a| a.forwarded && a.at >= up_at)
        .map(|a| a.at)
        .min()
        .context("no attempt after the broker came back")?;

    if !steady_first {
        steady_rate = Some(
            steady::resilient(&sink, payload, events, STEADY_IN_FLIGHT)
                .await
                .rate,
        );
    }
    let steady_rate = steady_rate.unwrap_or(f64::NAN);
    let reconnects = sink.status().reconnects;
    sink.shutdown(Duration::from_secs(10)).await;
    drop(proxy);
    topo.purge().await?;

    let drain = empty_at.saturating_duration_since(connected_at);
    let drain_rate = events as f64 / drain.as_secs_f64();
    let backoff_in_force = first_after.saturating_duration_since(last_refused);
    let reconnect = connected_at.saturating_duration_since(up_at);
    Ok(DrainRound {
        events,
        steady_first,
        drain_rate,
        drain_ms: ms(drain),
        steady_rate,
        drain_to_steady: drain_rate / steady_rate,
        failures_before_up,
        backoff_ceiling_ms: ms(ceiling(
            settings.retry_delay,
            settings.max_retry_delay,
            failures_before_up,
        )),
        backoff_in_force_ms: ms(backoff_in_force),
        wait_for_attempt_ms: ms(first_after.saturating_duration_since(up_at)),
        connect_ms: ms(connected_at.saturating_duration_since(first_after)),
        reconnect_ms: ms(reconnect),
        reconnect_within_goal: reconnect <= backoff_in_force + Duration::from_millis(200),
        reconnects,
        planned_reconnects: u64::from(steady_first),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let s = Duration::from_secs(1);
        let got: Vec<u64> = (1..=5).map(|n| ceiling(s, 5 * s, n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
    }
}
