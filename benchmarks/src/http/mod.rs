//! The HTTP path: `POST /events` through the release admin-service (broker
//! connected, and broker down) and through a minimal aiohttp + aio-pika
//! service (the original stack), loaded by `wrk` with keep-alive connections.
//!
//! Each measurement starts its service afresh, warms it up, then runs `wrk`;
//! the order of the three rotates from one round to the next.
//!
//! By concern: the load generator (`wrk.rs`), the services under load
//! (`service.rs`), the results and their goals (`report.rs`); here, what
//! runs them.

mod report;
mod service;
mod wrk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::topology::Topology;

pub(crate) use report::HttpReport;
use report::WrkRun;
use service::{counter, get, start};
use wrk::{BODY_BYTES, check_wrk, wrk, wrk_script};

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
