//! Subscriptions: one channel per subscription, a stream of decoded
//! deliveries, and ackers bound to that channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Acker, BackendError, BackendErrorKind, Decision, Delivery, DeliveryStream, IncomingDelivery,
    QueueKind,
};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use tokio_util::sync::CancellationToken;

use crate::errors::Scrub;
use crate::publish::{LatestPublisher, Publisher};
use crate::topology::{SubscriptionTopology, short, within};
use crate::wire;

/// How a retry puts the event back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryMode {
    /// Classic queues: publish a copy with the attempt header raised to the
    /// queue, then ack the original.
    Republish,
    /// Quorum queues: nack with requeue; the broker counts in `x-delivery-count`.
    Requeue,
}

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
    let retry = match topology.kind {
        QueueKind::Quorum => RetryMode::Requeue,
        _ => RetryMode::Republish,
    };
    let source = Source {
        consumer,
        channel,
        queue,
        retry,
        max_attempts,
        ctx,
    };
    Ok(
        futures_util::stream::unfold(source, |mut source| async move {
            let next = source.next().await?;
            Some((next, source))
        })
        .boxed(),
    )
}

/// The state of one delivery stream.
struct Source {
    consumer: Consumer,
    channel: Channel,
    queue: ShortString,
    retry: RetryMode,
    max_attempts: u32,
    ctx: ConsumeContext,
}

impl Source {
    /// The next valid delivery; `None` when the session is closed or the
    /// channel or connection is lost.
    async fn next(&mut self) -> Option<IncomingDelivery> {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return None,
                next = self.consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::debug!(queue = %self.queue, error = %self.ctx.scrub.clean(&e.to_string()), "consumer ended");
                    return None;
                }
                None => return None,
            };
            #[cfg(feature = "otel")]
            let (exchange, routing_key) = (delivery.exchange.clone(), delivery.routing_key.clone());
            let lapin::message::Delivery {
                delivery_tag,
                redelivered,
                properties,
                data,
                acker,
                ..
            } = delivery;
            let event = match wire::decode(&data) {
                Ok(event) => event,
                Err(reason) => {
                    tracing::warn!(
                        queue = %self.queue,
                        delivery_tag,
                        message_id = ?properties.message_id().as_ref().map(|m| m.as_str()),
                        "dead-lettering a message that is not a valid event: {reason}"
                    );
                    let nack = acker.nack(BasicNackOptions {
                        multiple: false,
                        requeue: false,
                    });
                    if let Err(e) = settled(
                        within(
                            self.ctx.operation_timeout,
                            "rejecting an invalid message",
                            &self.ctx.scrub,
                            nack,
                        )
                        .await,
                    ) {
                        tracing::warn!(queue = %self.queue, error = %e, "could not reject an invalid message");
                    }
                    continue;
                }
            };
            let (attempt, redelivered) = wire::attempt(&properties, redelivered);
            #[cfg(feature = "otel")]
            let span = crate::otel::process_span(
                properties.headers().as_ref(),
                exchange.as_str(),
                routing_key.as_str(),
                &event,
                self.queue.as_str(),
            );
            let acker = AmqpAcker {
                acker,
                _channel: self.channel.clone(),
                queue: self.queue.clone(),
                retry: self.retry,
                attempt,
                max_attempts: self.max_attempts,
                properties,
                // Only a republished retry needs the body again.
                body: if self.retry == RetryMode::Republish {
                    data
                } else {
                    Vec::new()
                },
                ctx: self.ctx.clone(),
            };
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
    /// Keeps the channel open while the delivery is being handled.
    _channel: Channel,
    queue: ShortString,
    retry: RetryMode,
    attempt: u32,
    max_attempts: u32,
    properties: BasicProperties,
    body: Vec<u8>,
    ctx: ConsumeContext,
}

impl std::fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl AmqpAcker {
    async fn ack(&self) -> Result<(), BackendError> {
        settled(
            within(
                self.ctx.operation_timeout,
                "acknowledging a delivery",
                &self.ctx.scrub,
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
                self.ctx.operation_timeout,
                what,
                &self.ctx.scrub,
                self.acker.nack(BasicNackOptions {
                    multiple: false,
                    requeue,
                }),
            )
            .await,
        )
    }

    async fn retry(&self) -> Result<(), BackendError> {
        match self.retry {
            RetryMode::Requeue => self.nack(true).await,
            RetryMode::Republish => {
                let copy = wire::with_attempt(&self.properties, self.attempt.saturating_add(1));
                let Err(first) = self.republish(&copy).await else {
                    return self.ack().await;
                };
                // The copy did not make it (the broker blocks publishers, the
                // publishing connection is gone). Hold the delivery a while,
                // so that it does not come back at full speed, and try once
                // more; then put it back as it is and say so: the consumer
                // counts the attempt (the broker's redelivered flag alone
                // would not count a second one).
                let delay = self.pause();
                tracing::warn!(
                    queue = %self.queue, attempt = self.attempt, ?delay, error = %first,
                    "could not publish a retry copy; trying again in {delay:?}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.ctx.cancel.cancelled() => {}
                }
                match self.republish(&copy).await {
                    Ok(()) => self.ack().await,
                    Err(e) => {
                        self.nack(true).await?;
                        Err(BackendError::new(
                            BackendErrorKind::Other,
                            format!(
                                "could not publish a retry copy ({e}); the delivery was put \
                                 back after {delay:?}"
                            ),
                        ))
                    }
                }
            }
        }
    }

    /// Publishes the retry copy through the session's publisher, or the
    /// newest session's if this one's is gone.
    async fn republish(&self, copy: &BasicProperties) -> Result<(), BackendError> {
        let own = &self.ctx.publisher;
        let publisher = match self.ctx.latest.get() {
            Some(latest) if !own.is_usable() && latest.is_usable() => latest,
            _ => own.clone(),
        };
        publisher
            .republish(&self.queue, &self.body, copy.clone())
            .await
    }

    /// The wait before the second try of a retry copy: doubling with the
    /// attempt from the first delay, capped.
    fn pause(&self) -> Duration {
        let (first, cap) = self.ctx.retry_pause;
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
        match decision {
            Decision::Ack => self.ack().await,
            Decision::Reject => self.nack(false).await,
            Decision::Retry if self.attempt >= self.max_attempts => {
                tracing::info!(
                    queue = %self.queue, attempt = self.attempt,
                    "retry asked after the last allowed attempt; dead-lettering the delivery"
                );
                self.nack(false).await
            }
            Decision::Retry => self.retry().await,
        }
    }
}
