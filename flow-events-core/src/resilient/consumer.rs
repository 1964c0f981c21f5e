//! The consume loop: hands deliveries to the handler and settles them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{Backend, DeliveryStream, IncomingDelivery};
use crate::event::EventId;
use crate::retry::panic_message;
use crate::source::{Decision, Delivery, Handler};
use crate::subscription::Subscription;

use super::metrics::{ConsumerMetrics, Handled};
use super::spans;

/// What a consume loop reports through: the subscription's metrics, and the
/// backend that names the handling spans.
pub(crate) struct Observed {
    pub(crate) metrics: ConsumerMetrics,
    pub(crate) backend: Arc<dyn Backend>,
}

impl Observed {
    pub(crate) fn new(subscription: &str, backend: Arc<dyn Backend>) -> Self {
        Self {
            metrics: ConsumerMetrics::new(subscription),
            backend,
        }
    }
}

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

/// Attempts counted here for events whose retry the backend could not carry
/// out (the broker blocked its publishers, the channel was gone): the next
/// delivery of such an event counts from here, even when the backend's own
/// count (a header of the copy that was not published) did not move. Bounded,
/// oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    order: VecDeque<EventId>,
    counted: HashMap<EventId, u32>,
}

impl Attempts {
    const CAPACITY: usize = 10_000;

    /// The attempt of a delivery of `id` that the backend counts as `attempt`.
    pub(crate) fn of(&self, id: &EventId, attempt: u32) -> u32 {
        match self.counted.get(id) {
            Some(n) => attempt.max(n.saturating_add(1)),
            None => attempt,
        }
    }

    /// Attempt `attempt` of `id` ended in a retry the backend could not carry out.
    pub(crate) fn failed_retry(&mut self, id: EventId, attempt: u32) {
        if self.counted.insert(id, attempt).is_none() {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.counted.remove(&old);
            }
        }
    }

    /// `id` was settled for good, or its retry went through.
    pub(crate) fn settled(&mut self, id: &EventId) {
        if self.counted.remove(id).is_some() {
            self.order.retain(|i| i != id);
        }
    }
}

/// What a subscription remembers across deliveries and sessions.
pub(crate) type Memory<'a> = (&'a Arc<Mutex<DedupWindow>>, &'a Arc<Mutex<Attempts>>);

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
    (dedup, attempts): Memory<'_>,
    cancel: &CancellationToken,
    observed: &Observed,
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
                    subscription,
                    dedup.clone(),
                    attempts.clone(),
                    observed,
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
    sub: &Subscription,
    dedup: Arc<Mutex<DedupWindow>>,
    attempts: Arc<Mutex<Attempts>>,
    observed: &Observed,
) {
    let IncomingDelivery {
        delivery,
        acker,
        scope,
    } = incoming;
    let (subscription, policy, store) = (sub.name(), sub.retry(), sub.dedup_store());
    observed.metrics.delivered();
    let id = delivery.event().id();
    let event_type = delivery.event().event_type().clone();
    let counted = delivery.attempt();
    let attempt = attempts.lock().map_or(counted, |a| a.of(&id, counted));
    let delivery = if attempt == counted {
        delivery
    } else {
        let redelivered = delivery.redelivered();
        Delivery::new(delivery.into_event(), redelivered, attempt)
    };
    let duplicate = match store {
        Some(store) => store.seen(subscription, id).await.unwrap_or_else(|e| {
            tracing::warn!(subscription, %id, error = %e, "de-duplication store unreadable; handling the event");
            false
        }),
        None => dedup.lock().is_ok_and(|d| d.contains(&id)),
    };
    let decision = if duplicate {
        tracing::debug!(subscription, %id, "duplicate event acknowledged without calling the handler");
        observed.metrics.duplicate();
        Decision::Ack
    } else {
        let span = match scope {
            Some(_) => tracing::Span::none(),
            None => spans::process(&*observed.backend, delivery.event(), subscription),
        };
        let handling = handler.handle(delivery);
        let handling = match scope {
            Some(scope) => scope.enter(handling),
            None if span.is_none() => handling,
            None => Box::pin(handling.instrument(span)),
        };
        let started = Instant::now();
        let handled = AssertUnwindSafe(handling).catch_unwind().await;
        observed.metrics.handled(
            handled.as_ref().map_or(Handled::Panicked, Handled::of),
            started.elapsed(),
        );
        match handled {
            Ok(decision) => {
                let asked_retry = decision.is_retry();
                let settled = policy.settle(decision, attempt);
                if asked_retry && matches!(settled, Decision::Reject(_)) {
                    tracing::warn!(
                        subscription, %id, %event_type, attempt,
                        "event still failing after {attempt} attempts, dead-lettering it"
                    );
                }
                settled
            }
            Err(panic) => {
                tracing::error!(subscription, %id, %event_type, attempt, "handler panicked; the event will be retried");
                policy.settle_panic(panic_message(panic.as_ref()), attempt)
            }
        }
    };
    if decision == Decision::Ack && !duplicate {
        match store {
            Some(store) => {
                if let Err(e) = store.remember(subscription, id).await {
                    tracing::warn!(subscription, %id, error = %e, "could not record a handled event in the de-duplication store; a redelivery would be handled again");
                }
            }
            None => {
                if let Ok(mut d) = dedup.lock() {
                    d.insert(id);
                }
            }
        }
    }
    let retry = decision.is_retry();
    let counted = Handled::of(&decision);
    let shown = format!("{decision:?}");
    match acker.settle(decision).await {
        Ok(()) => {
            observed.metrics.settled(counted);
            if let Ok(mut a) = attempts.lock() {
                a.settled(&id);
            }
        }
        Err(e) => {
            if retry && let Ok(mut a) = attempts.lock() {
                a.failed_retry(id, attempt);
            }
            tracing::warn!(
                subscription, %id, attempt, error = %e,
                "could not settle the delivery ({shown}); the broker will deliver it again, \
                 counted as attempt {}", attempt.saturating_add(1)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Acker, DeliveryScope};
    use crate::backend::{BackendInfo, Session};
    use crate::error::BackendError;
    use crate::event::Event;
    use crate::pattern::TopicPattern;
    use crate::source::handler_fn;
    use futures_util::future::BoxFuture;

    struct NoBackend;

    #[async_trait::async_trait]
    impl Backend for NoBackend {
        async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
            Err(BackendError::connection("none"))
        }
        fn info(&self) -> BackendInfo {
            BackendInfo::new("none", "none://")
        }
    }

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
                _ => Decision::reject("out of scope"),
            }
        });
        let sub = Subscription::new("s", TopicPattern::all()).expect("subscription");
        let ended = consume(
            stream,
            handler,
            &sub,
            (
                &Arc::new(Mutex::new(DedupWindow::new(0))),
                &Arc::new(Mutex::new(Attempts::default())),
            ),
            &CancellationToken::new(),
            &Observed::new("s", Arc::new(NoBackend)),
        )
        .await;
        assert_eq!(ended, Ended::StreamEnded);
        assert_eq!(
            *settled.lock().expect("lock"),
            vec![Decision::Ack, Decision::reject("out of scope")]
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
    fn attempts_count_past_the_backends_count_until_settled() {
        let mut a = Attempts::default();
        let id = EventId::new();
        assert_eq!(a.of(&id, 2), 2);
        a.failed_retry(id, 2);
        assert_eq!(a.of(&id, 2), 3, "the retry copy was not published");
        assert_eq!(a.of(&id, 5), 5, "the backend counts more");
        a.settled(&id);
        assert_eq!(a.of(&id, 2), 2);
    }

    #[test]
    fn dedup_window_zero_is_off() {
        let mut w = DedupWindow::new(0);
        let id = EventId::new();
        w.insert(id);
        assert!(!w.contains(&id));
    }
}
