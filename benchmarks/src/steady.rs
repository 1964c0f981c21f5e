//! Steady publishing: a fixed number of publishes, `in_flight` callers each
//! waiting for its own confirm, through the resilient sink, raw lapin or
//! aio-pika (a Python process).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use flow_events_core::{Event, EventSink, PublishOutcome, Resilient, Session};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

use crate::payload::{EVENT_TYPE, Payload};
use crate::stats::Latency;

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Client {
    /// lapin alone: a confirm-mode channel.
    Lapin,
    /// `Resilient` over `AmqpBackend`.
    Resilient,
    /// An `AmqpBackend` session alone, without the decorator: tells the
    /// backend's cost from the decorator's.
    Session,
    /// aio-pika with `connect_robust` and publisher confirms.
    AioPika,
}

impl Client {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Lapin => "raw lapin",
            Self::Resilient => "flow-events",
            Self::Session => "amqp session",
            Self::AioPika => "aio-pika",
        }
    }
}

/// One measurement: `count` publishes, all awaited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) count: usize,
    /// Publishes not confirmed (errors, or buffered instead of confirmed).
    pub(crate) failed: usize,
    pub(crate) seconds: f64,
    /// Confirmed messages per second.
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// CPU time of the client process (user + system) per publish, in
    /// microseconds: the client's cost, which on a small machine the broker
    /// does not get.
    pub(crate) cpu_us_per_msg: f64,
}

impl Run {
    fn new(
        count: usize,
        failed: usize,
        elapsed: Duration,
        latency: Latency,
        cpu: Duration,
    ) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            count,
            failed,
            seconds,
            rate: (count - failed) as f64 / seconds,
            p50_us: latency.p50_us,
            p99_us: latency.p99_us,
            max_us: latency.max_us,
            cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / count as f64,
        }
    }
}

/// CPU time (user + system) this process has used so far.
pub(crate) fn process_cpu() -> Duration {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks (100 a second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name, field 3 (state) is index 0: utime is index 11, stime 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Publishes `count` items with `in_flight` tasks, each awaiting its publish
/// before the next. `prepare` makes an item outside the timed part; `send`
/// publishes it and says whether the broker confirmed it.
pub(crate) async fn drive<T, P, S, F>(count: usize, in_flight: usize, prepare: P, send: S) -> Run
where
    T: Send + 'static,
    P: Fn() -> T + Send + Sync + 'static,
    S: Fn(T) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    let remaining = Arc::new(AtomicUsize::new(count));
    let prepare = Arc::new(prepare);
    let send = Arc::new(send);
    let cpu_before = process_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight.max(1))
        .map(|_| {
            let remaining = remaining.clone();
            let prepare = prepare.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let mut nanos = Vec::with_capacity(count / in_flight.max(1) + 1);
                let mut failed = 0usize;
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let item = prepare();
                    let t = Instant::now();
                    let ok = send(item).await;
                    nanos.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    failed += usize::from(!ok);
                }
                (nanos, failed)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    let mut failed = 0;
    for task in tasks {
        if let Ok((nanos, f)) = task.await {
            all.extend(nanos);
            failed += f;
        }
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    Run::new(count, failed, elapsed, Latency::from_nanos(all), cpu)
}

/// Publishes the payload's events through `target` (cloned for each
/// publish) with `publish`, which says whether the broker confirmed one.
async fn drive_events<C, S, F>(
    target: &C,
    payload: &Payload,
    count: usize,
    in_flight: usize,
    publish: S,
) -> Run
where
    C: Clone + Send + Sync + 'static,
    S: Fn(C, Event) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    let target = target.clone();
    let payload = payload.clone();
    drive(
        count,
        in_flight,
        move || payload.event(),
        move |event: Event| publish(target.clone(), event),
    )
    .await
}

/// Publishes through the resilient sink; a publish counts when confirmed.
pub(crate) async fn resilient(
    sink: &Resilient,
    payload: &Payload,
    count: usize,
    in_flight: usize,
) -> Run {
    drive_events(sink, payload, count, in_flight, |sink, event| async move {
        matches!(sink.publish(event).await, Ok(PublishOutcome::Confirmed))
    })
    .await
}

/// Publishes through an `AmqpBackend` session, without the decorator.
pub(crate) async fn session(
    session: &Arc<dyn Session>,
    payload: &Payload,
    count: usize,
    in_flight: usize,
) -> Run {
    drive_events(
        session,
        payload,
        count,
        in_flight,
        |session, event| async move {
            match session.send(&event).await {
                Ok(confirmation) => confirmation.await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await
}

/// A raw lapin publisher: one connection, one channel in confirm mode.
#[derive(Debug)]
pub(crate) struct LapinPublisher {
    conn: Connection,
    channel: Channel,
    exchange: ShortString,
}

impl LapinPublisher {
    pub(crate) async fn connect(url: &str, exchange: &str) -> anyhow::Result<Self> {
        let conn = Connection::connect(
            url,
            ConnectionProperties::default().with_connection_name("flow-events-bench lapin".into()),
        )
        .await
        .context("connecting raw lapin")?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            conn,
            channel,
            exchange: ShortString::from(exchange),
        })
    }

    pub(crate) async fn run(&self, payload: &Payload, count: usize, in_flight: usize) -> Run {
        let channel = self.channel.clone();
        let exchange = self.exchange.clone();
        let body: Arc<[u8]> = payload.body().into();
        drive(
            count,
            in_flight,
            Payload::raw_properties,
            move |properties| {
                let channel = channel.clone();
                let exchange = exchange.clone();
                let body = body.clone();
                async move {
                    let published = channel
                        .basic_publish(
                            exchange,
                            ShortString::from(EVENT_TYPE),
                            BasicPublishOptions::default(),
                            &body,
                            properties,
                        )
                        .await;
                    match published {
                        Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(_))),
                        Err(_) => false,
                    }
                }
            },
        )
        .await
    }

    /// Whether its connection and channel are still open.
    pub(crate) fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// What the Python script prints (one JSON line).
#[derive(Debug, Deserialize)]
struct PythonRun {
    count: usize,
    failed: usize,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    cpu_seconds: f64,
    aio_pika: String,
}

/// Runs the aio-pika script once; gives the run and the aio-pika version.
pub(crate) async fn aio_pika(
    python: &Path,
    script: &Path,
    url: &str,
    exchange: &str,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<(Run, String)> {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .args([
            "--url",
            url,
            "--exchange",
            exchange,
            "--routing-key",
            EVENT_TYPE,
        ])
        .args(["--count", &count.to_string()])
        .args(["--in-flight", &in_flight.to_string()])
        .args(["--body-bytes", &crate::payload::BODY_BYTES.to_string()]);
    let what = script.display().to_string();
    let r: PythonRun = crate::child::json_result(command, &what).await?;
    let run = Run {
        count: r.count,
        failed: r.failed,
        seconds: r.seconds,
        rate: (r.count - r.failed) as f64 / r.seconds,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        max_us: r.max_us,
        cpu_us_per_msg: r.cpu_seconds * 1e6 / r.count as f64,
    };
    Ok((run, r.aio_pika))
}
