//! The health report of a service, in the JSON shape of the original design.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::monitor::{ConnectionState, ConnectionStatus};

/// How long a lost event (dropped, expired, unreadable) keeps the health degraded.
pub const LOSS_DEGRADES_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// The service works, with reduced function (an optional broker is down:
    /// events are buffered).
    Degraded,
    /// The service cannot do its job (a required broker is down).
    Unhealthy,
}

impl HealthStatus {
    /// The HTTP status an endpoint should answer with: 200 unless unhealthy (503).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Healthy | Self::Degraded => 200,
            Self::Unhealthy => 503,
        }
    }
}

/// The health of one dependency: the four keys of the original design, then more.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DependencyHealth {
    /// The connection state.
    pub status: ConnectionState,
    /// Whether connected.
    pub connected: bool,
    /// Events waiting for a broker confirm.
    pub pending_events: usize,
    /// The URL, password redacted.
    pub url: String,
    /// Whether the broker blocks publishing.
    pub blocked: bool,
    /// Age of the oldest pending event, in seconds.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Events dropped by the overflow policy.
    pub dropped_events: u64,
    /// Events expired in the buffer.
    pub expired_events: u64,
    /// Events the broker refused for good after their publisher was answered.
    pub refused_events: u64,
    /// Whether the broker has stopped answering publishes (no confirm for
    /// longer than the confirm wait).
    pub stalled: bool,
    /// Records of the durable store that could not be read at start-up.
    pub unreadable_events: u64,
    /// The last error, redacted.
    pub last_error: Option<String>,
    /// Consecutive failed connection attempts.
    pub reconnect_attempts: u32,
    /// When the last connection was made (RFC 3339).
    pub last_connected: Option<String>,
}

impl From<&ConnectionStatus> for DependencyHealth {
    fn from(s: &ConnectionStatus) -> Self {
        Self {
            status: s.state,
            connected: s.connected,
            pending_events: s.pending_events,
            url: s.url.clone(),
            blocked: s.blocked,
            oldest_pending_age_seconds: s.oldest_pending_age.map(|d| d.as_secs_f64()),
            dropped_events: s.dropped_events,
            expired_events: s.expired_events,
            refused_events: s.refused_events,
            stalled: s.stalled,
            unreadable_events: s.unreadable_events,
            last_error: s.last_error.clone(),
            reconnect_attempts: s.reconnect_attempts,
            last_connected: s.last_connected.map(|t| t.to_rfc3339()),
        }
    }
}

/// The health report:
/// `{"status", "service", "dependencies": {"rabbitmq": {...}}, "issues": [...]}`,
/// where the dependency's key and the broker's name in `issues` come from the
/// backend ([`BackendInfo`](crate::BackendInfo)).
///
/// ```
/// use flow_events_core::{BackendInfo, ConnectionState, ConnectionStatus, HealthReport};
/// let rabbitmq = BackendInfo::new("amqp", "amqp://guest:***@rabbitmq:5672/")
///     .with_display_name("RabbitMQ")
///     .with_dependency("rabbitmq");
/// let mut status = ConnectionStatus::for_backend(ConnectionState::Failed, &rabbitmq);
/// status.pending_events = 15;
/// let report = HealthReport::new("Admin Service", &status, false);
/// let json = serde_json::to_value(&report).unwrap();
/// assert_eq!(json["status"], "degraded");
/// assert_eq!(json["dependencies"]["rabbitmq"]["status"], "failed");
/// assert_eq!(json["dependencies"]["rabbitmq"]["pending_events"], 15);
/// assert_eq!(json["issues"][0], "RabbitMQ connection unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Overall health.
    pub status: HealthStatus,
    /// The service name.
    pub service: String,
    /// Per dependency (`rabbitmq`, named by the backend).
    pub dependencies: BTreeMap<String, DependencyHealth>,
    /// Human-readable issues; empty when all is well.
    pub issues: Vec<String>,
}

impl HealthReport {
    /// Builds the report from a status. `required`: the service cannot work
    /// without the broker, so a broker down makes it unhealthy (503) rather than degraded.
    pub fn new(service: impl Into<String>, status: &ConnectionStatus, required: bool) -> Self {
        let mut issues = Vec::new();
        if !status.connected {
            issues.push(Self::unavailable(status.broker));
        } else if status.blocked {
            issues.push(format!(
                "{} is blocking publishers (resource alarm)",
                status.broker
            ));
        } else if status.stalled {
            issues.push(format!(
                "{} is not confirming publishes; events are buffered",
                status.broker
            ));
        }
        // A loss degrades the health for a while after it happened; the
        // counters stay in the report (and in metrics) for good.
        let recent_loss = status.last_loss.is_some_and(|t| {
            (chrono::Utc::now() - t)
                .to_std()
                .map_or(true, |age| age < LOSS_DEGRADES_FOR)
        });
        if recent_loss && status.dropped_events > 0 {
            issues.push(format!(
                "{} events dropped because the pending buffer was full",
                status.dropped_events
            ));
        }
        if recent_loss && status.expired_events > 0 {
            issues.push(format!(
                "{} events expired before the broker could take them",
                status.expired_events
            ));
        }
        if recent_loss && status.refused_events > 0 {
            issues.push(format!(
                "{} events refused by {} after their publisher was answered (see the log for their ids)",
                status.refused_events, status.broker
            ));
        }
        if recent_loss && status.unreadable_events > 0 {
            issues.push(format!(
                "{} stored events could not be read at start-up",
                status.unreadable_events
            ));
        }
        let health = if !status.connected && required {
            HealthStatus::Unhealthy
        } else if !status.connected || status.blocked || status.stalled || recent_loss {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        let mut dependencies = BTreeMap::new();
        dependencies.insert(status.dependency.to_owned(), DependencyHealth::from(status));
        Self {
            status: health,
            service: service.into(),
            dependencies,
            issues,
        }
    }

    /// The issue reported while the broker named `broker` is unavailable
    /// (`RabbitMQ connection unavailable`, as in the original design).
    pub fn unavailable(broker: &str) -> String {
        format!("{broker} connection unavailable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rabbitmq(state: ConnectionState) -> ConnectionStatus {
        let info = crate::BackendInfo::new("amqp", "amqp://guest:***@h:5672/")
            .with_display_name("RabbitMQ")
            .with_dependency("rabbitmq");
        ConnectionStatus::for_backend(state, &info)
    }

    #[test]
    fn connected_is_healthy_with_original_keys_first() {
        let s = rabbitmq(ConnectionState::Connected);
        let r = HealthReport::new("Admin Service", &s, true);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with(
            r#"{"status":"healthy","service":"Admin Service","dependencies":{"rabbitmq":{"status":"connected","connected":true,"pending_events":0,"url":"amqp://guest:***@h:5672/""#
        ), "{text}");
        assert!(text.ends_with(r#""issues":[]}"#));
        assert_eq!(r.status.http_status(), 200);
    }

    #[test]
    fn a_loss_degrades_for_a_while_then_clears() {
        let mut s = rabbitmq(ConnectionState::Connected);
        s.dropped_events = 3;
        s.last_loss = Some(chrono::Utc::now());
        let r = HealthReport::new("svc", &s, false);
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(r.issues.len(), 1);
        s.last_loss = Some(chrono::Utc::now() - chrono::Duration::minutes(10));
        let r = HealthReport::new("svc", &s, false);
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.issues.is_empty());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["dependencies"]["rabbitmq"]["dropped_events"], 3);
    }

    #[test]
    fn required_and_down_is_unhealthy() {
        let s = rabbitmq(ConnectionState::Connecting);
        let r = HealthReport::new("svc", &s, true);
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.status.http_status(), 503);
        assert_eq!(r.issues, vec!["RabbitMQ connection unavailable".to_owned()]);
    }
}
