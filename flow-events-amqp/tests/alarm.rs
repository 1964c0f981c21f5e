//! The broker's resource alarm, seen through `Session::blocked()`.
//!
//! Raising the alarm blocks every publisher of the broker for a moment, so
//! this lives in a binary of its own (cargo runs test binaries one at a
//! time), and the watermark is put back even when the test fails.

mod common;

use common::{Fixture, WAIT};
use flow_events_core::{BackendErrorKind, Event};

/// Runs `rabbitmqctl`; `None` when it cannot be run here.
fn rabbitmqctl(args: &[&str]) -> Option<()> {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(())
}

/// Puts the memory watermark back to the default when dropped.
struct Watermark;

impl Drop for Watermark {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_alarm_flips_the_blocked_watch() {
    require_broker!("memory_alarm_flips_the_blocked_watch");
    if rabbitmqctl(&["-q", "status"]).is_none() {
        eprintln!("skipping memory_alarm_flips_the_blocked_watch: rabbitmqctl is not available");
        return;
    }
    let fx = Fixture::new("alarm");
    let session = fx.session().await;
    let mut blocked = session.blocked();
    assert!(!*blocked.borrow_and_update());

    let guard = Watermark;
    rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).expect("raise the alarm");
    // The broker blocks a connection (and says so) when it next publishes.
    let event = Event::try_new("order.created", serde_json::json!({})).expect("event");
    let first = session
        .send(&event)
        .await
        .expect("handed over before the block");
    tokio::time::timeout(WAIT, blocked.wait_for(|b| *b))
        .await
        .expect("blocked in time")
        .expect("watch open");
    // While blocked, a send fails at once rather than waiting on the alarm.
    let err = match session.send(&event).await {
        Ok(_) => panic!("sent while blocked"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::Other, "{err}");
    assert!(err.message().contains("blocking publishers"), "{err}");

    drop(guard);
    tokio::time::timeout(WAIT, blocked.wait_for(|b| !*b))
        .await
        .expect("unblocked in time")
        .expect("watch open");
    first
        .await
        .expect("the first event is confirmed once unblocked");
    session
        .send(&event)
        .await
        .expect("send")
        .await
        .expect("confirm");
    session.close().await;
}
