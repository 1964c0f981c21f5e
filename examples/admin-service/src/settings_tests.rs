//! Unit tests of the settings.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults() {
    let s = from(&[]).unwrap();
    assert_eq!(s.port, 8012);
    assert_eq!(s.service_name, "Admin Service");
    assert_eq!(s.log_format, LogFormat::Human);
    assert_eq!(s.log_filter, "info,lapin=off");
    assert_eq!(s.shutdown_grace, Duration::from_secs(10));
    assert_eq!(s.api_token, None);
    assert_eq!(s.http, HttpLimits::default());
    assert_eq!(s.http.max_body_bytes, 1024 * 1024);
    assert_eq!(s.config, Config::default());
    assert_eq!(s.outbox_path, None);
    assert_eq!(s.config.max_pending_bytes(), Some(64 * 1024 * 1024));
}

#[test]
fn variables_lists_every_variable_read() {
    let vars = variables();
    for name in [
        ENV_PORT,
        ENV_API_TOKEN,
        ENV_API_TOKEN_FILE,
        ENV_MAX_CONCURRENT_REQUESTS,
        "RABBITMQ_URL",
        "FLOW_EVENTS_MAX_PENDING_BYTES",
        "FLOW_EVENTS_MAX_PENDING_AGE",
        "FLOW_EVENTS_OUTBOX_PATH",
        "RABBITMQ_CONFIRM_WAIT",
        "RABBITMQ_MAX_PUBLISH_ATTEMPTS",
    ] {
        assert!(
            vars.iter().any(|v| v == name),
            "{name} missing from {vars:?}"
        );
    }
}

#[test]
fn api_token_from_the_variable_or_a_file() {
    let s = from(&[(ENV_API_TOKEN, " s3cret ")]).unwrap();
    assert_eq!(s.api_token, Some(ApiToken("s3cret".into())));
    assert!(!format!("{s:?}").contains("s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let path = file.to_str().unwrap();
    let s = from(&[(ENV_API_TOKEN_FILE, path)]).unwrap();
    assert_eq!(s.api_token, Some(ApiToken("from-file".into())));
    for vars in [
        vec![(ENV_API_TOKEN, "a"), (ENV_API_TOKEN_FILE, path)],
        vec![(ENV_API_TOKEN_FILE, "/nonexistent/token")],
        vec![(ENV_API_TOKEN, "two words")],
    ] {
        let err = from(&vars).unwrap_err();
        assert!(err.variable().starts_with("API_TOKEN"), "{err}");
        assert!(!err.to_string().contains("two words"), "{err}");
    }
    std::fs::write(dir.path().join("url"), "amqp://u:p@h:5672/%2f\n").unwrap();
    let url_file = dir.path().join("url");
    let s = from(&[(ENV_URL_FILE, url_file.to_str().unwrap())]).unwrap();
    assert_eq!(s.amqp.url().unwrap().expose(), "amqp://u:p@h:5672/%2f");
    let both = from(&[
        (ENV_URL_FILE, url_file.to_str().unwrap()),
        ("RABBITMQ_URL", "amqp://h"),
    ]);
    assert_eq!(both.unwrap_err().variable(), ENV_URL_FILE);
    std::fs::write(&file, "\n").unwrap();
    assert_eq!(
        from(&[(ENV_API_TOKEN_FILE, path)]).unwrap_err().variable(),
        ENV_API_TOKEN_FILE
    );
}

#[test]
fn reads_service_variables() {
    let s = from(&[
        (ENV_PORT, "9000"),
        (ENV_SERVICE_NAME, " Billing "),
        (ENV_LOG_FORMAT, "JSON"),
        (ENV_SHUTDOWN_GRACE, "2.5"),
    ])
    .unwrap();
    assert_eq!(s.port, 9000);
    assert_eq!(s.service_name, "Billing");
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.shutdown_grace, Duration::from_millis(2500));
}

#[cfg(feature = "amqp")]
#[test]
fn reads_the_broker_settings() {
    use flow_events_core::QueueKind;
    let s = from(&[("RABBITMQ_EXCHANGE", "my.events")]).unwrap();
    assert_eq!(s.amqp.exchange(), "my.events");
    assert_eq!(
        from(&[("RABBITMQ_CA_FILE", "/nonexistent/ca.pem")])
            .unwrap_err()
            .variable(),
        "RABBITMQ_CA_FILE"
    );
    assert_eq!(from(&[]).unwrap().amqp.queue_kind(), QueueKind::Classic);
    let s = from(&[("RABBITMQ_QUEUE_TYPE", "quorum")]).unwrap();
    assert_eq!(s.amqp.queue_kind(), QueueKind::Quorum);
}

#[test]
fn invalid_values_name_their_variable() {
    for (var, value) in [
        (ENV_PORT, "abc"),
        (ENV_PORT, "0"),
        (ENV_PORT, "70000"),
        (ENV_LOG_FORMAT, "xml"),
        (ENV_SHUTDOWN_GRACE, "soon"),
        (ENV_SHUTDOWN_GRACE, "-1"),
        (ENV_SHUTDOWN_GRACE, "1e12"),
        (ENV_MAX_BODY_BYTES, "0"),
        (ENV_MAX_CONCURRENT_REQUESTS, "many"),
        (ENV_HTTP_HEADER_TIMEOUT, "0"),
        (ENV_HTTP_REQUEST_TIMEOUT, "inf"),
        (ENV_HTTP_IDLE_TIMEOUT, "NaN"),
        ("RABBITMQ_MAX_RETRIES", "x"),
        #[cfg(feature = "amqp")]
        ("RABBITMQ_QUEUE_TYPE", "stream"),
        #[cfg(feature = "amqp")]
        ("RABBITMQ_URL", "http://h/"),
        #[cfg(feature = "amqp")]
        ("RABBITMQ_EXCHANGE", "a b"),
        ("RABBITMQ_MAX_RETRY_DELAY", "1e15"),
        ("RABBITMQ_PUBLISH_TIMEOUT", "1e300"),
    ] {
        let err = from(&[(var, value)]).expect_err(var);
        assert_eq!(err.variable(), var);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid value {value:?} for {var}: ")),
            "{text}"
        );
    }
}
