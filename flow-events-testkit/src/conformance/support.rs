//! What the cases share: unique names, publishing, collecting handlers and
//! bounded waits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Decision, Delivery, Event, EventSink, EventSource, Handler, PublishOutcome, Subscription,
    SubscriptionHandle, TopicPattern,
};
use tokio::sync::mpsc;

/// Unique event-type prefix and subscription names for one case, so cases can
/// run at once against one shared broker.
pub(crate) struct Scope {
    case: &'static str,
    id: String,
    names: Vec<String>,
}

impl Scope {
    pub(crate) fn new(case: &'static str) -> Self {
        Self {
            case,
            id: format!("{:012x}", fastrand::u64(..) >> 16),
            names: Vec::new(),
        }
    }

    /// `ct<id>.<suffix>`: an event type only this case uses.
    pub(crate) fn event_type(&self, suffix: &str) -> String {
        format!("ct{}.{suffix}", self.id)
    }

    /// A pattern under this case's prefix, `suffix` like `order.*`.
    pub(crate) fn pattern(&self, suffix: &str) -> TopicPattern {
        let raw = self.event_type(suffix);
        TopicPattern::new(&raw).unwrap_or_else(|e| panic!("pattern {raw:?}: {e}"))
    }

    /// A subscription name only this case uses; remembered for cleanup.
    pub(crate) fn name(&mut self, what: &str) -> String {
        let name = format!("ct-{}-{}-{what}", self.case, self.id);
        self.names.push(name.clone());
        name
    }

    /// A subscription named `what` (made unique) to `pattern`.
    pub(crate) fn subscription(&mut self, what: &str, pattern: &str) -> Subscription {
        let name = self.name(what);
        Subscription::new(name, self.pattern(pattern))
            .unwrap_or_else(|e| panic!("subscription {what}: {e}"))
    }

    /// The subscription names the case used.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// An event of `suffix` (under the prefix) carrying `data`.
    pub(crate) fn event(&self, suffix: &str, data: serde_json::Value) -> Event {
        let event_type = self.event_type(suffix);
        Event::try_new(&event_type, data).unwrap_or_else(|e| panic!("event {event_type:?}: {e}"))
    }
}

/// A handler that sends every delivery to a channel and answers with `decide`.
struct Collect<F> {
    tx: mpsc::UnboundedSender<Delivery>,
    decide: F,
}

#[async_trait]
impl<F> Handler for Collect<F>
where
    F: Fn(&Delivery) -> Decision + Send + Sync + 'static,
{
    async fn handle(&self, delivery: Delivery) -> Decision {
        let decision = (self.decide)(&delivery);
        // The case may have stopped listening; the decision stands.
        let _ = self.tx.send(delivery);
        decision
    }
}

/// A handler collecting deliveries into the returned receiver, deciding with `decide`.
pub(crate) fn collect<F>(decide: F) -> (Arc<dyn Handler>, Deliveries)
where
    F: Fn(&Delivery) -> Decision + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Collect { tx, decide }), Deliveries { rx })
}

/// A handler collecting deliveries and acking them all.
pub(crate) fn collect_acking() -> (Arc<dyn Handler>, Deliveries) {
    collect(|_| Decision::Ack)
}

/// Subscribes `handler`, failing the case if it cannot.
pub(crate) async fn subscribe<C: EventSource + ?Sized>(
    client: &C,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
) -> SubscriptionHandle {
    let name = subscription.name().to_owned();
    client
        .subscribe(subscription, handler)
        .await
        .unwrap_or_else(|e| panic!("subscribing {name}: {e}"))
}

/// Publishes `event`, failing the case if the publish fails.
pub(crate) async fn publish<C: EventSink + ?Sized>(
    client: &C,
    event: Event,
    what: &str,
) -> PublishOutcome {
    client
        .publish(event)
        .await
        .unwrap_or_else(|e| panic!("publishing {what}: {e}"))
}

/// The number under `key` in a delivery's payload.
pub(crate) fn number(delivery: &Delivery, key: &str) -> u64 {
    delivery.event().data()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("delivery without a numeric {key:?}: {:?}", delivery.event()))
}

/// The deliveries a collecting handler saw.
pub(crate) struct Deliveries {
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Deliveries {
    /// The next delivery, which must come within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration, what: &str) -> Delivery {
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(d)) => d,
            Ok(None) => panic!("the handler is gone while waiting for {what}"),
            Err(_) => panic!("no delivery within {wait:?} while waiting for {what}"),
        }
    }

    /// The next `n` deliveries, which must all come within `wait`.
    pub(crate) async fn take(&mut self, n: usize, wait: Duration, what: &str) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        let collect = async {
            while out.len() < n {
                match self.rx.recv().await {
                    Some(d) => out.push(d),
                    None => break,
                }
            }
        };
        let timed_out = tokio::time::timeout(wait, collect).await.is_err();
        assert!(
            !timed_out && out.len() == n,
            "{what}: got {} of {n} deliveries within {wait:?}",
            out.len()
        );
        out
    }

    /// Deliveries already seen and not yet taken, without waiting.
    pub(crate) fn seen_now(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Ok(d) = self.rx.try_recv() {
            out.push(d);
        }
        out
    }
}

/// Asserts that `got` is `sent`, without printing a huge payload.
pub(crate) fn assert_same_event(got: &Event, sent: &Event, what: &str) {
    assert_eq!(got.id(), sent.id(), "{what}: id");
    assert_eq!(got.event_type(), sent.event_type(), "{what}: type");
    assert_eq!(got.headers(), sent.headers(), "{what}: headers");
    assert_eq!(got.timestamp(), sent.timestamp(), "{what}: timestamp");
    if got.data() != sent.data() {
        let shown = |e: &Event| {
            let text = e.data().to_string();
            let len = text.len();
            let head: String = text.chars().take(200).collect();
            format!("{len} bytes: {head}")
        };
        panic!(
            "{what}: payload differs\n  got  {}\n  sent {}",
            shown(got),
            shown(sent)
        );
    }
}
