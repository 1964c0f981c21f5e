//! The steady part: the clients side by side, rounds alternated, each
//! measurement repeated when another test disturbed the broker.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use crate::payload::Payload;
use crate::report::{Report, SteadyLevel};
use crate::sink::{self, SinkSettings};
use crate::steady::{self, Client, LapinPublisher};
use crate::topology::Topology;
use crate::{ATTEMPTS, Args, ClientArg, LEVELS};

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
            flow_events_amqp::AmqpConfig::builder()
                .with_url(url)
                .with_exchange(exchange)
                .with_app_id("flow-events-bench")
                .build()?,
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

pub(crate) async fn run(
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
