//! What a relay reports: its state, the rows waiting, the lag, the counters.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the relay is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RelayState {
    /// Started, nothing done yet.
    Starting,
    /// The sink is not connected (or the broker blocks): waiting for it.
    WaitingForBroker,
    /// Publishing a batch.
    Publishing,
    /// Nothing to publish: waiting for a notification or the next poll.
    Idle,
    /// The last round failed (database or broker): waiting before the next.
    BackingOff,
    /// Stopped.
    Stopped,
}

/// A snapshot of a relay, for health and metrics.
///
/// The counters are this relay's since it started; `rows_waiting`,
/// `dead_rows` and `oldest_waiting_age` are the table's (every relay on it
/// sees the same), measured every status interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RelayStatus {
    /// The relay's name (for logs and metrics labels).
    pub name: String,
    /// What it is doing.
    pub state: RelayState,
    /// Whether it is listening for notifications (otherwise it only polls).
    pub listening: bool,
    /// Rows waiting to be published (dead rows not counted); `None` until
    /// first measured or while the database cannot be read.
    pub rows_waiting: Option<u64>,
    /// Age of the oldest row waiting.
    #[serde(rename = "oldest_waiting_age_seconds", serialize_with = "opt_secs")]
    pub oldest_waiting_age: Option<Duration>,
    /// Rows the relay gave up on (refused by the broker, unreadable, nacked
    /// too often): they stay in the table with the reason in `dead_reason`.
    pub dead_rows: Option<u64>,
    /// When the table was last measured.
    pub measured_at: Option<DateTime<Utc>>,
    /// From enqueue to the broker's confirm, for the newest row of the last
    /// batch published.
    #[serde(rename = "last_publish_lag_seconds", serialize_with = "opt_secs")]
    pub last_publish_lag: Option<Duration>,
    /// When a batch was last published.
    pub last_published_at: Option<DateTime<Utc>>,
    /// Rows published (confirmed by the broker and deleted).
    pub published: u64,
    /// Of them, rows published again after an earlier failed attempt: they
    /// may have reached the broker before (possible duplicates).
    pub retried: u64,
    /// Rows confirmed by the broker whose deletion did not commit: they are
    /// published again (duplicates).
    pub unrecorded: u64,
    /// Publish attempts that failed (the row stays for a retry).
    pub failed_publishes: u64,
    /// Rows this relay marked dead.
    pub marked_dead: u64,
    /// Batches published.
    pub batches: u64,
    /// The last error (database or broker), if the last round failed.
    pub last_error: Option<String>,
}

fn opt_secs<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl RelayStatus {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            state: RelayState::Starting,
            listening: false,
            rows_waiting: None,
            oldest_waiting_age: None,
            dead_rows: None,
            measured_at: None,
            last_publish_lag: None,
            last_published_at: None,
            published: 0,
            retried: 0,
            unrecorded: 0,
            failed_publishes: 0,
            marked_dead: 0,
            batches: 0,
            last_error: None,
        }
    }

    /// Possible duplicates this relay caused: rows published again after a
    /// failed attempt, and confirmed rows whose deletion did not commit.
    pub fn possible_duplicates(&self) -> u64 {
        self.retried + self.unrecorded
    }
}
