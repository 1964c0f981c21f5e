//! `Resilient`: the handle services publish, subscribe and monitor through;
//! its builder and start are in `builder.rs`.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::HealthReport;
use crate::monitor::{ConnectionMonitor, ConnectionState, ConnectionStatus};

use super::shared::Shared;

/// The resilience decorator over any [`Backend`](crate::Backend): publishes while connected,
/// buffers while not, reconnects with backoff, drains in order, re-subscribes.
///
/// Cheap to clone; all clones share one connection and one buffer. When the last
/// clone is dropped the supervisor stops; call [`Resilient::shutdown`] first to
/// drain what is pending.
#[derive(Clone, Debug)]
pub struct Resilient {
    pub(super) shared: Arc<Shared>,
    pub(super) owner: Arc<Owner>,
}

/// Stops the supervisor when the last `Resilient` clone goes.
#[derive(Debug)]
pub(super) struct Owner {
    cancel: CancellationToken,
    pub(super) supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Owner {
    /// The owner of the supervisor `task` of `shared`.
    pub(super) fn new(shared: &Arc<Shared>, task: tokio::task::JoinHandle<()>) -> Self {
        Self {
            cancel: shared.cancel.clone(),
            supervisor: Mutex::new(Some(task)),
            shared: shared.clone(),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.cancel.cancel();
        let pending = self.shared.lock().buffer.len();
        if pending > 0 {
            tracing::warn!(
                pending,
                "event sink dropped with {pending} pending events not delivered (call shutdown to drain them)"
            );
        }
    }
}

impl Resilient {
    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The health report for `service`; a broker down makes it `degraded`, or
    /// `unhealthy` in required mode.
    pub fn health(&self, service: &str) -> HealthReport {
        HealthReport::new(service, &self.status(), self.shared.config.required())
    }

    pub(super) async fn stop_supervisor(&self) {
        self.shared.cancel.cancel();
        let task = self
            .owner
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl ConnectionMonitor for Resilient {
    fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state_tx.subscribe()
    }

    fn status(&self) -> ConnectionStatus {
        self.shared.status()
    }
}
