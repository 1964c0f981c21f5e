//! Losing a connection: the session says so, its streams end, and its
//! deliveries cannot be settled on anything newer; losing one of a session's
//! two connections leaves the other alone.

mod common;

use common::CleanupSubscription;
use common::traffic::{connected, fast, short_heartbeat, start, subscription};
use common::{Fixture, WAIT, unique, until, until_state};
use flow_events_core::{
    BackendErrorKind, ConnectionMonitor, ConnectionState, Decision, Event, EventSink, EventSource,
    PublishOutcome, Resilient, Subscription, SubscriptionHandle, TopicPattern,
};
use flow_events_testkit::received::{Received, numbered};
use flow_events_testkit::steps::publish_confirmed;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn cut_connection_ends_the_session_and_its_deliveries() {
    require_broker!("cut_connection_ends_the_session_and_its_deliveries");
    let proxy = common::proxy().await;
    let mut fx = Fixture::with("cut", |c| c, |o| o.with_url(common::url_through(&proxy)));
    let name = unique("cut");
    fx.cleanup.subscription(&name);
    let sub = Subscription::new(&name, TopicPattern::all()).expect("subscription");

    let session = fx.session().await;
    let mut stream = session.subscribe(&sub).await.expect("subscribe");
    let sent = Event::try_new("order.created", serde_json::json!({"n": 1})).expect("event");
    publish_confirmed(&*session, &sent).await;
    let held = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("a delivery");

    proxy.cut();
    let reason = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("closed() resolves");
    assert_eq!(reason.kind(), BackendErrorKind::Connection, "{reason}");
    assert!(reason.is_retryable());
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    let err = held
        .acker
        .settle(Decision::Ack)
        .await
        .expect_err("settled on a lost channel");
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(session.send(&sent).await.is_err());

    // A new session gets the event again, flagged, and can ack it.
    let session = fx.session().await;
    let mut stream = session.subscribe(&sub).await.expect("subscribe again");
    let again = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("the event again");
    assert_eq!(again.delivery.event(), &sent);
    assert!(again.delivery.redelivered());
    assert_eq!(again.delivery.attempt(), 2);
    again.acker.settle(Decision::Ack).await.expect("ack");
    session.close().await;
}

/// `rabbitmqctl`'s output, or `None` when it cannot be run here.
async fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The broker's pid of the connection `app_id (role)`, when `rabbitmqctl`
/// can say; `Some(None)` when it is not listed.
async fn connection_pid(app_id: &str, role: &str) -> Option<Option<String>> {
    let list = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]).await?;
    Some(
        list.lines()
            .find(|l| l.contains(&format!("{app_id} ({role})")))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned),
    )
}

/// A publisher and consumer in one `Resilient`, connected, subscribed, one
/// event delivered; and the broker's pids of its two connections.
struct Flowing {
    _fx: Fixture,
    app_id: String,
    events: Resilient,
    received: Received,
    handle: SubscriptionHandle,
    publishing: String,
    consuming: String,
}

impl Flowing {
    /// The flow of the test `test`; `None` (the test is skipped) when
    /// `rabbitmqctl` cannot be run here.
    async fn start(test: &str) -> Option<Self> {
        let app_id = unique(test);
        let name = unique(test);
        if connection_pid(&app_id, "publish").await.is_none() {
            eprintln!("skipping {test}: rabbitmqctl is not available");
            return None;
        }
        let mut fx = Fixture::with(test, fast, |o| short_heartbeat(o).with_app_id(&app_id));
        fx.cleanup.subscription(&name);
        let events = start(fx.backend.clone(), &fx.config).await;
        until_state("connected", &events, WAIT, connected).await;
        let received = Received::new();
        let handle = events
            .subscribe(subscription(&name), received.handler())
            .await
            .expect("subscribe");
        assert_eq!(
            events.publish(numbered(0)).await.expect("publish"),
            PublishOutcome::Confirmed
        );
        received.wait_distinct(1, WAIT).await;
        let mut flowing = Self {
            _fx: fx,
            app_id,
            events,
            received,
            handle,
            publishing: String::new(),
            consuming: String::new(),
        };
        flowing.publishing = flowing.pid("publish").await.expect("publishing");
        flowing.consuming = flowing.pid("consume").await.expect("consuming");
        Some(flowing)
    }

    /// The broker's pid of its `role` connection now, if it has one.
    async fn pid(&self, role: &str) -> Option<String> {
        connection_pid(&self.app_id, role).await.flatten()
    }

    /// Has the broker close the connection `pid`.
    async fn close_connection(&self, pid: &str) {
        rabbitmqctl(&["close_connection", pid, "closed by a test"])
            .await
            .expect("close_connection");
    }

    /// Publishes events `from..to`, each confirmed, and waits for them.
    async fn publish_and_receive(&self, from: u64, to: u64) {
        for seq in from..to {
            assert_eq!(
                self.events.publish(numbered(seq)).await.expect("publish"),
                PublishOutcome::Confirmed,
                "event {seq}"
            );
        }
        self.received.wait_distinct(to as usize, WAIT).await;
    }

    /// Closes the subscription, shuts down, nothing left pending.
    async fn finish(self) {
        self.handle.close().await;
        assert!(self.events.shutdown(WAIT).await.remaining.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_consuming_connection_is_reopened_and_publishing_goes_on() {
    require_broker!("a_lost_consuming_connection_is_reopened_and_publishing_goes_on");
    let Some(flow) = Flowing::start("conslost").await else {
        return;
    };
    flow.close_connection(&flow.consuming).await;
    // Publishing is not disturbed, and the subscription resumes on a new
    // consuming connection.
    flow.publish_and_receive(1, 20).await;
    let reopened = flow.pid("consume").await;
    assert!(reopened.is_some_and(|pid| pid != flow.consuming));
    assert_eq!(flow.pid("publish").await, Some(flow.publishing.clone()));
    let s = flow.events.status();
    assert_eq!(s.reconnects, 0, "{s:?}");
    assert_eq!(s.confirmed, 20);
    flow.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_publishing_connection_is_reopened_and_consuming_goes_on() {
    require_broker!("a_lost_publishing_connection_is_reopened_and_consuming_goes_on");
    let Some(flow) = Flowing::start("publost").await else {
        return;
    };
    flow.close_connection(&flow.publishing).await;
    let events = &flow.events;
    until("reconnected", WAIT, || {
        events.status().reconnects == 1 && events.state() == ConnectionState::Connected
    })
    .await;
    let why = events.status().last_error.unwrap_or_default();
    assert!(why.contains("CONNECTION_FORCED"), "{why}");
    assert!(why.contains("publishing connection"), "{why}");
    flow.publish_and_receive(1, 20).await;
    // The consumer kept its connection (and its channel) all along.
    assert_eq!(flow.pid("consume").await, Some(flow.consuming.clone()));
    assert_ne!(flow.pid("publish").await, Some(flow.publishing.clone()));
    flow.finish().await;
}
