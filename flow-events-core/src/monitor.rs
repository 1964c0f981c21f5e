//! Connection state, its changes, and the status snapshot.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::BackendInfo;

/// The state of the connection to the broker, serialised in lowercase exactly
/// as the original design named them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    /// No connection, and no attempt under way.
    Disconnected,
    /// A connection attempt (or a series of retries) is under way.
    Connecting,
    /// Connected: events are published to the broker.
    Connected,
    /// The configured retries are spent; the supervisor keeps probing at the
    /// capped delay and the state leaves `failed` when the broker returns.
    Failed,
}

impl ConnectionState {
    /// The lowercase name (`"connected"`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Failed => "failed",
        }
    }

    /// The state as a number for metrics: 0 disconnected, 1 connecting, 2 connected, 3 failed.
    pub fn as_metric(&self) -> i64 {
        match self {
            Self::Disconnected => 0,
            Self::Connecting => 1,
            Self::Connected => 2,
            Self::Failed => 3,
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the connection and the pending buffer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// The connection state.
    pub state: ConnectionState,
    /// `state == connected`.
    pub connected: bool,
    /// The broker has blocked publishing (resource alarm); events go to the buffer.
    pub blocked: bool,
    /// The broker has answered no publish for longer than the confirm wait
    /// while publishes awaited its answer (a partition, say); events go to the
    /// buffer until it answers or the connection is given up.
    pub stalled: bool,
    /// Events waiting for a broker confirm (buffered or in flight from the buffer).
    pub pending_events: usize,
    /// Age of the oldest pending event.
    #[serde(
        rename = "oldest_pending_age_seconds",
        serialize_with = "serialize_opt_secs"
    )]
    pub oldest_pending_age: Option<Duration>,
    /// Events dropped by the overflow policy since start.
    pub dropped_events: u64,
    /// Events that expired in the buffer (older than the age bound) since start.
    pub expired_events: u64,
    /// Events the broker refused for good (a permission refused for their
    /// routing key, too large, unroutable, nacked on every attempt) after
    /// their publisher had been answered, so that they could not be handed
    /// back: logged with their id and type, and dropped. A refusal answered
    /// to a waiting caller is counted in `failed` instead.
    pub refused_events: u64,
    /// Records of the durable store that could not be read at start-up.
    pub unreadable_events: u64,
    /// When an event was last dropped, expired or refused.
    pub last_loss: Option<DateTime<Utc>>,
    /// The durable store, if any (`memory` or a path).
    pub store: Option<String>,
    /// The last connection or publish error, redacted.
    pub last_error: Option<String>,
    /// Consecutive failed connection attempts (0 while connected).
    pub reconnect_attempts: u32,
    /// Successful reconnections since start (the first connection not counted).
    pub reconnects: u64,
    /// When the current state began.
    pub since: DateTime<Utc>,
    /// When the last connection was made.
    pub last_connected: Option<DateTime<Utc>>,
    /// The broker URL, password redacted.
    pub url: String,
    /// The broker's name for people (`RabbitMQ`), as its backend gives it.
    #[serde(skip)]
    pub broker: &'static str,
    /// The key of the broker's entry under `dependencies` in a health report
    /// (`rabbitmq`), as its backend gives it.
    #[serde(skip)]
    pub dependency: &'static str,
    /// Publish calls accepted (confirmed or buffered).
    pub published: u64,
    /// Events confirmed by the broker (directly or from the buffer).
    pub confirmed: u64,
    /// Events that went to the buffer.
    pub buffered: u64,
    /// Publish calls refused with an error (the event handed back).
    pub failed: u64,
}

fn serialize_opt_secs<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

impl ConnectionStatus {
    /// An empty status in `state` for the backend `info` (counters zero).
    pub fn for_backend(state: ConnectionState, info: &BackendInfo) -> Self {
        let mut status = Self::new(state, info.url.clone());
        status.broker = info.display_name;
        status.dependency = info.dependency;
        status
    }

    /// An empty status in `state` for `url` (counters zero), of a backend
    /// named `broker`.
    pub fn new(state: ConnectionState, url: impl Into<String>) -> Self {
        Self {
            state,
            connected: state == ConnectionState::Connected,
            blocked: false,
            stalled: false,
            pending_events: 0,
            oldest_pending_age: None,
            dropped_events: 0,
            expired_events: 0,
            refused_events: 0,
            unreadable_events: 0,
            last_loss: None,
            store: None,
            last_error: None,
            reconnect_attempts: 0,
            reconnects: 0,
            since: Utc::now(),
            last_connected: None,
            url: url.into(),
            broker: "broker",
            dependency: "broker",
            published: 0,
            confirmed: 0,
            buffered: 0,
            failed: 0,
        }
    }
}

/// Watches the connection: its state, changes of state, and a status snapshot.
pub trait ConnectionMonitor: Send + Sync {
    /// The current state.
    fn state(&self) -> ConnectionState;
    /// A receiver that sees every change of state.
    fn watch_state(&self) -> watch::Receiver<ConnectionState>;
    /// A snapshot of the status.
    fn status(&self) -> ConnectionStatus;
}
