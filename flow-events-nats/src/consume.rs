//! Subscriptions: a durable pull consumer per subscription, a stream of
//! decoded deliveries, and ackers that ack, nak with a delay, or
//! dead-letter and term.

use std::sync::Arc;

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use flow_events_core::backend_kit::{DeliverySource, SessionLoss, decode_body, delivery_stream};
use flow_events_core::{
    Acker, BackendError, DeadLetter, Decision, Delivery, DeliveryStream, EventType,
    IncomingDelivery, Subscription, TopicPattern,
};
use tokio_util::sync::CancellationToken;

use crate::pull::Puller;
use crate::redact::Scrub;
use crate::session::{NatsSession, Settings};
use crate::topology::{self, ConsumerSpec, within};
use crate::wire::MSG_ID_HEADER;

/// Why an event went to the dead letters.
pub const DEAD_LETTER_REASON_HEADER: &str = "Flow-Dead-Letter-Reason";
/// The subscription that dead-lettered the event.
pub const DEAD_LETTER_SUBSCRIPTION_HEADER: &str = "Flow-Subscription";
/// How often the event had been delivered to the subscription.
pub const DELIVERY_COUNT_HEADER: &str = "Flow-Delivery-Count";

/// Everything a delivery needs to be settled.
#[derive(Debug, Clone)]
struct Context {
    js: jetstream::Context,
    state: Arc<SessionLoss>,
    settings: Arc<Settings>,
    scrub: Scrub,
    subscription: Arc<str>,
    /// The subject the subscription's dead letters go to, when on.
    dead_letter_subject: Option<String>,
}

/// Makes (or finds) the subscription's consumer and starts pulling.
pub(crate) async fn subscribe(
    session: &NatsSession,
    subscription: &Subscription,
) -> Result<DeliveryStream, BackendError> {
    let settings = &session.shared.settings;
    let filter = topology::filter(&settings.prefix, subscription.pattern())?;
    let name = topology::consumer_name(subscription.name());
    let max_attempts = subscription.max_attempts();
    let spec = ConsumerSpec {
        name: name.clone(),
        filter: filter.subject.clone(),
        ack_wait: settings.ack_wait,
        // One delivery more than the handler may get: the one that finds
        // the last attempt unsettled (its consumer died) dead-letters it.
        max_deliver: i64::from(max_attempts).saturating_add(1),
        description: format!(
            "flow-events subscription {} to {}",
            subscription.name(),
            subscription.pattern()
        ),
    };
    let limit = settings.operation_timeout;
    within(limit, &format!("setting up consumer {name}"), async {
        let stream = session
            .js
            .get_stream_no_info(&settings.stream)
            .await
            .map_err(|e| {
                crate::errors::get_stream(
                    &e,
                    &format!("opening stream {}", settings.stream),
                    &session.shared.scrub,
                )
            })?;
        topology::ensure_consumer(&stream, &spec, &session.shared.scrub).await
    })
    .await?;
    let batch = usize::from(subscription.prefetch());
    let messages = within(limit, &format!("pulling from consumer {name}"), async {
        Puller::start(
            session.js.clone(),
            &settings.stream,
            &name,
            batch,
            session.closing.clone(),
        )
        .await
        .map_err(|e| {
            BackendError::connection(
                session
                    .shared
                    .scrub
                    .clean(&format!("pulling from consumer {name}: {e}")),
            )
        })
    })
    .await?;
    let ctx = Context {
        js: session.js.clone(),
        state: session.shared.state.clone(),
        settings: session.shared.settings.clone(),
        scrub: Scrub::clone(&session.shared.scrub),
        subscription: Arc::from(subscription.name()),
        dead_letter_subject: settings
            .dead_letter
            .as_ref()
            .map(|(_, prefix)| format!("{prefix}.{}", subscription.name())),
    };
    let source = Source {
        messages,
        ctx,
        pattern: (!filter.exact).then(|| subscription.pattern().clone()),
        max_attempts,
        cancel: session.cancel.child_token(),
    };
    Ok(delivery_stream(source))
}

/// The state of one subscription's delivery stream.
struct Source {
    messages: Puller,
    ctx: Context,
    /// The pattern to match deliveries against, when the filter is wider.
    pattern: Option<TopicPattern>,
    max_attempts: u32,
    cancel: CancellationToken,
}

impl DeliverySource for Source {
    /// The next delivery for the handler; `None` when the session is lost
    /// or closed.
    async fn next_delivery(&mut self) -> Option<IncomingDelivery> {
        loop {
            // The stream ends with its session: a message pulled after the
            // loss (async-nats may have reconnected underneath) could not be
            // settled, and the next session pulls it again.
            let item = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return None,
                _ = self.ctx.state.wait_lost() => return None,
                item = self.messages.next() => item,
            };
            let message = match item {
                Ok(message) => message,
                Err(e) => {
                    let error = BackendError::connection(self.ctx.scrub.clean(&format!(
                        "consumer of subscription {}: {e}",
                        self.ctx.subscription
                    )));
                    if self.ctx.state.set_lost(&error) {
                        tracing::warn!(error = %error, "subscription ended; the session is given up");
                    }
                    return None;
                }
            };
            if let Some(delivery) = self.accept(message).await {
                return Some(delivery);
            }
        }
    }
}

impl Source {
    /// A delivery for the handler, or `None` when the message was settled
    /// here (not matching the pattern, not an event, out of attempts).
    async fn accept(&self, message: jetstream::Message) -> Option<IncomingDelivery> {
        let delivered = message
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1)
            .max(1);
        if let Some(pattern) = &self.pattern {
            let event_type = message
                .subject
                .as_str()
                .strip_prefix(self.ctx.settings.prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|t| EventType::new(t).ok());
            if !event_type.is_some_and(|t| pattern.matches(&t)) {
                // Taken by the wider filter only: not for this subscription.
                if let Err(e) = message.ack().await {
                    tracing::debug!(error = %e, "could not ack a delivery outside the pattern");
                }
                return None;
            }
        }
        let event = match decode_body(&message.payload) {
            Ok(event) => event,
            Err(reason) => {
                tracing::error!(
                    subscription = %self.ctx.subscription, subject = %message.subject,
                    "a message that is not an event, dead-lettering it: {reason}"
                );
                let _ = settle(
                    &self.ctx,
                    &message,
                    Decision::reject(format!("not an event: {reason}")),
                    delivered,
                )
                .await;
                return None;
            }
        };
        if delivered > self.max_attempts {
            tracing::warn!(
                subscription = %self.ctx.subscription, id = %event.id(), event_type = %event.event_type(),
                delivered, "delivered {delivered} times, more than the subscription's {} attempts \
                (its last delivery was not settled): dead-lettering it", self.max_attempts
            );
            let _ = settle(
                &self.ctx,
                &message,
                Decision::reject(format!(
                    "attempts exhausted: delivered {delivered} times, its last delivery not settled"
                )),
                delivered,
            )
            .await;
            return None;
        }
        let delivery = Delivery::new(event, delivered > 1, delivered);
        Some(IncomingDelivery::new(
            delivery,
            Box::new(NatsAcker {
                message,
                ctx: self.ctx.clone(),
                delivered,
            }),
        ))
    }
}

/// Settles one delivery on the connection it came from.
struct NatsAcker {
    message: jetstream::Message,
    ctx: Context,
    delivered: u32,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn settle(self: Box<Self>, decision: Decision) -> Result<(), BackendError> {
        if let Some(lost) = self.ctx.state.lost() {
            // Its connection is gone; JetStream delivers it again after ack_wait.
            return Err(lost);
        }
        settle(&self.ctx, &self.message, decision, self.delivered).await
    }
}

/// Acks, naks with the retry delay (or the one asked for), or dead-letters
/// and terms `message`.
async fn settle(
    ctx: &Context,
    message: &jetstream::Message,
    decision: Decision,
    delivered: u32,
) -> Result<(), BackendError> {
    let kind = match decision {
        Decision::Ack => AckKind::Ack,
        Decision::Retry => AckKind::Nak(Some(ctx.settings.retry_delay)),
        Decision::RetryAfter(delay) => AckKind::Nak(Some(delay)),
        other => {
            let reason = match other {
                Decision::Reject(reason) => reason,
                unknown => format!("unknown decision {unknown:?}"),
            };
            if let Err(e) = dead_letter(ctx, message, &reason, delivered).await {
                // Not terminated without its copy: it comes again later.
                let _ = message
                    .ack_with(AckKind::Nak(Some(ctx.settings.retry_delay)))
                    .await;
                return Err(e);
            }
            AckKind::Term
        }
    };
    message.ack_with(kind).await.map_err(|e| {
        BackendError::connection(ctx.scrub.clean(&format!("settling a delivery: {e}")))
    })
}

/// Publishes a copy of `message` to the subscription's dead letters and
/// waits for the stream's ack (nothing to do when they are off).
async fn dead_letter(
    ctx: &Context,
    message: &jetstream::Message,
    reason: &str,
    delivered: u32,
) -> Result<(), BackendError> {
    let Some(subject) = &ctx.dead_letter_subject else {
        return Ok(());
    };
    let mut headers = message.headers.clone().unwrap_or_default();
    let original_id = headers
        .get(MSG_ID_HEADER)
        .map(|v| v.as_str().to_owned())
        .or_else(|| message.info().ok().map(|i| i.stream_sequence.to_string()))
        .unwrap_or_default();
    // Dead-lettering the same event twice (a crash between the copy and the
    // term) leaves one copy: the dead-letter stream drops the second.
    headers.insert(
        MSG_ID_HEADER,
        format!("{original_id}:{}", ctx.subscription).as_str(),
    );
    let routing_key = message
        .subject
        .as_str()
        .strip_prefix(ctx.settings.prefix.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(message.subject.as_str());
    // JetStream redelivers the same message, so the time of the first
    // failure is not known here: the headers give the time of the last.
    let account = DeadLetter::new(reason, delivered, routing_key, &*ctx.subscription);
    for (name, value) in account.headers() {
        headers.insert(name, value.as_str());
    }
    let reason = account.headers()[0].1.clone();
    headers.insert(DEAD_LETTER_REASON_HEADER, reason.as_str());
    headers.insert(DEAD_LETTER_SUBSCRIPTION_HEADER, &*ctx.subscription);
    headers.insert(DELIVERY_COUNT_HEADER, delivered.to_string().as_str());
    let what = format!("dead-lettering {original_id} to {subject}");
    let limit = ctx.settings.publish_timeout;
    within(limit, &what, async {
        let ack = ctx
            .js
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await
            .map_err(|e| crate::errors::publish(&e, &what, &ctx.scrub, limit))?;
        ack.await
            .map_err(|e| crate::errors::publish(&e, &what, &ctx.scrub, limit))?;
        Ok(())
    })
    .await
}
