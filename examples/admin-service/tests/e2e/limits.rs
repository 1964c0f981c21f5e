//! What hostile or slow clients cannot do: take the memory, hold connections
//! with unfinished requests, hold up the shutdown.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Req, Service, WAIT};

/// Opens a connection and sends `bytes` of a request that never ends.
async fn unfinished(port: u16, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

/// How long a client of the memory test waits for an answer.
const SLOW_MACHINE: Duration = Duration::from_secs(300);

const HALF_HEADER: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_cut_off_and_health_answers_meanwhile() {
    let service = Service::start(&[("HTTP_HEADER_TIMEOUT", "1")]).await;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(unfinished(service.port, HALF_HEADER).await);
    }
    let health = service.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    // Every one is closed once the header timeout (1 s) has passed.
    let mut last = Duration::ZERO;
    for stream in &mut slow {
        let left =
            (opened + Duration::from_secs(1) + WAIT).saturating_duration_since(Instant::now());
        assert!(
            until_closed(stream, left).await.is_some(),
            "a connection with an unfinished header is still open after {:?}",
            opened.elapsed()
        );
        last = last.max(opened.elapsed());
    }
    println!(
        "200 connections with unfinished headers closed {last:?} after they opened (header timeout 1 s)"
    );
    assert_eq!(service.get("/health/live").await.status, 200);
}

const SLOW_BODY: &[u8] = b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_the_bound_are_turned_away_at_once() {
    let service = Service::start(&[
        ("MAX_CONCURRENT_REQUESTS", "1"),
        ("HTTP_REQUEST_TIMEOUT", "3600"),
        ("RUST_LOG", "info,admin_service=debug,lapin=off"),
    ])
    .await;
    // A body that stops half way holds the only slot of POST /events...
    let _slow = unfinished(service.port, SLOW_BODY).await;
    // ...once the service says so: a publish sent before could take the slot
    // first and have the slow one turned away (which then waits for the rest
    // of its body, holding nothing).
    service.wait_log("publish slot taken").await;
    // Another publish is turned away at once.
    let overloaded = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(overloaded.status, 503, "{}", overloaded.body);
    assert_eq!(
        overloaded.json()["code"],
        "overloaded",
        "{}",
        overloaded.body
    );
    assert_eq!(overloaded.header("retry-after").as_deref(), Some("1"));
    // Health is not counted against the bound.
    assert_eq!(service.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out_and_idle_connections_close() {
    let service =
        Service::start(&[("HTTP_REQUEST_TIMEOUT", "1"), ("HTTP_IDLE_TIMEOUT", "1")]).await;
    // A body that stops half way is answered 408 once the request timeout passes.
    let mut stream = unfinished(service.port, SLOW_BODY).await;
    let answer = until_closed(&mut stream, WAIT).await.expect("closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A kept-alive connection that goes quiet after a request is closed.
    let mut idle = unfinished(
        service.port,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let answer = until_closed(&mut idle, WAIT)
        .await
        .expect("idle connection closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_the_shutdown() {
    let mut service = Service::start(&[
        ("HTTP_HEADER_TIMEOUT", "3600"),
        ("HTTP_REQUEST_TIMEOUT", "3600"),
        ("SHUTDOWN_GRACE", "0.5"),
    ])
    .await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(unfinished(service.port, HALF_HEADER).await);
    }
    slow.push(unfinished(service.port, SLOW_BODY).await);
    assert_eq!(service.get("/health/live").await.status, 200);
    // stop gives up after WAIT, far below the hour of the timeouts.
    service.stop().await;
}

/// 64 clients post bodies of the largest size at once, several each, while
/// the broker is unreachable: the resident memory stays under 256 MiB with
/// the default settings. Each answer is 202 (buffered), 503 (dropped at the
/// buffer's byte bound, or over `MAX_CONCURRENT_REQUESTS`), or, on a machine
/// so loaded that a request outlasts `HTTP_REQUEST_TIMEOUT`, 408.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_maximum_size_bodies() {
    const CLIENTS: usize = 64;
    const EACH: usize = 2;
    const BUDGET: u64 = 256 * 1024 * 1024;
    let url = crate::common::unreachable_url();
    let service = Service::start(&[("RABBITMQ_URL", &url)]).await;
    // `{"type":"load.test","data":[0,0,...]}`, 1 MiB: the shape that cost
    // 16 times its size as a JSON tree.
    let head = r#"{"type":"load.test","data":["#;
    let zeros = (1024 * 1024 - head.len() - 3) / 2;
    let body = format!("{head}{}0]}}", "0,".repeat(zeros));
    assert!(body.len() <= 1024 * 1024);

    let before = service.rss_bytes().expect("rss");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let pid = service.child.id();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(rss) = crate::common::rss_of(pid) {
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let port = service.port;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..EACH {
                // Far longer than the service's own request timeout: the
                // service answers every request, the client never gives up first.
                let r = crate::common::send_within(port, Req::post_json(&body), SLOW_MACHINE).await;
                statuses.push(
                    r.map(|r| r.status.to_string())
                        .unwrap_or_else(|e| format!("{e:?}")),
                );
            }
            statuses
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for client in clients {
        for status in client.await.expect("client") {
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler
        .await
        .expect("sampler")
        .max(service.rss_bytes().unwrap_or(0));
    let pending = service.metric("flow_events_pending_events").await;
    println!(
        "{CLIENTS} clients x {EACH} bodies of {} bytes, broker down: resident memory {} MiB before, \
         peak {} MiB (budget 256 MiB); answers {counts:?}; {pending} events pending",
        body.len(),
        before / (1024 * 1024),
        peak / (1024 * 1024)
    );
    assert!(
        counts
            .keys()
            .all(|s| ["202", "503", "408"].contains(&s.as_str())),
        "unexpected answers {counts:?}\n{}",
        service.output()
    );
    assert!(peak < BUDGET, "peak resident memory {peak} bytes");
    assert!(pending <= 64.0, "{pending} events of 1 MiB pending");
}
