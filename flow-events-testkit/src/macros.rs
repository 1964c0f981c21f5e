//! `conformance_tests!`: the whole suite as one test per case.

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
/// per case of [`conformance`](crate::conformance), each building a harness
/// with the given expression (evaluated inside the test's async body, so it
/// may `.await`) and running the case on it.
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features among its dev-dependencies.
///
/// ```text
/// // tests/conformance.rs of a backend
/// flow_events_testkit::conformance_tests!(MyHarness::connect().await);
/// ```
///
/// See [`conformance`](crate::conformance) for a whole harness.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            publish_then_receive,
            in_order_delivery,
            topic_patterns,
            fan_out,
            competing_consumers,
            retry_redelivers,
            reject_does_not_redeliver,
            concurrent_publishers,
            large_payload,
            unicode_payload,
            closed_subscription_stops_receiving,
            subscription_keeps_events_while_closed,
            publish_without_subscribers,
        );
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::conformance::$case(&harness).await;
            }
        )+
    };
}
