//! The consume loop: hands deliveries to the handler and settles them.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::backend::{DeliveryStream, IncomingDelivery};
use crate::event::EventId;
use crate::source::{Decision, Handler};
use crate::subscription::Subscription;

/// The ids of the last `capacity` acknowledged events.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    order: VecDeque<EventId>,
    seen: HashSet<EventId>,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity.min(4096)),
            seen: HashSet::with_capacity(capacity.min(4096)),
        }
    }

    pub(crate) fn contains(&self, id: &EventId) -> bool {
        self.seen.contains(id)
    }

    pub(crate) fn insert(&mut self, id: EventId) {
        if self.capacity == 0 || !self.seen.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
    }
}

/// Why a consume loop returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The subscription was closed.
    Cancelled,
    /// The stream ended: the session was lost.
    StreamEnded,
}

/// Consumes `stream` until it ends or `cancel` fires, with at most
/// `subscription.concurrency()` handler calls at once. On cancel, the handler
/// calls in progress finish and are settled; deliveries not yet handed out are
/// left unsettled, so the broker delivers them again.
pub(crate) async fn consume(
    mut stream: DeliveryStream,
    handler: Arc<dyn Handler>,
    subscription: &Subscription,
    dedup: &Arc<Mutex<DedupWindow>>,
    cancel: &CancellationToken,
) -> Ended {
    let limit = subscription.concurrency();
    let mut running = FuturesUnordered::new();
    let mut ended = None;
    loop {
        if ended.is_some() && running.is_empty() {
            break;
        }
        let can_take = ended.is_none() && running.len() < limit;
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if ended.is_none() => ended = Some(Ended::Cancelled),
            Some(()) = running.next(), if !running.is_empty() => {}
            next = stream.next(), if can_take => match next {
                Some(incoming) => running.push(handle_one(
                    incoming,
                    handler.clone(),
                    subscription.name(),
                    subscription.max_attempts(),
                    dedup.clone(),
                )),
                None => ended = Some(Ended::StreamEnded),
            },
        }
    }
    ended.unwrap_or(Ended::StreamEnded)
}

async fn handle_one(
    incoming: IncomingDelivery,
    handler: Arc<dyn Handler>,
    subscription: &str,
    max_attempts: u32,
    dedup: Arc<Mutex<DedupWindow>>,
) {
    let IncomingDelivery {
        delivery,
        acker,
        scope,
    } = incoming;
    let id = delivery.event().id();
    let event_type = delivery.event().event_type().clone();
    let attempt = delivery.attempt();
    let duplicate = dedup.lock().is_ok_and(|d| d.contains(&id));
    let decision = if duplicate {
        tracing::debug!(subscription, %id, "duplicate event acknowledged without calling the handler");
        Decision::Ack
    } else {
        let handling = handler.handle(delivery);
        let handling = match scope {
            Some(scope) => scope.enter(handling),
            None => handling,
        };
        match AssertUnwindSafe(handling).catch_unwind().await {
            Ok(Decision::Retry) if attempt >= max_attempts => {
                tracing::warn!(
                    subscription, %id, %event_type, attempt,
                    "event still failing after {attempt} attempts, dead-lettering it"
                );
                Decision::Reject
            }
            Ok(decision) => decision,
            Err(_) => {
                tracing::error!(subscription, %id, %event_type, attempt, "handler panicked; the event will be retried");
                if attempt >= max_attempts {
                    Decision::Reject
                } else {
                    Decision::Retry
                }
            }
        }
    };
    if decision == Decision::Ack
        && let Ok(mut d) = dedup.lock()
    {
        d.insert(id);
    }
    if let Err(e) = acker.settle(decision).await {
        tracing::warn!(
            subscription, %id, error = %e,
            "could not settle the delivery; the broker will deliver it again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Acker, DeliveryScope};
    use crate::error::BackendError;
    use crate::event::Event;
    use crate::pattern::TopicPattern;
    use crate::source::{Delivery, handler_fn};
    use futures_util::future::BoxFuture;

    tokio::task_local! {
        static SCOPE: u32;
    }

    struct Scope(u32);

    impl DeliveryScope for Scope {
        fn enter<'a>(
            self: Box<Self>,
            handling: BoxFuture<'a, Decision>,
        ) -> BoxFuture<'a, Decision> {
            Box::pin(SCOPE.scope(self.0, handling))
        }
    }

    struct Recorded(Arc<Mutex<Vec<Decision>>>);

    #[async_trait::async_trait]
    impl Acker for Recorded {
        async fn settle(self: Box<Self>, decision: Decision) -> Result<(), BackendError> {
            self.0.lock().expect("lock").push(decision);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_handler_runs_within_the_delivery_scope() {
        let settled = Arc::new(Mutex::new(Vec::new()));
        let incoming = |scope: Option<u32>| {
            let event = Event::try_new("a.b", serde_json::json!({})).expect("event");
            let d = IncomingDelivery::new(
                Delivery::new(event, false, 1),
                Box::new(Recorded(settled.clone())),
            );
            match scope {
                Some(n) => d.with_scope(Scope(n)),
                None => d,
            }
        };
        let stream = futures_util::stream::iter([incoming(Some(7)), incoming(None)]).boxed();
        // Acks only what it sees in scope 7.
        let handler = handler_fn(|_d: Delivery| async {
            match SCOPE.try_with(|n| *n) {
                Ok(7) => Decision::Ack,
                _ => Decision::Reject,
            }
        });
        let sub = Subscription::new("s", TopicPattern::all()).expect("subscription");
        let ended = consume(
            stream,
            handler,
            &sub,
            &Arc::new(Mutex::new(DedupWindow::new(0))),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(ended, Ended::StreamEnded);
        assert_eq!(
            *settled.lock().expect("lock"),
            vec![Decision::Ack, Decision::Reject]
        );
    }

    #[test]
    fn dedup_window_forgets_oldest() {
        let mut w = DedupWindow::new(2);
        let ids: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
        for id in &ids {
            w.insert(*id);
        }
        assert!(!w.contains(&ids[0]));
        assert!(w.contains(&ids[1]) && w.contains(&ids[2]));
        w.insert(ids[2]);
        assert!(w.contains(&ids[1]));
    }

    #[test]
    fn dedup_window_zero_is_off() {
        let mut w = DedupWindow::new(0);
        let id = EventId::new();
        w.insert(id);
        assert!(!w.contains(&id));
    }
}
