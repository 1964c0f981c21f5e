//! `Resilient`: the handle services publish, subscribe and monitor through.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Session};
use crate::config::Config;
use crate::error::{BackendError, PublishError, PublishErrorKind, StartError, SubscribeError};
use crate::event::Event;
use crate::health::HealthReport;
use crate::monitor::{ConnectionMonitor, ConnectionState, ConnectionStatus};
use crate::sink::{EventSink, PublishOutcome};
use crate::source::{EventSource, Handler, SubscriptionHandle};
use crate::store::PendingStore;
use crate::subscription::Subscription;

use super::buffer::Pending;
use super::consumer::{DedupWindow, Ended, consume};
use super::shared::{Inner, Kept, Shared};
use super::supervisor;

/// The resilience decorator over any [`Backend`]: publishes while connected,
/// buffers while not, reconnects with backoff, drains in order, re-subscribes.
///
/// Cheap to clone; all clones share one connection and one buffer. When the last
/// clone is dropped the supervisor stops; call [`Resilient::shutdown`] first to
/// drain what is pending.
#[derive(Clone, Debug)]
pub struct Resilient {
    pub(super) shared: Arc<Shared>,
    owner: Arc<Owner>,
}

/// Stops the supervisor when the last `Resilient` clone goes.
#[derive(Debug)]
struct Owner {
    cancel: CancellationToken,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.cancel.cancel();
        let pending = self.shared.lock().buffer.len();
        if pending > 0 {
            tracing::warn!(
                pending,
                "event sink dropped with {pending} pending events not delivered (call shutdown to drain them)"
            );
        }
    }
}

/// Builds a [`Resilient`].
pub struct ResilientBuilder {
    backend: Arc<dyn Backend>,
    config: Config,
    store: Option<Arc<dyn PendingStore>>,
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Backend").field(&self.info()).finish()
    }
}

impl std::fmt::Debug for ResilientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientBuilder")
            .field("backend", &self.backend.info())
            .field("config", &self.config)
            .field("store", &self.store.as_ref().map(|s| s.describe()))
            .finish()
    }
}

impl ResilientBuilder {
    /// The settings (retries, backoff, buffer bound, overflow policy, required
    /// mode, timeouts). Default: [`Config::default`].
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Keeps pending events in `store` as well as in memory: with a durable
    /// store, `publish` answers `Buffered` once the event is stored, and what a
    /// previous run left is published first, in order. Default: none.
    pub fn with_store(self, store: impl PendingStore) -> Self {
        self.with_store_arc(Arc::new(store))
    }

    /// Same as [`ResilientBuilder::with_store`] for a store behind an `Arc`.
    pub fn with_store_arc(mut self, store: Arc<dyn PendingStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts the supervisor. In optional mode this returns at once, whether or
    /// not the broker is there. In required mode it waits for the first
    /// connection and fails once the configured retries are spent.
    ///
    /// Must be called within a tokio runtime.
    pub async fn start(self) -> Result<Resilient, StartError> {
        let shared = Arc::new(Shared::new(self.backend, self.config, self.store));
        recover(&shared).await?;
        let mut state = shared.state_tx.subscribe();
        let task = tokio::spawn(supervisor::run(shared.clone()));
        let resilient = Resilient {
            owner: Arc::new(Owner {
                cancel: shared.cancel.clone(),
                supervisor: Mutex::new(Some(task)),
                shared: shared.clone(),
            }),
            shared,
        };
        if resilient.shared.config.required() {
            let reached = state
                .wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::Failed))
                .await
                .map(|s| *s);
            if !matches!(reached, Ok(ConnectionState::Connected)) {
                let (attempts, last_error) = {
                    let inner = resilient.shared.lock();
                    (
                        inner.reconnect_attempts,
                        inner.last_error.clone().unwrap_or_default(),
                    )
                };
                resilient.stop_supervisor().await;
                let broker = resilient.shared.info.display_name;
                tracing::error!(
                    attempts,
                    "{broker} is required (RABBITMQ_REQUIRED=true) but unavailable after {attempts} attempts: {last_error}",
                );
                return Err(StartError::BrokerUnavailable {
                    broker,
                    attempts,
                    last_error,
                });
            }
        }
        Ok(resilient)
    }
}

/// Loads what the store kept from the last run into the buffer, in order.
async fn recover(shared: &Shared) -> Result<(), StartError> {
    let Some(store) = &shared.store else {
        return Ok(());
    };
    let recovered = store.recover().await.map_err(|e| {
        tracing::error!(store = %store.describe(), error = %e, "cannot open the pending events store: {e}");
        StartError::Store(e)
    })?;
    match (&recovered.problem, recovered.unreadable) {
        (Some(problem), 0) => tracing::error!(
            store = %store.describe(),
            "part of the pending events store could not be read: {problem}"
        ),
        (Some(problem), n) => tracing::error!(
            store = %store.describe(), unreadable = n,
            "{n} stored events could not be read and are lost: {problem}"
        ),
        (None, _) => {}
    }
    shared
        .counters
        .unreadable
        .store(recovered.unreadable, Ordering::Relaxed);
    let count = recovered.events.len();
    let now = Instant::now();
    let wall = chrono::Utc::now();
    let mut inner = shared.lock();
    if recovered.unreadable > 0 || recovered.problem.is_some() {
        shared.note_loss(&mut inner);
        inner.last_error = recovered.problem.clone();
    }
    let counts_bytes = inner.buffer.counts_bytes();
    for stored in recovered.events {
        let age = (wall - stored.stored_at).to_std().unwrap_or_default();
        let size = if counts_bytes {
            stored.event.encoded_len()
        } else {
            0
        };
        inner.buffer.recover(Pending {
            seq: stored.seq,
            since: now.checked_sub(age).unwrap_or(now),
            event: Arc::new(stored.event),
            size,
            ready: true,
        });
    }
    if count > 0 {
        tracing::info!(
            store = %store.describe(), pending = count,
            "recovered {count} pending events from the last run; they are published first"
        );
    }
    Ok(())
}

/// What [`Resilient::shutdown`] left undelivered.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events still pending when the grace period ended, in publish order.
    /// They were not delivered. With a durable store they are still in it and
    /// go out first on the next start; without one, persist or log them.
    pub remaining: Vec<Event>,
}

impl Resilient {
    /// A builder for a decorator over `backend`.
    pub fn builder(backend: impl Backend) -> ResilientBuilder {
        ResilientBuilder {
            backend: Arc::new(backend),
            config: Config::default(),
            store: None,
        }
    }

    /// Same as [`Resilient::builder`] for a backend already behind an `Arc`.
    pub fn builder_arc(backend: Arc<dyn Backend>) -> ResilientBuilder {
        ResilientBuilder {
            backend,
            config: Config::default(),
            store: None,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The health report for `service`; a broker down makes it `degraded`, or
    /// `unhealthy` in required mode.
    pub fn health(&self, service: &str) -> HealthReport {
        HealthReport::new(service, &self.status(), self.shared.config.required())
    }

    /// Stops taking events, drains the buffer for at most `grace`, stops the
    /// supervisor and the consumers, and hands back what is left.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.shared.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let idle = self.shared.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.shared.lock().buffer.is_idle() {
                break;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.stop_supervisor().await;
        let remaining: Vec<Event> = self
            .shared
            .lock()
            .buffer
            .drain_all()
            .into_iter()
            .map(|p| Arc::unwrap_or_clone(p.event))
            .collect();
        if remaining.is_empty() {
            tracing::info!("shut down with no pending events");
        } else if let Some(store) = &self.shared.store {
            tracing::warn!(
                remaining = remaining.len(), store = %store.describe(),
                "shut down with {} pending events not delivered; they stay in the store for the next start",
                remaining.len()
            );
        } else {
            tracing::warn!(
                remaining = remaining.len(),
                "shut down with {} pending events not delivered",
                remaining.len()
            );
        }
        ShutdownReport { remaining }
    }

    async fn stop_supervisor(&self) {
        self.shared.cancel.cancel();
        let task = self
            .owner
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn refuse(&self, kind: PublishErrorKind, event: Event) -> PublishError {
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        PublishError::new(kind, event)
    }

    /// Admits an event into the buffer (the lock held). On success, gives the
    /// pending count and, with a store, a copy to store.
    fn admit(
        &self,
        inner: &mut Inner,
        seq: u64,
        event: Arc<Event>,
        since: Instant,
    ) -> Result<(Kept, Option<Arc<Event>>), Event> {
        let size = if inner.buffer.counts_bytes() {
            event.encoded_len()
        } else {
            0
        };
        let copy = self.shared.store.as_ref().map(|_| event.clone());
        let pending = Pending {
            seq,
            event,
            since,
            size,
            ready: copy.is_none(),
        };
        let kept = self.shared.buffer(inner, pending)?;
        // Dropped (drop-newest): nothing to store.
        let copy = copy.filter(|_| matches!(kept, Kept::Added(_)));
        Ok((kept, copy))
    }

    /// Completes a buffering: stores the copy (when there is a store), then lets
    /// the drain take it. A failed store hands the event back.
    async fn buffered(
        &self,
        seq: u64,
        admitted: Result<(Kept, Option<Arc<Event>>), Event>,
        cause: Option<BackendError>,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        let (n, copy) = match admitted {
            Ok((Kept::Added(n), copy)) => (n, copy),
            Ok((Kept::Dropped(pending), _)) => return Ok(PublishOutcome::Dropped { pending }),
            Err(event) => {
                let capacity = shared.config.max_pending_events();
                let err = self.refuse(PublishErrorKind::BufferFull { capacity }, event);
                return Err(match cause {
                    Some(cause) => err.with_source(cause),
                    None => err,
                });
            }
        };
        if let (Some(store), Some(copy)) = (&shared.store, copy) {
            // If the caller gives up while the event is being stored, it stays
            // in the buffer and the drain may take it.
            let mut unstored = Unstored {
                shared,
                seq: Some(seq),
            };
            let appended = store.append(seq, &copy).await;
            unstored.seq = None;
            if let Err(e) = appended {
                let removed = shared.lock().buffer.remove(seq);
                if removed.is_none() {
                    // Dropped meanwhile by drop-oldest or expiry: logged there.
                    tracing::debug!(seq, "event left the buffer before its store failed");
                }
                // The buffer's share is gone: the event is handed back uncopied.
                drop(removed);
                tracing::error!(
                    id = %copy.id(), event_type = %copy.event_type(), error = %e,
                    "could not store event {}: {e}; handing it back", copy.event_type()
                );
                return Err(self.refuse(
                    PublishErrorKind::StoreFailed {
                        reason: e.to_string(),
                    },
                    Arc::unwrap_or_clone(copy),
                ));
            }
            shared.stored(seq);
        } else {
            shared.wake_drain.notify_one();
        }
        shared.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(PublishOutcome::Buffered { pending: n })
    }
}

/// Marks a buffered event ready for the drain if its publish is cancelled
/// while the store is writing it: it stays in memory (and in the store if the
/// write completes), and nothing behind it waits for an answer that will not
/// come.
struct Unstored<'a> {
    shared: &'a Shared,
    seq: Option<u64>,
}

impl Drop for Unstored<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            tracing::debug!(
                seq,
                "publish cancelled while its event was being stored; it stays buffered"
            );
            if self.shared.stored(seq) {
                self.shared
                    .counters
                    .published
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Awaits `fut` for at most `limit`. A future that is ready at once (the memory
/// backend, a confirm that has arrived) skips the timer.
async fn bounded<F>(limit: Duration, fut: F) -> Result<(), BackendError>
where
    F: std::future::Future<Output = Result<(), BackendError>>,
{
    let mut fut = std::pin::pin!(fut);
    if let Some(result) = (&mut fut).now_or_never() {
        return result;
    }
    timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(BackendError::timeout("publish", limit)))
}

/// Holds an event being published directly. If the caller's future is dropped
/// before the confirm, the event goes to the buffer instead of being lost.
struct InFlight<'a> {
    shared: &'a Shared,
    owner: &'a Arc<Shared>,
    seq: u64,
    since: Instant,
    event: Option<Event>,
}

impl InFlight<'_> {
    fn take(&mut self) -> Option<Pending> {
        self.event.take().map(|event| Pending {
            seq: self.seq,
            event: Arc::new(event),
            since: self.since,
            size: 0,
            ready: true,
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(mut pending) = self.take() else {
            return;
        };
        let shared = self.shared;
        let seq = pending.seq;
        let mut inner = shared.lock();
        if inner.buffer.counts_bytes() {
            pending.size = pending.event.encoded_len();
        }
        // The caller has gone: no one to hand an error to. Store the event if
        // there is a store, in the background; keep it in memory whatever happens.
        let stored = match (&shared.store, tokio::runtime::Handle::try_current()) {
            (Some(store), Ok(rt)) => {
                pending.ready = false;
                Some((store.clone(), pending.event.clone(), rt))
            }
            _ => None,
        };
        match shared.buffer(&mut inner, pending) {
            Ok(Kept::Added(_)) => {
                drop(inner);
                shared.wake_drain.notify_one();
            }
            Ok(Kept::Dropped(_)) => return,
            Err(event) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    id = %event.id(), event_type = %event.event_type(),
                    "publish cancelled and the buffer is full, dropping event {}",
                    event.event_type()
                );
                return;
            }
        }
        if let Some((store, copy, rt)) = stored {
            let weak = Arc::downgrade(self.owner);
            rt.spawn(async move {
                if let Err(e) = store.append(seq, &copy).await {
                    tracing::error!(
                        id = %copy.id(), error = %e,
                        "could not store event {} of a cancelled publish; it is kept in memory only",
                        copy.event_type()
                    );
                }
                if let Some(shared) = weak.upgrade() {
                    shared.stored(seq);
                }
            });
        }
    }
}

#[async_trait]
impl EventSink for Resilient {
    async fn publish(&self, mut event: Event) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        shared.backend.prepare_event(&mut event);
        let limit = shared.config.max_event_bytes();
        if let Err(size) = event.check_size(limit) {
            return Err(self.refuse(PublishErrorKind::TooLarge { size, limit }, event));
        }
        if shared.closing.load(Ordering::Relaxed) {
            return Err(self.refuse(PublishErrorKind::ShuttingDown, event));
        }
        let since = Instant::now();
        let route = {
            let mut inner = shared.lock();
            let seq = inner.buffer.next_seq();
            match inner.direct_session() {
                Some(session) => Ok((seq, session.clone(), event)),
                None => Err((seq, self.admit(&mut inner, seq, Arc::new(event), since))),
            }
        };
        let (seq, session, event): (u64, Arc<dyn Session>, Event) = match route {
            Ok(direct) => direct,
            Err((seq, admitted)) => return self.buffered(seq, admitted, None).await,
        };

        let mut guard = InFlight {
            shared,
            owner: &self.shared,
            seq,
            since,
            event: Some(event),
        };
        let publish_timeout = shared.config.publish_timeout();
        let result = {
            let event = guard
                .event
                .as_ref()
                .expect("the guard holds the event until taken");
            bounded(publish_timeout, async { session.send(event).await?.await }).await
        };
        // Taken as it is: on success it is simply dropped, no `Pending` built.
        let event = guard
            .event
            .take()
            .expect("the guard holds the event until taken");
        match result {
            Ok(()) => {
                shared.counters.published.fetch_add(1, Ordering::Relaxed);
                shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                Ok(PublishOutcome::Confirmed)
            }
            Err(e) if e.refuses_event() => {
                tracing::debug!(id = %event.id(), error = %e, "broker refused the event");
                Err(self.refuse(PublishErrorKind::Refused, event).with_source(e))
            }
            Err(e) => {
                tracing::debug!(id = %event.id(), error = %e, "publish failed, buffering the event");
                let admitted = {
                    let mut inner = shared.lock();
                    inner.last_error = Some(e.to_string());
                    self.admit(&mut inner, seq, Arc::new(event), since)
                };
                self.buffered(seq, admitted, Some(e)).await
            }
        }
    }
}

#[async_trait]
impl EventSource for Resilient {
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(SubscribeError::ShuttingDown);
        }
        let cancel = self.shared.cancel.child_token();
        let (ready_tx, ready_rx) = oneshot::channel();
        let name = subscription.name().to_owned();
        let connected = self.shared.lock().session.is_some();
        let task = tokio::spawn(consumer_task(
            self.shared.clone(),
            subscription,
            handler,
            cancel.clone(),
            ready_tx,
        ));
        let handle = SubscriptionHandle::new(name, cancel, task);
        if connected {
            // Connected now: return once the backend has set the subscription up,
            // so an event published after this call reaches it.
            match timeout(self.shared.config.publish_timeout(), ready_rx).await {
                Ok(Ok(Err(e))) if !e.is_retryable() => {
                    handle.close().await;
                    return Err(SubscribeError::Backend(e));
                }
                _ => {}
            }
        }
        Ok(handle)
    }
}

/// Consumes a subscription on every session the supervisor makes, until cancelled.
async fn consumer_task(
    shared: Arc<Shared>,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
    ready: oneshot::Sender<Result<(), BackendError>>,
) {
    let name = subscription.name().to_owned();
    let mut current = shared.current_tx.subscribe();
    let mut ready = Some(ready);
    let mut used_generation = 0;
    let dedup = Arc::new(Mutex::new(DedupWindow::new(subscription.dedup_window())));
    let retry_delay = shared.config.retry_delay();
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            c = current.wait_for(|c| c.session.is_some() && c.generation > used_generation) => match c {
                Ok(c) => c.clone(),
                Err(_) => return,
            },
        };
        let Some(session) = next.session else {
            continue;
        };
        used_generation = next.generation;
        let subscribed = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = session.subscribe(&subscription) => r,
        };
        let retry_same_session = match subscribed {
            Ok(stream) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                tracing::debug!(subscription = %name, pattern = %subscription.pattern(), "consuming");
                match consume(stream, handler.clone(), &subscription, &dedup, &cancel).await {
                    Ended::Cancelled => return,
                    Ended::StreamEnded => {
                        tracing::debug!(subscription = %name, "consumer stream ended; resubscribing");
                        true
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    subscription = %name, error = %e,
                    "could not subscribe: {e}; retrying"
                );
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                }
                true
            }
        };
        if retry_same_session {
            // If the session is still the current one (the consumer was cancelled
            // by the broker, or subscribing failed), try again on it after a delay;
            // a new session is used at once.
            let generation = used_generation;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry_delay) => used_generation = generation.saturating_sub(1),
                _ = current.wait_for(|c| c.generation != generation) => {}
            }
        }
    }
}

impl ConnectionMonitor for Resilient {
    fn state(&self) -> ConnectionState {
        *self.shared.state_tx.borrow()
    }

    fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state_tx.subscribe()
    }

    fn status(&self) -> ConnectionStatus {
        self.shared.status()
    }
}
