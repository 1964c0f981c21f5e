//! Trace context across the broker (feature `trace-context`): one trace id
//! follows an event from service to service.
#![cfg(feature = "trace-context")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::received::numbered;
use common::traffic::{LONG, connected, fast, short_heartbeat, start};
use common::{Fixture, WAIT, next_raw, raw, unique, until, until_state, url_through};
use flow_events_amqp::trace::{TRACEPARENT, TraceContext};
use flow_events_core::{
    Decision, Delivery, Event, EventSink, EventSource, PublishOutcome, Resilient, Subscription,
    SubscriptionHandle, TopicPattern, handler_fn,
};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing_subscriber::fmt::MakeWriter;

/// Every log line of the binary that says "handled".
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

struct LineWriter(Lines);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for line in String::from_utf8_lossy(buf).lines() {
            if line.contains("handled") {
                self.0.0.lock().expect("lock").push(line.to_owned());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

fn lines() -> Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Lines::default();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_ansi(false)
                .with_writer(lines.clone())
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            lines
        })
        .clone()
}

/// The line logged for the event `id`, once there.
async fn line_of(lines: &Lines, id: &str) -> String {
    let find = || {
        lines
            .0
            .lock()
            .expect("lock")
            .iter()
            .find(|l| l.contains(id))
            .cloned()
    };
    until("the handler's log line", WAIT, || find().is_some()).await;
    find().unwrap_or_default()
}

/// What a handler saw: the event and the current context.
type Seen = Arc<Mutex<Vec<(Event, Option<TraceContext>)>>>;

/// Subscribes `name` to `pattern`; the handler logs "handled <event id>",
/// records what it saw, and publishes `then` (if any) on `publisher`.
async fn service(
    events: &Resilient,
    name: &str,
    pattern: &str,
    then: Option<(Resilient, &'static str)>,
) -> (Seen, SubscriptionHandle) {
    let seen: Seen = Arc::default();
    let handler = handler_fn({
        let seen = seen.clone();
        move |d: Delivery| {
            let seen = seen.clone();
            let then = then.clone();
            async move {
                let event = d.into_event();
                tracing::info!("handled {}", event.id());
                seen.lock()
                    .expect("lock")
                    .push((event, TraceContext::current()));
                if let Some((publisher, event_type)) = then {
                    let next = Event::try_new(event_type, serde_json::json!({})).expect("event");
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

fn one(seen: &Seen) -> (Event, Option<TraceContext>) {
    seen.lock().expect("lock")[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_follows_an_event_across_services() {
    require_broker!("one_trace_follows_an_event_across_services");
    let lines = lines();
    let mut fx = Fixture::with("trace", fast, short_heartbeat);
    let (first, second) = (unique("trace.first"), unique("trace.second"));
    fx.cleanup.subscription(&first).subscription(&second);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    // Service A handles trace.first and publishes trace.second; B handles that.
    let (seen_a, _a) = service(
        &events,
        &first,
        "trace.first",
        Some((events.clone(), "trace.second")),
    )
    .await;
    let (seen_b, _b) = service(&events, &second, "trace.second", None).await;

    let root = TraceContext::new_root();
    let event = Event::try_new("trace.first", serde_json::json!({})).expect("event");
    root.scope(events.publish(event)).await.expect("publish");
    until("B handled", LONG, || {
        !seen_b.lock().expect("lock").is_empty()
    })
    .await;

    let (first_event, a) = one(&seen_a);
    let a = a.expect("A's handler has a context");
    assert_eq!(first_event.headers()[TRACEPARENT], root.traceparent());
    assert_eq!(a.trace_id(), root.trace_id());
    assert_ne!(a.span_id(), root.span_id());
    let (second_event, b) = one(&seen_b);
    let b = b.expect("B's handler has a context");
    // A's event carries the trace, with A's span as the parent.
    assert_eq!(
        second_event.headers()[TRACEPARENT],
        format!("00-{}-{}-01", root.trace_id(), a.span_id())
    );
    assert_eq!(b.trace_id(), root.trace_id());

    // The handlers ran inside spans naming the trace and the parent.
    let line_a = line_of(&lines, &first_event.id().to_string()).await;
    let line_b = line_of(&lines, &second_event.id().to_string()).await;
    println!("{line_a}\n{line_b}");
    for (line, me, parent) in [(&line_a, &a, &root), (&line_b, &b, &a)] {
        assert!(line.contains("flow_events.handle{"), "{line}");
        assert!(
            line.contains(&format!("trace_id={}", root.trace_id())),
            "{line}"
        );
        assert!(
            line.contains(&format!("span_id={}", me.span_id())),
            "{line}"
        );
        assert!(
            line.contains(&format!("parent_span_id={}", parent.span_id())),
            "{line}"
        );
    }
    assert!(line_a.contains(&format!("queue={first}")), "{line_a}");
    events.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_get_their_trace_when_published_even_if_buffered() {
    require_broker!("events_get_their_trace_when_published_even_if_buffered");
    let proxy = common::proxy().await;
    proxy.down();
    let mut fx = Fixture::with("tracebuf", fast, short_heartbeat);
    let name = unique("tracebuf");
    fx.cleanup.subscription(&name);
    let consumer = start(fx.backend.clone(), &fx.config).await;
    until_state("consumer connected", &consumer, WAIT, connected).await;
    let (seen, _handle) = service(&consumer, &name, "fault.#", None).await;

    let publisher = start(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    let root = TraceContext::new_root();
    let traced = numbered(1);
    let outcome = root
        .scope(publisher.publish(traced.clone()))
        .await
        .expect("publish");
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    let untraced = numbered(2);
    publisher.publish(untraced.clone()).await.expect("publish");
    proxy.up();
    until("both handled", LONG, || {
        seen.lock().expect("lock").len() >= 2
    })
    .await;

    let seen = seen.lock().expect("lock").clone();
    let of = |id| {
        seen.iter()
            .find(|(e, _)| e.id() == id)
            .cloned()
            .expect("handled")
    };
    let (event, context) = of(traced.id());
    assert_eq!(event.headers()[TRACEPARENT], root.traceparent());
    assert_eq!(context.expect("context").trace_id(), root.trace_id());
    // Outside any trace, the event arrives as it was sent; its message header
    // names the event's own trace.
    let (event, context) = of(untraced.id());
    assert_eq!(event, untraced);
    let own = untraced.id().as_uuid().simple().to_string();
    assert_eq!(context.expect("context").trace_id(), own);
    publisher.shutdown(WAIT).await;
    consumer.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_travels_as_a_message_header_both_ways() {
    require_broker!("traceparent_travels_as_a_message_header_both_ways");
    let mut fx = Fixture::with("tracehdr", fast, short_heartbeat);
    // Sent on a plain session: stamped there, in the message headers, for
    // any client to read.
    let session = fx.session().await;
    let (conn, channel) = raw().await;
    let raw_queue = fx.raw_queue(&channel, "trace.#").await;
    let event = Event::try_new("trace.raw", serde_json::json!({})).expect("event");
    session
        .send(&event)
        .await
        .expect("send")
        .await
        .expect("confirm");
    let delivery = next_raw(&channel, &raw_queue).await;
    let header = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(TRACEPARENT).cloned());
    assert_eq!(
        header,
        Some(AMQPValue::LongString(LongString::from(
            TraceContext::for_event(&event).traceparent()
        )))
    );
    session.close().await;

    // From another client, with the header on the message only: the handler
    // continues that trace.
    let name = unique("tracehdr");
    fx.cleanup.subscription(&name);
    let events = start(fx.backend.clone(), &fx.config).await;
    until_state("connected", &events, WAIT, connected).await;
    let (seen, _handle) = service(&events, &name, "trace.#", None).await;
    let foreign = TraceContext::new_root();
    let body = Event::try_new("trace.foreign", serde_json::json!({})).expect("event");
    let mut headers = FieldTable::default();
    headers.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(foreign.traceparent())),
    );
    channel
        .basic_publish(
            fx.exchange.as_str().into(),
            "trace.foreign".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&body).expect("json"),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    until("handled", LONG, || !seen.lock().expect("lock").is_empty()).await;
    let (_, context) = one(&seen);
    assert_eq!(context.expect("context").trace_id(), foreign.trace_id());
    events.shutdown(WAIT).await;
    let _ = conn.close(200, "done".into()).await;
}
