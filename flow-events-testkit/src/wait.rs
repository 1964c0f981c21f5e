//! Bounded waits for the tests of every crate: on a connection state, on a
//! condition, and for a started decorator to connect. Each one panics with
//! what it waited for when the limit passes, so a test never hangs.

use std::time::Duration;

use flow_events_core::{ConnectionMonitor, ConnectionState, Resilient, ResilientBuilder};
use tokio::time::Instant;

/// Waits until the state of `monitor` satisfies `wanted`; panics naming
/// `what`, the state and the last error after `limit`. Returns how long it
/// took (in the runtime's clock, so a paused clock gives virtual time).
pub async fn until_state(
    what: &str,
    monitor: &(impl ConnectionMonitor + ?Sized),
    limit: Duration,
    wanted: impl Fn(ConnectionState) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut rx = monitor.watch_state();
    match tokio::time::timeout(limit, rx.wait_for(|s| wanted(*s))).await {
        Ok(Ok(_)) => started.elapsed(),
        _ => panic!(
            "{what}: not within {limit:?} (state {}, last error {:?})",
            monitor.state(),
            monitor.status().last_error
        ),
    }
}

/// Waits until `monitor` is [`ConnectionState::Connected`]; panics after `limit`.
pub async fn until_connected(monitor: &(impl ConnectionMonitor + ?Sized), limit: Duration) {
    until_state("connected", monitor, limit, |s| {
        s == ConnectionState::Connected
    })
    .await;
}

/// Checks `check` every 10 ms until it holds; panics naming `what` after
/// `limit`. Returns how long it took (virtual time under a paused clock).
///
/// For state that has no channel to wait on; where there is one, wait on it.
pub async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Starts the decorator `builder` makes and waits until it is connected;
/// panics when the start fails or it is not connected within `limit`.
pub async fn start_connected(builder: ResilientBuilder, limit: Duration) -> Resilient {
    let client = builder
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the decorator: {e}"));
    until_connected(&client, limit).await;
    client
}
