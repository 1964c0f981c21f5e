//! Whether a session is lost, and why: shared by its publishes, its
//! subscriptions and the client's event callback.

use flow_events_core::{BackendError, BackendErrorKind};
use tokio::sync::watch;

/// Why a session ended. Kept as kind and message so that every caller of
/// `closed()` gets its own [`BackendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lost {
    kind: BackendErrorKind,
    message: String,
}

/// The lost flag of one session.
#[derive(Debug)]
pub(crate) struct SessionState {
    lost: watch::Sender<Option<Lost>>,
}

impl SessionState {
    pub(crate) fn new() -> Self {
        Self {
            lost: watch::Sender::new(None),
        }
    }

    /// Records that the session is lost; the first reason wins. Returns
    /// whether this call recorded it.
    pub(crate) fn set_lost(&self, error: &BackendError) -> bool {
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
    pub(crate) fn lost(&self) -> Option<BackendError> {
        self.lost
            .borrow()
            .as_ref()
            .map(|l| BackendError::new(l.kind, &l.message))
    }

    /// Resolves when the session is lost.
    pub(crate) async fn wait_lost(&self) -> BackendError {
        let mut rx = self.lost.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(lost) => match lost.as_ref() {
                Some(l) => BackendError::new(l.kind, &l.message),
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
        let state = std::sync::Arc::new(SessionState::new());
        assert!(state.lost().is_none());
        let waiter = tokio::spawn({
            let state = state.clone();
            async move { state.wait_lost().await }
        });
        assert!(state.set_lost(&BackendError::connection("gone")));
        assert!(!state.set_lost(&BackendError::closed("later")));
        assert_eq!(waiter.await.unwrap().message(), "gone");
        assert_eq!(state.wait_lost().await.kind(), BackendErrorKind::Connection);
    }
}
