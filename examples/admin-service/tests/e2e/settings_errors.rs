//! Settings no retry can fix stop the start, in both modes, naming the variable.

use crate::common::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_by_name() {
    for (var, value) in [
        ("PORT", "abc"),
        ("RABBITMQ_MAX_RETRIES", "x"),
        ("LOG_FORMAT", "xml"),
        ("SHUTDOWN_GRACE", "-1"),
        ("RABBITMQ_OVERFLOW_POLICY", "drop-all"),
        ("RABBITMQ_MAX_RETRY_DELAY", "1e15"),
        ("HTTP_HEADER_TIMEOUT", "0"),
        ("MAX_CONCURRENT_REQUESTS", "0"),
        ("MAX_BODY_BYTES", "lots"),
    ] {
        let mut service = Service::spawn(&[(var, value)]);
        let status = service.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(2),
            "{var}={value}: {}",
            service.output()
        );
        let stderr = service.stderr();
        assert_eq!(stderr.lines().count(), 1, "{var}: {stderr:?}");
        assert!(
            stderr.contains(&format!("invalid value {value:?} for {var}: ")),
            "{stderr}"
        );
    }
}

/// An unparsable URL, or one of another scheme, is no broker outage: the
/// service does not start, required or not.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_no_retry_can_fix_stops_the_start_in_both_modes() {
    for url in [
        "amqp://guest:secret-pw@127.0.0.1:notaport/%2f",
        "http://guest:secret-pw@127.0.0.1:5672/",
        "amqp://guest:secret-pw@/",
    ] {
        for required in ["true", "false"] {
            let mut service =
                Service::spawn(&[("RABBITMQ_URL", url), ("RABBITMQ_REQUIRED", required)]);
            let status = service.wait_exit().await;
            let output = service.output();
            assert_eq!(
                status.code(),
                Some(2),
                "{url} required={required}: {output}"
            );
            let stderr = service.stderr();
            assert!(stderr.contains("for RABBITMQ_URL: "), "{stderr}");
            assert!(!output.contains("secret-pw"), "{output}");
        }
    }
}
