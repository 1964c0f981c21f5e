//! [`SessionLoss`]: whether a session is lost, and why, shared by its tasks.

use std::sync::OnceLock;

use crate::error::{BackendError, BackendErrorKind};
use crate::padded::ShardedNotify;

/// Whether a session is lost, and why: set by whichever of its tasks sees the
/// loss first (a failed publish, a closed connection, the client's event
/// callback), read by its publishes and awaited by its delivery streams and
/// by [`Session::closed`](crate::Session::closed).
///
/// Every publish reads it, and every confirm awaited waits on it, from every
/// thread: reading is one atomic load, and waiting registers on one of
/// several `Notify`s, each on its own cache line, so that publishes on
/// different threads do not write the same line (a `watch` channel takes a
/// read lock and a receiver count, both shared, on every read and wait).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flow_events_core::BackendError;
/// use flow_events_core::backend_kit::SessionLoss;
///
/// let loss = SessionLoss::new();
/// assert!(loss.lost().is_none());
/// assert!(loss.set_lost(&BackendError::connection("connection reset")));
/// assert!(!loss.set_lost(&BackendError::closed("closed")), "the first reason wins");
/// assert_eq!(loss.wait_lost().await.message(), "connection reset");
/// # }
/// ```
#[derive(Debug)]
pub struct SessionLoss {
    /// The first reason given; set once.
    lost: OnceLock<Lost>,
    /// The waiters, spread by a thread-local random number.
    waiters: ShardedNotify,
}

/// Why a session ended. Kept as kind and message so that every caller gets
/// its own [`BackendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lost {
    kind: BackendErrorKind,
    message: String,
}

impl Lost {
    fn error(&self) -> BackendError {
        BackendError::new(self.kind, &self.message)
    }
}

impl Default for SessionLoss {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionLoss {
    /// A session not lost yet.
    pub fn new() -> Self {
        Self {
            lost: OnceLock::new(),
            waiters: Default::default(),
        }
    }

    /// Records that the session is lost; the first reason wins. Returns
    /// whether this call recorded it.
    pub fn set_lost(&self, error: &BackendError) -> bool {
        let lost = Lost {
            kind: error.kind(),
            message: error.message().to_owned(),
        };
        if self.lost.set(lost).is_err() {
            return false;
        }
        // After the reason is set: a waiter registers before it looks at
        // the reason, so it either sees it or is woken here.
        self.waiters.notify_waiters();
        true
    }

    /// The reason, if the session is lost.
    pub fn lost(&self) -> Option<BackendError> {
        self.lost.get().map(Lost::error)
    }

    /// Resolves when the session is lost, with the reason.
    pub async fn wait_lost(&self) -> BackendError {
        if let Some(lost) = self.lost() {
            return lost;
        }
        let notified = self.waiters.notified(fastrand::u64(..));
        let mut notified = std::pin::pin!(notified);
        // Registered before the reason is looked at (see `set_lost`).
        notified.as_mut().enable();
        if let Some(lost) = self.lost() {
            return lost;
        }
        notified.await;
        // Woken only by `set_lost`, once the reason is set.
        self.lost()
            .unwrap_or_else(|| BackendError::closed("session closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_every_waiter_gets_it() {
        let loss = std::sync::Arc::new(SessionLoss::new());
        assert!(loss.lost().is_none());
        let waiter = tokio::spawn({
            let loss = loss.clone();
            async move { loss.wait_lost().await }
        });
        assert!(loss.set_lost(&BackendError::connection("gone")));
        assert!(!loss.set_lost(&BackendError::closed("later")));
        let seen = waiter.await.unwrap();
        assert_eq!(seen.kind(), BackendErrorKind::Connection);
        assert_eq!(seen.message(), "gone");
        assert_eq!(loss.wait_lost().await.message(), "gone");
        assert_eq!(
            loss.lost().map(|e| e.kind()),
            Some(BackendErrorKind::Connection)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_on_every_thread_is_woken_once_lost() {
        let loss = std::sync::Arc::new(SessionLoss::new());
        let waiters: Vec<_> = (0..256)
            .map(|_| {
                let loss = loss.clone();
                tokio::spawn(async move { loss.wait_lost().await })
            })
            .collect();
        // Some register before the loss, some after it: each sees it.
        tokio::task::yield_now().await;
        assert!(loss.set_lost(&BackendError::connection("reset")));
        for waiter in waiters {
            let seen = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("a waiter was not woken")
                .unwrap();
            assert_eq!(seen.message(), "reset");
        }
    }
}
