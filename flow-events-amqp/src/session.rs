//! One session: a publishing connection, and a consuming connection opened
//! with the first subscription; each recovered on its own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    BackendError, ConfirmWait, Confirmation, DeliveryStream, Event, QueueKind, Session,
    Subscription,
};
use lapin::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::address::Address;
use crate::config::AmqpConfig;
use crate::consume::{self, ConsumeContext};
use crate::publish::{LatestPublisher, Publisher};
use crate::state::SessionState;
use crate::topology::{SubscriptionTopology, within};
use crate::{transport, watch as watchers};

/// A live session. Dropping it closes both connections (once the channels
/// of its subscriptions are gone).
///
/// Aligned to 128 bytes, so that the count of the `Arc` it is shared in
/// (taken and released by every publish, from every thread) is not on the
/// cache line of the fields every publish reads.
#[repr(align(128))]
pub(crate) struct AmqpSession {
    publish_conn: Arc<Connection>,
    /// Opened by the first subscription, and again by the next one after it
    /// was lost; the publishing connection is not touched meanwhile.
    consume_conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    publisher: Arc<Publisher>,
    latest: LatestPublisher,
    state: Arc<SessionState>,
    exchange: String,
    options: AmqpConfig,
    /// Holds the password: never in `Debug`.
    address: Address,
    retry_pause: (Duration, Duration),
    cancel: CancellationToken,
}

impl std::fmt::Debug for AmqpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSession")
            .field("address", &self.address.redacted)
            .field("exchange", &self.exchange)
            .field("lost", &self.state.lost().map(|e| e.to_string()))
            .finish_non_exhaustive()
    }
}

/// What a new session is made of.
pub(crate) struct Parts {
    pub(crate) publish_conn: Connection,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) latest: LatestPublisher,
    pub(crate) exchange: String,
    pub(crate) options: AmqpConfig,
    pub(crate) address: Address,
    /// The first delay and the cap of the backoff before a retry copy that
    /// could not be published is given up.
    pub(crate) retry_pause: (Duration, Duration),
}

impl AmqpSession {
    /// Wraps an open publishing connection and its publisher; starts the
    /// watcher.
    pub(crate) fn start(parts: Parts) -> Self {
        let Parts {
            publish_conn,
            publisher,
            latest,
            exchange,
            options,
            address,
            retry_pause,
        } = parts;
        let publish_conn = Arc::new(publish_conn);
        let state = publisher.state.clone();
        let cancel = CancellationToken::new();
        state.set_blocked(publish_conn.status().blocked());
        tokio::spawn(watchers::publishing(
            publish_conn.clone(),
            publish_conn.events_listener(),
            publisher.clone(),
            exchange.clone(),
            options.operation_timeout(),
            cancel.clone(),
        ));
        Self {
            publish_conn,
            consume_conn: tokio::sync::Mutex::new(None),
            publisher,
            latest,
            state,
            exchange,
            options,
            address,
            retry_pause,
            cancel,
        }
    }

    /// The consuming connection: the open one, or a new one.
    async fn consuming(&self) -> Result<Arc<Connection>, BackendError> {
        let mut slot = self.consume_conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        if let Some(lost) = self.state.lost() {
            return Err(lost);
        }
        let reopening = slot.is_some();
        let conn = Arc::new(transport::connect(&self.options, &self.address, "consume").await?);
        tokio::spawn(watchers::consuming(
            conn.status().clone(),
            conn.events_listener(),
            self.cancel.clone(),
            self.address.scrub.clone(),
        ));
        if reopening {
            tracing::info!(
                url = %self.address.redacted,
                "opened a new consuming connection; subscriptions resume on it"
            );
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

impl Drop for AmqpSession {
    fn drop(&mut self) {
        // Stops the watchers and ends the delivery streams; the connections
        // close when their last channel is dropped.
        self.cancel.cancel();
    }
}

/// The queue kind of a subscription: the one it asks for, else the backend's.
fn queue_kind_for(subscription: &Subscription, options: &AmqpConfig) -> QueueKind {
    subscription
        .queue_kind()
        .unwrap_or_else(|| options.queue_kind())
}

/// Closes `conn` within `limit`, quietly: used when the session ends anyway.
pub(crate) async fn close_quietly(conn: &Connection, limit: Duration) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(limit, conn.close(200, "closing".into())).await;
    }
}

#[async_trait]
impl Session for AmqpSession {
    /// The trait's `send`, without its second boxed future.
    async fn send(&self, event: &Event) -> Result<Confirmation, BackendError> {
        self.publisher
            .send(event, event.encode(), ConfirmWait::Session)
            .await
    }

    async fn send_encoded(
        &self,
        event: &Event,
        body: Vec<u8>,
        wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError> {
        self.publisher.send(event, body, wait).await
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError> {
        if let Some(lost) = self.state.lost() {
            return Err(lost);
        }
        let limit = self.options.operation_timeout();
        let kind = queue_kind_for(subscription, &self.options);
        let queue = subscription.name().to_owned();
        let topology = SubscriptionTopology {
            exchange: self.exchange.clone(),
            dead_letter_exchange: self.options.dead_letter_exchange(&self.exchange),
            dead_letter_queue: self.options.dead_letter_queue(&queue),
            pattern: subscription.pattern().as_str().to_owned(),
            queue,
            kind,
            max_attempts: subscription.max_attempts(),
        };
        let conn = self.consuming().await?;
        let channel = within(
            limit,
            "opening a consuming channel",
            &self.address.scrub,
            conn.create_channel(),
        )
        .await?;
        let ctx = ConsumeContext {
            publisher: self.publisher.clone(),
            latest: self.latest.clone(),
            operation_timeout: limit,
            retry_pause: self.retry_pause,
            scrub: self.address.scrub.clone(),
            cancel: self.cancel.child_token(),
        };
        consume::subscribe(
            ctx,
            channel,
            topology,
            subscription.prefetch(),
            subscription.max_attempts(),
        )
        .await
    }

    async fn closed(&self) -> BackendError {
        self.state.wait_lost().await
    }

    fn blocked(&self) -> watch::Receiver<bool> {
        self.state.watch_blocked()
    }

    fn url(&self) -> Option<String> {
        Some(self.address.redacted.clone())
    }

    async fn close(&self) {
        self.state.set_lost(&BackendError::closed("session closed"));
        self.cancel.cancel();
        let limit = self.options.operation_timeout();
        let consume_conn = self.consume_conn.lock().await.take();
        if let Some(conn) = consume_conn {
            close_quietly(&conn, limit).await;
        }
        close_quietly(&self.publish_conn, limit).await;
    }
}

#[cfg(test)]
mod tests {
    use flow_events_core::TopicPattern;

    use super::*;

    #[test]
    fn a_subscription_gets_the_kind_it_asks_for_else_the_backends() {
        let sub = Subscription::new("billing", TopicPattern::all()).unwrap();
        let quorum_default = AmqpConfig::builder()
            .with_queue_kind(QueueKind::Quorum)
            .build()
            .unwrap();
        let classic_default = AmqpConfig::default();
        assert_eq!(queue_kind_for(&sub, &quorum_default), QueueKind::Quorum);
        assert_eq!(queue_kind_for(&sub, &classic_default), QueueKind::Classic);
        let classic = sub.clone().with_queue_kind(QueueKind::Classic);
        assert_eq!(
            queue_kind_for(&classic, &quorum_default),
            QueueKind::Classic
        );
        let quorum = sub.with_queue_kind(QueueKind::Quorum);
        assert_eq!(queue_kind_for(&quorum, &classic_default), QueueKind::Quorum);
    }
}
