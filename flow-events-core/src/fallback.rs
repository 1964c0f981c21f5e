//! The "alternative event processing path": a sink that hands what its primary
//! refuses to a secondary.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::PublishError;
use crate::event::Event;
use crate::sink::{EventSink, PublishOutcome};

/// Which sink took an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary sink.
    Primary,
    /// The secondary sink, after the primary refused the event.
    Secondary,
}

/// An outcome and the sink that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Which sink took the event.
    pub route: Route,
    /// What that sink did with it.
    pub outcome: PublishOutcome,
}

/// Tries `primary`; an event it refuses (buffer full with the reject policy,
/// refused by the broker, shutting down) goes to `secondary`: a second broker,
/// a local handler, a file.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flow_events_core::{sink_fn, Event, Fallback, PublishError, PublishErrorKind, PublishOutcome, Route};
/// let primary = sink_fn(|e: Event| async move {
///     Err::<PublishOutcome, _>(PublishError::new(PublishErrorKind::NotConnected, e))
/// });
/// let local = sink_fn(|_e: Event| async move { Ok(PublishOutcome::Confirmed) });
/// let sink = Fallback::new(primary, local);
/// let routed = sink
///     .publish_routed(Event::try_new("order.created", serde_json::json!({})).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(routed.route, Route::Secondary);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Fallback<P, S> {
    primary: P,
    secondary: S,
}

impl<P: EventSink, S: EventSink> Fallback<P, S> {
    /// A sink trying `primary`, then `secondary`.
    pub fn new(primary: P, secondary: S) -> Self {
        Self { primary, secondary }
    }

    /// Publishes and says which sink took the event. When both refuse it, the
    /// secondary's error hands it back.
    pub async fn publish_routed(&self, event: Event) -> Result<Routed, PublishError> {
        match self.primary.publish(event).await {
            Ok(outcome) => Ok(Routed {
                route: Route::Primary,
                outcome,
            }),
            Err(refused) => {
                tracing::warn!(
                    id = %refused.event().id(), reason = %refused.kind(),
                    "primary sink refused the event, handing it to the fallback"
                );
                let outcome = self.secondary.publish(refused.into_event()).await?;
                Ok(Routed {
                    route: Route::Secondary,
                    outcome,
                })
            }
        }
    }

    /// The primary sink.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The secondary sink.
    pub fn secondary(&self) -> &S {
        &self.secondary
    }
}

#[async_trait]
impl<P: EventSink, S: EventSink> EventSink for Fallback<P, S> {
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError> {
        self.publish_routed(event).await.map(|r| r.outcome)
    }
}

/// A sink made from an async closure (a local handler, a test double).
#[derive(Debug, Clone)]
pub struct SinkFn<F>(Arc<F>);

/// Makes an [`EventSink`] from an async closure.
pub fn sink_fn<F, Fut>(f: F) -> SinkFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<PublishOutcome, PublishError>> + Send + 'static,
{
    SinkFn(Arc::new(f))
}

#[async_trait]
impl<F, Fut> EventSink for SinkFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<PublishOutcome, PublishError>> + Send + 'static,
{
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError> {
        (self.0)(event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PublishErrorKind;

    fn ev() -> Event {
        Event::try_new("a.b", serde_json::json!({"k": 1})).unwrap()
    }

    #[tokio::test]
    async fn primary_takes_it_when_it_can() {
        let sink = Fallback::new(
            sink_fn(|_| async { Ok(PublishOutcome::Buffered { pending: 3 }) }),
            sink_fn(|_| async { panic!("secondary must not be called") }),
        );
        let r = sink.publish_routed(ev()).await.unwrap();
        assert_eq!(r.route, Route::Primary);
        assert_eq!(r.outcome, PublishOutcome::Buffered { pending: 3 });
    }

    #[tokio::test]
    async fn both_refuse_hands_event_back() {
        let refuse = |kind: PublishErrorKind| {
            sink_fn(move |e| {
                let kind = kind.clone();
                async move { Err(PublishError::new(kind, e)) }
            })
        };
        let sink = Fallback::new(
            refuse(PublishErrorKind::BufferFull { capacity: 1 }),
            refuse(PublishErrorKind::NotConnected),
        );
        let event = ev();
        let err = sink.publish(event.clone()).await.unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::NotConnected);
        assert_eq!(err.into_event(), event);
    }
}
