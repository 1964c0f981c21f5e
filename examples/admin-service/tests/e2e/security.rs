//! The API token, secrets kept out of the logs, the outbox file's mode.

use crate::common::{Req, Service};

const TOKEN: &str = "tok-3f9a1c7e5b";

async fn status_of(service: &Service, req: Req<'_>) -> (u16, String) {
    let r = service.request(req).await.expect("request");
    (r.status, r.body)
}

#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_guards_publishing_and_metrics_not_health() {
    let service = Service::start(&[("API_TOKEN", TOKEN)]).await;
    let event = r#"{"type": "order.created"}"#;
    let bearer = format!("Bearer {TOKEN}");
    for (what, req) in [
        ("no token", Req::post_json(event)),
        (
            "wrong token",
            Req::post_json(event).header("authorization", "Bearer tok-3f9a1c7e5c"),
        ),
        (
            "longer token",
            Req::post_json(event).header("authorization", &format!("{bearer}x")),
        ),
        (
            "another scheme",
            Req::post_json(event).header("authorization", &format!("Basic {TOKEN}")),
        ),
        ("metrics without token", Req::get("/metrics")),
    ] {
        let r = service.request(req).await.expect(what);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.json()["code"], "unauthorized", "{what}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // Probes and the description stay open.
    for path in ["/health", "/health/live", "/health/ready", "/openapi.json"] {
        let (status, body) = status_of(&service, Req::get(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // With the token: a missing Content-Type is 415, a good request 202.
    let no_type = Req {
        method: "POST",
        path: "/events",
        body: Some(event.as_bytes().to_vec()),
        headers: vec![("authorization", bearer.clone())],
    };
    let (status, body) = status_of(&service, no_type).await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = status_of(
        &service,
        Req::post_json(event).header("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = status_of(
        &service,
        Req::get("/metrics").header("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Nothing refused was published.
    assert_eq!(service.metric("flow_events_published_total").await, 1.0);
    service.wait_log("the API is protected").await;
    let logs = service.logs();
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let service = Service::start(&[("API_TOKEN_FILE", file.to_str().unwrap())]).await;
    let event = r#"{"type": "order.created"}"#;
    let (status, _) = status_of(&service, Req::post_json(event)).await;
    assert_eq!(status, 401);
    let authorized = Req::post_json(event).header("authorization", &format!("Bearer {TOKEN}"));
    let (status, body) = status_of(&service, authorized).await;
    assert_eq!(status, 202, "{body}");

    let open = Service::start(&[]).await;
    open.wait_log("the API is not protected").await;
}

/// A marker in a payload appears in no log line, whatever becomes of the
/// event: confirmed, buffered, refused, left undelivered at shutdown.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_never_reach_the_log() {
    const MARKER: &str = "PAYLOAD-MARKER-5e0c2b";
    let url = crate::common::unreachable_url();
    let mut service = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("RUST_LOG", "debug,lapin=off"),
        ("SHUTDOWN_GRACE", "0.2"),
        ("FLOW_EVENTS_MAX_EVENT_BYTES", "4096"),
    ])
    .await;
    let r = service
        .post_json(&format!(
            r#"{{"type": "order.created", "data": {{"m": "{MARKER}"}}}}"#
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Refused by the publisher (too large): logged by id and type.
    let big = format!(
        r#"{{"type": "order.created", "data": "{MARKER}{}"}}"#,
        "x".repeat(5000)
    );
    let r = service.post_json(&big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    service.stop().await;
    let output = service.output();
    assert!(
        output.contains("undelivered event order.created"),
        "{output}"
    );
    assert!(output.contains("event not accepted"), "{output}");
    assert!(!output.contains(MARKER), "{output}");
}

#[cfg(all(feature = "memory", feature = "outbox", unix))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = state.join("outbox.redb");
    let service = Service::start(&[("FLOW_EVENTS_OUTBOX_PATH", path.to_str().unwrap())]).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "{}", service.output());
    assert_eq!(mode(&state), 0o700);
}

/// Whatever a password holds, it never shows: a URL the backend cannot read
/// stops the start naming the variable; one it reads is masked in the health
/// report and the logs.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_any_characters_stay_secret() {
    use std::time::Instant;
    let port = crate::common::free_port();
    for password in [
        "se/cr#et?1",
        "p@ss word",
        "x%zz/y",
        "p(a)s,s;w=o*r!d",
        "sp ace(s)",
    ] {
        let url = format!("amqp://guest:{password}@127.0.0.1:{port}/%2f");
        let mut service = Service::spawn(&[("RABBITMQ_URL", &url)]);
        let deadline = Instant::now() + crate::common::WAIT;
        let shown = loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                let status = service.wait_exit().await.code().or(status.code());
                assert_eq!(status, Some(2), "{password}: {}", service.output());
                assert!(
                    service.stderr().contains("for RABBITMQ_URL: "),
                    "{}",
                    service.output()
                );
                break String::new();
            }
            if let Ok(r) = service.request(Req::get("/health")).await {
                let health = r.json();
                if health["dependencies"]["rabbitmq"]["last_error"].is_string() {
                    break health.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{password}: {}",
                service.output()
            );
            tokio::time::sleep(crate::common::POLL).await;
        };
        let text = format!("{shown}\n{}", service.output());
        assert!(!text.contains(password), "{password}: {text}");
    }
}
