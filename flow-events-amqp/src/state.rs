//! What a session's tasks share: whether it is lost (and why), and whether the
//! broker blocks its publishers.

use flow_events_core::BackendError;
use flow_events_core::backend_kit::SessionLoss;
use tokio::sync::watch;

/// The lost flag and the blocked flag of one session.
#[derive(Debug)]
pub(crate) struct SessionState {
    lost: SessionLoss,
    blocked: watch::Sender<bool>,
}

impl SessionState {
    pub(crate) fn new() -> Self {
        Self {
            lost: SessionLoss::new(),
            blocked: watch::Sender::new(false),
        }
    }

    /// Records that the session is lost; the first reason wins. Returns
    /// whether this call recorded it.
    pub(crate) fn set_lost(&self, error: &BackendError) -> bool {
        self.lost.set_lost(error)
    }

    /// The reason, if the session is lost.
    pub(crate) fn lost(&self) -> Option<BackendError> {
        self.lost.lost()
    }

    /// Resolves when the session is lost.
    pub(crate) async fn wait_lost(&self) -> BackendError {
        self.lost.wait_lost().await
    }

    /// Sets the blocked flag.
    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.blocked
            .send_if_modified(|b| std::mem::replace(b, blocked) != blocked);
    }

    /// Whether the broker blocks publishers now.
    pub(crate) fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// A receiver of the blocked flag.
    pub(crate) fn watch_blocked(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use flow_events_core::BackendErrorKind;

    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_every_waiter_sees_it() {
        let s = std::sync::Arc::new(SessionState::new());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait_lost().await }
        });
        assert!(s.lost().is_none());
        assert!(s.set_lost(&BackendError::connection("gone")));
        assert!(!s.set_lost(&BackendError::closed("later")));
        assert_eq!(waiter.await.unwrap().kind(), BackendErrorKind::Connection);
        assert_eq!(s.wait_lost().await.message(), "gone");
    }

    #[test]
    fn blocked_flag() {
        let s = SessionState::new();
        let rx = s.watch_blocked();
        s.set_blocked(true);
        assert!(s.is_blocked());
        assert!(rx.has_changed().unwrap());
    }
}
