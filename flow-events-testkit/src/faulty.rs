//! A backend wrapper that injects faults, steered by a [`FaultHandle`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Backend, BackendError, BackendErrorKind, BackendInfo, Confirmation, DeliveryStream, Event,
    Session, Subscription,
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
    async fn send(&self, event: &Event) -> Result<Confirmation, BackendError> {
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
        let confirm = self.inner.send(event).await?;
        let nack = take_one(&self.faults.nack_publishes);
        let delay = *lock(&self.faults.confirm_delay);
        let killed = self.wait_killed();
        Ok(Box::pin(async move {
            let result = tokio::select! {
                biased;
                r = async {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    confirm.await
                } => r,
                () = killed => Err(BackendError::connection("connection dropped before the confirm (fault injection)")),
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
