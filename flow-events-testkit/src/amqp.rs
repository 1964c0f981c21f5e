//! What the tests of every crate that talks to RabbitMQ share (feature
//! `amqp`): a guard that deletes the queues and exchanges a test declared.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use crate::cleanup::run_to_end;

/// The longest the clean-up waits for a connection.
const CONNECT: Duration = Duration::from_secs(10);

/// Deletes, when dropped (also on a panic), the queues and exchanges a test
/// declared, on the first of its broker URLs that answers.
#[derive(Debug)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
    urls: Vec<String>,
}

impl Cleanup {
    /// A clean-up on the broker at `url`.
    pub fn new(url: &str) -> Self {
        Self::on(&[url])
    }

    /// A clean-up on the broker at the first of `urls` that answers (the
    /// nodes of a cluster, say).
    pub fn on(urls: &[&str]) -> Self {
        Self {
            queues: Vec::new(),
            exchanges: Vec::new(),
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    /// Deletes the queue `name` at the end.
    pub fn queue(&mut self, name: &str) -> &mut Self {
        self.queues.push(name.to_owned());
        self
    }

    /// Deletes the exchange `name` at the end.
    pub fn exchange(&mut self, name: &str) -> &mut Self {
        self.exchanges.push(name.to_owned());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        if queues.is_empty() && exchanges.is_empty() {
            return;
        }
        let urls = std::mem::take(&mut self.urls);
        run_to_end(async move {
            let Some(conn) = first_answering(&urls).await else {
                eprintln!("clean-up: no broker answers; {queues:?} and {exchanges:?} are left");
                return;
            };
            // A channel for each deletion: a refused one closes its channel.
            for q in queues {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            for x in exchanges {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "cleanup".into()).await;
        });
    }
}

/// A connection to the first of `urls` that answers within [`CONNECT`].
async fn first_answering(urls: &[String]) -> Option<Connection> {
    for url in urls {
        let connecting = Connection::connect(url, ConnectionProperties::default());
        if let Ok(Ok(conn)) = tokio::time::timeout(CONNECT, connecting).await {
            return Some(conn);
        }
    }
    None
}
