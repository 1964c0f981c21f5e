//! The publishing channel: events with publisher confirms, many in flight.

use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{BackendError, BackendErrorKind, Confirmation, Event};
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};

use crate::confirms::{Answer, ConfirmRouter, Outcome};
use crate::errors::{self, Scrub};
use crate::state::SessionState;
use crate::topology::within;
use crate::wire;

/// The publishing channel of a session (in confirm mode) and its settings.
#[derive(Debug)]
pub(crate) struct Publisher {
    pub(crate) channel: Channel,
    pub(crate) exchange: ShortString,
    pub(crate) app_id: ShortString,
    pub(crate) mandatory: bool,
    pub(crate) max_event_bytes: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) operation_timeout: Duration,
    pub(crate) confirm_timeout: Duration,
    pub(crate) state: Arc<SessionState>,
    pub(crate) scrub: Scrub,
    pub(crate) router: ConfirmRouter,
}

/// Waits for the router's answer about one publish, within `limit`.
async fn answer(
    rx: tokio::sync::oneshot::Receiver<Answer>,
    limit: Duration,
    what: &str,
    scrub: &Scrub,
) -> Result<Outcome, BackendError> {
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(outcome))) => Ok(outcome),
        Ok(Ok(Err(e))) => Err(errors::classify(&e, what, scrub)),
        Ok(Err(_)) => Err(BackendError::closed(format!(
            "{what}: the session closed before the broker answered"
        ))),
        Err(_) => Err(errors::timeout(what, limit)),
    }
}

impl Publisher {
    /// Fails when the session is lost or the broker blocks publishers.
    fn check_usable(&self) -> Result<(), BackendError> {
        if let Some(lost) = self.state.lost() {
            return Err(lost);
        }
        if !self.channel.status().connected() {
            let error = BackendError::connection("the publishing channel is closed");
            self.state.set_lost(&error);
            return Err(error);
        }
        if self.state.is_blocked() {
            // lapin stops writing while blocked: a publish would wait for the
            // alarm to clear, so say so at once instead.
            return Err(BackendError::new(
                BackendErrorKind::Other,
                "the broker is blocking publishers (resource alarm)",
            ));
        }
        Ok(())
    }

    /// Publishes `event`; returns once lapin has written it, with the confirm to await.
    pub(crate) async fn send(&self, event: &Event) -> Result<Confirmation, BackendError> {
        let body = wire::encode_body(event)?;
        if body.len() > self.max_event_bytes {
            return Err(BackendError::event_refused(format!(
                "event {} ({}) is {} bytes, the limit is {}",
                event.id(),
                event.event_type(),
                body.len(),
                self.max_event_bytes
            )));
        }
        let properties = wire::properties(event, &self.app_id, self.max_header_bytes)?;
        let routing_key = ShortString::try_new(event.event_type().as_str())
            .map_err(|_| BackendError::event_refused("event type too long"))?;
        self.check_usable()?;
        let what = format!("publishing event {} ({})", event.id(), event.event_type());
        let confirm = within(
            self.operation_timeout,
            &what,
            &self.scrub,
            self.channel.basic_publish(
                self.exchange.clone(),
                routing_key,
                BasicPublishOptions {
                    mandatory: self.mandatory,
                    immediate: false,
                },
                &body,
                properties,
            ),
        )
        .await?;
        let id = event.id();
        let event_type = event.event_type().clone();
        let rx = self.router.follow(id.to_string(), confirm);
        let limit = self.confirm_timeout;
        let scrub = self.scrub.clone();
        Ok(Box::pin(async move {
            let what = format!("publisher confirm of event {id} ({event_type})");
            match answer(rx, limit, &what, &scrub).await? {
                Outcome::Acked => Ok(()),
                Outcome::Returned(reason) => Err(BackendError::event_refused(format!(
                    "event {id} ({event_type}) is unroutable: no queue is bound for it ({reason})"
                ))),
                Outcome::Nacked => Err(BackendError::new(
                    BackendErrorKind::Nacked,
                    format!("the broker nacked event {id} ({event_type})"),
                )),
            }
        }))
    }

    /// Publishes a copy of a delivery straight to `queue` (through the default
    /// exchange) and waits for its confirm: used to retry on classic queues.
    pub(crate) async fn republish(
        &self,
        queue: &ShortString,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BackendError> {
        self.check_usable()?;
        let what = format!("publishing a retry copy to queue {queue}");
        let id = properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let confirm = within(
            self.operation_timeout,
            &what,
            &self.scrub,
            self.channel.basic_publish(
                ShortString::default(),
                queue.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            ),
        )
        .await?;
        let rx = self.router.follow(id, confirm);
        match answer(rx, self.confirm_timeout, &what, &self.scrub).await? {
            Outcome::Acked => Ok(()),
            Outcome::Returned(_) => Err(BackendError::connection(format!("queue {queue} is gone"))),
            Outcome::Nacked => Err(BackendError::new(
                BackendErrorKind::Nacked,
                format!("the broker nacked the retry copy for queue {queue}"),
            )),
        }
    }
}
