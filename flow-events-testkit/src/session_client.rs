//! A plain client straight over one backend session.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flow_events_core::{
    Backend, BackendError, Event, EventSink, EventSource, Handler, IncomingDelivery, PublishError,
    PublishErrorKind, PublishOutcome, Session, StopSignal, SubscribeError, Subscription,
    SubscriptionHandle, panic_message,
};
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;

/// An [`EventSink`] + [`EventSource`] straight over one [`Session`], with no
/// resilience: no reconnecting, no buffering, no re-subscribing. Once the
/// session is lost, publishing fails and subscriptions stop.
///
/// It runs the conformance suite against a backend alone, so a failure points
/// at the backend rather than at the resilience decorator. A `Retry` on the
/// subscription's last attempt becomes a `Reject`, and a `Retry` waits for the
/// subscription's retry policy, as the decorator does;
/// concurrency and de-duplication settings are ignored (one handler call at a time).
#[derive(Clone)]
pub struct SessionClient {
    session: Arc<dyn Session>,
}

impl SessionClient {
    /// A client over `session`.
    pub fn new(session: Arc<dyn Session>) -> Self {
        Self { session }
    }

    /// Connects through `backend` (one attempt).
    pub async fn connect<B: Backend + ?Sized>(backend: &B) -> Result<Self, BackendError> {
        Ok(Self::new(backend.connect().await?))
    }

    /// The session.
    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }
}

impl fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClient").finish_non_exhaustive()
    }
}

fn refused(error: BackendError, event: Event) -> PublishError {
    let kind = if error.refuses_event() {
        PublishErrorKind::Refused
    } else {
        PublishErrorKind::NotConnected
    };
    PublishError::new(kind, event).with_source(error)
}

#[async_trait]
impl EventSink for SessionClient {
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError> {
        match self.session.send(&event).await {
            Ok(confirmation) => match confirmation.await {
                Ok(()) => Ok(PublishOutcome::Confirmed),
                Err(e) => Err(refused(e, event)),
            },
            Err(e) => Err(refused(e, event)),
        }
    }

    /// Sends every event in order, then waits for all the confirms.
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<PublishOutcome, PublishError>> {
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            sent.push(match self.session.send(&event).await {
                Ok(confirmation) => Ok((confirmation, event)),
                Err(e) => Err(refused(e, event)),
            });
        }
        let mut results = Vec::with_capacity(sent.len());
        for item in sent {
            results.push(match item {
                Ok((confirmation, event)) => match confirmation.await {
                    Ok(()) => Ok(PublishOutcome::Confirmed),
                    Err(e) => Err(refused(e, event)),
                },
                Err(e) => Err(e),
            });
        }
        results
    }
}

#[async_trait]
impl EventSource for SessionClient {
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let mut stream = self.session.subscribe(&subscription).await?;
        let policy = subscription.retry().clone();
        let task = |stop: StopSignal| async move {
            loop {
                let mut incoming = tokio::select! {
                    biased;
                    () = stop.stopped() => break,
                    next = stream.next() => match next {
                        Some(incoming) => incoming,
                        None => break,
                    },
                };
                let scope = incoming.take_scope();
                let IncomingDelivery {
                    delivery, acker, ..
                } = incoming;
                let attempt = delivery.attempt();
                let handling = handler.handle(delivery);
                let handling = match scope {
                    Some(scope) => scope.enter(handling),
                    None => handling,
                };
                // A panicking handler is settled as the decorator settles it.
                let decision = match AssertUnwindSafe(handling).catch_unwind().await {
                    Ok(decision) => policy.settle(decision, attempt),
                    Err(panic) => policy.settle_panic(panic_message(panic.as_ref()), attempt),
                };
                // A failed settle means the session is gone and the broker
                // delivers it again; the stream ends next.
                let _ = acker.settle(decision).await;
            }
        };
        Ok(SubscriptionHandle::spawn(subscription.name(), task))
    }
}
