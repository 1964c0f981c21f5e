//! The HTTP path: `POST /events` through the release admin-service (broker
//! connected, and broker down) and through a minimal aiohttp + aio-pika
//! service (the original stack), loaded by `wrk` with keep-alive connections.
//!
//! Each measurement starts its service afresh, warms it up, then runs `wrk`;
//! the order of the three rotates from one round to the next.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::payload::EVENT_TYPE;
use crate::report::Goal;
use crate::stats::median;
use crate::topology::Topology;

/// Size of the request body, as the original service's clients sent.
const BODY_BYTES: usize = 250;

/// What runs the HTTP part.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) admin_service: PathBuf,
    pub(crate) python: Option<PathBuf>,
    pub(crate) script: PathBuf,
    pub(crate) url: String,
    pub(crate) seconds: u32,
    pub(crate) warmup_seconds: u32,
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    pub(crate) rounds: usize,
}

/// The services compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Service {
    /// The release admin-service, RabbitMQ connected: each answer waits for
    /// the broker's confirm (or the confirm wait).
    AdminConnected,
    /// The release admin-service with RabbitMQ unreachable: each event is
    /// buffered.
    AdminBrokerDown,
    /// aiohttp + aio-pika with publisher confirms.
    Python,
}

impl Service {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::AdminConnected => "admin-service, broker connected",
            Self::AdminBrokerDown => "admin-service, broker down",
            Self::Python => "aiohttp + aio-pika",
        }
    }
}

/// One `wrk` run, and what the service said it did meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WrkRun {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    /// Answered requests a second, those with an error status left out.
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// Answers with a status of 400 or more.
    pub(crate) errors_status: u64,
    /// Connect, read, write errors and timeouts.
    pub(crate) errors_socket: u64,
    /// The admin-service's own counters after the run (warm-up included):
    /// `flow_events_confirmed_total`, `flow_events_buffered_total`.
    #[serde(default)]
    pub(crate) confirmed_total: Option<f64>,
    #[serde(default)]
    pub(crate) buffered_total: Option<f64>,
}

/// Medians of one service.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct HttpSummary {
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// The HTTP part of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HttpReport {
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    pub(crate) seconds: u32,
    pub(crate) body_bytes: usize,
    pub(crate) rounds: Vec<BTreeMap<Service, WrkRun>>,
    pub(crate) median: BTreeMap<Service, HttpSummary>,
    /// admin-service connected / Python throughput, median of the rounds' ratios.
    pub(crate) throughput_to_python: Option<f64>,
    /// admin-service connected / Python p99, median of the rounds' ratios.
    pub(crate) p99_to_python: Option<f64>,
}

impl HttpReport {
    pub(crate) fn summarise(&mut self) {
        let services: std::collections::BTreeSet<Service> =
            self.rounds.iter().flat_map(|r| r.keys().copied()).collect();
        for service in services {
            let runs: Vec<&WrkRun> = self.rounds.iter().filter_map(|r| r.get(&service)).collect();
            let m = |f: fn(&WrkRun) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
            self.median.insert(
                service,
                HttpSummary {
                    rate: m(|r| r.rate),
                    p50_us: m(|r| r.p50_us),
                    p99_us: m(|r| r.p99_us),
                },
            );
        }
        let ratio = |f: fn(&WrkRun) -> f64| {
            let per_round: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|r| {
                    Some(f(r.get(&Service::AdminConnected)?) / f(r.get(&Service::Python)?))
                })
                .collect();
            (!per_round.is_empty()).then(|| median(&per_round))
        };
        self.throughput_to_python = ratio(|r| r.rate);
        self.p99_to_python = ratio(|r| r.p99_us);
    }

    /// The goals of the HTTP path.
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(r) = self.throughput_to_python {
            goals.push(Goal {
                goal: "HTTP, broker connected: throughput >= 15x the Python service".into(),
                value: format!("{r:.1}x"),
                met: r >= 15.0,
            });
        }
        if let Some(r) = self.p99_to_python {
            goals.push(Goal {
                goal: "HTTP, broker connected: p99 <= 1/10 of the Python service's".into(),
                value: format!("{:.3} (1/{:.0})", r, 1.0 / r),
                met: r <= 0.1,
            });
        }
        if let Some(s) = self.median.get(&Service::AdminBrokerDown) {
            goals.push(Goal {
                goal: "HTTP, broker down: >= 60 000 requests/s".into(),
                value: format!("{:.0} requests/s", s.rate),
                met: s.rate >= 60_000.0,
            });
        }
        goals
    }

    /// The printed table.
    pub(crate) fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nHTTP POST /events, {}-byte events, wrk {} threads {} connections {} s; median of {} rounds",
            self.body_bytes,
            self.threads,
            self.connections,
            self.seconds,
            self.rounds.len()
        );
        for (service, s) in &self.median {
            let _ = writeln!(
                out,
                "  {:<34} {:>9.0} requests/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
                service.label(),
                s.rate,
                s.p50_us / 1e3,
                s.p99_us / 1e3
            );
        }
        for (i, round) in self.rounds.iter().enumerate() {
            for (service, r) in round {
                let _ = writeln!(
                    out,
                    "  round {} {:<34} {:>9.0}/s p99 {:>8.2} ms, {} errors ({} status){}",
                    i + 1,
                    service.label(),
                    r.rate,
                    r.p99_us / 1e3,
                    r.errors_status + r.errors_socket,
                    r.errors_status,
                    match (r.confirmed_total, r.buffered_total) {
                        (Some(c), Some(b)) =>
                            format!("; service: {c:.0} confirmed, {b:.0} buffered"),
                        _ => String::new(),
                    }
                );
            }
        }
        out
    }
}

/// Runs the HTTP part: `rounds` rounds of each service, their order rotated.
pub(crate) async fn run(settings: &HttpSettings, topo: &Topology) -> anyhow::Result<HttpReport> {
    check_wrk().await?;
    anyhow::ensure!(
        settings.admin_service.exists(),
        "{} not found: build it with `cargo build --release -p admin-service`",
        settings.admin_service.display()
    );
    let script = wrk_script()?;
    let mut services = vec![Service::AdminConnected, Service::AdminBrokerDown];
    if settings.python.is_some() {
        services.push(Service::Python);
    } else {
        eprintln!("http: no --python given, the Python service skipped");
    }
    let mut report = HttpReport {
        connections: settings.connections,
        threads: settings.threads,
        seconds: settings.seconds,
        body_bytes: BODY_BYTES,
        ..HttpReport::default()
    };
    for round in 0..settings.rounds {
        let mut order = services.clone();
        let n = order.len();
        order.rotate_left(round % n);
        let mut runs = BTreeMap::new();
        for service in order {
            eprintln!(
                "http: round {}/{}, {}",
                round + 1,
                settings.rounds,
                service.label()
            );
            let run = measure(settings, topo, service, &script).await?;
            eprintln!(
                "http:   {:.0} requests/s, p99 {:.2} ms, {} errors",
                run.rate,
                run.p99_us / 1e3,
                run.errors_status + run.errors_socket
            );
            runs.insert(service, run);
        }
        report.rounds.push(runs);
    }
    let _ = std::fs::remove_file(&script);
    Ok(report)
}

async fn check_wrk() -> anyhow::Result<()> {
    let found = Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok();
    anyhow::ensure!(
        found,
        "wrk not found (Debian: apt-get install wrk); benchmarks/run.sh installs it"
    );
    Ok(())
}

/// The request body: an event of `BODY_BYTES` bytes.
fn body() -> String {
    let fixed = format!(r#"{{"type":"{EVENT_TYPE}","data":{{"pad":""}}}}"#).len();
    let pad = "x".repeat(BODY_BYTES.saturating_sub(fixed));
    format!(r#"{{"type":"{EVENT_TYPE}","data":{{"pad":"{pad}"}}}}"#)
}

/// Writes the `wrk` script: POST the body, print the summary as one JSON line.
fn wrk_script() -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "flow-events-bench-{}-{:04x}.lua",
        std::process::id(),
        fastrand::u16(..)
    ));
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"#,
        body = body()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What the script prints.
#[derive(Debug, Deserialize)]
struct WrkJson {
    requests: u64,
    duration_us: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    status: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
}

/// Runs `wrk` for `seconds` against `port`.
async fn wrk(
    settings: &HttpSettings,
    script: &Path,
    port: u16,
    seconds: u32,
) -> anyhow::Result<WrkJson> {
    let output = Command::new("wrk")
        .args(["-t", &settings.threads.to_string()])
        .args(["-c", &settings.connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/events"))
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK_JSON "))
        .with_context(|| {
            format!(
                "wrk printed no result ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    serde_json::from_str(line).context("reading wrk's result")
}

/// A free port on the loopback interface (nothing listens on it once this
/// returns).
async fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// A running service, killed when dropped.
struct Running {
    child: Child,
    port: u16,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn start(
    settings: &HttpSettings,
    topo: &Topology,
    service: Service,
) -> anyhow::Result<Running> {
    let port = free_port().await?;
    let (mut command, ready) = match service {
        Service::AdminConnected | Service::AdminBrokerDown => {
            let mut c = Command::new(&settings.admin_service);
            let url = if service == Service::AdminConnected {
                settings.url.clone()
            } else {
                // A port nothing listens on: every connection attempt is refused.
                format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port().await?)
            };
            c.env_clear()
                .env("PORT", port.to_string())
                .env("RABBITMQ_URL", url)
                .env("RABBITMQ_EXCHANGE", &topo.exchange)
                .env("SERVICE_NAME", "flow-events-bench")
                // One request per connection at most: none is turned away
                // as overloaded (the default bound is 32).
                .env("MAX_CONCURRENT_REQUESTS", settings.connections.to_string())
                // Room for every event of the broker-down run: each request
                // is buffered, none dropped by the bound.
                .env("RABBITMQ_MAX_PENDING_EVENTS", "4000000")
                .env("FLOW_EVENTS_MAX_PENDING_BYTES", "4000000000");
            let ready = if service == Service::AdminConnected {
                "/health/ready"
            } else {
                "/health/live"
            };
            (c, ready)
        }
        Service::Python => {
            let python = settings.python.as_deref().context("no python")?;
            let mut c = Command::new(python);
            c.arg(&settings.script)
                .args(["--url", &settings.url])
                .args(["--exchange", &topo.exchange])
                .args(["--port", &port.to_string()]);
            (c, "/health")
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", service.label()))?;
    let running = Running { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = get(port, ready).await {
            return Ok(running);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} not ready on port {port} within 30 s",
            service.label()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` on the loopback port: the status and the body.
async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP answer")?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// A counter's value in a Prometheus text page (the sum of its series).
fn counter(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// One measurement: start the service, warm it up, load it, stop it.
async fn measure(
    settings: &HttpSettings,
    topo: &Topology,
    service: Service,
    script: &Path,
) -> anyhow::Result<WrkRun> {
    topo.purge().await?;
    let running = start(settings, topo, service).await?;
    let port = running.port;
    let outcome = async {
        if settings.warmup_seconds > 0 {
            wrk(settings, script, port, settings.warmup_seconds).await?;
        }
        let w = wrk(settings, script, port, settings.seconds).await?;
        let (confirmed_total, buffered_total) = if service == Service::Python {
            (None, None)
        } else {
            let page = get(port, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            (
                counter(&page, flow_events_core::metrics::CONFIRMED_TOTAL),
                counter(&page, flow_events_core::metrics::BUFFERED_TOTAL),
            )
        };
        let seconds = w.duration_us as f64 / 1e6;
        anyhow::Ok(WrkRun {
            requests: w.requests,
            seconds,
            // Answers with an error status do not count.
            rate: w.requests.saturating_sub(w.status) as f64 / seconds,
            p50_us: w.p50_us,
            p99_us: w.p99_us,
            max_us: w.max_us,
            errors_status: w.status,
            errors_socket: w.connect + w.read + w.write + w.timeout,
            confirmed_total,
            buffered_total,
        })
    }
    .await;
    running.stop().await;
    topo.purge().await?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_an_event_of_the_planned_size() {
        let b = body();
        assert_eq!(b.len(), BODY_BYTES);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["type"], EVENT_TYPE);
    }

    #[test]
    fn counters_are_read_from_a_prometheus_page() {
        let page = "# HELP x\nflow_events_confirmed_total 12\nflow_events_confirmed_totalx 3\n\
                    flow_events_buffered_total{a=\"b\"} 2\nflow_events_buffered_total{a=\"c\"} 3\n";
        assert_eq!(counter(page, "flow_events_confirmed_total"), Some(12.0));
        assert_eq!(counter(page, "flow_events_buffered_total"), Some(5.0));
        assert_eq!(counter(page, "flow_events_dropped_total"), None);
    }
}
