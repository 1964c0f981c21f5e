//! The resilience decorator: wraps any [`Backend`](crate::Backend) so that a
//! service starts, publishes and consumes whether or not the broker is there.
//!
//! - A supervisor task owns the connection: it connects, retries with
//!   exponential backoff and full jitter (`RABBITMQ_RETRY_DELAY`, capped by
//!   `RABBITMQ_MAX_RETRY_DELAY`), turns `failed` after `RABBITMQ_MAX_RETRIES`
//!   consecutive failures and keeps probing, so the service recovers by itself.
//! - `publish` never waits on a connection attempt, nor longer than the
//!   confirm wait (`RABBITMQ_CONFIRM_WAIT`) on the broker. Connected, it
//!   publishes and awaits the confirm (many callers in flight at once).
//!   Otherwise, when the publish fails, or when the confirm is late, the
//!   event goes to the bounded pending buffer and the call returns
//!   [`PublishOutcome::Buffered`](crate::PublishOutcome::Buffered).
//! - Each event has its own failure policy, apart from connection failures:
//!   an event the broker refuses for good is handed back (or, once its
//!   caller was answered, logged and counted as refused); one it nacks is
//!   sent again after a backoff of its own, a bounded number of times; the
//!   events behind a failing event keep flowing.
//! - An event leaves the buffer only when the broker confirms it. On reconnect
//!   the buffer drains in publish order with a window of confirms in flight,
//!   before newer events overtake it; what was in flight when a connection
//!   dropped is published again (at-least-once; consumers can de-duplicate on
//!   the event id).
//! - Subscriptions are re-established on every new connection; a delivery of a
//!   lost connection is never settled on the new one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use flow_events_core::{Config, ConnectionMonitor, Event, EventSink, Resilient};
//! # use flow_events_core::{Backend, BackendError, BackendInfo, Session};
//! # use std::sync::Arc;
//! # struct Down;
//! # #[async_trait::async_trait]
//! # impl Backend for Down {
//! #     async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
//! #         Err(BackendError::connection("connection refused"))
//! #     }
//! #     fn info(&self) -> BackendInfo { BackendInfo::new("amqp", "amqp://guest:***@rabbitmq:5672/").with_display_name("RabbitMQ") }
//! # }
//! # let backend = Down;
//! // `backend` is any Backend: flow-events-memory's or flow-events-amqp's.
//! let events = Resilient::builder(backend)
//!     .with_config(Config::builder().with_max_pending_events(100).build().unwrap())
//!     .start()
//!     .await
//!     .unwrap();
//! let outcome = events
//!     .publish(Event::try_new("order.created", serde_json::json!({"id": 1})).unwrap())
//!     .await
//!     .unwrap();
//! // The broker is down: the event waits in the buffer.
//! assert_eq!(outcome.as_str(), "buffered");
//! assert_eq!(events.status().pending_events, 1);
//! # }
//! ```

mod answer;
mod backoff;
mod buffer;
mod builder;
mod confirmed;
mod consumer;
mod drain;
mod guards;
mod metrics;
mod publish;
mod service;
mod shared;
mod shutdown;
mod spans;
mod subscribe;
mod supervisor;

pub use builder::ResilientBuilder;
pub use confirmed::SentBatch;
pub use service::Resilient;
pub use shutdown::ShutdownReport;
