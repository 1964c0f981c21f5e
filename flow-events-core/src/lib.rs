//! Core of flow-events: the event envelope, the publishing and consuming
//! traits, connection monitoring, the resilience configuration, health, the backend contract,
//! and the resilience decorator that wraps any backend.
//!
//! Backends live in their own crates (`flow-events-memory`, `flow-events-amqp`)
//! and depend on this one; nothing here knows a broker.
//!
//! Features: `metrics` (default) reports the decorator's and the consumers'
//! metrics through the `metrics` facade (names in [`metrics`]); `otel` opens
//! OpenTelemetry spans for publishing, draining and handling, and carries
//! the trace context in event headers (see the `otel` module).

mod backend;
pub mod backend_kit;
mod config;
mod config_parse;
pub mod dead_letter;
mod dedup;
mod error;
mod event;
mod event_id;
mod event_json;
mod event_time;
mod event_type;
mod fallback;
mod health;
pub mod metrics;
mod monitor;
#[cfg(feature = "otel")]
pub mod otel;
mod overflow;
mod padded;
mod pattern;
pub mod resilient;
mod retry;
mod sink;
mod source;
mod store;
mod subscription;
mod url;

pub use backend::{
    Acker, Backend, BackendInfo, ConfirmWait, Confirmation, DeliveryScope, DeliveryStream,
    IncomingDelivery, Session,
};
pub use config::{
    Config, ConfigBuilder, DEFAULT_MAX_PENDING_BYTES, ENV_CONFIRM_WAIT, ENV_MAX_EVENT_BYTES,
    ENV_MAX_IN_FLIGHT, ENV_MAX_PENDING_AGE, ENV_MAX_PENDING_BYTES, ENV_MAX_PENDING_EVENTS,
    ENV_MAX_PUBLISH_ATTEMPTS, ENV_MAX_RETRIES, ENV_MAX_RETRY_DELAY, ENV_OVERFLOW_POLICY,
    ENV_PUBLISH_TIMEOUT, ENV_REQUIRED, ENV_RETRY_DELAY, OverflowPolicy,
};
pub use dead_letter::DeadLetter;
pub use dedup::DedupStore;
pub use error::{
    BackendError, BackendErrorKind, BoxError, ConfigError, PublishError, PublishErrorKind,
    StartError, SubscribeError,
};
pub use event::{
    Event, EventId, EventType, InvalidEvent, InvalidEventReason, InvalidEventType,
    MAX_EVENT_TYPE_LEN,
};
pub use fallback::{Fallback, Route, Routed, SinkFn, sink_fn};
pub use health::{DependencyHealth, HealthReport, HealthStatus, LOSS_DEGRADES_FOR};
pub use monitor::{ConnectionMonitor, ConnectionState, ConnectionStatus};
pub use pattern::{InvalidPattern, TopicPattern};
pub use resilient::{Resilient, ResilientBuilder, SentBatch, ShutdownReport};
pub use retry::{MAX_REASON_BYTES, RetryPolicy, panic_message, truncate_reason};
pub use sink::{EventSink, PublishOutcome};
pub use source::{
    Decision, Delivery, EventSource, Handler, HandlerFn, StopSignal, SubscriptionHandle, handler_fn,
};
pub use store::{MemoryStore, PendingStore, Recovered, StoreError, StoreErrorKind, StoredEvent};
pub use subscription::{QueueKind, Subscription};
pub use url::{BrokerUrl, redact_url};
