//! The exchange and queue of one benchmark run: declared at the start, purged
//! between measurements, deleted at the end.

use std::sync::Mutex;

use anyhow::Context;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::payload::EVENT_TYPE;

/// A durable topic exchange (the type flow-events declares) and one durable
/// queue bound to it with the benchmark's routing key.
///
/// Its admin connection is opened again when it was lost (other tests on a
/// shared broker may close every connection).
#[derive(Debug)]
pub(crate) struct Topology {
    url: String,
    admin: Mutex<(Connection, Channel)>,
    pub(crate) exchange: String,
    pub(crate) queue: String,
}

async fn open(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("flow-events-bench admin".into()),
    )
    .await
    .with_context(|| format!("connecting to the broker at {}", redact(url)))?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

impl Topology {
    /// Declares `flow-events-bench.<run_id>` (exchange and queue) on the broker at `url`.
    pub(crate) async fn create(url: &str, run_id: &str) -> anyhow::Result<Self> {
        let (conn, channel) = open(url).await?;
        let name = format!("flow-events-bench.{run_id}");
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the exchange")?;
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the queue")?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                EVENT_TYPE.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the queue")?;
        Ok(Self {
            url: url.to_owned(),
            admin: Mutex::new((conn, channel)),
            exchange: name.clone(),
            queue: name,
        })
    }

    /// The admin channel, opened again if it was lost.
    async fn channel(&self) -> anyhow::Result<Channel> {
        {
            let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
            if admin.1.status().connected() {
                return Ok(admin.1.clone());
            }
        }
        let (conn, channel) = open(&self.url).await?;
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = (conn, channel.clone());
        Ok(channel)
    }

    /// Empties the queue, so that every measurement starts from the same broker state.
    pub(crate) async fn purge(&self) -> anyhow::Result<u32> {
        Ok(self
            .channel()
            .await?
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await?)
    }

    /// Messages in the queue now.
    pub(crate) async fn depth(&self) -> anyhow::Result<u32> {
        let q = self
            .channel()
            .await?
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(q.message_count())
    }

    /// Deletes the queue and the exchange, and closes the connection.
    pub(crate) async fn delete(self) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .context("deleting the queue")?;
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .context("deleting the exchange")?;
        let conn = self.admin.into_inner().unwrap_or_else(|e| e.into_inner()).0;
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    }
}

/// `url` with its password hidden.
pub(crate) fn redact(url: &str) -> String {
    flow_events_core::redact_url(url)
}
