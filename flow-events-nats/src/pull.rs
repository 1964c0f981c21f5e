//! Pulling from a durable consumer, written here rather than taken from
//! async-nats' pull stream for one reason: what happens when a
//! subscription closes. async-nats unsubscribes its inbox from a spawned
//! task, so a message published right after the close can still be sent
//! to the old pull request and be dropped by the client, to come back only
//! after `ack_wait` (out of order). Here the unsubscribe is sent before any
//! later publish of the session, and every message that reached the
//! closed subscription unhandled (prefetched, or in flight during the
//! unsubscribe) is handed back at once with a nak.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_nats::{StatusCode, Subscriber};
use futures_util::StreamExt;
use tokio::sync::watch;

/// How long a pull request waits on the server for messages.
const EXPIRES: Duration = Duration::from_secs(30);

/// How long after a pull request's expiry, with nothing heard, the request
/// is taken as lost and made again.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// How long a closed subscription's messages are waited for, to hand them back.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The unsubscribes a session has in flight: a publish waits for them, so
/// that the server has dropped a closed subscription's pull requests before
/// it stores an event the subscription would otherwise take.
#[derive(Debug)]
pub(crate) struct Closing {
    pending: watch::Sender<usize>,
}

impl Closing {
    pub(crate) fn new() -> Self {
        Self {
            pending: watch::Sender::new(0),
        }
    }

    /// Waits (at most `limit`) until no unsubscribe is in flight.
    pub(crate) async fn settled(&self, limit: Duration) {
        if *self.pending.borrow() == 0 {
            return;
        }
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }

    fn begin(&self) {
        self.pending.send_modify(|n| *n += 1);
    }

    fn end(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Why pulling stopped.
#[derive(Debug)]
pub(crate) enum PullError {
    /// The consumer was deleted on the server.
    ConsumerDeleted,
    /// The inbox subscription ended (the connection is gone).
    Ended,
    /// A pull request could not be sent.
    Request(String),
    /// The server answered with an unexpected status.
    Status(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConsumerDeleted => f.write_str("the consumer was deleted"),
            Self::Ended => f.write_str("the subscription ended (connection lost)"),
            Self::Request(e) => write!(f, "pull request failed: {e}"),
            Self::Status(s) => write!(f, "pull failed: {s}"),
        }
    }
}

/// Pulls messages from one consumer, `batch` at a time.
pub(crate) struct Puller {
    subscriber: Option<Subscriber>,
    js: jetstream::Context,
    inbox: String,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: String,
    request: bytes::Bytes,
    batch: usize,
    /// Messages asked for and not yet received.
    outstanding: usize,
    closing: Arc<Closing>,
}

impl Puller {
    /// Subscribes an inbox for the consumer `consumer` of `stream`.
    pub(crate) async fn start(
        js: jetstream::Context,
        stream: &str,
        consumer: &str,
        batch: usize,
        closing: Arc<Closing>,
    ) -> Result<Self, PullError> {
        let client = js.client();
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PullError::Request(e.to_string()))?;
        let batch = batch.max(1);
        let request = serde_json::json!({
            "batch": batch,
            "expires": u64::try_from(EXPIRES.as_nanos()).unwrap_or(u64::MAX),
        });
        Ok(Self {
            subscriber: Some(subscriber),
            js,
            inbox,
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            request: bytes::Bytes::from(request.to_string()),
            batch,
            outstanding: 0,
            closing,
        })
    }

    /// Asks for more when half of what was asked for has arrived.
    async fn top_up(&mut self) -> Result<(), PullError> {
        if self.outstanding > self.batch / 2 {
            return Ok(());
        }
        self.js
            .client()
            .publish_with_reply(
                self.next_subject.clone(),
                self.inbox.clone(),
                self.request.clone(),
            )
            .await
            .map_err(|e| PullError::Request(e.to_string()))?;
        self.outstanding += self.batch;
        Ok(())
    }

    /// The next message of the consumer.
    pub(crate) async fn next(&mut self) -> Result<jetstream::Message, PullError> {
        loop {
            self.top_up().await?;
            let Some(subscriber) = self.subscriber.as_mut() else {
                return Err(PullError::Ended);
            };
            let message =
                match tokio::time::timeout(EXPIRES + EXPIRY_MARGIN, subscriber.next()).await {
                    Ok(Some(message)) => message,
                    Ok(None) => return Err(PullError::Ended),
                    Err(_) => {
                        // Nothing heard for longer than a request lives: ask again.
                        self.outstanding = 0;
                        continue;
                    }
                };
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    return Ok(jetstream::Message {
                        message,
                        context: self.js.clone(),
                    });
                }
                // Idle heartbeat or flow control: nothing to do.
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(
                    StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED | StatusCode::NOT_FOUND,
                ) => {
                    let description = message.description.as_deref().unwrap_or_default();
                    if description.eq_ignore_ascii_case("consumer deleted") {
                        return Err(PullError::ConsumerDeleted);
                    }
                    if description.eq_ignore_ascii_case("consumer is push based") {
                        return Err(PullError::Status(description.to_owned()));
                    }
                    // The request ended (expired, or the server had to drop
                    // it): what it still owed will not come.
                    let left = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Pending-Messages"))
                        .and_then(|v| v.as_str().parse::<usize>().ok())
                        .unwrap_or(self.batch);
                    self.outstanding = self.outstanding.saturating_sub(left);
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(PullError::Status("JetStream did not answer".to_owned()));
                }
                Some(other) => {
                    return Err(PullError::Status(format!(
                        "status {other}: {}",
                        message.description.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        let Some(mut subscriber) = self.subscriber.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let closing = self.closing.clone();
        let js = self.js.clone();
        closing.begin();
        runtime.spawn(async move {
            // Unsubscribes (the server drops the pull requests of an inbox
            // nobody listens to), and lets what was on its way arrive.
            let unsubscribed = subscriber.drain().await;
            closing.end();
            if unsubscribed.is_err() {
                return;
            }
            let mut handed_back = 0u32;
            let drained = tokio::time::timeout(DRAIN_LIMIT, async {
                while let Some(message) = subscriber.next().await {
                    if matches!(message.status, None | Some(StatusCode::OK)) {
                        let message = jetstream::Message {
                            message,
                            context: js.clone(),
                        };
                        if message.ack_with(AckKind::Nak(None)).await.is_ok() {
                            handed_back += 1;
                        }
                    }
                }
            })
            .await;
            if handed_back > 0 || drained.is_err() {
                tracing::debug!(
                    handed_back,
                    "closed subscription: unhandled deliveries handed back"
                );
            }
        });
    }
}
