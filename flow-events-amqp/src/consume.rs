//! Subscriptions: one channel per subscription, a stream of decoded
//! deliveries, and ackers bound to that channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::backend_kit::{DeliverySource, decode_body, delivery_stream};
use flow_events_core::{
    Acker, BackendError, BackendErrorKind, DeadLetter, Decision, Delivery, DeliveryStream,
    IncomingDelivery,
};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use tokio_util::sync::CancellationToken;

use crate::delay::DelayQueues;
use crate::errors::Scrub;
use crate::publish::{LatestPublisher, Publisher};
use crate::topology::{SubscriptionTopology, short, within};
use crate::wire;

/// Everything a subscription needs from its session.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeContext {
    /// Publishes retry copies; once its session's publishing connection is
    /// gone, `latest` (the newest session's) does.
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) latest: LatestPublisher,
    pub(crate) operation_timeout: Duration,
    /// The first delay and the cap of the wait before a retry copy that
    /// could not be published is tried once more.
    pub(crate) retry_pause: (Duration, Duration),
    pub(crate) scrub: Scrub,
    pub(crate) cancel: CancellationToken,
}

/// Declares the subscription's topology on a new channel and starts consuming.
pub(crate) async fn subscribe(
    ctx: ConsumeContext,
    channel: Channel,
    topology: SubscriptionTopology,
    prefetch: u16,
    max_attempts: u32,
) -> Result<DeliveryStream, BackendError> {
    let limit = ctx.operation_timeout;
    topology.declare(&channel, limit, &ctx.scrub).await?;
    let queue = short("queue", &topology.queue)?;
    within(
        limit,
        &format!("setting prefetch {prefetch} on queue {queue}"),
        &ctx.scrub,
        channel.basic_qos(prefetch, BasicQosOptions { global: false }),
    )
    .await?;
    let consumer = within(
        limit,
        &format!("consuming from queue {queue}"),
        &ctx.scrub,
        channel.basic_consume(
            queue.clone(),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let dead_letter_queue = short("dead-letter queue", &topology.dead_letter_queue)?;
    let source = Source {
        consumer,
        queue: queue.clone(),
        settling: Arc::new(Settling {
            channel,
            queue,
            dead_letter_queue,
            max_attempts,
            delays: DelayQueues::default(),
            ctx,
        }),
    };
    Ok(delivery_stream(source))
}

/// The state of one delivery stream.
struct Source {
    consumer: Consumer,
    queue: ShortString,
    settling: Arc<Settling>,
}

/// What settling a delivery of one subscription needs.
#[derive(Debug)]
struct Settling {
    /// The consuming channel: kept open while a delivery is being handled;
    /// delay queues are declared on it.
    channel: Channel,
    /// The subscription's queue; its name is the subscription's.
    queue: ShortString,
    dead_letter_queue: ShortString,
    max_attempts: u32,
    delays: DelayQueues,
    ctx: ConsumeContext,
}

impl DeliverySource for Source {
    /// The next valid delivery; `None` when the session is closed or the
    /// channel or connection is lost.
    async fn next_delivery(&mut self) -> Option<IncomingDelivery> {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.settling.ctx.cancel.cancelled() => return None,
                next = self.consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::debug!(queue = %self.queue, error = %self.settling.ctx.scrub.clean(&e.to_string()), "consumer ended");
                    return None;
                }
                None => return None,
            };
            #[cfg(feature = "otel")]
            let exchange = delivery.exchange.clone();
            let routing_key =
                wire::original_routing_key(&delivery.properties, delivery.routing_key.as_str());
            let lapin::message::Delivery {
                delivery_tag,
                redelivered,
                properties,
                data,
                acker,
                ..
            } = delivery;
            let (attempt, redelivered) = wire::attempt(&properties, redelivered);
            let acker = AmqpAcker {
                acker,
                settling: self.settling.clone(),
                attempt,
                routing_key,
                properties,
                body: data,
            };
            let event = match decode_body(&acker.body) {
                Ok(event) => event,
                Err(reason) => {
                    tracing::warn!(
                        queue = %self.queue,
                        delivery_tag,
                        message_id = ?acker.properties.message_id().as_ref().map(|m| m.as_str()),
                        "dead-lettering a message that is not a valid event: {reason}"
                    );
                    let reason = format!("not an event: {reason}");
                    if let Err(e) = Box::new(acker).settle(Decision::Reject(reason)).await {
                        tracing::warn!(queue = %self.queue, error = %e, "could not dead-letter an invalid message");
                    }
                    continue;
                }
            };
            #[cfg(feature = "otel")]
            let span = crate::otel::process_span(
                acker.properties.headers().as_ref(),
                exchange.as_str(),
                acker.routing_key.as_str(),
                &event,
                self.queue.as_str(),
            );
            let incoming =
                IncomingDelivery::new(Delivery::new(event, redelivered, attempt), Box::new(acker));
            #[cfg(feature = "otel")]
            let incoming = crate::otel::in_span(incoming, span);
            return Some(incoming);
        }
    }
}

/// Maps lapin's "acked or not" answer: `false` means the acker was poisoned
/// (its channel is gone) or used already.
fn settled(result: Result<bool, BackendError>) -> Result<(), BackendError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(BackendError::connection(
            "the delivery's channel is closed (or it was settled already); the broker delivers it again",
        )),
        Err(e) => Err(e),
    }
}

/// Settles one delivery on the channel it came from.
struct AmqpAcker {
    acker: lapin::Acker,
    settling: Arc<Settling>,
    attempt: u32,
    /// The routing key it was first published with.
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
}

impl std::fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("queue", &self.settling.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl AmqpAcker {
    fn ctx(&self) -> &ConsumeContext {
        &self.settling.ctx
    }

    async fn ack(&self) -> Result<(), BackendError> {
        settled(
            within(
                self.ctx().operation_timeout,
                "acknowledging a delivery",
                &self.ctx().scrub,
                self.acker.ack(BasicAckOptions { multiple: false }),
            )
            .await,
        )
    }

    async fn nack(&self, requeue: bool) -> Result<(), BackendError> {
        let what = if requeue {
            "requeueing a delivery"
        } else {
            "dead-lettering a delivery"
        };
        settled(
            within(
                self.ctx().operation_timeout,
                what,
                &self.ctx().scrub,
                self.acker.nack(BasicNackOptions {
                    multiple: false,
                    requeue,
                }),
            )
            .await,
        )
    }

    /// Publishes a copy with the attempt raised, to the subscription's queue
    /// (no delay) or to the delay queue of `delay`'s tier, then acks the
    /// original.
    async fn retry(&self, delay: Option<std::time::Duration>) -> Result<(), BackendError> {
        let s = &self.settling;
        let target = match delay {
            None => s.queue.clone(),
            Some(delay) => {
                match s
                    .delays
                    .for_delay(
                        &s.channel,
                        s.queue.as_str(),
                        delay,
                        s.ctx.operation_timeout,
                        &s.ctx.scrub,
                    )
                    .await
                {
                    Ok(queue) => queue,
                    Err(e) => {
                        // Without its delay queue the retry cannot wait: put
                        // it back as it is, counted by the consumer.
                        self.nack(true).await?;
                        return Err(e);
                    }
                }
            }
        };
        let copy = wire::retry_copy(
            &self.properties,
            self.attempt.saturating_add(1),
            &self.routing_key,
        );
        let Err(first) = self.republish(&target, &copy).await else {
            return self.ack().await;
        };
        // The copy did not make it (the broker blocks publishers, the
        // publishing connection is gone). Hold the delivery a while, so that
        // it does not come back at full speed, and try once more; then put
        // it back as it is and say so: the consumer counts the attempt (the
        // broker's redelivered flag alone would not count a second one).
        let pause = self.pause();
        tracing::warn!(
            queue = %s.queue, attempt = self.attempt, ?pause, error = %first,
            "could not publish a retry copy; trying again in {pause:?}"
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = s.ctx.cancel.cancelled() => {}
        }
        match self.republish(&target, &copy).await {
            Ok(()) => self.ack().await,
            Err(e) => {
                self.nack(true).await?;
                Err(BackendError::new(
                    BackendErrorKind::Other,
                    format!(
                        "could not publish a retry copy ({e}); the delivery was put \
                         back after {pause:?}"
                    ),
                ))
            }
        }
    }

    /// Publishes a copy saying why to the dead-letter queue, then acks the
    /// original. When the copy cannot be published, the broker dead-letters
    /// the original itself (without the reason), rather than it coming back.
    async fn dead_letter(&self, reason: String) -> Result<(), BackendError> {
        let s = &self.settling;
        let account = DeadLetter::new(
            reason,
            self.attempt,
            self.routing_key.as_str(),
            s.queue.as_str(),
        );
        let copy = wire::dead_letter_copy(&self.properties, account);
        match self.republish(&s.dead_letter_queue, &copy).await {
            Ok(()) => self.ack().await,
            Err(e) => {
                tracing::warn!(
                    queue = %s.queue, attempt = self.attempt, error = %e,
                    "could not publish the dead letter with its reason; the broker dead-letters \
                     the message without it"
                );
                self.nack(false).await
            }
        }
    }

    /// Publishes a copy to `queue` through the session's publisher, or the
    /// newest session's if this one's is gone.
    async fn republish(
        &self,
        queue: &ShortString,
        copy: &BasicProperties,
    ) -> Result<(), BackendError> {
        let own = &self.ctx().publisher;
        let publisher = match self.ctx().latest.get() {
            Some(latest) if !own.is_usable() && latest.is_usable() => latest,
            _ => own.clone(),
        };
        publisher.republish(queue, &self.body, copy.clone()).await
    }

    /// The wait before the second try of a retry copy: doubling with the
    /// attempt from the first delay, capped.
    fn pause(&self) -> std::time::Duration {
        let (first, cap) = self.ctx().retry_pause;
        let doublings = self.attempt.saturating_sub(1).min(16);
        first.saturating_mul(1 << doublings).min(cap)
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn settle(self: Box<Self>, decision: Decision) -> Result<(), BackendError> {
        if !self.acker.usable() {
            return settled(Ok(false));
        }
        let max = self.settling.max_attempts;
        match decision {
            Decision::Ack => self.ack().await,
            Decision::Retry | Decision::RetryAfter(_) if self.attempt >= max => {
                self.dead_letter(format!("still failing after {} attempts", self.attempt))
                    .await
            }
            Decision::Retry => self.retry(None).await,
            Decision::RetryAfter(delay) => self.retry(Some(delay)).await,
            Decision::Reject(reason) => self.dead_letter(reason).await,
            other => {
                self.dead_letter(format!("unknown decision {other:?}"))
                    .await
            }
        }
    }
}
