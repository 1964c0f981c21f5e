//! What every end-to-end test uses: the service under test, HTTP requests,
//! waiting for a state, the broker's availability.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::service_settings;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_admin-service");

/// Longest wait for anything a test expects to happen.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// Pause between two polls.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Every variable the service reads (from its own settings code): none is
/// inherited from the caller of the tests.
pub(crate) fn service_variables() -> Vec<String> {
    service_settings::variables()
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A name unique to this run.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test.{prefix}.{}.{nanos}", std::process::id())
}

/// Reads a child's output into a shared string on a thread of its own; the
/// flag turns true once the output ended (the child closed it, or exited).
fn capture(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> Arc<AtomicBool> {
    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    ended
}

fn read(text: &Mutex<String>) -> String {
    text.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// One request: method, path, body, headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Req<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) headers: Vec<(&'a str, String)>,
}

impl<'a> Req<'a> {
    pub(crate) fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            ..Self::default()
        }
    }

    /// `POST /events` with a JSON body (and the service's token, when it has one).
    pub(crate) fn post_json(body: &str) -> Self {
        Self {
            method: "POST",
            path: "/events",
            body: Some(body.as_bytes().to_vec()),
            headers: vec![("content-type", "application/json".to_owned())],
        }
    }

    pub(crate) fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Sends `req` to `127.0.0.1:port` on a connection of its own.
pub(crate) async fn send(port: u16, req: Req<'_>) -> reqwest::Result<Response> {
    send_within(port, req, WAIT).await
}

/// [`send`], giving up after `limit`.
pub(crate) async fn send_within(
    port: u16,
    req: Req<'_>,
    limit: Duration,
) -> reqwest::Result<Response> {
    // No connection is kept: the service closes idle ones on its own clock.
    // reqwest gives up on a connection whose data the peer has not taken for
    // 30 s (TCP_USER_TIMEOUT); a service on a loaded machine may take longer
    // to read a large body, and the client waits `limit` whatever the step.
    let client = reqwest::Client::builder()
        .timeout(limit)
        .tcp_user_timeout(limit)
        .pool_max_idle_per_host(0)
        .build()?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
    let mut builder = client.request(method, format!("http://127.0.0.1:{port}{}", req.path));
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let response = builder.send().await?;
    Ok(Response {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await?,
    })
}

/// The service under test; killed when dropped.
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// When the process was spawned.
    pub(crate) started: Instant,
    /// The API token the service was given, sent with `post_json` and `get`.
    token: Option<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Whether standard output and standard error have ended.
    ended: [Arc<AtomicBool>; 2],
}

impl Service {
    /// Starts the binary with only `vars` of the service's variables set (and
    /// `PORT` on a free port unless given).
    pub(crate) fn spawn(vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        for name in service_variables() {
            cmd.env_remove(name);
        }
        cmd.env("PORT", port.to_string());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start admin-service");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let ended = [
            capture(child.stdout.take().expect("stdout"), stdout.clone()),
            capture(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        let token = vars
            .iter()
            .find(|(k, _)| *k == "API_TOKEN")
            .map(|(_, v)| v.to_string());
        Self {
            child,
            port,
            started,
            token,
            stdout,
            stderr,
            ended,
        }
    }

    /// Starts the binary and waits until it answers `/health/live`.
    pub(crate) async fn start(vars: &[(&str, &str)]) -> Self {
        let mut service = Self::spawn(vars);
        service.wait_live().await;
        service
    }

    pub(crate) async fn wait_live(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("admin-service exited with {status}\n{}", self.output());
            }
            if let Ok(r) = send(self.port, Req::get("/health/live")).await {
                assert_eq!(r.status, 200, "{}", r.body);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "admin-service did not answer within {WAIT:?}\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Standard output: the log.
    pub(crate) fn logs(&self) -> String {
        read(&self.stdout)
    }

    pub(crate) fn stderr(&self) -> String {
        read(&self.stderr)
    }

    pub(crate) fn output(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.logs(), self.stderr())
    }

    /// Waits until the log holds `needle` (its reader thread may lag behind
    /// the answer that caused the line).
    pub(crate) async fn wait_log(&self, needle: &str) {
        let found = wait_until(WAIT, || self.logs().contains(needle).then_some(())).await;
        assert!(
            found.is_some(),
            "no {needle:?} in the log\n{}",
            self.output()
        );
    }

    /// Sends `req` as it is.
    pub(crate) async fn request(&self, req: Req<'_>) -> reqwest::Result<Response> {
        send(self.port, req).await
    }

    /// Sends `req` with the service's token, if any; panics on a transport error.
    pub(crate) async fn call(&self, mut req: Req<'_>) -> Response {
        if let Some(token) = &self.token {
            req.headers
                .push(("authorization", format!("Bearer {token}")));
        }
        let what = format!("{} {}", req.method, req.path);
        self.request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.output()))
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.call(Req::get(path)).await
    }

    pub(crate) async fn post_json(&self, body: &str) -> Response {
        self.call(Req::post_json(body)).await
    }

    pub(crate) async fn health(&self) -> Value {
        self.get("/health").await.json()
    }

    /// One metric's value from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.body;
        metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Polls `/health` until `check` holds.
    pub(crate) async fn wait_health(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let health = self.health().await;
            if check(&health) {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "health never showed {what} within {WAIT:?}: {health}\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGTERM and waits for the exit, which must be a success.
    pub(crate) async fn stop(&mut self) {
        self.terminate();
        let status = self.wait_exit().await;
        assert!(status.success(), "{status}\n{}", self.output());
    }

    /// Waits for the process to exit, at most `WAIT`.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader threads take the last output: wait for its end.
                let ended = wait_until(WAIT, || {
                    self.ended
                        .iter()
                        .all(|e| e.load(Ordering::SeqCst))
                        .then_some(())
                })
                .await;
                assert!(ended.is_some(), "the output of admin-service never ended");
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "admin-service did not exit within {WAIT:?}\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The resident set size of the process, in bytes.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.id())
    }
}

/// The resident set size of process `pid`, in bytes.
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it gives a value or `limit` passes.
pub(crate) async fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The value of an unlabelled sample `name` in Prometheus text.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// Whether the broker is reachable; see
/// [`flow_events_testkit::server::reachable`].
#[cfg(feature = "amqp")]
pub(crate) fn broker_available(test: &str) -> bool {
    flow_events_testkit::server::reachable("RabbitMQ", "127.0.0.1:5672", test)
}

/// A URL to a port nothing listens on.
pub(crate) fn unreachable_url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port())
}
