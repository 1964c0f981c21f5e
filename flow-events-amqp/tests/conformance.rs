//! The conformance suite against RabbitMQ, twice: through the resilience
//! decorator (as services use it), and straight on a session (the backend
//! alone, so a failure there points at the backend).
//!
//! Each case gets an exchange of its own; the queues it used are deleted
//! afterwards, even when it fails.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::Fixture;
use flow_events_core::{
    ConnectionMonitor, ConnectionState, Event, EventSink, EventSource, Handler, PublishError,
    PublishOutcome, Resilient, SubscribeError, Subscription, SubscriptionHandle,
};
use flow_events_testkit::SessionClient;
use flow_events_testkit::conformance::Harness;

/// A client that remembers the subscriptions made through it, for cleanup.
struct Recorded<C> {
    inner: C,
    names: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl<C: EventSink> EventSink for Recorded<C> {
    async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError> {
        self.inner.publish(event).await
    }
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<PublishOutcome, PublishError>> {
        self.inner.publish_batch(events).await
    }
}

#[async_trait]
impl<C: EventSource> EventSource for Recorded<C> {
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        if let Ok(mut names) = self.names.lock() {
            names.push(subscription.name().to_owned());
        }
        self.inner.subscribe(subscription, handler).await
    }
}

/// One case's exchange, backend and cleanup.
struct Amqp {
    fx: Fixture,
    names: Arc<Mutex<Vec<String>>>,
}

impl Amqp {
    /// `None` when there is no broker (outside CI).
    fn new(case: &str) -> Option<Self> {
        if !common::broker_available(case) {
            return None;
        }
        Some(Self {
            fx: Fixture::new("conformance"),
            names: Arc::default(),
        })
    }

    fn recorded<C>(&self, inner: C) -> Recorded<C> {
        Recorded {
            inner,
            names: self.names.clone(),
        }
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        for name in names {
            self.fx.cleanup.subscription(&name);
        }
    }
}

/// Through `Resilient`.
struct ThroughResilient(Option<Amqp>);

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Recorded<Resilient>;

    async fn client(&self) -> Recorded<Resilient> {
        let amqp = self.0.as_ref().expect("broker");
        let client = Resilient::builder(amqp.fx.backend.clone())
            .with_config(amqp.fx.config.clone())
            .start()
            .await
            .expect("an optional start-up does not fail");
        let mut state = client.watch_state();
        tokio::time::timeout(
            self.timeout(),
            state.wait_for(|s| *s == ConnectionState::Connected),
        )
        .await
        .expect("connected in time")
        .expect("the supervisor runs");
        amqp.recorded(client)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Straight on a session.
struct OnSession(Option<Amqp>);

#[async_trait]
impl Harness for OnSession {
    type Client = Recorded<SessionClient>;

    async fn client(&self) -> Recorded<SessionClient> {
        let amqp = self.0.as_ref().expect("broker");
        let client = SessionClient::connect(&amqp.fx.backend)
            .await
            .expect("connected to the broker");
        amqp.recorded(client)
    }
}

/// Runs a case unless the broker is missing (outside CI).
macro_rules! amqp_conformance {
    ($harness:ident; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(amqp) = Amqp::new(stringify!($case)) else { return };
                let harness = $harness(Some(amqp));
                flow_events_testkit::conformance::$case(&harness).await;
            }
        )+
    };
}

macro_rules! all_cases {
    ($harness:ident) => {
        amqp_conformance!($harness;
            publish_then_receive,
            in_order_delivery,
            topic_patterns,
            fan_out,
            competing_consumers,
            retry_redelivers,
            reject_does_not_redeliver,
            concurrent_publishers,
            large_payload,
            unicode_payload,
            closed_subscription_stops_receiving,
            subscription_keeps_events_while_closed,
            publish_without_subscribers,
        );
    };
}

mod resilient {
    use super::*;
    all_cases!(ThroughResilient);
}

mod session {
    use super::*;
    all_cases!(OnSession);
}
