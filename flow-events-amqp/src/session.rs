//! One session: a publishing and a consuming connection, watched for loss and
//! for the broker's blocked notices.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    BackendError, Confirmation, DeliveryStream, Event, QueueKind, Session, Subscription,
};
use futures_util::{Stream, StreamExt};
use lapin::{Connection, ConnectionStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consume::{self, ConsumeContext};
use crate::errors::{self, Scrub};
use crate::options::AmqpOptions;
use crate::publish::Publisher;
use crate::state::SessionState;
use crate::topology::{SubscriptionTopology, within};

/// How often a watcher looks at the connection state, in case the connection
/// ends without an event (a clean close by the broker).
const STATE_CHECK: Duration = Duration::from_secs(1);

/// A live session. Dropping it closes both connections.
pub(crate) struct AmqpSession {
    publish_conn: Connection,
    consume_conn: Connection,
    publisher: Arc<Publisher>,
    state: Arc<SessionState>,
    exchange: String,
    options: AmqpOptions,
    scrub: Scrub,
    /// The broker's URL, password redacted.
    url: String,
    cancel: CancellationToken,
}

impl std::fmt::Debug for AmqpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSession")
            .field("exchange", &self.exchange)
            .field("lost", &self.state.lost().map(|e| e.to_string()))
            .finish_non_exhaustive()
    }
}

impl AmqpSession {
    /// Wraps two open connections and the publisher; starts the watchers.
    pub(crate) fn start(
        publish_conn: Connection,
        consume_conn: Connection,
        publisher: Arc<Publisher>,
        exchange: String,
        options: AmqpOptions,
        scrub: Scrub,
        url: String,
    ) -> Self {
        let state = publisher.state.clone();
        let cancel = CancellationToken::new();
        state.set_blocked(publish_conn.status().blocked());
        tokio::spawn(watch_connection(
            "publishing",
            publish_conn.events_listener(),
            publish_conn.status().clone(),
            Some(publisher.channel.clone()),
            state.clone(),
            cancel.clone(),
            scrub.clone(),
        ));
        tokio::spawn(watch_connection(
            "consuming",
            consume_conn.events_listener(),
            consume_conn.status().clone(),
            None,
            state.clone(),
            cancel.clone(),
            scrub.clone(),
        ));
        Self {
            publish_conn,
            consume_conn,
            publisher,
            state,
            exchange,
            options,
            scrub,
            url,
            cancel,
        }
    }
}

impl Drop for AmqpSession {
    fn drop(&mut self) {
        // Stops the watchers and ends the delivery streams; the connections
        // close when their last channel is dropped.
        self.cancel.cancel();
    }
}

/// Follows one connection until it is lost or the session is dropped.
async fn watch_connection(
    role: &'static str,
    events: impl Stream<Item = lapin::Event> + Send + 'static,
    status: ConnectionStatus,
    publish_channel: Option<lapin::Channel>,
    state: Arc<SessionState>,
    cancel: CancellationToken,
    scrub: Scrub,
) {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(STATE_CHECK);
    let publishing = publish_channel.is_some();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            event = events.next() => match event {
                Some(lapin::Event::ConnectionBlocked(reason)) if publishing => {
                    tracing::warn!(reason = %reason, "the broker blocks publishing (resource alarm): {reason}");
                    state.set_blocked(true);
                }
                Some(lapin::Event::ConnectionUnblocked) if publishing => {
                    tracing::info!("the broker unblocked publishing");
                    state.set_blocked(false);
                }
                Some(lapin::Event::Error(e)) => {
                    if !status.connected() {
                        let error = errors::classify(&e, &format!("{role} connection lost"), &scrub);
                        if state.set_lost(&error) {
                            tracing::debug!(error = %error, "session lost");
                        }
                        return;
                    }
                    // A channel error; the connection lives on. Only the
                    // publishing channel's loss ends the session.
                    if let Some(channel) = &publish_channel
                        && !channel.status().connected()
                    {
                        let error = errors::classify(&e, "publishing channel closed", &scrub);
                        state.set_lost(&error);
                        return;
                    }
                }
                Some(_) => {}
                None => {
                    state.set_lost(&BackendError::connection(format!("{role} connection ended")));
                    return;
                }
            },
            _ = check.tick() => {
                if !status.connected() {
                    let now = if status.closed() { "closed" } else { "no longer connected" };
                    state.set_lost(&BackendError::connection(format!("{role} connection is {now}")));
                    return;
                }
            }
        }
    }
}

/// Closes `conn` within `limit`, quietly: used when the session ends anyway.
/// The queue kind of a subscription: the one it asks for, else the backend's.
fn queue_kind_for(subscription: &Subscription, options: &AmqpOptions) -> QueueKind {
    subscription
        .queue_kind()
        .unwrap_or_else(|| options.queue_kind())
}

pub(crate) async fn close_quietly(conn: &Connection, limit: Duration) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(limit, conn.close(200, "closing".into())).await;
    }
}

#[async_trait]
impl Session for AmqpSession {
    async fn send(&self, event: &Event) -> Result<Confirmation, BackendError> {
        self.publisher.send(event).await
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
        };
        let channel = within(
            limit,
            "opening a consuming channel",
            &self.scrub,
            self.consume_conn.create_channel(),
        )
        .await?;
        let ctx = ConsumeContext {
            publisher: self.publisher.clone(),
            operation_timeout: limit,
            scrub: self.scrub.clone(),
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
        Some(self.url.clone())
    }

    async fn close(&self) {
        self.state.set_lost(&BackendError::closed("session closed"));
        self.cancel.cancel();
        let limit = self.options.operation_timeout();
        tokio::join!(
            close_quietly(&self.consume_conn, limit),
            close_quietly(&self.publish_conn, limit)
        );
    }
}

#[cfg(test)]
mod tests {
    use flow_events_core::TopicPattern;

    use super::*;

    #[test]
    fn a_subscription_gets_the_kind_it_asks_for_else_the_backends() {
        let sub = Subscription::new("billing", TopicPattern::all()).unwrap();
        let quorum_default = AmqpOptions::default().with_queue_kind(QueueKind::Quorum);
        let classic_default = AmqpOptions::default();
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
