//! The services under load: the release admin-service and the Python
//! service, started on a free port and asked over plain HTTP.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use super::{HttpSettings, Service};
use crate::topology::Topology;

/// A free port on the loopback interface (nothing listens on it once this
/// returns).
async fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// A running service, killed when dropped.
pub(super) struct Running {
    child: Child,
    pub(super) port: u16,
}

impl Running {
    pub(super) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Starts `service` on a free port and waits (at most 30 s) until it says it is ready.
pub(super) async fn start(
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
pub(super) async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
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
pub(super) fn counter(page: &str, name: &str) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_a_prometheus_page() {
        let page = "# HELP x\nflow_events_confirmed_total 12\nflow_events_confirmed_totalx 3\n\
                    flow_events_buffered_total{a=\"b\"} 2\nflow_events_buffered_total{a=\"c\"} 3\n";
        assert_eq!(counter(page, "flow_events_confirmed_total"), Some(12.0));
        assert_eq!(counter(page, "flow_events_buffered_total"), Some(5.0));
        assert_eq!(counter(page, "flow_events_dropped_total"), None);
    }
}
