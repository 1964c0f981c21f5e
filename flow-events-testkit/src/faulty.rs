//! A backend wrapper that injects faults, steered by a [`FaultHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Acker, Backend, BackendError, BackendErrorKind, BackendInfo, ConfirmWait, Confirmation,
    Decision, Delivery, DeliveryStream, Event, IncomingDelivery, Session, Subscription,
};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug)]
struct Faults {
    down: AtomicBool,
    fail_connects: AtomicU32,
    fail_publishes: AtomicU32,
    nack_publishes: AtomicU32,
    refuse_publishes: AtomicU32,
    confirm_delay: Mutex<Duration>,
    connect_delay: Mutex<Duration>,
    connect_attempts: Mutex<Vec<Instant>>,
    /// Bumped by `drop_connection`: sessions of an older generation are lost.
    kill: watch::Sender<u64>,
    blocked: watch::Sender<bool>,
    /// Event types whose sends the broker refuses, closing the channel.
    refused_types: Mutex<Vec<String>>,
    /// Sends of an event type still to be nacked.
    nack_types: Mutex<HashMap<String, u32>>,
    /// Sends made, by event type (those that reached the broker).
    sends: Mutex<HashMap<String, usize>>,
    /// Bumped when a refusal closes the channel: confirms of an older
    /// channel fail as interrupted.
    channel: watch::Sender<u64>,
    /// While true, no confirm resolves (a silent broker).
    held: watch::Sender<bool>,
    /// While true, a `Retry` cannot be carried out and the backend's attempt
    /// count does not move.
    fail_retries: AtomicBool,
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wraps any [`Backend`] and fails, drops, nacks or delays on command.
///
/// ```
/// use flow_events_testkit::faulty::Faulty;
/// # use flow_events_core::{Backend, BackendError, BackendInfo, Session};
/// # use std::sync::Arc;
/// # struct Inner;
/// # #[async_trait::async_trait]
/// # impl Backend for Inner {
/// #     async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> { Err(BackendError::connection("x")) }
/// #     fn info(&self) -> BackendInfo { BackendInfo::new("memory", "memory://") }
/// # }
/// let (backend, faults) = Faulty::wrap(Inner);
/// faults.go_down();            // every connect fails until come_up()
/// faults.fail_next_connects(3); // after that, three more fail
/// # let _ = backend;
/// ```
#[derive(Debug, Clone)]
pub struct Faulty {
    inner: Arc<dyn BackendDebug>,
    faults: Arc<Faults>,
}

trait BackendDebug: Backend {}
impl<T: Backend> BackendDebug for T {}
impl std::fmt::Debug for dyn BackendDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Backend").field(&self.info()).finish()
    }
}

/// Steers a [`Faulty`] backend.
#[derive(Debug, Clone)]
pub struct FaultHandle {
    faults: Arc<Faults>,
}

impl Faulty {
    /// Wraps `inner`; returns the backend and its handle.
    pub fn wrap(inner: impl Backend) -> (Self, FaultHandle) {
        let faults = Arc::new(Faults {
            down: AtomicBool::new(false),
            fail_connects: AtomicU32::new(0),
            fail_publishes: AtomicU32::new(0),
            nack_publishes: AtomicU32::new(0),
            refuse_publishes: AtomicU32::new(0),
            confirm_delay: Mutex::new(Duration::ZERO),
            connect_delay: Mutex::new(Duration::ZERO),
            connect_attempts: Mutex::new(Vec::new()),
            kill: watch::channel(0).0,
            blocked: watch::channel(false).0,
            refused_types: Mutex::new(Vec::new()),
            nack_types: Mutex::new(HashMap::new()),
            sends: Mutex::new(HashMap::new()),
            channel: watch::channel(0).0,
            held: watch::channel(false).0,
            fail_retries: AtomicBool::new(false),
        });
        (
            Self {
                inner: Arc::new(inner),
                faults: faults.clone(),
            },
            FaultHandle { faults },
        )
    }
}

impl FaultHandle {
    /// Every connect fails until [`FaultHandle::come_up`].
    pub fn go_down(&self) {
        self.faults.down.store(true, Ordering::SeqCst);
    }
    /// Connects go through again (unless `fail_next_connects` is pending).
    pub fn come_up(&self) {
        self.faults.down.store(false, Ordering::SeqCst);
    }
    /// The next `n` connects fail with a connection error.
    pub fn fail_next_connects(&self, n: u32) {
        self.faults.fail_connects.store(n, Ordering::SeqCst);
    }
    /// Every connect attempt takes `d` (virtual time under a paused clock).
    pub fn delay_connects(&self, d: Duration) {
        *lock(&self.faults.connect_delay) = d;
    }
    /// Loses every open session now: `closed()` resolves, streams end,
    /// unsettled deliveries go back to the broker.
    pub fn drop_connection(&self) {
        self.faults.kill.send_modify(|g| *g += 1);
    }
    /// The next `n` sends fail with a connection error (nothing reaches the broker).
    pub fn fail_next_publishes(&self, n: u32) {
        self.faults.fail_publishes.store(n, Ordering::SeqCst);
    }
    /// The next `n` sends reach the broker but their confirm is a nack.
    pub fn nack_next_publishes(&self, n: u32) {
        self.faults.nack_publishes.store(n, Ordering::SeqCst);
    }
    /// The next `n` sends are refused for good (like an unroutable mandatory publish).
    pub fn refuse_next_publishes(&self, n: u32) {
        self.faults.refuse_publishes.store(n, Ordering::SeqCst);
    }
    /// Every confirm arrives `d` after the broker's.
    pub fn delay_confirms(&self, d: Duration) {
        *lock(&self.faults.confirm_delay) = d;
    }
    /// The broker blocks (or unblocks) publishers, as under a resource alarm.
    pub fn set_blocked(&self, blocked: bool) {
        self.faults.blocked.send_replace(blocked);
    }
    /// When each connect attempt started.
    pub fn connect_attempts(&self) -> Vec<Instant> {
        lock(&self.faults.connect_attempts).clone()
    }
    /// Every send of an event of type `event_type` is refused for good, the
    /// way RabbitMQ refuses a routing key its topic permissions deny: the
    /// refusal closes the channel, so every other send whose confirm is
    /// pending fails as interrupted (the session stays up).
    pub fn refuse_type(&self, event_type: &str) {
        lock(&self.faults.refused_types).push(event_type.to_owned());
    }
    /// The next `n` sends of events of type `event_type` reach the broker and
    /// are nacked (a full queue with `x-overflow: reject-publish`).
    pub fn nack_type(&self, event_type: &str, n: u32) {
        lock(&self.faults.nack_types).insert(event_type.to_owned(), n);
    }
    /// Sends of events of type `event_type` that reached the broker so far.
    pub fn sends_of(&self, event_type: &str) -> usize {
        lock(&self.faults.sends)
            .get(event_type)
            .copied()
            .unwrap_or(0)
    }
    /// No confirm resolves until [`FaultHandle::release_confirms`]: a broker
    /// that has gone quiet (a partition with the sockets open).
    pub fn hold_confirms(&self) {
        self.faults.held.send_replace(true);
    }
    /// The held confirms resolve, and later ones too.
    pub fn release_confirms(&self) {
        self.faults.held.send_replace(false);
    }
    /// While `fail` holds, settling a delivery with `Retry` puts it back but
    /// fails (as when the broker blocks the publisher of a retry copy), and
    /// every delivery says it is the first attempt: the backend's own count
    /// does not move. Deliveries lose their scope meanwhile.
    pub fn fail_retries(&self, fail: bool) {
        self.faults.fail_retries.store(fail, Ordering::SeqCst);
    }
}

/// Settles through the wrapped acker; a `Retry` fails once it is done.
struct FailingRetry(Box<dyn Acker>);

#[async_trait]
impl Acker for FailingRetry {
    async fn settle(self: Box<Self>, decision: Decision) -> Result<(), BackendError> {
        let retry = decision.is_retry();
        self.0.settle(decision).await?;
        if retry {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                "the retry copy could not be published; the delivery was put back (fault injection)",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Faulty {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        lock(&self.faults.connect_attempts).push(Instant::now());
        let delay = *lock(&self.faults.connect_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(BackendError::connection(
                "connection refused (fault injection: down)",
            ));
        }
        if take_one(&self.faults.fail_connects) {
            return Err(BackendError::connection(
                "connection refused (fault injection)",
            ));
        }
        let inner = self.inner.connect().await?;
        Ok(Arc::new(FaultySession {
            inner,
            faults: self.faults.clone(),
            generation: *self.faults.kill.borrow(),
        }))
    }

    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn prepare_event(&self, event: &mut Event) {
        self.inner.prepare_event(event);
    }

    fn message_attributes(&self, event: &Event) -> Vec<(&'static str, String)> {
        self.inner.message_attributes(event)
    }
}

struct FaultySession {
    inner: Arc<dyn Session>,
    faults: Arc<Faults>,
    generation: u64,
}

impl FaultySession {
    fn killed(&self) -> bool {
        *self.faults.kill.borrow() != self.generation
    }

    /// Resolves when `drop_connection` is called after this session was made.
    fn wait_killed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.faults.kill.subscribe();
        let generation = self.generation;
        async move {
            let _ = rx.wait_for(|g| *g != generation).await;
        }
    }
}

#[async_trait]
impl Session for FaultySession {
    async fn send_encoded(
        &self,
        event: &Event,
        body: Vec<u8>,
        wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError> {
        if self.killed() {
            return Err(BackendError::connection(
                "connection dropped (fault injection)",
            ));
        }
        if take_one(&self.faults.fail_publishes) {
            return Err(BackendError::connection("publish failed (fault injection)"));
        }
        if take_one(&self.faults.refuse_publishes) {
            return Err(BackendError::event_refused(
                "event refused (fault injection)",
            ));
        }
        let event_type = event.event_type().as_str();
        *lock(&self.faults.sends)
            .entry(event_type.to_owned())
            .or_default() += 1;
        if lock(&self.faults.refused_types)
            .iter()
            .any(|t| t == event_type)
        {
            // The broker closes the channel: what is pending on it fails.
            self.faults.channel.send_modify(|c| *c += 1);
            let message = format!("access to topic '{event_type}' refused (fault injection)");
            return Ok(Box::pin(async move {
                Err(BackendError::event_refused(message))
            }));
        }
        let confirm = self.inner.send_encoded(event, body, wait).await?;
        let nack = take_one(&self.faults.nack_publishes)
            || lock(&self.faults.nack_types)
                .get_mut(event_type)
                .is_some_and(|n| {
                    let left = *n > 0;
                    *n = n.saturating_sub(1);
                    left
                });
        let delay = *lock(&self.faults.confirm_delay);
        let killed = self.wait_killed();
        let mut channel = self.faults.channel.subscribe();
        let opened_on = *channel.borrow_and_update();
        let mut held = self.faults.held.subscribe();
        Ok(Box::pin(async move {
            let result = tokio::select! {
                biased;
                r = async {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let _ = held.wait_for(|h| !*h).await;
                    confirm.await
                } => r,
                () = killed => Err(BackendError::connection("connection dropped before the confirm (fault injection)")),
                _ = channel.wait_for(|c| *c != opened_on) => Err(BackendError::interrupted(
                    "the channel was closed by another event's refusal (fault injection)",
                )),
            };
            match result {
                Ok(()) if nack => Err(BackendError::new(
                    BackendErrorKind::Nacked,
                    "nacked (fault injection)",
                )),
                other => other,
            }
        }))
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError> {
        if self.killed() {
            return Err(BackendError::connection(
                "connection dropped (fault injection)",
            ));
        }
        let stream = self.inner.subscribe(subscription).await?;
        let faults = self.faults.clone();
        let stream = stream.map(move |incoming| {
            if !faults.fail_retries.load(Ordering::SeqCst) {
                return incoming;
            }
            let IncomingDelivery {
                delivery, acker, ..
            } = incoming;
            let redelivered = delivery.redelivered();
            IncomingDelivery::new(
                Delivery::new(delivery.into_event(), redelivered, 1),
                Box::new(FailingRetry(acker)),
            )
        });
        Ok(stream.take_until(self.wait_killed()).boxed())
    }

    async fn closed(&self) -> BackendError {
        tokio::select! {
            reason = self.inner.closed() => reason,
            () = self.wait_killed() => {
                // Close the real session too, so the broker requeues what this
                // session had not settled and its ackers stop working.
                self.inner.close().await;
                BackendError::connection("connection dropped (fault injection)")
            }
        }
    }

    fn blocked(&self) -> watch::Receiver<bool> {
        self.faults.blocked.subscribe()
    }

    fn url(&self) -> Option<String> {
        self.inner.url()
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
