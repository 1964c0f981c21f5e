//! A pending-store wrapper that fails on command, for write-error tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{Event, PendingStore, Recovered, StoreError, StoreErrorKind};

#[derive(Debug, Default)]
struct StoreFaults {
    full: AtomicBool,
    fail_appends: AtomicU32,
    /// Microseconds every append takes before it reaches the inner store.
    append_delay_us: AtomicU64,
}

/// Wraps any [`PendingStore`]; its [`StoreFaultHandle`] makes appends fail as a
/// full disk would.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<StoreFaults>,
}

/// Steers a [`FaultyStore`].
#[derive(Debug, Clone)]
pub struct StoreFaultHandle {
    faults: Arc<StoreFaults>,
}

impl<S: PendingStore> FaultyStore<S> {
    /// Wraps `inner`.
    pub fn wrap(inner: S) -> (Self, StoreFaultHandle) {
        let faults = Arc::new(StoreFaults::default());
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            StoreFaultHandle { faults },
        )
    }
}

impl StoreFaultHandle {
    /// Every append fails (disk full) until set back to `false`.
    pub fn set_full(&self, full: bool) {
        self.faults.full.store(full, Ordering::SeqCst);
    }
    /// The next `n` appends fail with a write error.
    pub fn fail_next_appends(&self, n: u32) {
        self.faults.fail_appends.store(n, Ordering::SeqCst);
    }
    /// Every append waits `d` (virtual time under a paused clock) before it
    /// reaches the inner store, as a slow disk would.
    pub fn delay_appends(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.faults.append_delay_us.store(us, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: PendingStore> PendingStore for FaultyStore<S> {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        self.inner.recover().await
    }

    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError> {
        let delay = self.faults.append_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if self.faults.full.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Io,
                "no space left on device (fault injection)",
            ));
        }
        if self
            .faults
            .fail_appends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new(
                StoreErrorKind::Io,
                "write error (fault injection)",
            ));
        }
        self.inner.append(seq, event).await
    }

    fn remove(&self, seq: u64) {
        self.inner.remove(seq);
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
