//! The metrics the library reports, by name.
//!
//! With the `metrics` feature (on by default), the resilience decorator and
//! its consumers report through the [`metrics`](https://docs.rs/metrics)
//! facade: the library says what happened, the application installs the
//! exporter it wants (Prometheus text with `metrics-exporter-prometheus`, as
//! `flow-events-axum` does, or a bridge to OpenTelemetry, statsd...). With no
//! exporter installed, reporting costs an atomic add.
//!
//! Install the exporter before starting a [`Resilient`](crate::Resilient): the
//! decorator takes its counters when it starts, and a subscription its own when
//! it starts.
//!
//! The names follow the Prometheus conventions (`_total` for counters, the
//! unit as a suffix). Every metric of the sink has no label (one sink per
//! service); the consumer metrics have the label `subscription`.
//!
//! ```
//! use flow_events_core::metrics::{self, MetricKind};
//! let pending = metrics::ALL.iter().find(|m| m.name == metrics::PENDING_EVENTS).unwrap();
//! assert_eq!(pending.kind, MetricKind::Gauge);
//! assert!(metrics::ALL.iter().all(|m| m.name.starts_with("flow_events_")));
//! ```

/// Gauge: the connection state, 0 disconnected, 1 connecting, 2 connected, 3 failed.
pub const CONNECTION_STATE: &str = "flow_events_connection_state";
/// Gauge: 1 while connected to the broker, else 0.
pub const CONNECTED: &str = "flow_events_connected";
/// Gauge: 1 while the broker blocks publishers (resource alarm), else 0.
pub const BLOCKED: &str = "flow_events_blocked";
/// Gauge: events waiting in the local buffer for a broker confirm.
pub const PENDING_EVENTS: &str = "flow_events_pending_events";
/// Gauge: encoded bytes of the pending events (counted when the buffer has a byte bound).
pub const PENDING_BYTES: &str = "flow_events_pending_bytes";
/// Gauge: age of the oldest pending event in seconds, 0 when none.
pub const OLDEST_PENDING_AGE: &str = "flow_events_oldest_pending_age_seconds";
/// Gauge: consecutive failed connection attempts, 0 while connected.
pub const RECONNECT_ATTEMPTS: &str = "flow_events_reconnect_attempts";
/// Counter: publish calls accepted (confirmed or buffered).
pub const PUBLISHED_TOTAL: &str = "flow_events_published_total";
/// Counter: events confirmed by the broker, directly or from the buffer.
pub const CONFIRMED_TOTAL: &str = "flow_events_confirmed_total";
/// Counter: events that went to the local buffer.
pub const BUFFERED_TOTAL: &str = "flow_events_buffered_total";
/// Counter: buffered events confirmed by the broker; its rate is the drain rate.
pub const DRAINED_TOTAL: &str = "flow_events_drained_total";
/// Counter: events dropped by a buffer bound.
pub const DROPPED_TOTAL: &str = "flow_events_dropped_total";
/// Counter: publish calls answered with an error, the event handed back.
pub const FAILED_TOTAL: &str = "flow_events_failed_total";
/// Counter: events the broker refused for good after their publisher was
/// answered (permission, size, unroutable, nacked on every attempt): lost,
/// each logged with its id and type.
pub const REFUSED_TOTAL: &str = "flow_events_refused_total";
/// Counter: pending events that expired (older than `FLOW_EVENTS_MAX_PENDING_AGE`).
pub const EXPIRED_TOTAL: &str = "flow_events_expired_total";
/// Counter: records of the durable store that could not be read at start-up.
pub const UNREADABLE_TOTAL: &str = "flow_events_unreadable_total";
/// Counter: successful reconnections (the first connection not counted).
pub const RECONNECTS_TOTAL: &str = "flow_events_reconnects_total";
/// Histogram: time a publish call took, in seconds, by `outcome`
/// (`confirmed`, `buffered`, `dropped`, `refused`).
pub const PUBLISH_DURATION: &str = "flow_events_publish_duration_seconds";

/// Counter: deliveries received, by `subscription` (duplicates included).
pub const DELIVERED_TOTAL: &str = "flow_events_delivered_total";
/// Counter: handler calls by `subscription` and the handler's `decision`
/// (`ack`, `retry`, `reject`, or `panic`).
pub const HANDLED_TOTAL: &str = "flow_events_handled_total";
/// Counter: deliveries settled for another attempt, by `subscription`.
pub const RETRIED_TOTAL: &str = "flow_events_retried_total";
/// Counter: deliveries dead-lettered (rejected, or out of attempts), by `subscription`.
pub const DEAD_LETTERED_TOTAL: &str = "flow_events_dead_lettered_total";
/// Counter: duplicates acknowledged without calling the handler, by `subscription`.
pub const DUPLICATES_SKIPPED_TOTAL: &str = "flow_events_duplicates_skipped_total";
/// Histogram: time a handler call took, in seconds, by `subscription`.
pub const HANDLER_DURATION: &str = "flow_events_handler_duration_seconds";

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observed values.
    Histogram,
}

/// One metric the library reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metric {
    /// The full name, `flow_events_...`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The labels it has.
    pub labels: &'static [&'static str],
    /// What it measures, for people (the `# HELP` line).
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every metric the library reports.
pub const ALL: &[Metric] = &[
    metric(
        CONNECTION_STATE,
        Gauge,
        &[],
        "Connection to the broker: 0 disconnected, 1 connecting, 2 connected, 3 failed",
    ),
    metric(
        CONNECTED,
        Gauge,
        &[],
        "1 while connected to the broker, else 0",
    ),
    metric(
        BLOCKED,
        Gauge,
        &[],
        "1 while the broker blocks publishers (resource alarm), else 0",
    ),
    metric(
        PENDING_EVENTS,
        Gauge,
        &[],
        "Events waiting in the local buffer for a broker confirm",
    ),
    metric(
        PENDING_BYTES,
        Gauge,
        &[],
        "Encoded bytes of the pending events (counted when the buffer has a byte bound)",
    ),
    metric(
        OLDEST_PENDING_AGE,
        Gauge,
        &[],
        "Age of the oldest pending event in seconds (0 when none)",
    ),
    metric(
        RECONNECT_ATTEMPTS,
        Gauge,
        &[],
        "Consecutive failed connection attempts (0 while connected)",
    ),
    metric(
        PUBLISHED_TOTAL,
        Counter,
        &[],
        "Publish calls accepted (confirmed or buffered)",
    ),
    metric(
        CONFIRMED_TOTAL,
        Counter,
        &[],
        "Events confirmed by the broker, directly or from the buffer",
    ),
    metric(
        BUFFERED_TOTAL,
        Counter,
        &[],
        "Events that went to the local buffer",
    ),
    metric(
        DRAINED_TOTAL,
        Counter,
        &[],
        "Buffered events confirmed by the broker (the drain)",
    ),
    metric(
        DROPPED_TOTAL,
        Counter,
        &[],
        "Events dropped because the buffer was full",
    ),
    metric(
        FAILED_TOTAL,
        Counter,
        &[],
        "Publish calls refused with an error, the event handed back (nothing buffered)",
    ),
    metric(
        REFUSED_TOTAL,
        Counter,
        &[],
        "Events the broker refused for good after their publisher was answered (logged with their ids)",
    ),
    metric(
        EXPIRED_TOTAL,
        Counter,
        &[],
        "Pending events that expired in the buffer",
    ),
    metric(
        UNREADABLE_TOTAL,
        Counter,
        &[],
        "Records of the durable store that could not be read at start-up",
    ),
    metric(
        RECONNECTS_TOTAL,
        Counter,
        &[],
        "Successful reconnections since start (the first connection not counted)",
    ),
    metric(
        PUBLISH_DURATION,
        Histogram,
        &["outcome"],
        "Time a publish call took in seconds, by outcome",
    ),
    metric(
        DELIVERED_TOTAL,
        Counter,
        &["subscription"],
        "Deliveries received, duplicates included",
    ),
    metric(
        HANDLED_TOTAL,
        Counter,
        &["subscription", "decision"],
        "Handler calls by the handler's decision (ack, retry, reject, panic)",
    ),
    metric(
        RETRIED_TOTAL,
        Counter,
        &["subscription"],
        "Deliveries settled for another attempt",
    ),
    metric(
        DEAD_LETTERED_TOTAL,
        Counter,
        &["subscription"],
        "Deliveries dead-lettered (rejected, or out of attempts)",
    ),
    metric(
        DUPLICATES_SKIPPED_TOTAL,
        Counter,
        &["subscription"],
        "Duplicate deliveries acknowledged without calling the handler",
    ),
    metric(
        HANDLER_DURATION,
        Histogram,
        &["subscription"],
        "Time a handler call took in seconds",
    ),
];

/// Bucket bounds for [`PUBLISH_DURATION`], in seconds: 250 µs to about 8 s,
/// doubling. A buffered publish takes microseconds, a confirmed one
/// milliseconds, one waiting out a publish timeout seconds.
pub const PUBLISH_DURATION_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
    2.048, 4.096, 8.192,
];

/// Bucket bounds for [`HANDLER_DURATION`], in seconds: 1 ms to about 33 s, doubling.
pub const HANDLER_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768,
];

/// Gives the installed recorder the description (`# HELP`) and unit of every
/// metric. The decorator calls it when it starts; call it yourself if you
/// install a recorder later.
#[cfg(feature = "metrics")]
pub fn describe() {
    for m in ALL {
        let unit = m
            .name
            .ends_with("_seconds")
            .then_some(::metrics::Unit::Seconds);
        match (m.kind, unit) {
            (MetricKind::Counter, _) => ::metrics::describe_counter!(m.name, m.help),
            (MetricKind::Gauge, Some(unit)) => ::metrics::describe_gauge!(m.name, unit, m.help),
            (MetricKind::Gauge, None) => ::metrics::describe_gauge!(m.name, m.help),
            (MetricKind::Histogram, Some(unit)) => {
                ::metrics::describe_histogram!(m.name, unit, m.help)
            }
            (MetricKind::Histogram, None) => ::metrics::describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("flow_events_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == MetricKind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            if m.kind == MetricKind::Histogram {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
        }
        for buckets in [PUBLISH_DURATION_BUCKETS, HANDLER_DURATION_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
