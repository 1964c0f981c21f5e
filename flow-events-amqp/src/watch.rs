//! The watchers of a session's two connections.
//!
//! The publishing connection's loss ends the session (the decorator then
//! buffers and reconnects); a publishing channel the broker closes because
//! of one publish is replaced on the same connection. The consuming
//! connection's loss only ends the delivery streams: the session opens a new
//! consuming connection for the next subscription, and publishing goes on.

use std::sync::Arc;
use std::time::Duration;

use flow_events_core::BackendError;
use futures_util::{Stream, StreamExt};
use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::channel::PublishChannel;
use crate::errors::{self, ChannelRefusal, Scrub};
use crate::publish::Publisher;

/// How often a watcher looks at the connection state, in case the connection
/// ends without an event (a clean close by the broker).
const STATE_CHECK: Duration = Duration::from_secs(1);

/// Follows the publishing connection until it is lost or the session is
/// dropped: the broker's blocked notices, and the publishing channel, which
/// it replaces when the broker closed it because of one publish.
///
/// `events` must be the connection's listener, made before anything is
/// published: lapin drops the events of a connection nobody listens to.
pub(crate) async fn publishing(
    conn: Arc<Connection>,
    events: impl Stream<Item = lapin::Event> + Send + 'static,
    publisher: Arc<Publisher>,
    exchange: String,
    limit: Duration,
    cancel: CancellationToken,
) {
    let state = publisher.state.clone();
    let scrub = publisher.scrub.clone();
    let status = conn.status().clone();
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(STATE_CHECK);
    // Ticks in a row that found the channel closed with no word why.
    let mut closed_ticks = 0;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            event = events.next() => match event {
                Some(lapin::Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(reason = %reason, "the broker blocks publishing (resource alarm): {reason}");
                    state.set_blocked(true);
                }
                Some(lapin::Event::ConnectionUnblocked) => {
                    tracing::info!("the broker unblocked publishing");
                    state.set_blocked(false);
                }
                Some(lapin::Event::Error(e)) => {
                    if !status.connected() {
                        let error = errors::classify(&e, "publishing connection lost", &scrub);
                        if state.set_lost(&error) {
                            tracing::debug!(error = %error, "session lost");
                        }
                        return;
                    }
                    if publisher.channels.current().is_open() {
                        // Not the publishing channel's error.
                        continue;
                    }
                    let reopened = reopen(&conn, &publisher, &exchange, limit, &e).await;
                    if let Err(error) = reopened {
                        state.set_lost(&error);
                        return;
                    }
                }
                Some(_) => {}
                None => {
                    state.set_lost(&BackendError::connection("publishing connection ended"));
                    return;
                }
            },
            _ = check.tick() => {
                if !status.connected() {
                    let now = if status.closed() { "closed" } else { "no longer connected" };
                    state.set_lost(&BackendError::connection(format!("publishing connection is {now}")));
                    return;
                }
                if publisher.channels.current().is_open() {
                    closed_ticks = 0;
                } else {
                    closed_ticks += 1;
                    if closed_ticks >= 2 {
                        state.set_lost(&BackendError::connection("the publishing channel is closed"));
                        return;
                    }
                }
            }
        }
    }
}

/// The broker closed the publishing channel with `error`. When the reason
/// was one publish's, a new channel on the same connection replaces it (at
/// most a few in a short while); otherwise the session is lost.
async fn reopen(
    conn: &Connection,
    publisher: &Publisher,
    exchange: &str,
    limit: Duration,
    error: &lapin::Error,
) -> Result<(), BackendError> {
    let scrub = &publisher.scrub;
    let Some(refusal) = errors::channel_refusal(error) else {
        return Err(errors::classify(error, "publishing channel closed", scrub));
    };
    let reason = scrub.clean(&error.to_string());
    if !publisher.channels.may_reopen() {
        return Err(BackendError::connection(format!(
            "the broker keeps closing the publishing channel ({reason}); reconnecting with backoff"
        )));
    }
    let channel = PublishChannel::open(conn, exchange, limit, scrub).await?;
    publisher.channels.replace(channel);
    match refusal {
        ChannelRefusal::Topic(key) => tracing::warn!(
            routing_key = %key, error = %reason,
            "the broker refused routing key '{key}' (topic permissions) and closed the \
             publishing channel; that event is refused, the others go again on a new channel"
        ),
        ChannelRefusal::Size(size, max) => tracing::warn!(
            size, max, error = %reason,
            "the broker refused a message of {size} bytes (max_message_size {max}) and closed \
             the publishing channel; that event is refused, the others go again on a new channel"
        ),
        ChannelRefusal::NoExchange => tracing::warn!(
            error = %reason,
            "the exchange was gone and the broker closed the publishing channel; declared it \
             again on a new channel, the events in flight go again"
        ),
    }
    Ok(())
}

/// Follows a consuming connection (its `status` and `events`) until it is
/// lost (then says so) or the session is dropped. Its delivery streams end
/// by themselves.
pub(crate) async fn consuming(
    status: lapin::ConnectionStatus,
    events: impl Stream<Item = lapin::Event> + Send + 'static,
    cancel: CancellationToken,
    scrub: Scrub,
) {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(STATE_CHECK);
    let lost = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            event = events.next() => match event {
                Some(lapin::Event::Error(e)) if !status.connected() => {
                    break errors::classify(&e, "consuming connection lost", &scrub);
                }
                Some(_) => {}
                None => break BackendError::connection("consuming connection ended"),
            },
            _ = check.tick() => {
                if !status.connected() {
                    break BackendError::connection("consuming connection closed");
                }
            }
        }
    };
    tracing::warn!(
        error = %lost,
        "{lost}; subscriptions resume on a new consuming connection, publishing goes on"
    );
}
