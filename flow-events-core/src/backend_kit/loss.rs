//! [`SessionLoss`]: whether a session is lost, and why, shared by its tasks.

use tokio::sync::watch;

use crate::error::{BackendError, BackendErrorKind};

/// Whether a session is lost, and why: set by whichever of its tasks sees the
/// loss first (a failed publish, a closed connection, the client's event
/// callback), read by its publishes and awaited by its delivery streams and
/// by [`Session::closed`](crate::Session::closed).
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
    lost: watch::Sender<Option<Lost>>,
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
            lost: watch::Sender::new(None),
        }
    }

    /// Records that the session is lost; the first reason wins. Returns
    /// whether this call recorded it.
    pub fn set_lost(&self, error: &BackendError) -> bool {
        let lost = Lost {
            kind: error.kind(),
            message: error.message().to_owned(),
        };
        self.lost.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(lost);
                true
            } else {
                false
            }
        })
    }

    /// The reason, if the session is lost.
    pub fn lost(&self) -> Option<BackendError> {
        self.lost.borrow().as_ref().map(Lost::error)
    }

    /// Resolves when the session is lost, with the reason.
    pub async fn wait_lost(&self) -> BackendError {
        let mut rx = self.lost.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(lost) => match lost.as_ref() {
                Some(l) => l.error(),
                None => BackendError::closed("session closed"),
            },
            Err(_) => BackendError::closed("session closed"),
        }
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
}
