//! `flow-events-bench`: publishing benchmarks of flow-events against a local
//! RabbitMQ, side by side with raw lapin and with aio-pika (the Python stack
//! it replaces); drain after reconnect; an outage run; memory per pending
//! event. Prints a table and writes JSON. See BENCHMARKS.md at the repository
//! root; `benchmarks/run.sh` runs everything.

mod child;
mod drain;
mod http;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod outage;
mod payload;
mod proxy;
mod report;
mod sink;
mod stats;
mod steady;
mod steady_part;
mod topology;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::http::HttpSettings;
use crate::outage::OutagePlan;
use crate::payload::Payload;
use crate::report::Report;
use crate::sink::SinkSettings;
use crate::topology::Topology;

/// Benchmarks flow-events against a local RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "flow-events-bench", version)]
pub(crate) struct Args {
    /// The broker (persistent messages go to a durable queue on it).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub(crate) url: String,
    /// Rounds of each comparison; the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Publishes per steady run at 1, 64 and 1024 in flight.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000, 20_000, 40_000])]
    pub(crate) counts: Vec<usize>,
    /// Python interpreter with aio-pika; without it the aio-pika runs are skipped.
    #[arg(long)]
    pub(crate) python: Option<PathBuf>,
    /// The aio-pika script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/python/aio_pika_bench.py"))]
    pub(crate) python_script: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.json"))]
    pub(crate) out: PathBuf,
    /// Which clients the steady runs compare (aio-pika needs --python).
    #[arg(long, value_delimiter = ',', default_values_t = [ClientArg::Lapin, ClientArg::FlowEvents, ClientArg::AmqpSession, ClientArg::AioPika])]
    pub(crate) clients: Vec<ClientArg>,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Part::Memory, Part::Steady, Part::Drain, Part::Outage, Part::Http])]
    pub(crate) only: Vec<Part>,
    /// The release admin-service of the HTTP part.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/admin-service"))]
    admin_service: PathBuf,
    /// The Python service of the HTTP part (aiohttp + aio-pika).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/python/http_service.py"))]
    http_script: PathBuf,
    /// Seconds of each measured `wrk` run of the HTTP part (after a warm-up).
    #[arg(long, default_value_t = 10)]
    http_seconds: u32,
    /// Seconds of the warm-up `wrk` run before each measured one.
    #[arg(long, default_value_t = 2)]
    http_warmup: u32,
    /// Keep-alive connections of `wrk`.
    #[arg(long, default_value_t = 64)]
    http_connections: u32,
    /// Threads of `wrk`.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// Events buffered before the drain.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) drain_events: usize,
    /// Events buffered for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) memory_events: usize,
    /// Publishes per second during the outage run.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) outage_rate: u32,
    /// How long the broker is cut in the outage run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) outage_secs: f64,
    /// Base backoff delay of the sink in the drain and outage runs, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) retry_delay: f64,
    /// Backoff cap of the sink in the drain and outage runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) max_retry_delay: f64,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Measures memory per pending event in this process (run by the parent).
    #[command(hide = true)]
    MemoryChild {
        #[arg(long)]
        events: usize,
    },
    /// The resilient NATS sink against raw async-nats JetStream publishing
    /// (needs the `nats` feature and a nats-server with JetStream).
    #[cfg(feature = "nats")]
    Nats(nats::NatsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClientArg {
    Lapin,
    FlowEvents,
    AioPika,
    /// The AMQP backend's session without the decorator (a diagnostic).
    AmqpSession,
}

/// Writes the name clap knows a value by (`--clients amqp-session`).
fn write_value_name(value: &impl ValueEnum, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match value.to_possible_value() {
        Some(v) => f.write_str(v.get_name()),
        None => Ok(()),
    }
}

impl std::fmt::Display for ClientArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_value_name(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Part {
    Memory,
    Steady,
    Drain,
    Outage,
    /// `POST /events` through the admin-service and a Python equivalent (wrk).
    Http,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_value_name(self, f)
    }
}

/// With the `mimalloc` feature, mimalloc serves every client of the run
/// (raw and flow-events alike), as it serves the admin-service.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// In-flight levels of the steady runs.
pub(crate) const LEVELS: [usize; 3] = [1, 64, 1024];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    #[cfg(feature = "nats")]
    if let Some(Command::Nats(nats)) = args.command {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(nats::run(nats));
    }
    if let Some(Command::MemoryChild { events }) = args.command {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let broker = broker_addr(&args.url)?;
        let m = rt.block_on(memory::child(broker, &args.url, events))?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    anyhow::ensure!(
        args.counts.len() == LEVELS.len(),
        "--counts takes three numbers"
    );
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// The broker's address, from its URL.
fn broker_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid broker URL {}: {e}", topology::redact(url)))?;
    let host = uri.authority.host.as_str();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", uri.authority.port)
        .parse()
        .with_context(|| format!("the broker host must be an IP address, not {host}"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let broker = broker_addr(&args.url)?;
    let mut report = Report::new(&args.url, args.rounds);
    report.settings.insert("rounds".into(), args.rounds.into());
    report
        .settings
        .insert("counts".into(), serde_json::json!(args.counts));
    report
        .settings
        .insert("body_bytes".into(), payload::BODY_BYTES.into());

    if args.only.contains(&Part::Memory) {
        eprintln!(
            "memory: buffering {} events while disconnected",
            args.memory_events
        );
        report.memory = Some(memory::measure(&args.url, args.memory_events).await?);
    }

    let run_id = format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        fastrand::u16(..)
    );
    let topo = Topology::create(&args.url, &run_id).await?;
    eprintln!("exchange and queue: {}", topo.exchange);
    let outcome = tokio::select! {
        r = scenarios(&args, broker, &topo, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleanup = topo.delete().await;
    if let Err(e) = &cleanup {
        eprintln!("could not delete the run's exchange and queue: {e:#}");
    }
    outcome?;
    cleanup?;

    report.finish();
    print!("{}", report.table());
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

async fn scenarios(
    args: &Args,
    broker: SocketAddr,
    topo: &Topology,
    report: &mut Report,
) -> anyhow::Result<()> {
    let payload = Payload::new();
    let recovery = SinkSettings {
        retry_delay: Duration::from_secs_f64(args.retry_delay),
        max_retry_delay: Duration::from_secs_f64(args.max_retry_delay),
        max_pending_events: 1_000,
        confirm_wait: None,
    };
    if args.only.contains(&Part::Steady) {
        steady_part::run(args, topo, &payload, report).await?;
    }
    if args.only.contains(&Part::Drain) {
        let settings = SinkSettings {
            max_pending_events: args.drain_events * 2,
            ..recovery
        };
        for round in 0..args.rounds {
            let steady_first = round % 2 == 1;
            eprintln!("drain: round {} of {}", round + 1, args.rounds);
            let mut attempt = 0;
            let r = loop {
                attempt += 1;
                let outcome = drain::round(
                    broker,
                    &args.url,
                    topo,
                    &payload,
                    settings,
                    args.drain_events,
                    steady_first,
                )
                .await;
                let why = match outcome {
                    Ok(r) if r.reconnects == r.planned_reconnects || attempt >= ATTEMPTS => {
                        break r;
                    }
                    Err(e) if attempt >= ATTEMPTS => return Err(e),
                    Ok(r) => format!(
                        "{} reconnections, {} planned",
                        r.reconnects, r.planned_reconnects
                    ),
                    Err(e) => format!("{e:#}"),
                };
                eprintln!("drain: round disturbed ({why}); repeating it");
                topo.purge().await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            report.drain.push(r);
        }
    }
    if args.only.contains(&Part::Outage) {
        let plan = OutagePlan {
            rate: args.outage_rate,
            before_ms: 3_000,
            outage_ms: (args.outage_secs * 1_000.0) as u64,
            after_ms: 3_000,
        };
        let settings = SinkSettings {
            max_pending_events: 1_000_000,
            ..recovery
        };
        eprintln!(
            "outage: {} publishes/s, broker cut for {:?}",
            plan.rate,
            Duration::from_millis(plan.outage_ms)
        );
        let mut attempt = 0;
        let o = loop {
            attempt += 1;
            let outcome = outage::run(broker, &args.url, topo, &payload, settings, plan).await;
            let why = match outcome {
                Ok(o) if o.reconnects == 1 || attempt >= ATTEMPTS => break o,
                Err(e) if attempt >= ATTEMPTS => return Err(e),
                Ok(o) => format!("{} reconnections, 1 planned", o.reconnects),
                Err(e) => format!("{e:#}"),
            };
            eprintln!("outage: run disturbed ({why}); repeating it");
            topo.purge().await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        report.outage = Some(o);
    }
    if args.only.contains(&Part::Http) {
        let settings = HttpSettings {
            admin_service: args.admin_service.clone(),
            python: args.python.clone(),
            script: args.http_script.clone(),
            url: args.url.clone(),
            seconds: args.http_seconds,
            warmup_seconds: args.http_warmup,
            connections: args.http_connections,
            threads: args.wrk_threads,
            rounds: args.rounds,
        };
        report.http = Some(http::run(&settings, topo).await?);
    }
    Ok(())
}

/// Attempts at one measurement: a run with failed publishes (another test
/// closed the broker's connections or raised an alarm) is repeated.
pub(crate) const ATTEMPTS: usize = 3;
