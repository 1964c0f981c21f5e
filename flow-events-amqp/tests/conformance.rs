//! The conformance suite against RabbitMQ, twice: through the resilience
//! decorator (as services use it), and straight on a session (the backend
//! alone, so a failure there points at the backend).
//!
//! Each case gets an exchange of its own; the queues it used are deleted
//! afterwards, even when it fails.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::CleanupSubscription;
use common::Fixture;
use flow_events_core::{
    Event, EventSink, EventSource, Handler, PublishError, PublishOutcome, Resilient,
    SubscribeError, Subscription, SubscriptionHandle,
};
use flow_events_testkit::conformance::Harness;
use flow_events_testkit::{SessionClient, wait};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

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

    /// The dead letters of `subscription`, read with `basic.get` and put
    /// back (the channel closes unacknowledged), the `x-flow-*` headers of
    /// each copied into its event's headers.
    async fn dead_letters(&self, subscription: &str) -> Vec<Event> {
        let (conn, channel) = common::raw().await;
        let queue = format!("{subscription}.dead");
        let mut out = Vec::new();
        while let Ok(Some(message)) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
        {
            let d = message.delivery;
            let mut event: Event = serde_json::from_slice(&d.data).expect("a dead event");
            if let Some(headers) = d.properties.headers() {
                for (k, v) in headers.inner() {
                    if let (true, AMQPValue::LongString(s)) = (k.as_str().starts_with("x-flow-"), v)
                    {
                        let value = String::from_utf8_lossy(s.as_bytes()).into_owned();
                        event.headers_mut().insert(k.as_str().to_owned(), value);
                    }
                }
            }
            out.push(event);
        }
        let _ = channel.close(200, "read".into()).await;
        let _ = conn.close(200, "read".into()).await;
        out
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
struct ThroughResilient(Amqp);

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Recorded<Resilient>;

    async fn client(&self) -> Recorded<Resilient> {
        let builder =
            Resilient::builder(self.0.fx.backend.clone()).with_config(self.0.fx.config.clone());
        self.0
            .recorded(wait::start_connected(builder, self.timeout()).await)
    }

    async fn dead_letters(&self, subscription: &str) -> Option<Vec<Event>> {
        Some(self.0.dead_letters(subscription).await)
    }
}

/// Straight on a session.
struct OnSession(Amqp);

#[async_trait]
impl Harness for OnSession {
    type Client = Recorded<SessionClient>;

    async fn client(&self) -> Recorded<SessionClient> {
        let client = SessionClient::connect(&self.0.fx.backend)
            .await
            .expect("connected to the broker");
        self.0.recorded(client)
    }

    async fn dead_letters(&self, subscription: &str) -> Option<Vec<Event>> {
        Some(self.0.dead_letters(subscription).await)
    }
}

mod resilient {
    use super::*;
    flow_events_testkit::conformance_tests!(|case| Amqp::new(case).map(ThroughResilient));
}

mod session {
    use super::*;
    flow_events_testkit::conformance_tests!(|case| Amqp::new(case).map(OnSession));
}
