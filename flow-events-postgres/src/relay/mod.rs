//! The relay: publishes committed outbox rows through a resilient sink, and
//! deletes each row only on the broker's confirm.

mod listen;
mod measure;
mod status;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::Resilient;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::tables::Tables;

pub use status::{RelayState, RelayStatus};

/// Builds a [`Relay`].
#[derive(Debug)]
pub struct RelayBuilder {
    pool: PgPool,
    tables: Tables,
    sink: Resilient,
    settings: Settings,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) status_interval: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_nacks: i32,
}

impl RelayBuilder {
    /// The relay's name in logs and status. Default: `relay`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Rows taken, published and deleted together (their confirms are in
    /// flight at once). Default: 512.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.settings.batch_size = n.max(1);
        self
    }

    /// How often the table is read when no notification arrives (the
    /// fallback for a lost notification or an outbox without notify).
    /// Default: 1 s.
    pub fn with_poll_interval(mut self, d: Duration) -> Self {
        self.settings.poll_interval = d;
        self
    }

    /// How often rows waiting and the oldest age are measured. Default: 1 s.
    pub fn with_status_interval(mut self, d: Duration) -> Self {
        self.settings.status_interval = d;
        self
    }

    /// Backoff after a failed round: from `min` doubling up to `max`, with
    /// full jitter. Default: 100 ms to 10 s.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.min_backoff = min;
        self.settings.max_backoff = max.max(min);
        self
    }

    /// Nacks of one row before it is marked dead. Default: 5.
    pub fn with_max_nacks(mut self, n: u32) -> Self {
        self.settings.max_nacks = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        self
    }

    /// Starts the relay task. Must be called within a tokio runtime.
    pub fn start(self) -> Relay {
        let cancel = CancellationToken::new();
        let (status_tx, _) = watch::channel(RelayStatus::new(self.settings.name.clone()));
        let status_tx = Arc::new(status_tx);
        let ctx = worker::Ctx::new(
            self.pool,
            &self.tables,
            self.sink,
            self.settings,
            status_tx.clone(),
            cancel.clone(),
        );
        let task = tokio::spawn(worker::run(ctx));
        Relay {
            status: status_tx,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }
}

/// A running relay. Stops when dropped (after the batch in progress), or
/// with [`Relay::shutdown`].
///
/// Delivery is at-least-once: a row is deleted in the same transaction that
/// held its lock while its event was published, after the broker's confirm;
/// a crash between the confirm and that commit publishes it again. Several
/// relays may share a table: each takes rows with `FOR UPDATE SKIP LOCKED`,
/// so no row is published by two relays at once.
///
/// Order: a relay takes the committed rows in id order. An event enqueued
/// by a transaction that began after another's commit has a larger id, so
/// such causally ordered events go out in commit order; events of
/// transactions whose commits overlapped go out in id order. A row never
/// waits for a smaller id that is not committed yet (no "id greater than the
/// last seen" cursor: a row that commits late is published when it becomes
/// visible). A row whose publish failed (nack, timeout) is published again
/// after the rows confirmed in the same batch.
#[derive(Debug)]
pub struct Relay {
    status: Arc<watch::Sender<RelayStatus>>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    /// A builder for a relay publishing the outbox of `tables`, read through
    /// `pool`, to `sink`. The relay uses up to three connections of the
    /// pool at once: one to listen for notifications, and one for each of the
    /// two batches it may hold (one in flight, the next being sent), plus one
    /// now and then to measure the table.
    pub fn builder(pool: PgPool, tables: &Tables, sink: Resilient) -> RelayBuilder {
        RelayBuilder {
            pool,
            tables: tables.clone(),
            sink,
            settings: Settings {
                name: "relay".to_owned(),
                batch_size: 512,
                poll_interval: Duration::from_secs(1),
                status_interval: Duration::from_secs(1),
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                max_nacks: 5,
            },
        }
    }

    /// A snapshot of the relay.
    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of the status.
    pub fn watch_status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Stops the relay after the batch in progress (bounded by the sink's
    /// publish timeout) and waits for it.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
