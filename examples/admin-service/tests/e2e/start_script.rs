//! `scripts/start-services.sh`: start, status, restart, stop.
#![cfg(feature = "memory")]

use std::process::{Command, Stdio};

use crate::common::{BIN, Req, free_port, send, service_variables, unique};

/// The script's four verbs, on the in-memory backend, with its run folder in
/// a temporary directory and the binary this test run built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_script_start_status_restart_stop() {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/start-services.sh");
    let run_dir = std::env::temp_dir().join(unique("admin-run"));
    let port = free_port();
    let script_cmd = |verb: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(verb);
        for name in service_variables() {
            cmd.env_remove(name);
        }
        cmd.env("PORT", port.to_string())
            .env("RUN_DIR", &run_dir)
            .env("ADMIN_SERVICE_BIN", BIN)
            .env("START_RABBITMQ", "no")
            .env("SHUTDOWN_GRACE", "1")
            .stdin(Stdio::null());
        let out = cmd.output().expect("run start-services.sh");
        (
            out.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let pid = || {
        std::fs::read_to_string(run_dir.join("admin-service.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    // Stops the service whatever happens below.
    struct StopOnDrop<F: FnMut()>(F);
    impl<F: FnMut()> Drop for StopOnDrop<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _stop = StopOnDrop(|| {
        let _ = script_cmd("stop");
    });

    let (status, out) = script_cmd("start");
    assert!(status.success(), "start: {out}");
    let first = pid().expect("pid file after start");
    let health = send(port, Req::get("/health")).await.expect("health");
    assert_eq!(health.status, 200, "{}", health.body);

    let (status, out) = script_cmd("status");
    assert!(status.success(), "status: {out}");
    assert!(out.contains(&format!("running (pid {first})")), "{out}");
    assert!(out.contains("\"status\":\"healthy\""), "{out}");

    let (status, out) = script_cmd("start");
    assert!(status.success(), "second start: {out}");
    assert!(out.contains("already running"), "{out}");

    let (status, out) = script_cmd("restart");
    assert!(status.success(), "restart: {out}");
    let second = pid().expect("pid file after restart");
    assert_ne!(first, second, "{out}");
    let health = send(port, Req::get("/health")).await.expect("health");
    assert_eq!(health.status, 200, "{}", health.body);

    let (status, out) = script_cmd("stop");
    assert!(status.success(), "stop: {out}");
    assert!(pid().is_none(), "pid file left after stop");
    assert!(
        send(port, Req::get("/health/live")).await.is_err(),
        "still serving after stop"
    );
    let log = std::fs::read_to_string(run_dir.join("admin-service.log")).expect("log file");
    assert!(log.contains("received SIGTERM"), "{log}");

    let (status, out) = script_cmd("status");
    assert!(!status.success(), "status when stopped: {out}");
    assert!(out.contains("not running"), "{out}");
    let _ = std::fs::remove_dir_all(&run_dir);
}
