//! Requests the service refuses, and what each gets; nothing is buffered for
//! any of them.
#![cfg(feature = "amqp")]

use crate::common::{Req, Service, unreachable_url};

/// One bad request and what it gets.
struct Case {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    status: u16,
    message: &'static str,
}

fn json(what: &'static str, body: &str, status: u16, message: &'static str) -> Case {
    Case {
        what,
        body: body.as_bytes().to_vec(),
        content_type: Some("application/json"),
        status,
        message,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_buffered() {
    let url = unreachable_url();
    let service = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("MAX_BODY_BYTES", "4096"),
        ("FLOW_EVENTS_MAX_EVENT_BYTES", "2048"),
    ])
    .await;
    let big = |n| format!("{{\"type\": \"a\", \"data\": \"{}\"}}", "x".repeat(n));
    let cases = [
        json("bad JSON", "{\"type\": ", 400, "invalid JSON"),
        json("empty body", "", 400, "invalid JSON"),
        json("an array", "[1, 2]", 400, "JSON object"),
        json("a string", "\"order.created\"", 400, "JSON object"),
        json("no type", "{\"data\": {}}", 400, "missing field \"type\""),
        json("type not a string", "{\"type\": 7}", 400, "to be a string"),
        json("empty type", "{\"type\": \"\"}", 400, "event type is empty"),
        json("space", "{\"type\": \"order created\"}", 400, "not allowed"),
        json("wildcard", "{\"type\": \"order.*\"}", 400, "not allowed"),
        json(
            "empty word",
            "{\"type\": \"order..created\"}",
            400,
            "empty word",
        ),
        json(
            "unknown field",
            "{\"type\": \"a\", \"x\": 1}",
            400,
            "unknown field",
        ),
        json(
            "a number out of range",
            "{\"type\": \"a\", \"data\": [1e400]}",
            400,
            "invalid \"data\"",
        ),
        Case {
            content_type: Some("text/plain"),
            ..json("not JSON content", "{\"type\": \"a\"}", 415, "Content-Type")
        },
        Case {
            content_type: None,
            ..json("no Content-Type", "{\"type\": \"a\"}", 415, "Content-Type")
        },
        json(
            "body over the limit",
            &big(5000),
            413,
            "larger than 4096 bytes (MAX_BODY_BYTES)",
        ),
        json("event over the limit", &big(1990), 413, "the limit is 2048"),
    ];
    for case in cases {
        let mut req = Req {
            method: "POST",
            path: "/events",
            body: Some(case.body),
            headers: Vec::new(),
        };
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        let r = service.call(req).await;
        assert_eq!(r.status, case.status, "{}: {}", case.what, r.body);
        let error = r.json();
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(case.message), "{}: {error}", case.what);
        assert!(error["code"].is_string(), "{}: {error}", case.what);
    }
    // Nothing was buffered or counted as published.
    let health = service.health().await;
    assert_eq!(health["dependencies"]["rabbitmq"]["pending_events"], 0);
    assert_eq!(service.metric("flow_events_pending_events").await, 0.0);
    assert_eq!(service.metric("flow_events_buffered_total").await, 0.0);
    assert_eq!(service.metric("flow_events_published_total").await, 0.0);
    // Only the event that reached `publish` is counted as refused there.
    assert_eq!(service.metric("flow_events_failed_total").await, 1.0);
    // A good request still goes through, its payload kept as sent.
    let r = service
        .post_json(r#"{"type": "order.created", "data": {"n": [1, 2.50]}}"#)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let unknown = service.get("/nope").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["code"], "not_found");
}
