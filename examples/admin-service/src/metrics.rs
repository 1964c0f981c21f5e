//! `/metrics`: the connection status as Prometheus gauges and counters, read
//! at each scrape, and the latency of `publish` as seen by the HTTP handler.

use std::fmt;
use std::time::Duration;

use flow_events_core::{ConnectionMonitor, ConnectionStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of the Prometheus text format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label of the publish latency histogram: how the publish ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    outcome: &'static str,
}

/// What the handler saw of one `publish` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishResult {
    Confirmed,
    Buffered,
    Dropped,
    Refused,
}

impl PublishResult {
    fn label(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Buffered => "buffered",
            Self::Dropped => "dropped",
            Self::Refused => "refused",
        }
    }
}

/// The registry of the service's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    publish_duration: Family<PublishLabels, Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn publish_histogram() -> Histogram {
    // 250 µs to about 8 s: a buffered publish takes microseconds, a confirmed
    // one milliseconds, one waiting out a publish timeout seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    /// Metrics reading the status of `monitor` at every scrape.
    pub(crate) fn new<M>(monitor: M) -> Self
    where
        M: ConnectionMonitor + fmt::Debug + 'static,
    {
        let mut registry = Registry::default();
        let publish_duration = Family::<PublishLabels, Histogram>::new_with_constructor(
            publish_histogram as fn() -> _,
        );
        for result in [
            PublishResult::Confirmed,
            PublishResult::Buffered,
            PublishResult::Dropped,
            PublishResult::Refused,
        ] {
            // Create each series up front so it is exported (at zero) from the start.
            let _ = publish_duration.get_or_create(&PublishLabels {
                outcome: result.label(),
            });
        }
        registry.register_with_unit(
            "flow_events_publish_duration",
            "Time the publish call took in the HTTP handler, by outcome",
            Unit::Seconds,
            publish_duration.clone(),
        );
        registry.register_collector(Box::new(StatusCollector { monitor }));
        Self {
            registry,
            publish_duration,
        }
    }

    /// Records one publish call.
    pub(crate) fn observe_publish(&self, result: PublishResult, took: Duration) {
        self.publish_duration
            .get_or_create(&PublishLabels {
                outcome: result.label(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Encodes a [`ConnectionStatus`] snapshot taken at scrape time.
#[derive(Debug)]
struct StatusCollector<M> {
    monitor: M,
}

impl<M> Collector for StatusCollector<M>
where
    M: ConnectionMonitor + fmt::Debug + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_status(&self.monitor.status(), &mut encoder)
    }
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), fmt::Error>
where
    N: EncodeGaugeValue + fmt::Debug,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn encode_status(s: &ConnectionStatus, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
    let flag = |b: bool| i64::from(b);
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    gauge(
        e,
        "flow_events_connection_state",
        "Connection to the broker: 0 disconnected, 1 connecting, 2 connected, 3 failed",
        None,
        s.state.as_metric(),
    )?;
    gauge(
        e,
        "flow_events_connected",
        "1 while connected to the broker, else 0",
        None,
        flag(s.connected),
    )?;
    gauge(
        e,
        "flow_events_blocked",
        "1 while the broker blocks publishers (resource alarm), else 0",
        None,
        flag(s.blocked),
    )?;
    gauge(
        e,
        "flow_events_pending_events",
        "Events waiting in the local buffer for a broker confirm",
        None,
        int(s.pending_events as u64),
    )?;
    gauge(
        e,
        "flow_events_oldest_pending_age",
        "Age of the oldest pending event (0 when none)",
        Some(&Unit::Seconds),
        s.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64()),
    )?;
    gauge(
        e,
        "flow_events_reconnect_attempts",
        "Consecutive failed connection attempts (0 while connected)",
        None,
        i64::from(s.reconnect_attempts),
    )?;
    counter(
        e,
        "flow_events_published",
        "Publish calls accepted (confirmed or buffered)",
        s.published,
    )?;
    counter(
        e,
        "flow_events_confirmed",
        "Events confirmed by the broker, directly or from the buffer",
        s.confirmed,
    )?;
    counter(
        e,
        "flow_events_buffered",
        "Events that went to the local buffer",
        s.buffered,
    )?;
    counter(
        e,
        "flow_events_dropped",
        "Events dropped because the buffer was full",
        s.dropped_events,
    )?;
    counter(
        e,
        "flow_events_refused",
        "Events the broker refused for good after their publisher was answered (logged with their ids)",
        s.refused_events,
    )?;
    counter(
        e,
        "flow_events_failed",
        "Publish calls refused with an error (nothing buffered)",
        s.failed,
    )?;
    counter(
        e,
        "flow_events_reconnects",
        "Successful reconnections since start (the first connection not counted)",
        s.reconnects,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_events_core::ConnectionState;
    use tokio::sync::watch;

    #[derive(Debug)]
    struct Fixed(ConnectionStatus);

    impl ConnectionMonitor for Fixed {
        fn state(&self) -> ConnectionState {
            self.0.state
        }
        fn watch_state(&self) -> watch::Receiver<ConnectionState> {
            watch::channel(self.0.state).1
        }
        fn status(&self) -> ConnectionStatus {
            self.0.clone()
        }
    }

    fn status() -> ConnectionStatus {
        let mut s = ConnectionStatus::new(ConnectionState::Failed, "amqp://guest:***@h:5672/");
        s.pending_events = 15;
        s.oldest_pending_age = Some(Duration::from_millis(1500));
        s.published = 20;
        s.confirmed = 5;
        s.buffered = 15;
        s.dropped_events = 2;
        s.refused_events = 4;
        s.failed = 3;
        s.reconnects = 1;
        s.reconnect_attempts = 6;
        s
    }

    #[test]
    fn exposition_has_help_type_and_values() {
        let metrics = Metrics::new(Fixed(status()));
        metrics.observe_publish(PublishResult::Buffered, Duration::from_micros(100));
        let text = metrics.render().unwrap();
        for expected in [
            "# HELP flow_events_connection_state Connection to the broker",
            "# TYPE flow_events_connection_state gauge\nflow_events_connection_state 3\n",
            "# TYPE flow_events_connected gauge\nflow_events_connected 0\n",
            "# TYPE flow_events_blocked gauge\nflow_events_blocked 0\n",
            "# TYPE flow_events_pending_events gauge\nflow_events_pending_events 15\n",
            "# TYPE flow_events_oldest_pending_age_seconds gauge\nflow_events_oldest_pending_age_seconds 1.5\n",
            "# TYPE flow_events_reconnect_attempts gauge\nflow_events_reconnect_attempts 6\n",
            "# TYPE flow_events_published_total counter\nflow_events_published_total 20\n",
            "# TYPE flow_events_confirmed_total counter\nflow_events_confirmed_total 5\n",
            "# TYPE flow_events_buffered_total counter\nflow_events_buffered_total 15\n",
            "# TYPE flow_events_dropped_total counter\nflow_events_dropped_total 2\n",
            "# TYPE flow_events_refused_total counter\nflow_events_refused_total 4\n",
            "# TYPE flow_events_failed_total counter\nflow_events_failed_total 3\n",
            "# TYPE flow_events_reconnects_total counter\nflow_events_reconnects_total 1\n",
            "# TYPE flow_events_publish_duration_seconds histogram\n",
            "flow_events_publish_duration_seconds_bucket{outcome=\"buffered\",le=\"0.00025\"} 1\n",
            "flow_events_publish_duration_seconds_bucket{outcome=\"buffered\",le=\"+Inf\"} 1\n",
            "flow_events_publish_duration_seconds_count{outcome=\"buffered\"} 1\n",
            "flow_events_publish_duration_seconds_count{outcome=\"confirmed\"} 0\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "OpenMetrics marker in 0.0.4 text");
        // Every sample line belongs to a family declared by a TYPE line before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "undeclared sample {line}"
                );
            }
        }
    }
}
