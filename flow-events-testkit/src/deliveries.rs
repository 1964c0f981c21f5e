//! Deliveries handed over to the test, for tests that look at what a
//! subscription received, one delivery at a time and in order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{
    Decision, Delivery, Event, EventId, EventSource, Handler, Subscription, SubscriptionHandle,
    handler_fn,
};
use tokio::sync::mpsc;

/// What a handler from [`Deliveries::handler`] received, in the order it
/// received it.
#[derive(Debug)]
pub struct Deliveries(mpsc::UnboundedReceiver<Delivery>);

impl Deliveries {
    /// A handler that hands each delivery over to the returned `Deliveries`
    /// and answers `decision`.
    pub fn handler(decision: Decision) -> (Arc<dyn Handler>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = handler_fn(move |d: Delivery| {
            // The test may have stopped reading: the delivery is still answered.
            let _ = tx.send(d);
            let decision = decision.clone();
            async move { decision }
        });
        (handler, Self(rx))
    }

    /// The next delivery, which must come within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Delivery {
        tokio::time::timeout(limit, self.0.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery within {limit:?}"))
            .unwrap_or_else(|| panic!("the handler is gone while a delivery was awaited"))
    }

    /// The next delivery if one comes within `limit`; `None` once none does
    /// (or the handler is gone).
    pub async fn next_within(&mut self, limit: Duration) -> Option<Delivery> {
        tokio::time::timeout(limit, self.0.recv())
            .await
            .ok()
            .flatten()
    }

    /// The events of the next `n` deliveries, each of which must come within
    /// `limit`.
    pub async fn events(&mut self, n: usize, limit: Duration) -> Vec<Event> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout(limit, self.0.recv()).await {
                Ok(Some(d)) => got.push(d.into_event()),
                _ => panic!("{} of {n} deliveries within {limit:?} each", got.len()),
            }
        }
        got
    }

    /// The event ids of the next `n` deliveries, each of which must come
    /// within `limit`.
    pub async fn ids(&mut self, n: usize, limit: Duration) -> Vec<EventId> {
        self.events(n, limit).await.iter().map(Event::id).collect()
    }

    /// Takes deliveries, each of which must come within `limit`, until `n`
    /// distinct events have come; gives their ids in the order first
    /// received (a redelivery of one already seen is passed over).
    pub async fn distinct_ids(&mut self, n: usize, limit: Duration) -> Vec<EventId> {
        let mut seen = HashSet::new();
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let Some(d) = self.next_within(limit).await else {
                panic!(
                    "{} of {n} distinct events within {limit:?} each",
                    order.len()
                );
            };
            if seen.insert(d.event().id()) {
                order.push(d.event().id());
            }
        }
        order
    }
}

/// Subscribes `subscription` on `source`, answering `decision` to every
/// delivery and handing each over to the returned [`Deliveries`]; panics
/// when the subscription is refused.
pub async fn forward(
    source: &(impl EventSource + ?Sized),
    subscription: Subscription,
    decision: Decision,
) -> (SubscriptionHandle, Deliveries) {
    let name = subscription.name().to_owned();
    let (handler, deliveries) = Deliveries::handler(decision);
    let handle = source
        .subscribe(subscription, handler)
        .await
        .unwrap_or_else(|e| panic!("subscribing {name}: {e}"));
    (handle, deliveries)
}
