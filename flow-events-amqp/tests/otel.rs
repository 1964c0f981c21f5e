//! OpenTelemetry across RabbitMQ (feature `otel`): spans recorded by the
//! SDK's in-memory exporter through `tracing-opentelemetry`, the context
//! carried as W3C `traceparent` in the message headers, and read back by a
//! Python consumer with the OpenTelemetry API.
#![cfg(feature = "otel")]

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::CleanupSubscription;
use common::python::python;
use common::traffic::{LONG, connected, fast, short_heartbeat, start};
use common::{Fixture, WAIT, raw, unique, until, until_state, url_through};
use flow_events_core::{
    Decision, Delivery, Event, EventSink, EventSource, PublishOutcome, Resilient, Subscription,
    SubscriptionHandle, TopicPattern, handler_fn,
};
use flow_events_testkit::received::numbered;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The exporter every span of this test binary ends in (one global subscriber).
fn exporter() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otel-test")));
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            exporter
        })
        .clone()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_else(|| panic!("span {} has no attribute {key}", span.name))
}

/// The finished span of `event` whose name starts with `operation`
/// (`publish`, `send` for the drain, `process`), once exported.
async fn span_of(operation: &str, event: &Event) -> SpanData {
    let id = event.id().to_string();
    let prefix = format!("{operation} ");
    let find = || {
        exporter()
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .find(|s| {
                s.name.starts_with(&prefix)
                    && attribute(s, "messaging.message.id").is_some_and(|v| v.as_str() == id)
            })
    };
    until(&format!("the {operation} span of {id}"), WAIT, || {
        find().is_some()
    })
    .await;
    find().expect("found")
}

/// What a handler saw: the event, and the trace and span of its current span.
type Seen = Arc<Mutex<Vec<(Event, TraceId, SpanId)>>>;

async fn handle(events: &Resilient, name: &str, pattern: &str) -> (Seen, SubscriptionHandle) {
    handle_then(events, name, pattern, None).await
}

/// Subscribes `name` to `pattern`; the handler records what it saw and
/// publishes `then` (if any) with the events it is given.
async fn handle_then(
    events: &Resilient,
    name: &str,
    pattern: &str,
    then: Option<(Resilient, Event)>,
) -> (Seen, SubscriptionHandle) {
    let seen: Seen = Arc::default();
    let handler = handler_fn({
        let seen = seen.clone();
        move |d: Delivery| {
            let seen = seen.clone();
            let then = then.clone();
            async move {
                let (trace_id, span_id) = {
                    let cx = tracing::Span::current().context();
                    let span = cx.span();
                    let sc = span.span_context();
                    (sc.trace_id(), sc.span_id())
                };
                seen.lock()
                    .expect("lock")
                    .push((d.into_event(), trace_id, span_id));
                if let Some((publisher, next)) = then {
                    publisher.publish(next).await.expect("publish");
                }
                Decision::Ack
            }
        }
    });
    let subscription = Subscription::new(name, TopicPattern::new(pattern).expect("pattern"))
        .expect("subscription");
    let handle = events
        .subscribe(subscription, handler)
        .await
        .expect("subscribe");
    (seen, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handler_span_is_a_child_of_the_publish_span() {
    require_broker!("the_handler_span_is_a_child_of_the_publish_span");
    let exporter = exporter();
    let mut fx = Fixture::with("otel", fast, short_heartbeat);
    let name = unique("otel");
    fx.cleanup.subscription(&name);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    let (seen, _handle) = handle(&events, &name, "otel.#").await;

    // A request of the service publishes the event.
    let request = tracing::info_span!("request");
    let event = Event::try_new("otel.created", serde_json::json!({})).expect("event");
    let outcome = events
        .publish(event.clone())
        .instrument(request.clone())
        .await
        .expect("publish");
    assert_eq!(outcome, PublishOutcome::Confirmed);
    until("handled", LONG, || !seen.lock().expect("lock").is_empty()).await;
    let request_cx = request.context();
    drop(request);

    let publish = span_of("publish", &event).await;
    let process = span_of("process", &event).await;
    println!(
        "publish {} {:?} parent {:?}\nprocess {} {:?} parent {:?}",
        publish.name,
        publish.span_context.span_id(),
        publish.parent_span_id,
        process.name,
        process.span_context.span_id(),
        process.parent_span_id
    );
    // publish: a child of the request, producer, with the messaging attributes.
    let request_sc = request_cx.span().span_context().clone();
    assert_eq!(publish.span_context.trace_id(), request_sc.trace_id());
    assert_eq!(publish.parent_span_id, request_sc.span_id());
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.name, format!("publish {}", fx.exchange));
    assert_eq!(text(&publish, "messaging.system"), "rabbitmq");
    assert_eq!(text(&publish, "messaging.destination.name"), fx.exchange);
    assert_eq!(
        text(&publish, "messaging.rabbitmq.destination.routing_key"),
        "otel.created"
    );
    assert_eq!(
        text(&publish, "messaging.message.id"),
        event.id().to_string()
    );
    assert_eq!(text(&publish, "messaging.operation.type"), "send");

    // process: a consumer span whose parent is the publish span, across the broker.
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        process.span_context.trace_id(),
        publish.span_context.trace_id()
    );
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    assert!(process.parent_span_is_remote);
    assert_eq!(process.name, format!("process {}", fx.exchange));
    assert_eq!(text(&process, "messaging.system"), "rabbitmq");
    assert_eq!(text(&process, "messaging.operation.type"), "process");
    assert_eq!(
        text(&process, "messaging.rabbitmq.destination.routing_key"),
        "otel.created"
    );
    assert_eq!(
        text(&process, "messaging.destination.subscription.name"),
        name
    );

    // The handler ran inside it; the event carried the publish span's context.
    let (handled, trace_id, span_id) = seen.lock().expect("lock")[0].clone();
    assert_eq!(trace_id, process.span_context.trace_id());
    assert_eq!(span_id, process.span_context.span_id());
    assert_eq!(
        handled.headers()["traceparent"],
        format!(
            "00-{}-{}-01",
            publish.span_context.trace_id(),
            publish.span_context.span_id()
        )
    );
    drop(exporter);
    events.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buffered_event_is_drained_in_a_span_linked_to_its_publish() {
    require_broker!("a_buffered_event_is_drained_in_a_span_linked_to_its_publish");
    exporter();
    let proxy = common::proxy().await;
    proxy.down();
    let mut fx = Fixture::with("otelbuf", fast, short_heartbeat);
    let name = unique("otelbuf");
    fx.cleanup.subscription(&name);
    let consumer = start(fx.backend.clone(), &fx.config).await;
    until_state("consumer connected", &consumer, WAIT, connected).await;
    let (seen, _handle) = handle(&consumer, &name, "fault.#").await;

    let publisher = start(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    let event = numbered(1);
    let outcome = publisher
        .publish(event.clone())
        .instrument(tracing::info_span!("request"))
        .await
        .expect("publish");
    assert!(
        matches!(outcome, PublishOutcome::Buffered { .. }),
        "{outcome:?}"
    );
    let publish = span_of("publish", &event).await;
    proxy.up();
    until("handled", LONG, || !seen.lock().expect("lock").is_empty()).await;

    let drain = span_of("send", &event).await;
    let process = span_of("process", &event).await;
    println!(
        "publish {:?}/{:?}, drain {:?}/{:?} links {:?}, process parent {:?}",
        publish.span_context.trace_id(),
        publish.span_context.span_id(),
        drain.span_context.trace_id(),
        drain.span_context.span_id(),
        drain
            .links
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect::<Vec<_>>(),
        process.parent_span_id
    );
    // The drain sends it later, in a trace of its own, linked to the publish.
    assert_eq!(drain.span_kind, SpanKind::Producer);
    assert_eq!(drain.name, format!("send {}", fx.exchange));
    assert_ne!(
        drain.span_context.trace_id(),
        publish.span_context.trace_id()
    );
    assert_eq!(drain.links.links.len(), 1);
    let link = &drain.links.links[0].span_context;
    assert_eq!(link.trace_id(), publish.span_context.trace_id());
    assert_eq!(link.span_id(), publish.span_context.span_id());
    assert_eq!(text(&drain, "messaging.operation.type"), "send");
    // The consumer continues the publisher's trace.
    assert_eq!(
        process.span_context.trace_id(),
        publish.span_context.trace_id()
    );
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    publisher.shutdown(WAIT).await;
    consumer.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_consumer_reads_the_trace_of_the_publish_span() {
    require_broker!("a_python_consumer_reads_the_trace_of_the_publish_span");
    let Some(python) = python() else { return };
    exporter();
    let fx = Fixture::with("otelpy", fast, short_heartbeat);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    let consumer =
        common::python::consumer(&python, "amqp_trace_of_one.py", &fx.exchange, "otel.*").await;

    let event = Event::try_new("otel.python", serde_json::json!({"n": 1})).expect("event");
    events
        .publish(event.clone())
        .instrument(tracing::info_span!("request"))
        .await
        .expect("publish");
    let got = consumer.json().await;
    let publish = span_of("publish", &event).await;
    assert_eq!(got["id"], event.id().to_string());
    assert_eq!(got["valid"], true);
    assert_eq!(got["remote"], true);
    assert_eq!(got["sampled"], true);
    assert_eq!(got["trace_id"], publish.span_context.trace_id().to_string());
    assert_eq!(got["span_id"], publish.span_context.span_id().to_string());
    events.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_published_by_a_handler_continues_the_trace() {
    require_broker!("an_event_published_by_a_handler_continues_the_trace");
    exporter();
    let mut fx = Fixture::with("otelchain", fast, short_heartbeat);
    let (first, second) = (unique("otel.first"), unique("otel.second"));
    fx.cleanup.subscription(&first).subscription(&second);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    // Service A handles chain.first and publishes chain.second; B handles that.
    let next = Event::try_new("chain.second", serde_json::json!({})).expect("event");
    let (_, _a) = handle_then(
        &events,
        &first,
        "chain.first",
        Some((events.clone(), next.clone())),
    )
    .await;
    let (seen_b, _b) = handle(&events, &second, "chain.second").await;

    let event = Event::try_new("chain.first", serde_json::json!({})).expect("event");
    events
        .publish(event.clone())
        .instrument(tracing::info_span!("request"))
        .await
        .expect("publish");
    until("B handled", LONG, || {
        !seen_b.lock().expect("lock").is_empty()
    })
    .await;

    let publish_a = span_of("publish", &event).await;
    let process_a = span_of("process", &event).await;
    let publish_b = span_of("publish", &next).await;
    let process_b = span_of("process", &next).await;
    let trace = publish_a.span_context.trace_id();
    for span in [&process_a, &publish_b, &process_b] {
        assert_eq!(span.span_context.trace_id(), trace, "{}", span.name);
    }
    assert_eq!(process_a.parent_span_id, publish_a.span_context.span_id());
    assert_eq!(publish_b.parent_span_id, process_a.span_context.span_id());
    assert_eq!(process_b.parent_span_id, publish_b.span_context.span_id());
    events.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_set_by_another_client_in_the_message_headers_is_continued() {
    require_broker!("a_context_set_by_another_client_in_the_message_headers_is_continued");
    exporter();
    let mut fx = Fixture::with("otelforeign", fast, short_heartbeat);
    let name = unique("otelforeign");
    fx.cleanup.subscription(&name);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    let (seen, _handle) = handle(&events, &name, "foreign.#").await;

    // Another client sets the context on the message only, not in the body.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = Event::try_new("foreign.created", serde_json::json!({})).expect("event");
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    let (conn, channel) = raw().await;
    channel
        .basic_publish(
            fx.exchange.as_str().into(),
            "foreign.created".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&body).expect("json"),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    until("handled", LONG, || !seen.lock().expect("lock").is_empty()).await;
    let process = span_of("process", &body).await;
    assert_eq!(
        process.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(process.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(process.parent_span_is_remote);
    events.shutdown(WAIT).await;
    let _ = conn.close(200, "done".into()).await;
}
