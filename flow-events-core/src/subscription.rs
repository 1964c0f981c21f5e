//! A named, durable subscription to a pattern of event types.

use std::sync::Arc;

use crate::dedup::{DedupStore, SharedDedupStore};
use crate::error::SubscribeError;
use crate::pattern::TopicPattern;
use crate::retry::RetryPolicy;

/// The kind of queue a backend should use for a subscription (AMQP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QueueKind {
    /// A classic durable queue.
    #[default]
    Classic,
    /// A quorum queue (replicated; counts deliveries itself).
    Quorum,
}

/// A named durable subscription: every consumer with the same name shares the
/// work (competing consumers); different names each get every matching event.
///
/// ```
/// use flow_events_core::{Subscription, TopicPattern};
/// let sub = Subscription::new("billing", TopicPattern::new("order.*").unwrap())
///     .unwrap()
///     .with_max_attempts(3)
///     .with_prefetch(50);
/// assert_eq!(sub.name(), "billing");
/// assert!(Subscription::new("has space", TopicPattern::all()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    name: String,
    pattern: TopicPattern,
    prefetch: u16,
    retry: RetryPolicy,
    queue_kind: Option<QueueKind>,
    dedup_window: usize,
    dedup_store: Option<SharedDedupStore>,
    concurrency: usize,
}

impl Subscription {
    /// A subscription named `name` (1 to 200 bytes of letters, digits, `.`, `-`,
    /// `_` or `:`) to events matching `pattern`.
    pub fn new(name: impl Into<String>, pattern: TopicPattern) -> Result<Self, SubscribeError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > 200
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(SubscribeError::Invalid(format!(
                "subscription name {name:?} must be 1 to 200 bytes of letters, digits, '.', '-', '_' or ':'"
            )));
        }
        Ok(Self {
            name,
            pattern,
            prefetch: 32,
            retry: RetryPolicy::immediate(),
            queue_kind: None,
            dedup_window: 0,
            dedup_store: None,
            concurrency: 1,
        })
    }

    /// Deliveries the broker may send ahead of acks, at least 1. Default: 32.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Deliveries of one event before a `retry` becomes a `reject` (dead-letter),
    /// at least 1: the retry policy's [`RetryPolicy::with_max_attempts`].
    /// Default: 5.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.retry = self.retry.with_max_attempts(n);
        self
    }

    /// How a retried event waits before it comes again, and how many
    /// attempts it gets (this sets the maximum attempts too). Default:
    /// [`RetryPolicy::immediate`].
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The queue kind. Default: none asked for, the backend's default (the
    /// AMQP backend's is classic unless its options say otherwise).
    pub fn with_queue_kind(mut self, kind: QueueKind) -> Self {
        self.queue_kind = Some(kind);
        self
    }

    /// Remember the ids of the last `n` handled events and acknowledge a repeat
    /// without calling the handler again. Default: 0 (off).
    pub fn with_dedup_window(mut self, n: usize) -> Self {
        self.dedup_window = n;
        self
    }

    /// Keep the ids of handled events in `store` (a durable one survives a
    /// restart) and acknowledge a repeat without calling the handler again;
    /// the store's own retention and bound apply, and the in-memory window
    /// is not used. Default: none.
    pub fn with_dedup_store(mut self, store: Arc<dyn DedupStore>) -> Self {
        self.dedup_store = Some(SharedDedupStore(store));
        self
    }

    /// Handler calls at once for this consumer, at least 1. With more than one,
    /// order is no longer kept. Default: 1.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The pattern.
    pub fn pattern(&self) -> &TopicPattern {
        &self.pattern
    }
    /// The prefetch.
    pub fn prefetch(&self) -> u16 {
        self.prefetch
    }
    /// The maximum attempts.
    pub fn max_attempts(&self) -> u32 {
        self.retry.max_attempts()
    }
    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
    /// The queue kind asked for; `None` leaves it to the backend.
    pub fn queue_kind(&self) -> Option<QueueKind> {
        self.queue_kind
    }
    /// The de-duplication window (0: off).
    pub fn dedup_window(&self) -> usize {
        self.dedup_window
    }
    /// The de-duplication store, if one was given.
    pub fn dedup_store(&self) -> Option<&Arc<dyn DedupStore>> {
        self.dedup_store.as_ref().map(|s| &s.0)
    }
    /// Handler calls at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
}
