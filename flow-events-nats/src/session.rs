//! One session: one NATS connection, its JetStream context, publishes with
//! acks, and the subscriptions made on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use bytes::Bytes;
use flow_events_core::backend_kit::SessionLoss;
use flow_events_core::{
    BackendError, ConfirmWait, Confirmation, DeliveryStream, Event, Session, Subscription,
};
use tokio_util::sync::CancellationToken;

use crate::consume;
use crate::errors;
use crate::redact::Scrub;
use crate::wire;

/// What a backend's sessions share: settings and counters.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) stream: String,
    pub(crate) prefix: String,
    /// `(stream, subject prefix)` of the dead letters, when on.
    pub(crate) dead_letter: Option<(String, String)>,
    pub(crate) ack_wait: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) publish_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    /// Publishes the stream acknowledged as duplicates (dropped by its
    /// duplicate window): republished events that had arrived before.
    pub(crate) duplicates: AtomicU64,
}

/// A live session. Dropping it ends its subscriptions; the connection
/// closes when the last handle of its client is gone.
///
/// Aligned to 128 bytes, so that the count of the `Arc` it is shared in
/// (taken and released by every publish, from every thread) is not on the
/// cache line of the fields every publish reads.
#[repr(align(128))]
pub(crate) struct NatsSession {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Its loss, settings and scrubber: one handle, which an ack wait
    /// clones once per publish.
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) cancel: CancellationToken,
    /// The address of the connection, its secrets redacted.
    pub(crate) url: String,
    /// The unsubscribes of closed subscriptions still on their way.
    pub(crate) closing: Arc<crate::pull::Closing>,
}

impl std::fmt::Debug for NatsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSession")
            .field("stream", &self.shared.settings.stream)
            .field("lost", &self.shared.state.lost().map(|e| e.to_string()))
            .finish_non_exhaustive()
    }
}

impl Drop for NatsSession {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What a session shares with its ack waits and delivery streams.
#[derive(Debug)]
#[repr(align(128))] // its count, like the session's, apart from what is read
pub(crate) struct SessionShared {
    pub(crate) state: Arc<SessionLoss>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) scrub: Arc<Scrub>,
}

/// Counts a duplicate acknowledged by the stream.
fn count_duplicate(settings: &Settings, ack: &jetstream::publish::PublishAck) {
    if ack.duplicate {
        settings.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}

impl NatsSession {
    /// Fails when the session is lost.
    fn check_usable(&self) -> Result<(), BackendError> {
        match self.shared.state.lost() {
            Some(lost) => Err(lost),
            None => Ok(()),
        }
    }

    /// The refusal of an event larger than `limit` (`what` says whose limit).
    fn too_large(event: &Event, size: usize, limit: usize, what: &str) -> BackendError {
        BackendError::event_refused(format!(
            "event {} ({}) is {size} bytes, larger than {what} ({limit} bytes)",
            event.id(),
            event.event_type()
        ))
    }
}

impl NatsSession {
    /// The subject and message of `event` (`body` its encoding), checked
    /// against the limits and the session's state.
    fn message(
        &self,
        event: &Event,
        body: Vec<u8>,
    ) -> Result<(String, PublishMessage), BackendError> {
        let settings = &self.shared.settings;
        let subject = wire::subject(&settings.prefix, event)?;
        let body = Bytes::from(body);
        if body.len() > settings.max_event_bytes {
            return Err(Self::too_large(
                event,
                body.len(),
                settings.max_event_bytes,
                "the configured limit",
            ));
        }
        let headers = wire::headers(event);
        // The server refuses a message (headers and body) over its
        // max_payload; say so before sending, with the sizes.
        let size = body.len() + headers_len(&headers);
        let max_payload = self.client.max_payload();
        if max_payload > 0 && size > max_payload {
            return Err(Self::too_large(
                event,
                size,
                max_payload,
                "the server's max_payload",
            ));
        }
        self.check_usable()?;
        Ok((
            subject,
            PublishMessage::build().payload(body).headers(headers),
        ))
    }

    /// Hands `message` to the client and gives the wait for its ack.
    fn hand_over<'a>(
        &'a self,
        event: &'a Event,
        subject: String,
        message: PublishMessage,
    ) -> impl Future<Output = Result<Confirmation, BackendError>> + Send + 'a {
        // Sends keep their call order: handing a message to the client waits
        // only on tokio's fair (first come, first served) semaphores, for a
        // place among the acks awaited and in the client's queue, and it
        // runs outside tokio's cooperative budget, which would otherwise
        // make a send yield once its task has done many (a batch of a
        // thousand publishes would go out of order). The caller bounds the
        // wait (the decorator by its publish timeout).
        tokio::task::unconstrained(async move {
            // A subscription closed before this publish must not take it.
            self.closing
                .settled(self.shared.settings.operation_timeout)
                .await;
            match self.js.send_publish(subject, message).await {
                Ok(ack) => Ok(self.confirmation(event, ack)),
                Err(e) => {
                    let what = format!("publishing event {} ({})", event.id(), event.event_type());
                    Err(errors::publish(
                        &e,
                        &what,
                        &self.shared.scrub,
                        self.shared.settings.operation_timeout,
                    ))
                }
            }
        })
    }

    /// The wait for the stream's ack of `event`.
    fn confirmation(
        &self,
        event: &Event,
        ack: jetstream::context::PublishAckFuture,
    ) -> Confirmation {
        let shared = self.shared.clone();
        let (id, event_type) = (event.id(), event.event_type().clone());
        Box::pin(async move {
            let SessionShared {
                state,
                settings,
                scrub,
            } = &*shared;
            let what = || format!("publish ack of event {id} ({event_type})");
            // A lost connection fails the confirm at once: the event goes
            // again on the next session, and the duplicate window drops it
            // there if it had arrived.
            let answer = tokio::select! {
                biased;
                answer = ack.into_future() => answer,
                lost = state.wait_lost() => {
                    return Err(BackendError::new(lost.kind(), format!("{}: {}", what(), lost.message())));
                }
            };
            match answer {
                Ok(ack) => {
                    count_duplicate(settings, &ack);
                    Ok(())
                }
                Err(e) => {
                    let error = errors::publish(&e, &what(), scrub, settings.publish_timeout);
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        // The stream is gone: a new session creates it again.
                        state.set_lost(&error);
                    }
                    Err(error)
                }
            }
        })
    }
}

#[async_trait]
impl Session for NatsSession {
    /// The stream's ack is awaited without a timer of the session's own
    /// whoever bounds the wait: a caller that leaves it to the session
    /// ([`ConfirmWait::Session`]) gets async-nats' ack timeout.
    ///
    /// Written out instead of `async fn`: the checks run before the future
    /// is made, and the future (allocated on every publish) holds the
    /// message once, not each argument twice.
    fn send_encoded<'life0, 'life1, 'async_trait>(
        &'life0 self,
        event: &'life1 Event,
        body: Vec<u8>,
        _wait: ConfirmWait,
    ) -> Pin<Box<dyn Future<Output = Result<Confirmation, BackendError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        match self.message(event, body) {
            Ok((subject, message)) => Box::pin(self.hand_over(event, subject, message)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError> {
        self.check_usable()?;
        consume::subscribe(self, subscription).await
    }

    async fn closed(&self) -> BackendError {
        self.shared.state.wait_lost().await
    }

    fn url(&self) -> Option<String> {
        Some(self.url.clone())
    }

    async fn close(&self) {
        self.shared
            .state
            .set_lost(&BackendError::closed("session closed"));
        self.cancel.cancel();
        // Writes what is queued (acks, naks) and closes the connection.
        let _ =
            tokio::time::timeout(self.shared.settings.operation_timeout, self.client.drain()).await;
    }
}

/// The bytes `headers` take on the wire (`NATS/1.0\r\n`, `Name: value\r\n`
/// each, and the closing `\r\n`).
fn headers_len(headers: &async_nats::HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            len += AsRef::<str>::as_ref(name).len() + 2 + value.as_str().len() + 2;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_counts_every_line() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("A", "bc");
        assert_eq!(headers_len(&h), 12 + 1 + 2 + 2 + 2);
    }
}
