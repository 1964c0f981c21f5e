//! The publishing channel of a session: in confirm mode, and replaced by a new
//! one on the same connection when the broker closes it because of one
//! publish (a routing key its topic permissions refuse, a message over its
//! size limit, an exchange deleted under it). Such a refusal costs a channel,
//! not a connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::BackendError;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::confirms::ConfirmRouter;
use crate::errors::Scrub;
use crate::state::SessionState;
use crate::topology::{declare_events_exchange, within};

/// Reopened channels allowed within [`REOPEN_WINDOW`]; past them, a channel
/// the broker closes ends the session (and the supervisor's backoff applies):
/// no cause can make channels open in a tight loop.
const MAX_REOPENS: usize = 20;
const REOPEN_WINDOW: Duration = Duration::from_secs(10);

/// One publishing channel and the task that follows its confirms.
#[derive(Debug)]
pub(crate) struct PublishChannel {
    pub(crate) channel: Channel,
    pub(crate) router: ConfirmRouter,
}

impl PublishChannel {
    /// Opens a channel on `conn`, declares the events exchange on it and
    /// turns publisher confirms on, each step within `limit`.
    pub(crate) async fn open(
        conn: &Connection,
        exchange: &str,
        limit: Duration,
        scrub: &Scrub,
    ) -> Result<Self, BackendError> {
        let channel = within(
            limit,
            "opening the publishing channel",
            scrub,
            conn.create_channel(),
        )
        .await?;
        declare_events_exchange(&channel, exchange, limit, scrub).await?;
        within(
            limit,
            "enabling publisher confirms",
            scrub,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Self {
            channel,
            router: ConfirmRouter::start(),
        })
    }

    /// Whether it is open.
    pub(crate) fn is_open(&self) -> bool {
        self.channel.status().connected()
    }
}

/// The current publishing channel of a session.
#[derive(Debug)]
pub(crate) struct ChannelSlot {
    current: watch::Sender<Arc<PublishChannel>>,
    reopened: Mutex<VecDeque<Instant>>,
}

impl ChannelSlot {
    pub(crate) fn new(channel: PublishChannel) -> Self {
        Self {
            current: watch::Sender::new(Arc::new(channel)),
            reopened: Mutex::new(VecDeque::new()),
        }
    }

    /// The current channel, open or not.
    pub(crate) fn current(&self) -> Arc<PublishChannel> {
        self.current.borrow().clone()
    }

    /// The channel to publish on: the current one if it is open; else the
    /// one that replaces it, waiting at most `limit`. Fails once the session
    /// is lost.
    pub(crate) async fn usable(
        &self,
        state: &SessionState,
        limit: Duration,
    ) -> Result<Arc<PublishChannel>, BackendError> {
        let current = self.current();
        if current.is_open() {
            return Ok(current);
        }
        let mut rx = self.current.subscribe();
        let wait = async {
            loop {
                if let Some(lost) = state.lost() {
                    return Err(lost);
                }
                let current = rx.borrow_and_update().clone();
                if current.is_open() {
                    return Ok(current);
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err(BackendError::closed("the session closed"));
                    },
                    lost = state.wait_lost() => return Err(lost),
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            Err(BackendError::timeout(
                "waiting for a new publishing channel",
                limit,
            ))
        })
    }

    /// Whether one more channel may be opened now (see [`MAX_REOPENS`]);
    /// counts it if so.
    pub(crate) fn may_reopen(&self) -> bool {
        let now = Instant::now();
        let mut reopened = self.reopened.lock().unwrap_or_else(|e| e.into_inner());
        while reopened
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > REOPEN_WINDOW)
        {
            reopened.pop_front();
        }
        if reopened.len() >= MAX_REOPENS {
            return false;
        }
        reopened.push_back(now);
        true
    }

    /// Publishing goes on on `channel` from now on.
    pub(crate) fn replace(&self, channel: PublishChannel) {
        self.current.send_replace(Arc::new(channel));
    }
}
