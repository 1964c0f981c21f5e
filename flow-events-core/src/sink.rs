//! The publishing side.

use async_trait::async_trait;

use crate::error::PublishError;
use crate::event::Event;

/// What became of a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// The backend confirmed the event (for RabbitMQ: a publisher confirm).
    Confirmed,
    /// The event is in the local pending buffer and will be published, in order,
    /// when the broker is back.
    Buffered {
        /// Events pending after this one was added.
        pending: usize,
    },
    /// The pending buffer was full and the drop-newest policy dropped this
    /// event (logged and counted). Choose the `reject` policy to have such an
    /// event handed back instead.
    Dropped {
        /// Events pending (the buffer's fill).
        pending: usize,
    },
}

impl PublishOutcome {
    /// `"confirmed"`, `"buffered"` or `"dropped"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Buffered { .. } => "buffered",
            Self::Dropped { .. } => "dropped",
        }
    }
}

/// Publishes events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes one event. `Ok` says whether it is confirmed or buffered; `Err`
    /// hands the event back with the reason.
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError>;

    /// Publishes several events, keeping their order, with their confirms in
    /// flight together. One result per event, in the same order.
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<PublishOutcome, PublishError>> {
        let futures = events.into_iter().map(|e| self.publish(e));
        futures_util::future::join_all(futures).await
    }
}

#[async_trait]
impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError> {
        (**self).publish(event).await
    }
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<PublishOutcome, PublishError>> {
        (**self).publish_batch(events).await
    }
}
