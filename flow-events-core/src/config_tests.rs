//! Unit tests of the configuration.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_from_empty_env() {
    let c = from(&[]).unwrap();
    assert_eq!(c, Config::default());
    assert!(!c.required());
    assert_eq!(c.max_retries(), 5);
    assert_eq!(c.retry_delay(), Duration::from_secs(5));
    assert_eq!(c.max_retry_delay(), Duration::from_secs(60));
    assert_eq!(c.max_pending_events(), 1000);
    assert_eq!(c.confirm_wait(), Duration::from_millis(500));
    assert_eq!(c.max_publish_attempts(), 5);
}

#[test]
fn reads_every_variable() {
    let c = from(&[
        (ENV_REQUIRED, "TRUE"),
        (ENV_MAX_RETRIES, "7"),
        (ENV_RETRY_DELAY, "0.25"),
        (ENV_MAX_RETRY_DELAY, "2.5"),
        (ENV_MAX_PENDING_EVENTS, "42"),
        (ENV_OVERFLOW_POLICY, "drop-oldest"),
        (ENV_PUBLISH_TIMEOUT, "3"),
        (ENV_MAX_IN_FLIGHT, "64"),
        (ENV_CONFIRM_WAIT, "0.25"),
        (ENV_MAX_PUBLISH_ATTEMPTS, "3"),
        (ENV_MAX_EVENT_BYTES, "1024"),
        (ENV_MAX_PENDING_BYTES, "4096"),
        (ENV_MAX_PENDING_AGE, "1.5"),
    ])
    .unwrap();
    assert!(c.required());
    assert_eq!(c.max_retries(), 7);
    assert_eq!(c.retry_delay(), Duration::from_millis(250));
    assert_eq!(c.max_retry_delay(), Duration::from_millis(2500));
    assert_eq!(c.max_pending_events(), 42);
    assert_eq!(c.overflow_policy(), OverflowPolicy::DropOldest);
    assert_eq!(c.publish_timeout(), Duration::from_secs(3));
    assert_eq!(c.max_in_flight(), 64);
    assert_eq!(c.confirm_wait(), Duration::from_millis(250));
    assert_eq!(c.max_publish_attempts(), 3);
    assert_eq!(c.max_event_bytes(), 1024);
    assert_eq!(c.max_pending_bytes(), Some(4096));
    assert_eq!(c.max_pending_age(), Some(Duration::from_millis(1500)));
}

#[test]
fn each_invalid_value_names_its_variable() {
    let cases = [
        (ENV_REQUIRED, "maybe"),
        (ENV_MAX_RETRIES, "five"),
        (ENV_MAX_RETRIES, "-1"),
        (ENV_MAX_RETRIES, "0"),
        (ENV_RETRY_DELAY, "soon"),
        (ENV_RETRY_DELAY, "-1"),
        (ENV_RETRY_DELAY, "NaN"),
        (ENV_RETRY_DELAY, "0"),
        (ENV_MAX_RETRY_DELAY, "inf"),
        (ENV_MAX_RETRY_DELAY, "1"),
        (ENV_MAX_PENDING_EVENTS, "1e3"),
        (ENV_OVERFLOW_POLICY, "drop-all"),
        (ENV_PUBLISH_TIMEOUT, "0"),
        (ENV_MAX_IN_FLIGHT, "0"),
        (ENV_CONFIRM_WAIT, "0"),
        (ENV_CONFIRM_WAIT, "soon"),
        (ENV_MAX_PUBLISH_ATTEMPTS, "0"),
        (ENV_MAX_PUBLISH_ATTEMPTS, "many"),
        (ENV_MAX_EVENT_BYTES, "big"),
        (ENV_MAX_PENDING_BYTES, "0"),
        (ENV_MAX_PENDING_BYTES, "lots"),
        (ENV_MAX_PENDING_AGE, "0"),
        (ENV_MAX_PENDING_AGE, "-3"),
    ];
    for (var, value) in cases {
        let err = from(&[(var, value)]).expect_err(var);
        assert_eq!(err.variable(), var, "{value}");
        assert!(err.to_string().contains(var));
    }
}

#[test]
fn builder_names_the_setter() {
    let err = Config::builder().with_max_retries(0).build().unwrap_err();
    assert_eq!(err.variable(), "max_retries");
}

#[test]
fn overflow_policy_parses() {
    assert_eq!("REJECT".parse(), Ok(OverflowPolicy::Reject));
    assert_eq!("drop_newest".parse(), Ok(OverflowPolicy::DropNewest));
    assert!("x".parse::<OverflowPolicy>().is_err());
}
