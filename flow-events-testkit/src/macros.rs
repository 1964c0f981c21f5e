//! `conformance_tests!`: the whole suite as one test per case. The list of
//! cases is kept here and nowhere else.

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`
/// per case of [`conformance`](crate::conformance), each building a harness
/// and running the case on it. This macro holds the one list of the cases: a
/// new case is a function in a file of `conformance/` and a name here.
///
/// Two forms:
///
/// - `conformance_tests!(harness)`: `harness` is an expression evaluated
///   inside the test's async body (so it may `.await`) giving the
///   [`Harness`](crate::conformance::Harness).
/// - `conformance_tests!(|case| setup)`: `setup` gives an
///   `Option<Harness>`, with `case` bound to the case's name (a
///   `&'static str`, for names of the case's own); `None` skips the case,
///   for a backend whose server is missing outside CI (the setup says why).
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features among its dev-dependencies.
///
/// ```text
/// // tests/conformance.rs of a backend
/// flow_events_testkit::conformance_tests!(MyHarness::connect().await);
/// // or, skipping when the broker is missing
/// flow_events_testkit::conformance_tests!(|case| MyHarness::for_case(case).await);
/// ```
///
/// See [`conformance`](crate::conformance) for a whole harness.
#[macro_export]
macro_rules! conformance_tests {
    (@cases |$case:ident| $setup:expr) => {
        $crate::conformance_tests!(@each |$case| $setup;
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
            retry_waits_for_the_policy_delay,
            retry_after_waits_for_the_handlers_delay,
            dead_letters_say_why,
        );
    };
    (@each |$case:ident| $setup:expr; $($name:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $case: &'static str = ::core::stringify!($name);
                let ::core::option::Option::Some(harness) = $setup else {
                    return;
                };
                $crate::conformance::$name(&harness).await;
            }
        )+
    };
    (|$case:ident| $setup:expr $(,)?) => {
        $crate::conformance_tests!(@cases |$case| $setup);
    };
    ($harness:expr $(,)?) => {
        $crate::conformance_tests!(@cases |_case| ::core::option::Option::Some($harness));
    };
}

/// Expands to the two tests of a backend's cut scenario
/// ([`through_cuts`](crate::traffic::through_cuts)):
/// `cuts_while_publishing_lose_nothing`, where only the publisher goes
/// through the proxy, and `cuts_while_publishing_and_consuming_lose_nothing`,
/// where the consumer does too. This macro holds the one list of them.
///
/// `run` names an async function `run(test: &'static str,
/// consumer_through_proxy: bool)` of the backend's fault tests: `test` is a
/// short name for what the test makes (`"cuts"`, `"cutsboth"`); `run`
/// returns early when its server is missing outside CI. The calling crate
/// needs `tokio` with the `macros` and `rt-multi-thread` features.
///
/// ```text
/// // tests/faults.rs of a backend
/// async fn cuts_lose_nothing(test: &str, consumer_through_proxy: bool) { ... }
/// flow_events_testkit::cut_tests!(cuts_lose_nothing);
/// ```
#[macro_export]
macro_rules! cut_tests {
    ($run:path) => {
        #[::tokio::test(flavor = "multi_thread")]
        async fn cuts_while_publishing_lose_nothing() {
            $run("cuts", false).await;
        }

        #[::tokio::test(flavor = "multi_thread")]
        async fn cuts_while_publishing_and_consuming_lose_nothing() {
            $run("cutsboth", true).await;
        }
    };
}
