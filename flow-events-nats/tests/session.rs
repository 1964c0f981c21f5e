//! The backend on its own and under `Resilient`, in the cases the
//! conformance suite does not cover: the server's message limit, a stream
//! with other settings, a stream deleted under a running service, bad
//! addresses, dead letters, a `#` in the middle of a pattern.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use common::{Fixture, WAIT, until};
use flow_events_core::{
    Backend, BackendErrorKind, ConnectionMonitor, Decision, Delivery, Event, EventSink,
    EventSource, Handler, PublishErrorKind, PublishOutcome, Resilient, ResilientBuilder,
    handler_fn,
};
use flow_events_nats::{NatsBackend, NatsConfig, consumer_name};
use flow_events_testkit::steps::{self, numbered, publish_confirmed};
use flow_events_testkit::wait::start_connected;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

/// `Resilient` over `backend` with the fixture's settings.
fn client(backend: NatsBackend, fx: &Fixture) -> ResilientBuilder {
    Resilient::builder(backend).with_config(fx.config.clone())
}

/// `Resilient` over the fixture's backend, connected.
async fn connected_client(fx: &Fixture) -> Resilient {
    start_connected(client(fx.backend.clone(), fx), WAIT).await
}

/// A handler that answers what `judge` decides for each delivery, and sends
/// what `judge` reports of it down the channel it returns.
fn reporting<T: Send + 'static>(
    judge: impl Fn(&Delivery) -> (T, Decision) + Send + Sync + 'static,
) -> (Arc<dyn Handler>, UnboundedReceiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = handler_fn(move |d: Delivery| {
        let (report, decision) = judge(&d);
        let _ = tx.send(report);
        async move { decision }
    });
    (handler, rx)
}

/// The next report of a [`reporting`] handler, which must come within `WAIT`.
async fn next_report<T>(reports: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, reports.recv())
        .await
        .expect("a delivery in time")
        .expect("the handler is alive")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_max_payload_is_refused_and_handed_back() {
    require_server!("an_event_over_max_payload_is_refused_and_handed_back");
    let fx = Fixture::new("toolarge");
    let session = fx.session().await;
    let big = Event::try_new(
        "file.uploaded",
        serde_json::json!({ "blob": "x".repeat(1024 * 1024) }),
    )
    .expect("event");
    let e = match session.send(&big).await {
        Err(e) => e,
        Ok(_) => panic!("a 1 MiB payload is over the server's max_payload"),
    };
    assert_eq!(e.kind(), BackendErrorKind::EventRefused, "{e}");
    assert!(e.message().contains("max_payload"), "{e}");
    // The session goes on.
    publish_confirmed(&*session, &numbered("file.uploaded", 1)).await;
    session.close().await;

    let client = connected_client(&fx).await;
    let err = client
        .publish(big.clone())
        .await
        .expect_err("refused, not buffered");
    assert_eq!(err.kind(), &PublishErrorKind::Refused);
    assert_eq!(err.event(), &big, "the event is handed back");
    assert_eq!(client.status().pending_events, 0);
    client.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_type_with_a_wildcard_word_is_refused() {
    require_server!("an_event_type_with_a_wildcard_word_is_refused");
    let fx = Fixture::new("wildtype");
    let session = fx.session().await;
    let event = Event::try_new("order.>", serde_json::json!({})).expect("a valid event type");
    let e = session.send(&event).await.err().expect("refused");
    assert_eq!(e.kind(), BackendErrorKind::EventRefused, "{e}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_with_other_settings_is_a_configuration_error() {
    require_server!("a_stream_with_other_settings_is_a_configuration_error");
    let fx = Fixture::new("clash");
    let (_client, js) = common::raw().await;
    js.create_stream(stream::Config {
        name: fx.stream.clone(),
        subjects: vec![format!("{}.>", fx.prefix)],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .expect("create a stream of other settings");
    let e = fx.backend.connect().await.err().expect("refused");
    assert_eq!(e.kind(), BackendErrorKind::Configuration, "{e}");
    for part in [
        "exists with other settings",
        "retention",
        "duplicate_window",
    ] {
        assert!(e.message().contains(part), "{part} not in: {e}");
    }

    // Under Resilient: publishing goes on into the buffer, the reason shows.
    let client = client(fx.backend.clone(), &fx)
        .start()
        .await
        .expect("start");
    let event = Event::try_new("a.b", serde_json::json!({})).expect("event");
    let outcome = client.publish(event).await.expect("accepted");
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    until("the clash reported", WAIT, || {
        client
            .status()
            .last_error
            .is_some_and(|e| e.starts_with("configuration error"))
    })
    .await;
    client.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_deleted_under_a_service_is_made_again() {
    require_server!("a_stream_deleted_under_a_service_is_made_again");
    let fx = Fixture::new("deleted");
    let client = connected_client(&fx).await;
    assert_eq!(
        client.publish(numbered("a.b", 1)).await.expect("publish"),
        PublishOutcome::Confirmed
    );
    let (_raw, js) = common::raw().await;
    js.delete_stream(&fx.stream)
        .await
        .expect("delete the stream");
    // The next publish finds no stream: buffered, the session given up, and
    // the next one makes the stream again and sends it.
    let outcome = client.publish(numbered("a.b", 2)).await.expect("accepted");
    assert!(
        matches!(outcome, PublishOutcome::Buffered { .. }),
        "{outcome:?}"
    );
    until("drained on a new session", WAIT * 2, || {
        client.status().pending_events == 0 && client.status().reconnects >= 1
    })
    .await;
    let mut stream = js.get_stream(&fx.stream).await.expect("made again");
    // Stored once in the new stream (under interest retention, with no
    // consumer, it is not kept after that).
    assert_eq!(stream.info().await.expect("info").state.last_sequence, 1);
    client.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_addresses_are_reported_without_secrets() {
    require_server!("bad_addresses_are_reported_without_secrets");
    let cases = [
        (
            "amqp://u:topsecret@127.0.0.1:4222",
            BackendErrorKind::Configuration,
        ),
        ("nats://topsecret@127.0.0.1:1", BackendErrorKind::Connection),
        (
            "nats://u:topsecret@127.0.0.1:1",
            BackendErrorKind::Connection,
        ),
    ];
    for (url, kind) in cases {
        let nats = NatsConfig::builder()
            .with_url(url)
            .with_connect_timeout(Duration::from_secs(2))
            .build()
            .expect("config");
        let backend = NatsBackend::new(&Default::default(), nats);
        let e = backend.connect().await.err().expect("fails");
        assert_eq!(e.kind(), kind, "{url}: {e}");
        let shown = format!("{e} {e:?} {backend:?} {}", backend.info().url);
        assert!(!shown.contains("topsecret"), "{shown}");
    }
    // No URL at all.
    let backend = NatsBackend::new(&Default::default(), NatsConfig::default());
    let e = backend.connect().await.err().expect("fails");
    assert_eq!(e.kind(), BackendErrorKind::Configuration);
    assert!(e.message().contains("NATS_URL"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_urls_are_tried_in_turn() {
    require_server!("several_urls_are_tried_in_turn");
    let fx = Fixture::new("urls");
    let backend = fx.backend_to(&format!("nats://u:secret-pw@127.0.0.1:1, {}", common::URL));
    let session = backend.connect().await.expect("the second URL works");
    assert_eq!(
        session.url().as_deref(),
        Some(common::URL),
        "the address in use"
    );
    session.close().await;
    // Status and health show the address in use, never a password.
    let client = start_connected(client(backend, &fx), WAIT).await;
    assert_eq!(client.status().url, common::URL);
    let health = serde_json::to_string(&client.health("test")).expect("json");
    assert!(!health.contains("secret-pw"), "{health}");
    client.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_names_the_nats_dependency() {
    require_server!("health_names_the_nats_dependency");
    let fx = Fixture::new("health");
    let info = fx.backend.info();
    assert_eq!(
        (info.name, info.display_name, info.dependency),
        ("nats", "NATS", "nats")
    );
    let client = connected_client(&fx).await;
    let health = serde_json::to_value(client.health("test")).expect("json");
    assert_eq!(
        health["dependencies"]["nats"]["connected"], true,
        "{health}"
    );
    client.shutdown(WAIT).await;
}

/// Reads the dead letters of `subscription` with a plain consumer.
async fn dead_letters(fx: &Fixture, subscription: &str, n: usize) -> Vec<async_nats::Message> {
    let (_client, js) = common::raw().await;
    let stream = js
        .get_stream(fx.nats.dead_letter_stream())
        .await
        .expect("dead-letter stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.{subscription}", fx.nats.dead_letter_prefix()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(n)
        .expires(WAIT)
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.expect("message").message);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_and_exhausted_events_are_dead_lettered() {
    require_server!("rejected_and_exhausted_events_are_dead_lettered");
    let fx = Fixture::new("dead");
    let client = connected_client(&fx).await;
    let (handler, mut seen) = reporting(|d| {
        let kind = d.event().data()["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let decision = match kind.as_str() {
            "poison" => Decision::reject("poison"),
            "flaky" => Decision::Retry,
            _ => Decision::Ack,
        };
        ((kind, d.attempt()), decision)
    });
    let subscription = steps::subscription("billing.v1", "order.*").with_max_attempts(3);
    let handle = client
        .subscribe(subscription, handler)
        .await
        .expect("subscribe");
    let poison = Event::try_new("order.created", serde_json::json!({"kind": "poison"})).expect("e");
    let flaky = Event::try_new("order.created", serde_json::json!({"kind": "flaky"})).expect("e");
    client.publish(poison.clone()).await.expect("publish");
    client.publish(flaky.clone()).await.expect("publish");

    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        attempts.push(next_report(&mut seen).await);
    }
    let flaky_attempts: Vec<u32> = attempts
        .iter()
        .filter(|(k, _)| k == "flaky")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(flaky_attempts, [1, 2, 3], "retried up to max attempts");

    let letters = dead_letters(&fx, "billing.v1", 2).await;
    assert_eq!(letters.len(), 2);
    for (letter, sent, reason) in [
        (&letters[0], &poison, "poison"),
        (&letters[1], &flaky, "still failing after 3 attempts"),
    ] {
        let headers = letter.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("Nats-Msg-Id").expect("id").as_str(),
            format!("{}:billing.v1", sent.id())
        );
        assert_eq!(
            headers
                .get("Flow-Dead-Letter-Reason")
                .expect("reason")
                .as_str(),
            reason
        );
        assert_eq!(
            headers.get("Flow-Subscription").expect("sub").as_str(),
            "billing.v1"
        );
        assert_eq!(headers.get("x-flow-error").expect("error").as_str(), reason);
        assert_eq!(
            headers.get("x-flow-routing-key").expect("key").as_str(),
            "order.created"
        );
        assert_eq!(
            headers.get("x-flow-subscription").expect("sub").as_str(),
            "billing.v1"
        );
        let body: Event = serde_json::from_slice(&letter.payload).expect("the event");
        assert_eq!(&body, sent);
    }
    assert_eq!(consumer_name("billing.v1"), "billing_dv1");
    handle.close().await;
    client.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hash_in_the_middle_delivers_exactly_the_matching_events() {
    require_server!("a_hash_in_the_middle_delivers_exactly_the_matching_events");
    let fx = Fixture::new("middle");
    let client = connected_client(&fx).await;
    let (handler, mut seen) = reporting(|d| (d.event().event_type().to_string(), Decision::Ack));
    let handle = client
        .subscribe(steps::subscription("middle", "a.#.z"), handler)
        .await
        .expect("subscribe");
    for t in ["a.z", "a.b.z", "a.b", "b.z", "a.b.c.z", "a.z.q", "a.end.z"] {
        let event = Event::try_new(t, serde_json::json!({})).expect("event");
        client.publish(event).await.expect("publish");
    }
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("a.end.z") {
        got.push(next_report(&mut seen).await);
    }
    assert_eq!(got, ["a.z", "a.b.z", "a.b.c.z", "a.end.z"]);
    handle.close().await;
    client.shutdown(WAIT).await;
}
