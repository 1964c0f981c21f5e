//! The resilience decorator's cost, measured against the memory backend alone.
//!
//! - publish latency while disconnected (a buffer append): p50 / p99 / p99.9;
//! - publish throughput of `Resilient` over the memory backend against the
//!   memory backend's session alone, same number of publishes in flight,
//!   reported as a ratio.
//!
//! Run: `cargo bench -p flow-events-testkit --bench decorator`; with
//! `BENCH_METRICS=prometheus`, the library reports its metrics to a
//! Prometheus recorder (as a service with `/metrics` does) while measured;
//! otherwise to no recorder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use flow_events_core::{
    Backend, BackendError, BackendInfo, Config, ConnectionMonitor, ConnectionState, Event,
    EventSink, Resilient, Session,
};
use flow_events_memory::MemoryBroker;
use futures_util::future::join_all;

struct Down;

#[async_trait::async_trait]
impl Backend for Down {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        Err(BackendError::connection("connection refused"))
    }
    fn info(&self) -> BackendInfo {
        BackendInfo::new("amqp", "amqp://127.0.0.1:1/")
    }
}

fn event(n: usize) -> Event {
    Event::try_new(
        "order.created",
        serde_json::json!({"order_id": n, "customer": "c-42", "total": 99.5}),
    )
    .expect("valid type")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(pending: usize) -> Config {
    Config::builder()
        .with_max_pending_events(pending)
        .with_retry_delay(Duration::from_secs(30))
        .with_max_retry_delay(Duration::from_secs(60))
        .build()
        .expect("config")
}

/// Latency percentiles of `publish` while disconnected, one call at a time.
fn disconnected_percentiles(rt: &tokio::runtime::Runtime) {
    const N: usize = 200_000;
    rt.block_on(async {
        let r = Resilient::builder(Down)
            .with_config(config(N + 1))
            .start()
            .await
            .expect("start");
        let events: Vec<Event> = (0..N).map(event).collect();
        let mut lat = Vec::with_capacity(N);
        for e in events {
            let t = Instant::now();
            let outcome = r.publish(e).await;
            lat.push(t.elapsed());
            assert!(outcome.is_ok());
        }
        lat.sort();
        let pct = |p: f64| lat[((N as f64 * p) as usize).min(N - 1)];
        println!(
            "publish while disconnected ({N} calls): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
            pct(0.50),
            pct(0.99),
            pct(0.999),
            lat[N - 1]
        );
        r.shutdown(Duration::ZERO).await;
    });
}

async fn connected_resilient(broker: &MemoryBroker) -> Resilient {
    let r = Resilient::builder(broker.backend())
        .with_config(config(1000))
        .start()
        .await
        .expect("start");
    let mut rx = r.watch_state();
    rx.wait_for(|s| *s == ConnectionState::Connected)
        .await
        .expect("connected");
    r
}

/// Publishes `total` events with `in_flight` at once through `publish`.
async fn run_resilient(r: &Resilient, total: usize, in_flight: usize) {
    for chunk in (0..total).collect::<Vec<_>>().chunks(in_flight) {
        let results = join_all(chunk.iter().map(|n| r.publish(event(*n)))).await;
        assert!(results.iter().all(Result::is_ok));
    }
}

async fn run_session(s: &Arc<dyn Session>, total: usize, in_flight: usize) {
    for chunk in (0..total).collect::<Vec<_>>().chunks(in_flight) {
        let results = join_all(chunk.iter().map(|n| {
            let e = event(*n);
            async move { s.send(&e).await?.await }
        }))
        .await;
        assert!(results.iter().all(Result::is_ok));
    }
}

/// Throughput ratio, measured side by side in one run.
fn throughput_ratio(rt: &tokio::runtime::Runtime) {
    const TOTAL: usize = 100_000;
    for in_flight in [1, 64, 1024] {
        let (plain, decorated) = rt.block_on(async {
            let broker = MemoryBroker::new();
            let r = connected_resilient(&broker).await;
            let session = broker.backend().connect().await.expect("connect");
            // Warm up both paths, then alternate to share any noise.
            run_session(&session, 10_000, in_flight).await;
            run_resilient(&r, 10_000, in_flight).await;
            let mut plain = Duration::ZERO;
            let mut decorated = Duration::ZERO;
            for _ in 0..3 {
                let t = Instant::now();
                run_session(&session, TOTAL, in_flight).await;
                plain += t.elapsed();
                let t = Instant::now();
                run_resilient(&r, TOTAL, in_flight).await;
                decorated += t.elapsed();
            }
            (plain / 3, decorated / 3)
        });
        let rate = |d: Duration| TOTAL as f64 / d.as_secs_f64();
        println!(
            "in flight {in_flight:>5}: memory session {:>10.0} ev/s   Resilient over memory {:>10.0} ev/s   ratio {:.2}",
            rate(plain),
            rate(decorated),
            rate(plain).recip() / rate(decorated).recip()
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    // Events are made before the clock starts: only `publish` is measured.
    group.bench_function("disconnected_buffer_append", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let r = Resilient::builder(Down)
                .with_config(config(iters as usize + 1))
                .start()
                .await
                .expect("start");
            let events: Vec<Event> = (0..iters as usize).map(event).collect();
            let t = Instant::now();
            for e in events {
                let _ = r.publish(e).await;
            }
            let elapsed = t.elapsed();
            r.shutdown(Duration::ZERO).await;
            elapsed
        })
    });
    let broker = MemoryBroker::new();
    let connected = rt.block_on(connected_resilient(&broker));
    group.bench_function("connected_resilient_over_memory", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let r = connected.clone();
            async move {
                let events: Vec<Event> = (0..iters as usize).map(event).collect();
                let t = Instant::now();
                for e in events {
                    let _ = r.publish(e).await;
                }
                t.elapsed()
            }
        })
    });
    let session = rt.block_on(broker.backend().connect()).expect("connect");
    group.bench_function("memory_session_alone", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = session.clone();
            async move {
                let events: Vec<Event> = (0..iters as usize).map(event).collect();
                let t = Instant::now();
                for e in events {
                    if let Ok(c) = s.send(&e).await {
                        let _ = c.await;
                    }
                }
                t.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, criterion_benches);

fn main() {
    if std::env::var("BENCH_METRICS").is_ok_and(|v| v == "prometheus") {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
        println!("metrics: reported to a Prometheus recorder");
        // Upkeep as a scrape would do it, every second.
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                handle.run_upkeep();
                let _ = handle.render();
            }
        });
    } else {
        println!("metrics: no recorder installed");
    }
    let rt = runtime();
    disconnected_percentiles(&rt);
    throughput_ratio(&rt);
    drop(rt);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
