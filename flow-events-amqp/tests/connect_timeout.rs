//! A connect that times out leaves nothing behind. In a binary of its own:
//! it counts the process's lapin threads, which other tests would change.

use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Backend, BackendErrorKind, Config};

/// lapin's connection threads in this process (Linux).
fn lapin_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|name| name.starts_with("lapin"))
            })
            .count(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn timed_out_connects_leave_no_thread_behind() {
    if lapin_threads().is_none() {
        eprintln!("skipping: /proc/self/task is not readable here");
        return;
    }
    // Accepts TCP (the kernel does) but never speaks AMQP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = AmqpBackend::new(
        &Config::default(),
        AmqpConfig::builder()
            .with_url(format!(
                "amqp://guest:guest@{}/%2f",
                silent.local_addr().expect("addr")
            ))
            .with_connect_timeout(Duration::from_millis(200))
            .build()
            .expect("AMQP config"),
    );
    for _ in 0..5 {
        match backend.connect().await {
            Ok(_) => panic!("connected to a silent server"),
            Err(e) => assert_eq!(e.kind(), BackendErrorKind::Timeout, "{e}"),
        }
    }
    // The threads end once they see their socket shut down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    loop {
        ticks.tick().await;
        let left = lapin_threads().unwrap_or(0);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} lapin threads still running after the connects timed out"
        );
    }
}
