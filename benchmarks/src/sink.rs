//! Building the resilient sink under test.

use std::time::Duration;

use anyhow::Context;
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Config, ConnectionMonitor, ConnectionState, Resilient};

/// Settings of a sink under test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkSettings {
    pub(crate) retry_delay: Duration,
    pub(crate) max_retry_delay: Duration,
    pub(crate) max_pending_events: usize,
    /// How long a publish waits for its confirm before it answers
    /// `Buffered`; `None`: the default (`RABBITMQ_CONFIRM_WAIT`, 0.5 s).
    pub(crate) confirm_wait: Option<Duration>,
}

/// `Resilient` over `AmqpBackend` publishing to `exchange` at `url`; returns
/// at once (optional mode), connected or not.
pub(crate) async fn start(
    url: &str,
    exchange: &str,
    settings: SinkSettings,
) -> anyhow::Result<Resilient> {
    let mut config = Config::builder()
        .with_retry_delay(settings.retry_delay)
        .with_max_retry_delay(settings.max_retry_delay)
        .with_max_pending_events(settings.max_pending_events)
        // Bounded by count only, as before the 64 MiB default: the memory run
        // buffers 100 MB of events.
        .with_max_pending_bytes(None);
    if let Some(wait) = settings.confirm_wait {
        config = config.with_confirm_wait(wait);
    }
    let config = config.build().context("sink settings")?;
    let amqp = AmqpConfig::builder()
        .with_url(url)
        .with_exchange(exchange)
        .with_app_id("flow-events-bench")
        .build()
        .context("AMQP settings")?;
    let backend = AmqpBackend::new(&config, amqp);
    Resilient::builder(backend)
        .with_config(config)
        .start()
        .await
        .context("starting the resilient sink")
}

/// Waits until `sink` is connected, at most `limit`.
pub(crate) async fn connected(sink: &Resilient, limit: Duration) -> anyhow::Result<()> {
    let mut state = sink.watch_state();
    tokio::time::timeout(limit, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "not connected after {limit:?}: {}",
                sink.status().last_error.unwrap_or_default()
            )
        })?
        .context("the sink stopped")?;
    Ok(())
}

/// Waits until `backlog` more events than `confirmed_before` are confirmed,
/// polling every `every`, at most `limit`: the drain works in publish order,
/// so this is when the events pending at the start are all confirmed,
/// whatever was buffered after them. Gives the instant it was seen.
pub(crate) async fn backlog_cleared(
    sink: &Resilient,
    confirmed_before: u64,
    backlog: usize,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<std::time::Instant> {
    let deadline = std::time::Instant::now() + limit;
    let target = confirmed_before + backlog as u64;
    loop {
        if sink.status().confirmed >= target {
            return Ok(std::time::Instant::now());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the {backlog} events pending at reconnect were not confirmed within {limit:?}"
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until nothing is pending, polling every `every`, at most `limit`;
/// gives the instant the buffer was seen empty.
pub(crate) async fn drained(
    sink: &Resilient,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<std::time::Instant> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if sink.status().pending_events == 0 {
            return Ok(std::time::Instant::now());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{} events still pending after {limit:?}",
                sink.status().pending_events
            );
        }
        tokio::time::sleep(every).await;
    }
}
