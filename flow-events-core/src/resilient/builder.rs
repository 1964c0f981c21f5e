//! [`ResilientBuilder`]: the decorator's settings and store, and `start`,
//! which loads what the store kept and spawns the supervisor.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::backend::Backend;
use crate::config::{Config, ENV_REQUIRED};
use crate::error::StartError;
use crate::monitor::ConnectionState;
use crate::store::PendingStore;

use super::buffer::Pending;
use super::service::{Owner, Resilient};
use super::shared::Shared;
use super::{metrics, supervisor};

/// Builds a [`Resilient`].
pub struct ResilientBuilder {
    backend: Arc<dyn Backend>,
    config: Config,
    store: Option<Arc<dyn PendingStore>>,
}

impl std::fmt::Debug for ResilientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientBuilder")
            .field("backend", &self.backend.info())
            .field("config", &self.config)
            .field("store", &self.store.as_ref().map(|s| s.describe()))
            .finish()
    }
}

impl Resilient {
    /// A builder for a decorator over `backend` (an `Arc<dyn Backend>`,
    /// chosen at run time, is a backend too).
    pub fn builder(backend: impl Backend) -> ResilientBuilder {
        ResilientBuilder {
            backend: Arc::new(backend),
            config: Config::default(),
            store: None,
        }
    }
}

impl ResilientBuilder {
    /// The settings (retries, backoff, buffer bound, overflow policy, required
    /// mode, timeouts). Default: [`Config::default`].
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Keeps pending events in `store` as well as in memory: with a durable
    /// store, `publish` answers `Buffered` once the event is stored, and what a
    /// previous run left is published first, in order. A store behind an
    /// `Arc` is a store too. Default: none.
    pub fn with_store(mut self, store: impl PendingStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Starts the supervisor. In optional mode this returns at once, whether or
    /// not the broker is there. In required mode it waits for the first
    /// connection and fails once the configured retries are spent.
    ///
    /// Must be called within a tokio runtime.
    pub async fn start(self) -> Result<Resilient, StartError> {
        let shared = Arc::new(Shared::new(self.backend, self.config, self.store));
        recover(&shared).await?;
        let mut state = shared.state_tx.subscribe();
        let task = tokio::spawn(metrics::with_gauges(
            &shared,
            supervisor::run(shared.clone()),
        ));
        let resilient = Resilient {
            owner: Arc::new(Owner::new(&shared, task)),
            shared,
        };
        if resilient.shared.config.required() {
            let reached = state
                .wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::Failed))
                .await
                .map(|s| *s);
            if !matches!(reached, Ok(ConnectionState::Connected)) {
                let (attempts, last_error) = {
                    let mut inner = resilient.shared.lock();
                    (inner.reconnect_attempts, inner.connect_error.take())
                };
                resilient.stop_supervisor().await;
                let broker = resilient.shared.info.display_name;
                let why = last_error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::error!(
                    attempts,
                    "{broker} is required ({ENV_REQUIRED}=true) but unavailable after {attempts} attempts: {why}",
                );
                return Err(StartError::BrokerUnavailable {
                    broker,
                    attempts,
                    last_error,
                });
            }
        }
        Ok(resilient)
    }
}

/// Loads what the store kept from the last run into the buffer, in order.
async fn recover(shared: &Shared) -> Result<(), StartError> {
    let Some(store) = &shared.store else {
        return Ok(());
    };
    let recovered = store.recover().await.map_err(|e| {
        tracing::error!(store = %store.describe(), error = %e, "cannot open the pending events store: {e}");
        StartError::Store(e)
    })?;
    match (&recovered.problem, recovered.unreadable) {
        (Some(problem), 0) => tracing::error!(
            store = %store.describe(),
            "part of the pending events store could not be read: {problem}"
        ),
        (Some(problem), n) => tracing::error!(
            store = %store.describe(), unreadable = n,
            "{n} stored events could not be read and are lost: {problem}"
        ),
        (None, _) => {}
    }
    shared
        .counters
        .unreadable
        .store(recovered.unreadable, Ordering::Relaxed);
    let count = recovered.events.len();
    let now = Instant::now();
    let wall = chrono::Utc::now();
    let mut inner = shared.lock();
    if recovered.unreadable > 0 || recovered.problem.is_some() {
        shared.note_loss(&mut inner);
        inner.last_error = recovered.problem.clone();
    }
    let counts_bytes = inner.buffer.counts_bytes();
    for stored in recovered.events {
        let age = (wall - stored.stored_at).to_std().unwrap_or_default();
        let size = if counts_bytes {
            stored.event.encoded_len()
        } else {
            0
        };
        let since = now.checked_sub(age).unwrap_or(now);
        inner.buffer.recover(Pending::new(
            stored.seq,
            Arc::new(stored.event),
            since,
            size,
        ));
    }
    if count > 0 {
        tracing::info!(
            store = %store.describe(), pending = count,
            "recovered {count} pending events from the last run; they are published first"
        );
    }
    Ok(())
}
