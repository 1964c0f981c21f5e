//! Where a subscription keeps the ids of the events it has handled, so that
//! a redelivered or duplicated event is acknowledged without calling the
//! handler again.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::event::EventId;
use crate::store::StoreError;

/// A store of handled event ids, per subscription. The default is in memory
/// (`Subscription::with_dedup_window`), forgotten on a restart; a durable
/// store (`flow_events_outbox::RedbDedupStore`) keeps them across restarts.
///
/// A store that fails is not fatal: the consumer logs it and calls the
/// handler (delivery stays at-least-once).
#[async_trait]
pub trait DedupStore: Send + Sync + 'static {
    /// Whether `subscription` has handled `id` within the store's retention.
    async fn seen(&self, subscription: &str, id: EventId) -> Result<bool, StoreError>;
    /// `subscription` has handled `id` (acknowledged it).
    async fn remember(&self, subscription: &str, id: EventId) -> Result<(), StoreError>;
}

/// A shared store held by a subscription: equal when it is the same store.
#[derive(Clone)]
pub(crate) struct SharedDedupStore(pub(crate) Arc<dyn DedupStore>);

impl PartialEq for SharedDedupStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedDedupStore {}

impl fmt::Debug for SharedDedupStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DedupStore")
    }
}
