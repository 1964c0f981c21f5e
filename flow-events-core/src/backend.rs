//! The contract a backend fulfils for the resilience decorator.
//!
//! A backend says three things: "here is a session", "this publish is confirmed
//! (or failed, and whether retrying makes sense)", "this session is gone". All
//! the resilience is written once, in [`crate::Resilient`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::watch;

use crate::error::BackendError;
use crate::event::Event;
use crate::source::{Decision, Delivery};
use crate::subscription::Subscription;

/// A future that resolves when the broker confirms (or refuses) one event.
pub type Confirmation = BoxFuture<'static, Result<(), BackendError>>;

/// The deliveries of one subscription on one session; it ends when the session is lost.
pub type DeliveryStream = BoxStream<'static, IncomingDelivery>;

/// How a backend names itself: a short name, the broker's name for logs and
/// errors, the key of its entry in a health report, and its redacted address.
///
/// ```
/// use flow_events_core::BackendInfo;
/// let info = BackendInfo::new("amqp", "amqp://guest:***@localhost:5672/")
///     .with_display_name("RabbitMQ")
///     .with_dependency("rabbitmq");
/// assert_eq!(info.display_name, "RabbitMQ");
/// let plain = BackendInfo::new("memory", "memory://");
/// assert_eq!(plain.dependency, "memory");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendInfo {
    /// Short name: `amqp`, `memory`.
    pub name: &'static str,
    /// The broker's name in log lines, errors and health issues (`RabbitMQ`).
    /// Default: the short name.
    pub display_name: &'static str,
    /// The key of the backend's entry under `dependencies` in a health report
    /// (`rabbitmq`). Default: the short name.
    pub dependency: &'static str,
    /// The address with the password redacted.
    pub url: String,
}

impl BackendInfo {
    /// A backend called `name` at the redacted address `url`.
    pub fn new(name: &'static str, url: impl Into<String>) -> Self {
        Self {
            name,
            display_name: name,
            dependency: name,
            url: url.into(),
        }
    }

    /// The broker's name for people (`RabbitMQ`).
    pub fn with_display_name(mut self, display_name: &'static str) -> Self {
        self.display_name = display_name;
        self
    }

    /// The key under `dependencies` in a health report (`rabbitmq`).
    pub fn with_dependency(mut self, dependency: &'static str) -> Self {
        self.dependency = dependency;
        self
    }
}

/// Makes sessions (connections) to a broker.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// One connection attempt, bounded by a timeout. Never retries by itself.
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError>;
    /// Name and redacted address.
    fn info(&self) -> BackendInfo;

    /// Called by the resilience decorator for each event given to `publish`,
    /// in the caller's task, before the event is sized, sent or buffered: a
    /// backend may add headers that must be the same on every send of the
    /// event (a trace context taken from the caller's task, say). The
    /// default does nothing.
    fn prepare_event(&self, event: &mut Event) {
        let _ = event;
    }

    /// The OpenTelemetry messaging attributes of a message carrying `event`
    /// on this backend (semantic conventions): `messaging.system`,
    /// `messaging.destination.name` and the system's own, such as a routing
    /// key. The decorator puts them on its spans (feature `otel`) and adds
    /// the message id and the operation. The default gives none, and the
    /// decorator then names the system by [`BackendInfo::name`].
    fn message_attributes(&self, event: &Event) -> Vec<(&'static str, String)> {
        let _ = event;
        Vec::new()
    }
}

#[async_trait]
impl<T: Backend + ?Sized> Backend for Arc<T> {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        (**self).connect().await
    }
    fn info(&self) -> BackendInfo {
        (**self).info()
    }
    fn prepare_event(&self, event: &mut Event) {
        (**self).prepare_event(event);
    }
    fn message_attributes(&self, event: &Event) -> Vec<(&'static str, String)> {
        (**self).message_attributes(event)
    }
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Backend").field(&self.info()).finish()
    }
}

/// Who bounds the wait for the confirm of a send (see [`Session::send_encoded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfirmWait {
    /// The session: the confirmation fails with a timeout once the
    /// backend's own limit is over.
    Session,
    /// The caller: it stops waiting (drops the confirmation) once its own
    /// limit is over, so the session need not run a timer of its own. The
    /// resilience decorator sends so: it bounds every wait itself.
    Caller,
}

/// One live connection to a broker.
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// Sends `event`: [`Session::send_encoded`] with the event's encoding
    /// made here ([`Event::encode`]) and the wait for the confirm bounded by
    /// the session ([`ConfirmWait::Session`]).
    async fn send(&self, event: &Event) -> Result<Confirmation, BackendError> {
        self.send_encoded(event, event.encode(), ConfirmWait::Session)
            .await
    }

    /// Sends `event`, whose JSON encoding the caller has made already:
    /// `body` is [`Event::encode`]'s output for this event (the decorator
    /// makes it for its size check), and a backend that carries the event
    /// as JSON sends these bytes rather than encoding the event again.
    /// Returns once the event is on its way (sends keep their call order)
    /// with a future that resolves on the broker's confirm. With
    /// [`ConfirmWait::Caller`] the caller bounds the wait for that confirm,
    /// and the session may leave out a timer of its own.
    async fn send_encoded(
        &self,
        event: &Event,
        body: Vec<u8>,
        wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError>;

    /// Starts consuming `subscription` on this session.
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError>;

    /// Resolves when the session is lost, with the reason. May be called many times.
    async fn closed(&self) -> BackendError;

    /// Whether the broker is blocking publishers (resource alarm). The default
    /// never blocks.
    fn blocked(&self) -> watch::Receiver<bool> {
        watch::channel(false).1
    }

    /// The address this session is connected to, for status, health and
    /// logs: with several broker addresses configured, the one in use. It
    /// must never show a password (redact it as [`crate::redact_url`] does).
    /// The default, `None`, leaves the backend's [`BackendInfo::url`] shown.
    fn url(&self) -> Option<String> {
        None
    }

    /// Closes the session.
    async fn close(&self);
}

/// Settles one delivery on the session it came from. A delivery from a lost
/// session cannot be settled on a new one: settling fails and the broker
/// redelivers it.
#[async_trait]
pub trait Acker: Send + 'static {
    /// Acks, requeues (retry) or dead-letters (reject) the delivery.
    async fn settle(self: Box<Self>, decision: Decision) -> Result<(), BackendError>;
}

/// Runs around the handler's call for one delivery: a backend can open a
/// tracing span, or set a task-local context, from the message's metadata.
pub trait DeliveryScope: Send + 'static {
    /// Wraps `handling`, the handler's future for the delivery.
    fn enter<'a>(self: Box<Self>, handling: BoxFuture<'a, Decision>) -> BoxFuture<'a, Decision>;
}

/// A delivery with the means to settle it.
pub struct IncomingDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// Settles it.
    pub acker: Box<dyn Acker>,
    pub(crate) scope: Option<Box<dyn DeliveryScope>>,
}

impl IncomingDelivery {
    /// A new incoming delivery.
    pub fn new(delivery: Delivery, acker: Box<dyn Acker>) -> Self {
        Self {
            delivery,
            acker,
            scope: None,
        }
    }

    /// The handler is to be called for this delivery within `scope`.
    pub fn with_scope(mut self, scope: impl DeliveryScope) -> Self {
        self.scope = Some(Box::new(scope));
        self
    }

    /// Takes the scope out, if there is one: a consumer calls the handler
    /// within it (see [`DeliveryScope::enter`]).
    pub fn take_scope(&mut self) -> Option<Box<dyn DeliveryScope>> {
        self.scope.take()
    }
}

impl fmt::Debug for IncomingDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingDelivery")
            .field("delivery", &self.delivery)
            .field("scoped", &self.scope.is_some())
            .finish_non_exhaustive()
    }
}
