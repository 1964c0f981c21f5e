//! The resilience decorator over the memory backend, with faults injected and
//! tokio's paused clock: no test here waits on the wall clock.

// Helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{
    ConnectionMonitor, ConnectionState, Event, EventId, EventSink, HealthStatus, PublishErrorKind,
    PublishOutcome, Resilient, StartError,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::Faulty;
use tokio::time::{Instant, timeout};

mod common;

use common::{
    LONG, config, connected, consumer, event, eventually, publish_concurrently, receive, start,
    wait_state,
};

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_bounds_and_states_follow_the_outage() {
    let broker = MemoryBroker::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    faults.delay_connects(Duration::from_millis(1));
    let base = Duration::from_secs(1);
    let cap = Duration::from_secs(8);
    let r = Resilient::builder(backend)
        .with_config(config().with_max_retries(3).build().unwrap())
        .start()
        .await
        .unwrap();
    let mut rx = r.watch_state();
    let initial = *rx.borrow_and_update();
    let states = tokio::spawn(async move {
        let mut seen = vec![initial];
        while rx.changed().await.is_ok() {
            let s = *rx.borrow_and_update();
            seen.push(s);
            if s == ConnectionState::Connected {
                break;
            }
        }
        seen
    });
    wait_state(&r, ConnectionState::Failed).await;
    // Let it probe a few more times while failed.
    eventually("six attempts", || faults.connect_attempts().len() >= 6).await;
    faults.come_up();
    wait_state(&r, ConnectionState::Connected).await;
    let states = timeout(LONG, states).await.unwrap().unwrap();
    use ConnectionState::*;
    let mut distinct = states.clone();
    distinct.dedup();
    // Probes while failed pass through connecting; the outage's story is:
    assert_eq!(distinct.first(), Some(&Disconnected));
    assert_eq!(&distinct[1..3], &[Connecting, Failed], "{states:?}");
    assert_eq!(
        &distinct[distinct.len() - 2..],
        &[Connecting, Connected],
        "{states:?}"
    );

    let attempts = faults.connect_attempts();
    for (i, pair) in attempts.windows(2).enumerate() {
        let failures = i as u32 + 1;
        let ceiling = cap.min(base * 2u32.pow(failures - 1));
        let gap = pair[1] - pair[0] - Duration::from_millis(1);
        assert!(
            gap <= ceiling,
            "delay after failure {failures}: {gap:?} > {ceiling:?}"
        );
    }
    let status = r.status();
    assert_eq!(status.reconnect_attempts, 0);
    assert!(status.last_error.unwrap().contains("connection refused"));
    assert!(status.last_connected.is_some());
}

#[tokio::test(start_paused = true)]
async fn start_down_buffers_1000_then_delivers_all_in_order() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "orders", "order.#").await;
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let started = Instant::now();
    let r = Resilient::builder(backend)
        .with_config(config().build().unwrap())
        .start()
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "optional start-up must not wait"
    );
    let mut ids = Vec::new();
    for n in 0..1000 {
        let e = event("order.created", n);
        ids.push(e.id());
        let outcome = r.publish(e).await.unwrap();
        assert_eq!(outcome, PublishOutcome::Buffered { pending: n + 1 });
    }
    let s = r.status();
    assert_eq!(s.pending_events, 1000);
    assert!(!s.connected);
    let health = r.health("Admin Service");
    assert_eq!(health.status, HealthStatus::Degraded);
    assert_eq!(health.issues, ["in-memory broker connection unavailable"]);

    faults.come_up();
    let got = receive(&mut rx, 1000).await;
    let got_ids: Vec<EventId> = got.iter().map(Event::id).collect();
    assert_eq!(got_ids, ids, "delivered in publish order");
    eventually("buffer empty", || r.status().pending_events == 0).await;
    let s = r.status();
    assert_eq!(s.confirmed, 1000);
    assert_eq!(s.dropped_events, 0);
    assert_eq!(s.oldest_pending_age, None);
    // Newer events now go straight to the broker.
    assert_eq!(
        r.publish(event("order.shipped", 0)).await.unwrap(),
        PublishOutcome::Confirmed
    );
}

#[tokio::test(start_paused = true)]
async fn connection_dropped_with_confirms_in_flight_delivers_every_event() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "inflight", "x.#").await;
    let (r, faults) = connected(&broker).await;
    faults.delay_confirms(Duration::from_secs(2));

    // 200 direct publishes awaiting their confirms...
    let (direct, tasks) = publish_concurrently(&r, "x.direct", 0..200);
    let mut ids: HashSet<EventId> = direct.into_iter().collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...when the connection drops (and the broker stays away a while).
    faults.go_down();
    faults.drop_connection();
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{outcome:?}"
        );
    }
    // A backlog (published while the broker is away) drained with confirms
    // in flight, dropped again mid-drain.
    for n in 0..300 {
        let e = event("x.backlog", n);
        ids.insert(e.id());
        r.publish(e).await.unwrap();
    }
    faults.come_up();
    wait_state(&r, ConnectionState::Connected).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(r.status().pending_events > 0, "confirms still in flight");
    faults.drop_connection();
    faults.delay_confirms(Duration::ZERO);

    let mut seen = HashSet::new();
    let mut deliveries = 0;
    while !ids.is_subset(&seen) {
        let d = rx.next(LONG).await;
        deliveries += 1;
        seen.insert(d.event().id());
    }
    eventually("buffer empty", || r.status().pending_events == 0).await;
    assert!(deliveries >= 500);
    println!(
        "500 events, {deliveries} deliveries ({} duplicates)",
        deliveries - 500
    );
}

#[tokio::test(start_paused = true)]
async fn required_mode_fails_after_the_configured_retries() {
    let broker = MemoryBroker::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let result = Resilient::builder(backend)
        .with_config(
            config()
                .with_required(true)
                .with_max_retries(4)
                .build()
                .unwrap(),
        )
        .start()
        .await;
    match result {
        Err(StartError::BrokerUnavailable {
            attempts,
            last_error,
            ..
        }) => {
            assert_eq!(attempts, 4);
            let last_error = last_error.expect("the last attempt's error").to_string();
            assert!(last_error.contains("connection refused"), "{last_error}");
        }
        other => panic!("expected BrokerUnavailable, got {other:?}"),
    }
    assert_eq!(faults.connect_attempts().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn required_mode_starts_connected_when_the_broker_is_there() {
    let broker = MemoryBroker::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.fail_next_connects(2);
    let r = Resilient::builder(backend)
        .with_config(config().with_required(true).build().unwrap())
        .start()
        .await
        .unwrap();
    assert_eq!(r.state(), ConnectionState::Connected);
    assert_eq!(faults.connect_attempts().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn optional_mode_starts_without_the_broker() {
    let broker = MemoryBroker::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(backend)
        .with_config(config().with_max_retries(1).build().unwrap())
        .start()
        .await
        .unwrap();
    wait_state(&r, ConnectionState::Failed).await;
    assert!(matches!(
        r.publish(event("a.b", 1)).await.unwrap(),
        PublishOutcome::Buffered { pending: 1 }
    ));
}

/// After an outage, under a steady load that never lets the drain's window
/// empty, publishing goes direct again once the backlog has been sent: callers
/// get `Confirmed`, the pending count reaches 0, and each publisher's events
/// arrive in its publish order.
#[tokio::test(start_paused = true)]
async fn steady_load_after_an_outage_returns_to_direct_publishing() {
    const PUBLISHERS: usize = 4;
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "steady", "steady.#").await;
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(backend)
        .with_config(config().with_max_pending_events(100_000).build().unwrap())
        .start()
        .await
        .unwrap();
    // Confirms take 20 ms, new events come every 2 ms per publisher: there is
    // always something in flight from the drain while the load runs.
    faults.delay_confirms(Duration::from_millis(20));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let r = r.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e =
                    Event::try_new("steady.tick", serde_json::json!({ "p": p, "n": n })).unwrap();
                outcomes.push(r.publish(e).await.unwrap());
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backlog = r.status().pending_events;
    assert!(backlog > 500, "a backlog built up: {backlog}");
    faults.come_up();
    wait_state(&r, ConnectionState::Connected).await;
    let back_at = Instant::now();
    eventually("the backlog to be confirmed under load", || {
        r.status().pending_events == 0
    })
    .await;
    let drained_in = back_at.elapsed();
    // Keep the load on a while longer: publishes stay direct.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = r.status();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut confirmed = 0;
    let mut total = 0;
    for t in tasks {
        let outcomes = t.await.unwrap();
        total += outcomes.len();
        confirmed += outcomes
            .iter()
            .filter(|o| **o == PublishOutcome::Confirmed)
            .count();
    }
    println!(
        "backlog {backlog}, drained in {drained_in:?} under load; {confirmed} of {total} \
         publishes confirmed directly; pending 200 ms later: {}",
        late.pending_events
    );
    assert!(confirmed > 0, "publishes went direct again");
    assert!(
        late.pending_events <= PUBLISHERS,
        "the buffer stays (nearly) empty under load: {} pending",
        late.pending_events
    );
    let got = receive(&mut rx, total).await;
    let mut last = [None::<u64>; PUBLISHERS];
    for e in &got {
        let p = e.data()["p"].as_u64().unwrap() as usize;
        let n = e.data()["n"].as_u64().unwrap();
        assert!(
            last[p].is_none_or(|prev| prev < n),
            "publisher {p}: event {n} arrived after {:?}",
            last[p]
        );
        last[p] = Some(n);
    }
    eventually("buffer empty", || r.status().pending_events == 0).await;
    assert_eq!(r.status().dropped_events, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_within_grace_or_reports_what_is_left() {
    let broker = MemoryBroker::new();
    let (r, faults) = start(&broker, config().build().unwrap()).await;
    faults.go_down();
    for n in 0..5 {
        r.publish(event("q.e", n)).await.unwrap();
    }
    let report = r.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.remaining.len(), 5);
    let err = r.publish(event("q.e", 9)).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::ShuttingDown);

    let (r, faults) = start(&broker, config().build().unwrap()).await;
    faults.go_down();
    for n in 0..5 {
        r.publish(event("q.e", n)).await.unwrap();
    }
    faults.come_up();
    let report = r.shutdown(Duration::from_secs(60)).await;
    assert!(report.remaining.is_empty());
    assert_eq!(r.status().confirmed, 5);
}

#[tokio::test(start_paused = true)]
async fn secrets_never_reach_status_or_health() {
    let r = Resilient::builder(SecretBackend).start().await.unwrap();
    wait_state(&r, ConnectionState::Connecting).await;
    eventually("an error", || r.status().last_error.is_some()).await;
    let text = format!(
        "{:?} {} {:?}",
        r.status(),
        serde_json::to_string(&r.health("svc")).unwrap(),
        r
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("amqp://guest:***@rabbitmq:5672/"));
}

struct SecretBackend;

#[async_trait::async_trait]
impl flow_events_core::Backend for SecretBackend {
    async fn connect(
        &self,
    ) -> Result<Arc<dyn flow_events_core::Session>, flow_events_core::BackendError> {
        Err(flow_events_core::BackendError::connection(
            "could not reach amqp://guest:hunter2@rabbitmq:5672/",
        ))
    }
    fn info(&self) -> flow_events_core::BackendInfo {
        flow_events_core::BackendInfo::new(
            "amqp",
            flow_events_core::redact_url("amqp://guest:hunter2@rabbitmq:5672/"),
        )
        .with_display_name("RabbitMQ")
        .with_dependency("rabbitmq")
    }
}

/// Stamps each event with the name of the task that published it.
struct Stamping<B>(B);

tokio::task_local! {
    static PUBLISHER: &'static str;
}

#[async_trait::async_trait]
impl<B: flow_events_core::Backend> flow_events_core::Backend for Stamping<B> {
    async fn connect(
        &self,
    ) -> Result<Arc<dyn flow_events_core::Session>, flow_events_core::BackendError> {
        self.0.connect().await
    }
    fn info(&self) -> flow_events_core::BackendInfo {
        self.0.info()
    }
    fn prepare_event(&self, event: &mut Event) {
        let by = PUBLISHER.try_with(|p| *p).unwrap_or("nobody");
        event.headers_mut().insert("x-by".to_owned(), by.to_owned());
    }
}

#[tokio::test(start_paused = true)]
async fn the_backend_prepares_each_event_in_the_publishing_task() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "stamped", "#").await;
    let (faulty, faults) = Faulty::wrap(broker.backend());
    let r = Resilient::builder(Stamping(faulty))
        .with_config(config().build().unwrap())
        .start()
        .await
        .unwrap();
    wait_state(&r, ConnectionState::Connected).await;
    PUBLISHER
        .scope("direct", r.publish(event("a.b", 1)))
        .await
        .unwrap();
    // Buffered while down: prepared at publish time, not when drained.
    faults.go_down();
    faults.drop_connection();
    wait_state(&r, ConnectionState::Connecting).await;
    let outcome = PUBLISHER
        .scope("buffered", r.publish(event("a.b", 2)))
        .await
        .unwrap();
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    faults.come_up();
    let got = receive(&mut rx, 2).await;
    let by: Vec<&str> = got.iter().map(|e| e.headers()["x-by"].as_str()).collect();
    assert_eq!(by, ["direct", "buffered"]);
}
