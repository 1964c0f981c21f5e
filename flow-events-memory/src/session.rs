//! A session on the memory broker.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flow_events_core::{
    BackendError, ConfirmWait, Confirmation, DeliveryStream, Event, Session, Subscription,
};
use tokio::sync::watch;

use crate::consumer::ConsumerStream;
use crate::state::{Loss, Shared};

/// What the broker knows of a session: its id and whether (and why) it ended.
#[derive(Debug)]
pub(crate) struct SessionCore {
    id: u64,
    loss: watch::Sender<Option<Loss>>,
}

impl SessionCore {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            loss: watch::Sender::new(None),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Records the end of the session; called under the broker's lock.
    pub(crate) fn mark_lost(&self, loss: Loss) {
        self.loss.send_replace(Some(loss));
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.loss.borrow().is_some()
    }

    /// `Ok` while the session is open, else the error of its end.
    pub(crate) fn check_open(&self) -> Result<(), BackendError> {
        match *self.loss.borrow() {
            Some(loss) => Err(loss.error()),
            None => Ok(()),
        }
    }

    async fn lost(&self) -> BackendError {
        let mut rx = self.loss.subscribe();
        let loss = match rx.wait_for(Option::is_some).await {
            Ok(loss) => *loss,
            // The sender lives in `self`, so this cannot happen; treat it as closed.
            Err(_) => None,
        };
        loss.unwrap_or(Loss::Closed).error()
    }
}

/// Keeps a session open while its owner, a stream or an acker still uses it;
/// the last one dropped closes it (like a connection whose last user went away).
#[derive(Debug)]
pub(crate) struct SessionGuard {
    pub(crate) core: Arc<SessionCore>,
    pub(crate) shared: Arc<Shared>,
}

impl SessionGuard {
    fn end(&self, loss: Loss) {
        self.shared.lock().end_session(self.core.id(), loss);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.core.is_lost() {
            self.end(Loss::Closed);
        }
    }
}

/// A session (connection) to a [`MemoryBroker`](crate::MemoryBroker), made by
/// [`MemoryBackend::connect`](flow_events_core::Backend::connect).
///
/// It is lost when the broker is taken down, and closed by [`Session::close`]
/// or when it and every stream and delivery it gave out are dropped. Either
/// way its streams end and its unsettled deliveries go back to their queues,
/// flagged as redelivered.
pub struct MemorySession {
    guard: Arc<SessionGuard>,
}

impl MemorySession {
    pub(crate) fn new(core: Arc<SessionCore>, shared: Arc<Shared>) -> Self {
        Self {
            guard: Arc::new(SessionGuard { core, shared }),
        }
    }

    /// Whether the session is still open.
    pub fn is_open(&self) -> bool {
        !self.guard.core.is_lost()
    }
}

impl fmt::Debug for MemorySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySession")
            .field("id", &self.guard.core.id())
            .field("open", &self.is_open())
            .finish()
    }
}

#[async_trait]
impl Session for MemorySession {
    /// The broker keeps events as values, not as JSON: the body is not
    /// needed, and a confirm comes at once, with no timer to bound it.
    async fn send_encoded(
        &self,
        event: &Event,
        _body: Vec<u8>,
        _wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError> {
        let event = Arc::new(event.clone());
        self.guard.shared.lock().publish(&self.guard.core, event)?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError> {
        let name = subscription.name();
        let (consumer, rx) = self.guard.shared.lock().consume(
            &self.guard.core,
            name,
            subscription.pattern(),
            usize::from(subscription.prefetch()),
        )?;
        Ok(Box::pin(ConsumerStream::new(
            Arc::clone(&self.guard),
            name.into(),
            consumer,
            rx,
        )))
    }

    async fn closed(&self) -> BackendError {
        self.guard.core.lost().await
    }

    async fn close(&self) {
        self.guard.end(Loss::Closed);
    }
}
