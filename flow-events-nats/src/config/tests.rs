//! Unit tests of the NATS configuration.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<NatsConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NatsConfig::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults() {
    let c = from(&[]).unwrap();
    assert_eq!(c.url(), None);
    assert_eq!(c.stream(), "FLOW_EVENTS");
    assert_eq!(c.subject_prefix(), "flow.events");
    assert_eq!(c.dead_letter_prefix(), "flow.events-dead");
    assert_eq!(c.duplicate_window(), Duration::from_secs(120));
    assert_eq!(c.retention(), Retention::Interest);
    assert!(c.dead_letter());
}

#[test]
fn reads_every_variable() {
    let c = from(&[
        (ENV_URL, "nats://a:b@h1:4222, nats://h2:4222"),
        (ENV_STREAM, "ORDERS"),
        (ENV_SUBJECT_PREFIX, "shop.orders"),
        (ENV_USER, "bob"),
        (ENV_PASSWORD, "pw"),
        (ENV_TOKEN, "tok"),
        (ENV_NKEY, "SUAxxx"),
        (ENV_CREDS, "/etc/nats/user.creds"),
        (ENV_TLS, "true"),
        (ENV_TLS_CA, "/etc/ca.pem"),
        (ENV_TLS_CERT, "/etc/c.pem"),
        (ENV_TLS_KEY, "/etc/k.pem"),
        (ENV_DUPLICATE_WINDOW, "60"),
        (ENV_RETENTION, "limits"),
        (ENV_MAX_AGE, "86400"),
        (ENV_ACK_WAIT, "10"),
        (ENV_RETRY_DELAY, "0.5"),
        (ENV_DEAD_LETTER, "false"),
        (ENV_CONNECT_TIMEOUT, "2"),
        (ENV_PING_INTERVAL, "3"),
    ])
    .unwrap();
    assert_eq!(c.url().unwrap().split().len(), 2);
    assert_eq!(c.stream(), "ORDERS");
    assert_eq!(c.dead_letter_stream(), "ORDERS_DEAD");
    assert_eq!(c.user(), Some("bob"));
    assert_eq!(c.password().unwrap().expose(), "pw");
    assert_eq!(c.token().unwrap().expose(), "tok");
    assert_eq!(c.nkey().unwrap().expose(), "SUAxxx");
    assert!(c.credentials_file().is_some() && c.tls() && c.tls_ca_file().is_some());
    assert!(c.tls_client_cert().is_some());
    assert_eq!(c.retention(), Retention::Limits);
    assert_eq!(c.max_age(), Some(Duration::from_secs(86400)));
    assert_eq!(c.retry_delay(), Duration::from_millis(500));
    assert!(!c.dead_letter());
    assert_eq!(c.ping_interval(), Duration::from_secs(3));
    assert_eq!(ENV_VARS.len(), 20);
}

#[test]
fn secrets_never_show() {
    let c = from(&[
        (ENV_URL, "nats://alice:urlpass@h:4222,nats://tokentok@h2"),
        (ENV_USER, "bob"),
        (ENV_PASSWORD, "envpass"),
        (ENV_TOKEN, "envtoken"),
        (ENV_NKEY, "SUAseedseed"),
    ])
    .unwrap();
    let shown = format!("{c:?} {}", c.redacted_url());
    for secret in ["urlpass", "tokentok", "envpass", "envtoken", "SUAseedseed"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert_eq!(c.redacted_url(), "nats://alice:***@h:4222,nats://***@h2");
}

#[test]
fn invalid_values_name_the_variable() {
    for (var, value) in [
        (ENV_STREAM, "has.dot"),
        (ENV_STREAM, "a b"),
        (ENV_SUBJECT_PREFIX, "a..b"),
        (ENV_SUBJECT_PREFIX, "a.>"),
        (ENV_SUBJECT_PREFIX, "a.*"),
        (ENV_DUPLICATE_WINDOW, "0"),
        (ENV_DUPLICATE_WINDOW, "soon"),
        (ENV_RETENTION, "workqueue"),
        (ENV_TLS, "maybe"),
        (ENV_ACK_WAIT, "-1"),
    ] {
        let e = from(&[(var, value)]).expect_err(value);
        assert_eq!(e.variable(), var, "{value}");
    }
    assert_eq!(
        from(&[(ENV_PASSWORD, "x")]).unwrap_err().variable(),
        ENV_USER
    );
    assert_eq!(
        from(&[(ENV_TLS_CERT, "c.pem")]).unwrap_err().variable(),
        ENV_TLS_CERT
    );
}
