//! The [`Backend`] over a memory broker.

use std::sync::Arc;

use async_trait::async_trait;
use flow_events_core::{Backend, BackendError, BackendInfo, Session};

use crate::broker::MemoryBroker;
use crate::session::MemorySession;

/// A [`Backend`] whose sessions connect to one [`MemoryBroker`].
///
/// Connecting succeeds at once while the broker is up and fails with a
/// connection error while it is down.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    broker: MemoryBroker,
}

impl MemoryBackend {
    /// A backend connecting to `broker`.
    pub fn new(broker: &MemoryBroker) -> Self {
        Self {
            broker: broker.clone(),
        }
    }

    /// The broker it connects to.
    pub fn broker(&self) -> &MemoryBroker {
        &self.broker
    }

    /// Opens a session; [`Backend::connect`] without the type erasure.
    pub fn open(&self) -> Result<MemorySession, BackendError> {
        let shared = self.broker.shared();
        let core = shared.lock().open_session()?;
        Ok(MemorySession::new(core, Arc::clone(shared)))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        Ok(Arc::new(self.open()?))
    }

    fn info(&self) -> BackendInfo {
        BackendInfo::new("memory", "memory://").with_display_name("in-memory broker")
    }
}
