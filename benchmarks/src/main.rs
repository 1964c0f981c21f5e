//! `flow-events-bench`: publishing benchmarks of flow-events against a local
//! RabbitMQ, side by side with raw lapin and with aio-pika (the Python stack
//! it replaces); drain after reconnect; an outage run; memory per pending
//! event. Prints a table and writes JSON. See BENCHMARKS.md at the repository
//! root; `benchmarks/run.sh` runs everything.

mod drain;
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
mod topology;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::outage::OutagePlan;
use crate::payload::Payload;
use crate::report::{Report, SteadyLevel};
use crate::sink::SinkSettings;
use crate::steady::{Client, LapinPublisher};

use crate::topology::Topology;

/// Benchmarks flow-events against a local RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "flow-events-bench", version)]
struct Args {
    /// The broker (persistent messages go to a durable queue on it).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Rounds of each comparison; the report gives medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Publishes per steady run at 1, 64 and 1024 in flight.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000, 20_000, 40_000])]
    counts: Vec<usize>,
    /// Python interpreter with aio-pika; without it the aio-pika runs are skipped.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The aio-pika script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/python/aio_pika_bench.py"))]
    python_script: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.json"))]
    out: PathBuf,
    /// Which clients the steady runs compare (aio-pika needs --python).
    #[arg(long, value_delimiter = ',', default_values_t = [ClientArg::Lapin, ClientArg::FlowEvents, ClientArg::AmqpSession, ClientArg::AioPika])]
    clients: Vec<ClientArg>,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Part::Memory, Part::Steady, Part::Drain, Part::Outage])]
    only: Vec<Part>,
    /// Events buffered before the drain.
    #[arg(long, default_value_t = 10_000)]
    drain_events: usize,
    /// Events buffered for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    memory_events: usize,
    /// Publishes per second during the outage run.
    #[arg(long, default_value_t = 2_000)]
    outage_rate: u32,
    /// How long the broker is cut in the outage run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    outage_secs: f64,
    /// Base backoff delay of the sink in the drain and outage runs, in seconds.
    #[arg(long, default_value_t = 1.0)]
    retry_delay: f64,
    /// Backoff cap of the sink in the drain and outage runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    max_retry_delay: f64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
enum ClientArg {
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
enum Part {
    Memory,
    Steady,
    Drain,
    Outage,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_value_name(self, f)
    }
}

/// In-flight levels of the steady runs.
const LEVELS: [usize; 3] = [1, 64, 1024];

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
        steady_part(args, topo, &payload, report).await?;
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
    Ok(())
}

/// Attempts at one measurement: a run with failed publishes (another test
/// closed the broker's connections or raised an alarm) is repeated.
const ATTEMPTS: usize = 3;

/// The clients of the steady runs, reconnected when a disturbance closed them.
struct SteadyClients {
    url: String,
    exchange: String,
    sink: flow_events_core::Resilient,
    lapin: Option<LapinPublisher>,
    session: Option<std::sync::Arc<dyn flow_events_core::Session>>,
    wants_session: bool,
}

impl SteadyClients {
    async fn connect_session(
        url: &str,
        exchange: &str,
    ) -> anyhow::Result<std::sync::Arc<dyn flow_events_core::Session>> {
        let backend = flow_events_amqp::AmqpBackend::new(
            &flow_events_core::Config::default(),
            flow_events_amqp::AmqpConfig::new()
                .with_url(url)
                .with_exchange(exchange)
                .with_app_id("flow-events-bench"),
        );
        Ok(flow_events_core::Backend::connect(&backend).await?)
    }

    /// Opens again what was lost; waits for the sink to be connected.
    async fn ensure(&mut self) -> anyhow::Result<()> {
        if !self.lapin.as_ref().is_some_and(LapinPublisher::is_open) {
            if let Some(old) = self.lapin.take() {
                old.close().await;
            }
            self.lapin = Some(LapinPublisher::connect(&self.url, &self.exchange).await?);
        }
        let lost = self
            .session
            .as_ref()
            .is_none_or(|s| futures_util::FutureExt::now_or_never(s.closed()).is_some());
        if self.wants_session && lost {
            self.session = Some(Self::connect_session(&self.url, &self.exchange).await?);
        }
        sink::connected(&self.sink, Duration::from_secs(60)).await
    }
}

async fn steady_part(
    args: &Args,
    topo: &Topology,
    payload: &Payload,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for client in &args.clients {
        match client {
            ClientArg::Lapin => clients.push(Client::Lapin),
            ClientArg::FlowEvents => clients.push(Client::Resilient),
            ClientArg::AioPika if args.python.is_some() => clients.push(Client::AioPika),
            ClientArg::AioPika => eprintln!("steady: no --python given, aio-pika skipped"),
            ClientArg::AmqpSession => clients.push(Client::Session),
        }
    }
    anyhow::ensure!(!clients.is_empty(), "no client to run");
    let sink = sink::start(
        &args.url,
        &topo.exchange,
        SinkSettings {
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(5),
            max_pending_events: 1_000,
            // Each caller of the steady runs waits for its own confirm:
            // they measure confirmed publishes, so a confirm slower than
            // the default 0.5 s must not turn into a `Buffered` answer.
            confirm_wait: Some(Duration::from_secs(10)),
        },
    )
    .await?;
    let mut c = SteadyClients {
        url: args.url.clone(),
        exchange: topo.exchange.clone(),
        sink,
        lapin: None,
        session: None,
        wants_session: clients.contains(&Client::Session),
    };
    c.ensure().await?;

    eprintln!("steady: warming up");
    if let Some(lapin) = &c.lapin {
        lapin.run(payload, 2_000, 64).await;
    }
    steady::resilient(&c.sink, payload, 2_000, 64).await;
    if let Some(session) = &c.session {
        steady::session(session, payload, 2_000, 64).await;
    }
    if let Some(python) = args
        .python
        .as_ref()
        .filter(|_| clients.contains(&Client::AioPika))
    {
        let (_, version) = steady::aio_pika(
            python,
            &args.python_script,
            &args.url,
            &topo.exchange,
            500,
            64,
        )
        .await?;
        report.settings.insert("aio_pika".into(), version.into());
    }
    topo.purge().await?;

    let mut levels: Vec<SteadyLevel> = LEVELS
        .iter()
        .zip(&args.counts)
        .map(|(&in_flight, &count)| SteadyLevel::new(in_flight, count))
        .collect();
    let mut repeated = 0usize;
    for round in 0..args.rounds {
        for (i, level) in levels.iter_mut().enumerate() {
            // Alternate the order of the clients from one measurement to the next.
            let mut order = clients.clone();
            let n = order.len();
            order.rotate_left((round + i) % n);
            let mut runs = BTreeMap::new();
            for client in order {
                eprintln!(
                    "steady: round {}/{}, {} in flight, {}",
                    round + 1,
                    args.rounds,
                    level.in_flight,
                    client.label()
                );
                let mut attempt = 0;
                let run = loop {
                    attempt += 1;
                    let outcome = measure(args, topo, payload, &mut c, client, level).await;
                    match outcome {
                        Ok(run) if run.failed == 0 => break run,
                        Ok(run) if attempt >= ATTEMPTS => break run,
                        Err(e) if attempt >= ATTEMPTS => return Err(e),
                        other => {
                            let why = match other {
                                Ok(run) => format!("{} publishes failed", run.failed),
                                Err(e) => format!("{e:#}"),
                            };
                            eprintln!("steady: run disturbed ({why}); repeating it");
                            repeated += 1;
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                };
                runs.insert(client, run);
            }
            level.rounds.push(runs);
        }
    }
    report
        .settings
        .insert("steady_runs_repeated".into(), repeated.into());
    c.sink.shutdown(Duration::from_secs(10)).await;
    if let Some(lapin) = c.lapin.take() {
        lapin.close().await;
    }
    if let Some(session) = c.session.take() {
        session.close().await;
    }
    report.steady = levels;
    Ok(())
}

/// One steady measurement of `client`, from an empty queue.
async fn measure(
    args: &Args,
    topo: &Topology,
    payload: &Payload,
    c: &mut SteadyClients,
    client: Client,
    level: &SteadyLevel,
) -> anyhow::Result<steady::Run> {
    c.ensure().await?;
    topo.purge().await?;
    let run = match client {
        Client::Lapin => {
            let lapin = c.lapin.as_ref().context("no lapin connection")?;
            lapin.run(payload, level.count, level.in_flight).await
        }
        Client::Resilient => {
            steady::resilient(&c.sink, payload, level.count, level.in_flight).await
        }
        Client::Session => {
            let session = c.session.as_ref().context("no session")?;
            steady::session(session, payload, level.count, level.in_flight).await
        }
        Client::AioPika => {
            let python = args.python.as_deref().context("no python")?;
            steady::aio_pika(
                python,
                &args.python_script,
                &args.url,
                &topo.exchange,
                level.count,
                level.in_flight,
            )
            .await?
            .0
        }
    };
    let depth = topo.depth().await?;
    anyhow::ensure!(
        depth as usize >= run.count - run.failed,
        "{} confirmed {} messages but the queue holds {depth}",
        client.label(),
        run.count - run.failed
    );
    topo.purge().await?;
    Ok(run)
}
