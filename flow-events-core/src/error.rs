//! Errors of flow-events-core. Every error that refuses an event hands it back.

use std::fmt;
use std::time::Duration;

use crate::event::Event;
use crate::store::StoreError;
use crate::url::redact_url;

/// A boxed error, as carried in `#[source]`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a backend reports; the resilience decorator acts on it
/// without knowing the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The broker could not be reached or the connection was lost: retry at the backoff pace.
    Connection,
    /// A broker wait (connect, publish, confirm, declare) took longer than its limit.
    Timeout,
    /// The configuration is wrong: credentials, vhost, a topology clash (406), a bad URL.
    /// Reported loudly; retried only at the backoff pace, in case an operator fixes it.
    Configuration,
    /// The broker refused this event (too large, unroutable with `mandatory`, nacked
    /// for good): hand it back to the caller, never buffer it.
    EventRefused,
    /// The broker nacked the event; publishing it again may succeed.
    Nacked,
    /// The send failed for a reason that was not this event's: the broker
    /// closed the channel it was on because of another event, say. The
    /// session is still usable (the backend has opened, or is opening, a new
    /// channel): send the event again at once.
    Interrupted,
    /// The session was closed on purpose.
    Closed,
    /// Anything else; treated as transient.
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connection => "connection error",
            Self::Timeout => "timed out",
            Self::Configuration => "configuration error",
            Self::EventRefused => "event refused",
            Self::Nacked => "event nacked",
            Self::Interrupted => "send interrupted",
            Self::Closed => "session closed",
            Self::Other => "backend error",
        })
    }
}

/// An error reported by a backend. Its message is redacted when it is built, so
/// a URL with a password in it never reaches a log or a status.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl BackendError {
    /// A new error of `kind`; URLs in `message` are redacted.
    pub fn new(kind: BackendErrorKind, message: impl AsRef<str>) -> Self {
        Self {
            kind,
            message: redact_url(message.as_ref()),
            source: None,
        }
    }

    /// A connection error.
    pub fn connection(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::Connection, message)
    }

    /// A configuration error.
    pub fn configuration(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::Configuration, message)
    }

    /// A timeout of a broker wait.
    pub fn timeout(what: &str, after: Duration) -> Self {
        Self::new(
            BackendErrorKind::Timeout,
            format!("{what} took longer than {after:?}"),
        )
    }

    /// The event was refused for good.
    pub fn event_refused(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::EventRefused, message)
    }

    /// The broker nacked the event.
    pub fn nacked(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::Nacked, message)
    }

    /// The send was interrupted by a failure that was not this event's.
    pub fn interrupted(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::Interrupted, message)
    }

    /// The session is closed.
    pub fn closed(message: impl AsRef<str>) -> Self {
        Self::new(BackendErrorKind::Closed, message)
    }

    /// Attaches the underlying error. Its text is not redacted: backends must
    /// only attach errors that carry no secret.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The (redacted) message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again (later, or on another connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            BackendErrorKind::EventRefused | BackendErrorKind::Configuration
        )
    }

    /// Whether this event must be handed back to the caller instead of buffered.
    pub fn refuses_event(&self) -> bool {
        self.kind == BackendErrorKind::EventRefused
    }
}

/// Why an event was refused by a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The event's encoding is larger than the configured maximum.
    TooLarge {
        /// Its encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The pending buffer is full and the overflow policy is `reject`.
    BufferFull {
        /// The buffer's capacity.
        capacity: usize,
    },
    /// The sink is shutting down and takes no more events.
    ShuttingDown,
    /// The backend refused this event for good (see the source).
    Refused,
    /// No connection and no buffer to fall back on (or the broker is
    /// blocking publishers).
    NotConnected,
    /// The broker nacked the event; publishing it again may succeed.
    Nacked,
    /// The publish or its confirm took longer than the publish timeout: the
    /// event may or may not have reached the broker.
    Timeout,
    /// The durable store could not keep the event (disk full, write error);
    /// the store's error is the source ([`PublishError::store_error`]).
    StoreFailed,
}

impl fmt::Display for PublishErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, limit } => {
                write!(f, "event is {size} bytes, the limit is {limit}")
            }
            Self::BufferFull { capacity } => {
                write!(f, "pending events buffer is full ({capacity} events)")
            }
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::Refused => f.write_str("refused by the broker"),
            Self::NotConnected => f.write_str("not connected"),
            Self::Nacked => f.write_str("nacked by the broker"),
            Self::Timeout => f.write_str("no confirm within the publish timeout"),
            Self::StoreFailed => f.write_str("could not store the event"),
        }
    }
}

/// An event was not accepted; the event is handed back in full.
///
/// ```
/// # use flow_events_core::{Event, PublishError, PublishErrorKind};
/// let event = Event::try_new("order.created", serde_json::json!({})).unwrap();
/// let err = PublishError::new(PublishErrorKind::ShuttingDown, event.clone());
/// assert_eq!(err.into_event(), event);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("event {} ({}) not accepted: {kind}", .event.id(), .event.event_type())]
pub struct PublishError {
    kind: PublishErrorKind,
    event: Box<Event>,
    #[source]
    source: Option<Cause>,
}

/// What made a publish fail: the backend or the store.
#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    Backend(BackendError),
    #[error(transparent)]
    Store(StoreError),
}

impl PublishError {
    /// A new error of `kind` handing back `event`.
    pub fn new(kind: PublishErrorKind, event: Event) -> Self {
        Self {
            kind,
            event: Box::new(event),
            source: None,
        }
    }

    /// Attaches the backend error that caused it.
    pub fn with_source(mut self, source: BackendError) -> Self {
        self.source = Some(Cause::Backend(source));
        self
    }

    /// Attaches the store error that caused it (kind `StoreFailed`).
    pub fn with_store_error(mut self, source: StoreError) -> Self {
        self.source = Some(Cause::Store(source));
        self
    }

    /// Why the event was refused.
    pub fn kind(&self) -> &PublishErrorKind {
        &self.kind
    }

    /// The event that was refused.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The backend error behind it, if any.
    pub fn backend_error(&self) -> Option<&BackendError> {
        match &self.source {
            Some(Cause::Backend(e)) => Some(e),
            _ => None,
        }
    }

    /// The store error behind it, if any.
    pub fn store_error(&self) -> Option<&StoreError> {
        match &self.source {
            Some(Cause::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// Takes the event back.
    pub fn into_event(self) -> Event {
        *self.event
    }
}

/// A subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The subscription's settings are invalid.
    #[error("invalid subscription: {0}")]
    Invalid(String),
    /// The source is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The backend failed to set it up.
    #[error("subscription failed: {0}")]
    Backend(#[from] BackendError),
}

/// A configuration value is invalid. Names the variable and the value (redacted
/// if it is a URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {variable}: {reason}")]
pub struct ConfigError {
    variable: String,
    value: String,
    reason: String,
}

impl ConfigError {
    /// A new error for `variable` set to `value`.
    pub fn new(variable: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            value: redact_url(value),
            reason: reason.into(),
        }
    }

    /// The variable (or setting) name.
    pub fn variable(&self) -> &str {
        &self.variable
    }

    /// The value, redacted.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The broker is required (`RABBITMQ_REQUIRED=true`) and could not be reached
    /// within the configured retries.
    #[error("{broker} is required but unavailable after {attempts} attempts")]
    BrokerUnavailable {
        /// The broker's name (the backend's display name).
        broker: &'static str,
        /// Connection attempts made.
        attempts: u32,
        /// The error of the last attempt (its message redacted).
        #[source]
        last_error: Option<BackendError>,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pending store could not be opened or read (locked by another process, say).
    #[error("pending events store unavailable: {0}")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_error_redacts() {
        let e = BackendError::connection("cannot reach amqp://guest:hunter2@h:5672/");
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{e:?}").contains("hunter2"));
        assert!(e.is_retryable());
        assert!(!BackendError::configuration("x").is_retryable());
        assert!(BackendError::event_refused("x").refuses_event());
    }

    #[test]
    fn config_error_names_variable() {
        let e = ConfigError::new("RABBITMQ_MAX_RETRIES", "abc", "not a whole number");
        assert_eq!(
            e.to_string(),
            "invalid value \"abc\" for RABBITMQ_MAX_RETRIES: not a whole number"
        );
    }
}
