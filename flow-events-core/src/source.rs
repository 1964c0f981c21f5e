//! The consuming side: handlers, deliveries and subscription handles.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::SubscribeError;
use crate::event::Event;
use crate::subscription::Subscription;

/// A handler's answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Done: remove the event from the subscription.
    Ack,
    /// Not now: deliver it again (flagged as a redelivery) after the delay of
    /// the subscription's [`RetryPolicy`](crate::RetryPolicy), until its
    /// maximum attempts, then dead-letter it.
    Retry,
    /// Not now, and not before this delay: as [`Decision::Retry`], with the
    /// handler's own delay in place of the policy's.
    RetryAfter(Duration),
    /// Never: dead-letter it at once (where the backend has a dead-letter
    /// queue), saying why. The reason travels with the dead letter (at most
    /// 1 KiB of it); it must not hold secrets.
    Reject(String),
}

impl Decision {
    /// A [`Decision::Reject`] for `reason`.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self::Reject(reason.into())
    }

    /// Whether it asks for the event again ([`Decision::Retry`] or
    /// [`Decision::RetryAfter`]).
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Retry | Self::RetryAfter(_))
    }
}

/// One event delivered to a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    event: Event,
    redelivered: bool,
    attempt: u32,
}

impl Delivery {
    /// A delivery of `event`; `attempt` counts from 1.
    pub fn new(event: Event, redelivered: bool, attempt: u32) -> Self {
        Self {
            event,
            redelivered,
            attempt: attempt.max(1),
        }
    }
    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }
    /// Takes the event.
    pub fn into_event(self) -> Event {
        self.event
    }
    /// Whether the event was delivered before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }
    /// The delivery attempt, from 1. Every delivery counts, whatever caused it:
    /// a handler's `Retry`, or a redelivery after a lost connection (as a
    /// quorum queue's delivery count does), so an event that keeps crashing its
    /// consumer also ends in the dead-letter queue.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Handles deliveries.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery and says what to do with it.
    async fn handle(&self, delivery: Delivery) -> Decision;
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(F);

/// Makes a handler from an async closure.
///
/// ```
/// use flow_events_core::{handler_fn, Decision, Delivery};
/// let handler = handler_fn(|d: Delivery| async move {
///     println!("got {}", d.event().event_type());
///     Decision::Ack
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<HandlerFn<F>>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Decision> + Send + 'static,
{
    Arc::new(HandlerFn(f))
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Decision> + Send + 'static,
{
    async fn handle(&self, delivery: Delivery) -> Decision {
        (self.0)(delivery).await
    }
}

/// Subscribes handlers to events.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Starts consuming `subscription` with `handler`. Consuming goes on until the
    /// returned handle is closed or dropped.
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError>;
}

#[async_trait]
impl<T: EventSource + ?Sized> EventSource for Arc<T> {
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        (**self).subscribe(subscription, handler).await
    }
}

/// Owns a running subscription. Dropping it stops consuming; [`SubscriptionHandle::close`]
/// stops and waits until the handler call in progress has finished.
#[derive(Debug)]
pub struct SubscriptionHandle {
    name: String,
    cancel: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// Tells a subscription's task to stop: given to it by
/// [`SubscriptionHandle::spawn`], fired by closing or dropping the handle.
#[derive(Debug, Clone)]
pub struct StopSignal(CancellationToken);

impl StopSignal {
    /// Resolves once the subscription is to stop.
    pub async fn stopped(&self) {
        self.0.cancelled().await;
    }

    /// Whether the subscription is to stop.
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }

    /// The token behind it, for the decorator's own tasks.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.0
    }
}

impl SubscriptionHandle {
    /// Spawns the subscription `name`'s task, made by `task` from the signal
    /// that tells it to stop, on the current tokio runtime. The task ends
    /// soon after the signal fires, once the handler call in progress is done.
    ///
    /// ```
    /// use flow_events_core::SubscriptionHandle;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = SubscriptionHandle::spawn("billing", |stop| async move {
    ///     stop.stopped().await; // a real task consumes deliveries until then
    /// });
    /// assert!(handle.is_active());
    /// handle.close().await;
    /// # }
    /// ```
    pub fn spawn<F, Fut>(name: impl Into<String>, task: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::spawn_with(name, CancellationToken::new(), task)
    }

    /// Like [`SubscriptionHandle::spawn`], stopped by `cancel` too.
    pub(crate) fn spawn_with<F, Fut>(
        name: impl Into<String>,
        cancel: CancellationToken,
        task: F,
    ) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let done = tokio::spawn(task(StopSignal(cancel.clone())));
        Self {
            name: name.into(),
            cancel,
            done: Some(done),
        }
    }

    /// The subscription name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still consuming.
    pub fn is_active(&self) -> bool {
        !self.cancel.is_cancelled() && self.done.as_ref().is_some_and(|d| !d.is_finished())
    }

    /// Stops consuming and waits for the handler call in progress.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
