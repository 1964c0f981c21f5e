//! Subscriptions: one channel per subscription, a stream of decoded
//! deliveries, and ackers bound to that channel.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Acker, BackendError, Decision, Delivery, DeliveryStream, IncomingDelivery, QueueKind,
};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use tokio_util::sync::CancellationToken;

use crate::errors::Scrub;
use crate::publish::Publisher;
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
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) operation_timeout: Duration,
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
            #[cfg(feature = "trace-context")]
            let scope = crate::trace::HandleScope::new(&properties, &event, self.queue.as_str());
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
            #[cfg(feature = "trace-context")]
            let incoming = incoming.with_scope(scope);
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
                match self
                    .ctx
                    .publisher
                    .republish(&self.queue, &self.body, copy)
                    .await
                {
                    Ok(()) => self.ack().await,
                    Err(e) => {
                        // The copy did not make it: put the original back as it
                        // is; the broker flags it redelivered, which still
                        // counts one more attempt.
                        tracing::warn!(queue = %self.queue, error = %e, "could not publish a retry copy; requeueing the delivery instead");
                        self.nack(true).await
                    }
                }
            }
        }
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
