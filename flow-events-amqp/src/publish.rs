//! The publishing channel: events with publisher confirms, many in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use flow_events_core::{BackendError, BackendErrorKind, ConfirmWait, Confirmation, Event};
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, ErrorKind};

use crate::channel::ChannelSlot;
use crate::confirms::{self, Answer, Failure, Outcome, Written};
use crate::errors::{self, ChannelRefusal, Scrub};
use crate::state::SessionState;
use crate::topology::within;
use crate::wire;

/// The publishing side of a session: its channel (in confirm mode, replaced
/// when the broker closes it because of one publish) and its settings.
#[derive(Debug)]
pub(crate) struct Publisher {
    pub(crate) channels: ChannelSlot,
    pub(crate) exchange: ShortString,
    pub(crate) app_id: ShortString,
    pub(crate) mandatory: bool,
    pub(crate) max_event_bytes: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) operation_timeout: Duration,
    pub(crate) confirm_timeout: Duration,
    pub(crate) state: Arc<SessionState>,
    pub(crate) scrub: Scrub,
    /// The broker's largest message, once a refusal has told it (0: not
    /// known). Shared by the backend's sessions: the broker closes the channel
    /// that publishes a message over its `max_message_size`, so the next
    /// session refuses such an event before sending it. A limit raised on the
    /// broker later is seen when the service restarts.
    pub(crate) broker_max_message: Arc<AtomicUsize>,
}

/// The publisher of a backend's newest session, for retry copies of
/// deliveries whose own session lost its publishing connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatestPublisher(Arc<std::sync::Mutex<std::sync::Weak<Publisher>>>);

impl LatestPublisher {
    /// Publishing goes through `publisher` from now on.
    pub(crate) fn set(&self, publisher: &Arc<Publisher>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(publisher);
    }

    /// The newest publisher, if it still exists.
    pub(crate) fn get(&self) -> Option<Arc<Publisher>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()
    }
}

/// An event over the broker's max_message_size, known from an earlier refusal.
fn too_large_for_broker(event: &Event, size: usize, max: usize) -> BackendError {
    BackendError::event_refused(format!(
        "event {} ({}) is {size} bytes, larger than the broker's max_message_size ({max} bytes)",
        event.id(),
        event.event_type()
    ))
}

/// Awaits `answer` within `limit`, or as long as it takes when the caller
/// bounds the wait (`None`): no timer then. `what` names the publish in the
/// error (built only then).
async fn within_limit<T>(
    limit: Option<Duration>,
    answer: impl Future<Output = Result<T, BackendError>>,
    what: impl Fn() -> String,
) -> Result<T, BackendError> {
    let Some(limit) = limit else {
        return answer.await;
    };
    match tokio::time::timeout(limit, answer).await {
        Ok(answer) => answer,
        Err(_) => Err(errors::timeout(
            &format!("publisher confirm of {}", what()),
            limit,
        )),
    }
}

/// The error for a publish that got no answer; `what` names the publish.
fn failed(failure: Failure, what: &str, scrub: &Scrub) -> BackendError {
    match failure {
        Failure::Write(e) => errors::classify(&e, &format!("publishing {what}"), scrub),
        Failure::WriteTimeout(after) => errors::timeout(&format!("publishing {what}"), after),
        Failure::Confirm(e) => errors::classify(&e, &format!("publisher confirm of {what}"), scrub),
    }
}

/// Waits for the router's answer about one publish, within `limit` (from
/// the call; `None`: the caller bounds the wait); lapin's error is left to
/// the caller. `what` names the publish in an error (built only then).
async fn routed(
    rx: tokio::sync::oneshot::Receiver<Answer>,
    limit: Option<Duration>,
    what: impl Fn() -> String,
) -> Result<Answer, BackendError> {
    let answer = async {
        rx.await.map_err(|_| {
            BackendError::closed(format!(
                "publisher confirm of {}: the session closed before the broker answered",
                what()
            ))
        })
    };
    within_limit(limit, answer, &what).await
}

/// Waits for the router's answer about one publish, within `limit`.
async fn answer(
    rx: tokio::sync::oneshot::Receiver<Answer>,
    limit: Duration,
    what: impl Fn() -> String,
    scrub: &Scrub,
) -> Result<Outcome, BackendError> {
    routed(rx, Some(limit), &what)
        .await?
        .map_err(|failure| failed(failure, &what(), scrub))
}

/// The error for a publish whose answer is a failure: the event's own
/// refusal when the broker closed the channel because of it; an interruption
/// (send it again, on the new channel) when it closed the channel because of
/// another publish; else the failure as it is.
fn failure_of_one(
    failure: Failure,
    publish: &OnePublish,
    broker_max: &AtomicUsize,
    state: &SessionState,
    scrub: &Scrub,
) -> BackendError {
    let OnePublish {
        id,
        event_type,
        size,
    } = publish;
    let refusal = failure.lapin_error().and_then(errors::channel_refusal);
    match refusal {
        Some(ChannelRefusal::Topic(key)) if key == event_type.as_str() => {
            return BackendError::event_refused(format!(
                "the broker refused event {id} ({event_type}): its topic permissions do not \
                 allow routing key '{key}' for this user"
            ));
        }
        Some(ChannelRefusal::Size(_, max)) => {
            broker_max.store(max, Ordering::Relaxed);
            if *size > max {
                return BackendError::event_refused(format!(
                    "event {id} ({event_type}) is {size} bytes, larger than the broker's \
                     max_message_size ({max} bytes)"
                ));
            }
        }
        _ => {}
    }
    let channel_closed = matches!(
        failure.lapin_error().map(lapin::Error::kind),
        Some(ErrorKind::InvalidChannelState(..))
    );
    if refusal.is_some() || (channel_closed && state.lost().is_none()) {
        let why = match refusal {
            Some(ChannelRefusal::Topic(key)) => {
                format!("routing key '{key}' of another event was refused")
            }
            Some(ChannelRefusal::Size(..)) => "another event was too large".to_owned(),
            Some(ChannelRefusal::NoExchange) => "the exchange was gone".to_owned(),
            None => "it was closing".to_owned(),
        };
        return BackendError::interrupted(format!(
            "publishing event {id} ({event_type}): the broker closed the channel ({why}); \
             it goes again on a new channel"
        ));
    }
    failed(failure, &format!("event {id} ({event_type})"), scrub)
}

/// What names one publish in its errors.
struct OnePublish {
    id: flow_events_core::EventId,
    event_type: flow_events_core::EventType,
    size: usize,
}

impl OnePublish {
    /// The publish, as its errors name it.
    fn name(&self) -> String {
        format!("event {} ({})", self.id, self.event_type)
    }
}

/// What turns the broker's answer about one publish into its result.
struct Settle {
    one: OnePublish,
    broker_max: Arc<AtomicUsize>,
    state: Arc<SessionState>,
    scrub: Scrub,
}

impl Settle {
    /// The error for a publish that got no answer (see [`failure_of_one`]).
    fn failure(&self, failure: Failure) -> BackendError {
        failure_of_one(
            failure,
            &self.one,
            &self.broker_max,
            &self.state,
            &self.scrub,
        )
    }

    /// The result of a publish from the broker's answer.
    fn outcome(&self, answer: Answer) -> Result<(), BackendError> {
        let OnePublish { id, event_type, .. } = &self.one;
        // The broker closes the channel when it refuses one publish (a
        // routing key its topic permissions deny, a message over its
        // max_message_size): every publish in flight on it fails so. Only
        // that event is refused; the others go again on a new channel of the
        // same connection.
        match answer.map_err(|failure| self.failure(failure))? {
            Outcome::Acked => Ok(()),
            Outcome::Returned(reason) => Err(BackendError::event_refused(format!(
                "event {id} ({event_type}) is unroutable: no queue is bound for it ({reason})"
            ))),
            Outcome::Nacked => Err(BackendError::nacked(format!(
                "the broker nacked event {id} ({event_type}) (a queue bound to it may be \
                 full with x-overflow reject-publish)"
            ))),
        }
    }
}

/// Polls `future` once, in the caller's task.
async fn poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut future).poll(cx))).await
}

impl Publisher {
    /// Whether it can publish now (its session is not lost, the broker does
    /// not block it).
    pub(crate) fn is_usable(&self) -> bool {
        self.check_usable().is_ok()
    }

    /// Fails when the session is lost or the broker blocks publishers.
    fn check_usable(&self) -> Result<(), BackendError> {
        if let Some(lost) = self.state.lost() {
            return Err(lost);
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

    /// Publishes `event` with `body`, its encoding; returns once lapin has
    /// queued it on the channel, with the confirm to await (which also
    /// covers the write itself), bounded by the confirm timeout unless the
    /// caller bounds it (`wait`).
    ///
    /// lapin numbers a publish for its confirm and queues its frames when its
    /// `basic_publish` future is first polled, then waits for its I/O thread
    /// to write them. Returning after that first poll keeps sends in call
    /// order without a wait for one write per event: a caller that sends many
    /// events in a row (the decorator's drain) hands them over at the rate of
    /// the channel, and lapin writes them in batches. The test
    /// `sends_keep_their_order_without_waiting_for_writes` pins this.
    pub(crate) async fn send(
        &self,
        event: &Event,
        body: Vec<u8>,
        wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError> {
        if body.len() > self.max_event_bytes {
            return Err(BackendError::event_refused(format!(
                "event {} ({}) is {} bytes, the limit is {}",
                event.id(),
                event.event_type(),
                body.len(),
                self.max_event_bytes
            )));
        }
        let broker_max = self.broker_max_message.load(Ordering::Relaxed);
        if broker_max > 0 && body.len() > broker_max {
            return Err(too_large_for_broker(event, body.len(), broker_max));
        }
        let properties = wire::properties(event, &self.app_id, self.max_header_bytes)?;
        let routing_key = ShortString::try_new(event.event_type().as_str())
            .map_err(|_| BackendError::event_refused("event type too long"))?;
        self.check_usable()?;
        let ch = self.channels.current();
        if !ch.is_open() {
            // The broker closed the channel, and the publishes in flight on
            // it are failing. Wait for the new one, but send nothing on it:
            // this event must not overtake them when they go again.
            // Boxed: a rare wait, kept out of every send's future.
            Box::pin(self.channels.usable(&self.state, self.operation_timeout)).await?;
            return Err(BackendError::interrupted(format!(
                "publishing event {} ({}): the broker closed the channel; a new one is open, \
                 send it again",
                event.id(),
                event.event_type()
            )));
        }
        let one = OnePublish {
            id: event.id(),
            event_type: event.event_type().clone(),
            size: body.len(),
        };
        let exchange = self.exchange.clone();
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let write_limit = self.operation_timeout;
        let limit = (wait != ConfirmWait::Caller).then_some(self.confirm_timeout);
        let settle = Settle {
            one,
            broker_max: self.broker_max_message.clone(),
            state: self.state.clone(),
            scrub: self.scrub.clone(),
        };
        if self.mandatory {
            // Only a `mandatory` publish can come back: only then does the
            // router have a return to pair, and it takes lapin's publish.
            let channel = ch.clone();
            let mut publish: Written = Box::pin(async move {
                channel
                    .channel
                    .basic_publish(exchange, routing_key, options, &body, properties)
                    .await
            });
            let written: Written = match poll_once(publish.as_mut()).await {
                Poll::Ready(Ok(confirm)) => Box::pin(std::future::ready(Ok(confirm))),
                Poll::Ready(Err(e)) => return Err(settle.failure(Failure::Write(e))),
                Poll::Pending => publish,
            };
            let rx = ch
                .router
                .follow(settle.one.id.to_string(), written, write_limit);
            return Ok(Box::pin(async move {
                let answer = routed(rx, limit, || settle.one.name()).await?;
                settle.outcome(answer)
            }));
        }
        // One boxed future writes the publish and awaits its confirm; its
        // first poll, here, has lapin number and queue the publish. Written
        // as one block: each layer of `async fn` would move lapin's publish
        // future (hundreds of bytes) into its own state.
        let mut confirmation: Confirmation = Box::pin(async move {
            let deadline = limit.map(|limit| Instant::now() + limit);
            let late = || {
                errors::timeout(
                    &format!("publisher confirm of {}", settle.one.name()),
                    limit.unwrap_or_default(),
                )
            };
            let mut publish = std::pin::pin!(ch.channel.basic_publish(
                exchange,
                routing_key,
                options,
                &body,
                properties
            ));
            let written = match poll_once(publish.as_mut()).await {
                // Written at its first poll: only the confirm is left.
                Poll::Ready(written) => written,
                Poll::Pending => match deadline {
                    // The caller bounds the whole wait: no timer here either.
                    None => publish.as_mut().await,
                    Some(deadline) => {
                        let write_deadline = Instant::now() + write_limit;
                        let until = deadline.min(write_deadline);
                        match tokio::time::timeout_at(until, publish.as_mut()).await {
                            Ok(written) => written,
                            Err(_) if deadline <= write_deadline => return Err(late()),
                            Err(_) => {
                                return Err(settle.failure(Failure::WriteTimeout(write_limit)));
                            }
                        }
                    }
                },
            };
            let confirm = written.map_err(|e| settle.failure(Failure::Write(e)))?;
            let confirmed = match deadline {
                None => confirm.await,
                Some(deadline) => tokio::time::timeout_at(deadline, confirm)
                    .await
                    .map_err(|_| late())?,
            };
            settle.outcome(confirmed.map(confirms::unpaired).map_err(Failure::Confirm))
        });
        match poll_once(confirmation.as_mut()).await {
            Poll::Pending => Ok(confirmation),
            // Failed at once (a write error); or, at most rarely, confirmed.
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) => Ok(Box::pin(std::future::ready(Ok(())))),
        }
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
        let ch = self
            .channels
            .usable(&self.state, self.operation_timeout)
            .await?;
        let what = format!("a retry copy to queue {queue}");
        let id = properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let confirm = within(
            self.operation_timeout,
            &format!("publishing {what}"),
            &self.scrub,
            ch.channel.basic_publish(
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
        let written: Written = Box::pin(std::future::ready(Ok(confirm)));
        let rx = ch.router.follow(id, written, self.operation_timeout);
        match answer(rx, self.confirm_timeout, || what.clone(), &self.scrub).await? {
            Outcome::Acked => Ok(()),
            Outcome::Returned(_) => Err(BackendError::connection(format!("queue {queue} is gone"))),
            Outcome::Nacked => Err(BackendError::new(
                BackendErrorKind::Nacked,
                format!("the broker nacked the retry copy for queue {queue}"),
            )),
        }
    }
}
