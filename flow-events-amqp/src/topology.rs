//! Exchanges, queues and bindings, each declaration bounded by a timeout.

use std::future::Future;
use std::time::Duration;

use flow_events_core::{BackendError, QueueKind};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::errors::{self, Scrub};

/// Runs one broker operation within `limit`, classifying its failure.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    scrub: &Scrub,
    op: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::classify(&e, what, scrub)),
        Err(_) => Err(errors::timeout(what, limit)),
    }
}

/// An AMQP short string from a name, or a configuration error naming it.
pub(crate) fn short(what: &str, name: &str) -> Result<ShortString, BackendError> {
    ShortString::try_new(name).map_err(|_| {
        BackendError::configuration(format!(
            "{what} name is {} bytes long, the limit is 255",
            name.len()
        ))
    })
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the events exchange: durable, topic.
pub(crate) async fn declare_events_exchange(
    channel: &Channel,
    exchange: &str,
    limit: Duration,
    scrub: &Scrub,
) -> Result<(), BackendError> {
    let name = short("exchange", exchange)?;
    within(
        limit,
        &format!("declaring topic exchange {exchange}"),
        scrub,
        channel.exchange_declare(
            name,
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        ),
    )
    .await
}

/// The names and settings of one subscription's queues.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionTopology {
    pub(crate) exchange: String,
    pub(crate) queue: String,
    pub(crate) pattern: String,
    pub(crate) kind: QueueKind,
    pub(crate) dead_letter_exchange: String,
    pub(crate) dead_letter_queue: String,
    /// The subscription's maximum attempts: a quorum queue's delivery limit.
    pub(crate) max_attempts: u32,
}

/// The `x-delivery-limit` of a quorum queue whose subscription gives an
/// event `max_attempts` attempts. The broker dead-letters a message returned
/// more than that many times, so a limit of `max_attempts - 1` lets each copy
/// be delivered at most `max_attempts` times (RabbitMQ 4 would otherwise
/// apply its default of 20). Retries publish a new copy (the attempt counted
/// in a header), so the limit only stops a copy whose deliveries are never
/// settled, as a consumer that crashes on it.
pub(crate) fn delivery_limit(max_attempts: u32) -> i64 {
    i64::from(max_attempts.max(1) - 1)
}

fn queue_arguments(kind: QueueKind) -> FieldTable {
    let mut args = FieldTable::default();
    // A classic queue is declared without the argument, so that one declared
    // before (by this library or by another client) without it still matches.
    if kind == QueueKind::Quorum {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

impl SubscriptionTopology {
    /// Declares the dead-letter exchange and queue, the subscription queue
    /// (dead-lettering to the former) and its binding to the events exchange.
    pub(crate) async fn declare(
        &self,
        channel: &Channel,
        limit: Duration,
        scrub: &Scrub,
    ) -> Result<(), BackendError> {
        let exchange = short("exchange", &self.exchange)?;
        let queue = short("queue", &self.queue)?;
        let dlx = short("dead-letter exchange", &self.dead_letter_exchange)?;
        let dlq = short("dead-letter queue", &self.dead_letter_queue)?;
        let pattern = short("binding pattern", &self.pattern)?;

        within(
            limit,
            &format!("declaring dead-letter exchange {dlx}"),
            scrub,
            channel.exchange_declare(
                dlx.clone(),
                ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            ),
        )
        .await?;
        within(
            limit,
            &format!("declaring dead-letter queue {dlq}"),
            scrub,
            channel.queue_declare(dlq.clone(), durable_queue(), queue_arguments(self.kind)),
        )
        .await?;
        within(
            limit,
            &format!("binding dead-letter queue {dlq}"),
            scrub,
            channel.queue_bind(
                dlq,
                dlx.clone(),
                queue.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;

        let mut args = queue_arguments(self.kind);
        if self.kind == QueueKind::Quorum {
            args.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(delivery_limit(self.max_attempts)),
            );
        }
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(dlx.as_str())),
        );
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(queue.as_str())),
        );
        within(
            limit,
            &format!("declaring queue {queue}"),
            scrub,
            channel.queue_declare(queue.clone(), durable_queue(), args),
        )
        .await?;
        within(
            limit,
            &format!("binding queue {queue} to {exchange} with {pattern}"),
            scrub,
            channel.queue_bind(
                queue,
                exchange,
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }
}
