//! The in-process broker and the handle that inspects and steers it.

use std::fmt;
use std::sync::Arc;

use flow_events_core::Event;

use crate::backend::MemoryBackend;
use crate::state::Shared;

/// A handle to one in-process broker. Clones share the broker; it lives until
/// the last handle, backend and session is dropped.
///
/// Every subscription name is one durable queue, declared by its first
/// subscriber and kept (with its messages) while no consumer is attached.
/// Topic routing follows AMQP: a queue is bound to every pattern it was
/// subscribed with, and an event goes to every queue with a matching binding.
///
/// For tests it can be taken down and brought up again, and its queues
/// inspected.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl MemoryBroker {
    /// A new broker, up, with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend connecting to this broker.
    pub fn backend(&self) -> MemoryBackend {
        MemoryBackend::new(self)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the broker is up.
    pub fn is_up(&self) -> bool {
        self.shared.lock().is_up()
    }

    /// Takes the broker down, as if it had crashed: every open session is lost
    /// (its `closed()` resolves with a connection error, its streams end, its
    /// unsettled deliveries go back to their queues flagged as redelivered) and
    /// connecting fails until [`MemoryBroker::bring_up`]. Queues and their
    /// messages survive.
    pub fn take_down(&self) {
        self.shared.lock().take_down();
    }

    /// Brings the broker back up: connecting works again.
    pub fn bring_up(&self) {
        self.shared.lock().bring_up();
    }

    /// Messages of the subscription `name` waiting for a consumer (0 if there
    /// is no such queue). Deliveries not yet settled are not counted; see
    /// [`MemoryBroker::unacked_len`].
    pub fn queue_len(&self, name: &str) -> usize {
        self.shared.lock().ready_len(name)
    }

    /// Deliveries of the subscription `name` handed to a consumer and not yet
    /// settled.
    pub fn unacked_len(&self, name: &str) -> usize {
        self.shared.lock().unacked_len(name)
    }

    /// Consumers attached to the subscription `name`.
    pub fn consumer_count(&self, name: &str) -> usize {
        self.shared.lock().consumer_count(name)
    }

    /// Whether the subscription `name` has a queue (it was subscribed once).
    pub fn has_queue(&self, name: &str) -> bool {
        self.shared.lock().has_queue(name)
    }

    /// The events dead-lettered on the subscription `name`, oldest first, each
    /// with the `x-flow-*` headers saying why (see
    /// [`flow_events_core::dead_letter`]).
    pub fn dead_letters(&self, name: &str) -> Vec<Event> {
        let dead = self.shared.lock().dead_letters(name);
        dead.iter().map(|e| Event::clone(e)).collect()
    }

    /// Events accepted by `send` since the broker was made, routed or not.
    pub fn published_count(&self) -> u64 {
        self.shared.lock().published()
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.shared.lock().session_count()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (up, sessions) = {
            let state = self.shared.lock();
            (state.is_up(), state.session_count())
        };
        f.debug_struct("MemoryBroker")
            .field("up", &up)
            .field("sessions", &sessions)
            .finish_non_exhaustive()
    }
}
