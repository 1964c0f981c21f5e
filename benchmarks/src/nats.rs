//! `flow-events-bench nats`: the resilient sink over the NATS JetStream
//! backend against raw async-nats JetStream publishing, in the same run,
//! to one file-backed stream on a local nats-server.
//!
//! Each publish waits for its own JetStream publish ack; `in_flight` tasks
//! publish at once (1, 64, 1024). A round's publishes at a level go in
//! slices (`--slices`, 10 by default), the clients taking turns slice by
//! slice, and a client's rate is its publishes over the sum of its slices'
//! times: the server's swings of a few seconds fall on both clients alike.
//!
//! The raw publish carries what the backend's does on the wire: the same
//! 1 KiB JSON body and a `Nats-Msg-Id` header (so the server does the same
//! de-duplication work), plus the type, time and content-type headers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use flow_events_core::{Config, ConnectionMonitor, ConnectionState, Event, Resilient};
use flow_events_nats::{NatsBackend, NatsConfig, Retention};

use crate::payload::{EVENT_TYPE, Payload};
use crate::steady::{self, Run};

/// The clients compared.
const CLIENTS: [&str; 3] = ["raw async-nats", "flow-events", "nats session"];

/// Options of the NATS comparison.
#[derive(Debug, clap::Args)]
pub(crate) struct NatsArgs {
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Rounds; the table gives medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Publishes per run at 1, 64 and 1024 in flight; 0 leaves a level out.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000, 50_000, 100_000])]
    counts: Vec<usize>,
    /// The clients to run (`raw`, `flow-events`, `session`; default all):
    /// one alone is what `benchmarks/instructions.sh` counts.
    #[arg(long, value_delimiter = ',', default_values_t = ["raw".to_string(), "flow-events".to_string(), "session".to_string()])]
    clients: Vec<String>,
    /// Slices of each measurement: a round's publishes at a level go in
    /// this many slices, the clients taking turns slice by slice (ABBA),
    /// so that the server's slow swings (disk writes, its collector) fall
    /// on every client alike. A client's rate is its publishes over the
    /// sum of its slices' times.
    #[arg(long, default_value_t = 10)]
    slices: usize,
}

/// The index in [`CLIENTS`] of a `--clients` value.
fn client_index(name: &str) -> anyhow::Result<usize> {
    match name {
        "raw" => Ok(0),
        "flow-events" => Ok(1),
        "session" => Ok(2),
        other => anyhow::bail!("unknown client '{other}' (raw, flow-events, session)"),
    }
}

/// A raw JetStream publish of `event`'s body with the backend's headers.
fn raw_headers(event: &Event) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id().to_string().as_str());
    headers.insert("Flow-Event-Type", EVENT_TYPE);
    headers.insert(
        "Flow-Event-Time",
        event
            .timestamp()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .as_str(),
    );
    headers.insert("Content-Type", "application/json");
    headers
}

async fn raw(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: &Payload,
    count: usize,
    in_flight: usize,
) -> Run {
    let js = js.clone();
    let subject: Arc<str> = Arc::from(subject);
    let payload = payload.clone();
    steady::drive(
        count,
        in_flight,
        move || {
            let event = payload.event();
            let body = bytes::Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
            (raw_headers(&event), body)
        },
        move |(headers, body): (HeaderMap, bytes::Bytes)| {
            let js = js.clone();
            let subject = subject.clone();
            async move {
                match js
                    .publish_with_headers(subject.to_string(), headers, body)
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the comparison and prints a table.
pub(crate) async fn run(args: NatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.counts.len() == 3, "--counts takes three numbers");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let id = format!("{:08x}", fastrand::u32(..));
    let stream = format!("BENCH_{id}");
    let prefix = format!("bench.{id}");
    let nats = NatsConfig::builder()
        .with_url(&args.url)
        .with_stream(&stream)
        .with_subject_prefix(&prefix)
        // Kept on disk whatever the consumers: what the raw publisher
        // writes too.
        .with_retention(Retention::Limits)
        .with_dead_letter(false)
        .build()?;
    let chosen = args
        .clients
        .iter()
        .map(|c| client_index(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The confirm wait of the AMQP steady sink: a publish answered
    // `Buffered` counts as failed, and a slow run (under callgrind) must
    // not turn into one.
    let config = Config::builder()
        .with_max_pending_events(100_000)
        .with_confirm_wait(Duration::from_secs(10))
        .build()?;
    let backend = NatsBackend::new(&config, nats).with_connection_name("flow-events-bench");
    let sink = Resilient::builder(backend.clone())
        .with_config(config)
        .start()
        .await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        sink.watch_state()
            .wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .context("connecting the sink")??;
    let session = flow_events_core::Backend::connect(&backend)
        .await
        .context("a session")?;
    let client = async_nats::ConnectOptions::new()
        .name("flow-events-bench raw")
        .connect(args.url.as_str())
        .await
        .context("connecting raw async-nats")?;
    let js = async_nats::jetstream::new(client);
    let subject = format!("{prefix}.{EVENT_TYPE}");
    let payload = Payload::new();
    eprintln!("stream {stream} on {}", sink.status().url);

    let levels = [1usize, 64, 1024];
    // rates[level][client] over rounds.
    let mut rates = vec![vec![Vec::new(); CLIENTS.len()]; levels.len()];
    let mut cpu = vec![vec![Vec::new(); CLIENTS.len()]; levels.len()];
    // The measurements; the stream is deleted below whatever their outcome.
    let measured: anyhow::Result<()> = async {
        for round in 0..args.rounds {
            for (l, (&in_flight, &count)) in levels.iter().zip(&args.counts).enumerate() {
                if count == 0 {
                    // A level left out (`--counts 0,...`).
                    continue;
                }
                let slices = args.slices.clamp(1, count);
                // Per client: publishes, seconds and CPU seconds, summed
                // over the slices.
                let mut sums = [(0usize, 0.0f64, 0.0f64); CLIENTS.len()];
                for slice in 0..slices {
                    let n = count / slices + usize::from(slice < count % slices);
                    // Alternate who goes first (ABBA over the slices and
                    // the rounds), so that neither always gets a fresher
                    // server.
                    let order = if (round + slice) % 2 == 1 {
                        [2, 1, 0]
                    } else {
                        [0, 1, 2]
                    };
                    for c in order.into_iter().filter(|c| chosen.contains(c)) {
                        let r = match c {
                            0 => raw(&js, &subject, &payload, n, in_flight).await,
                            1 => steady::resilient(&sink, &payload, n, in_flight).await,
                            _ => steady::session(&session, &payload, n, in_flight).await,
                        };
                        anyhow::ensure!(
                            r.failed == 0,
                            "{}: {} publishes failed",
                            CLIENTS[c],
                            r.failed
                        );
                        // Every measurement starts on an empty stream, and
                        // the run's messages do not pile up on disk.
                        js.get_stream(&stream)
                            .await
                            .context("the stream")?
                            .purge()
                            .await
                            .context("purging the stream")?;
                        sums[c].0 += n;
                        sums[c].1 += r.seconds;
                        sums[c].2 += r.cpu_us_per_msg * n as f64;
                    }
                }
                for c in (0..CLIENTS.len()).filter(|c| chosen.contains(c)) {
                    let (n, seconds, cpu_us) = sums[c];
                    let rate = n as f64 / seconds;
                    eprintln!(
                        "round {} in flight {in_flight}: {} {rate:.0} msg/s",
                        round + 1,
                        CLIENTS[c],
                    );
                    rates[l][c].push(rate);
                    cpu[l][c].push(cpu_us / n as f64);
                }
            }
        }
        Ok(())
    }
    .await;
    session.close().await;
    sink.shutdown(Duration::from_secs(10)).await;
    let _ = js.delete_stream(&stream).await;
    measured?;
    // The ratio is the median of each round's ratio (the two ran back to
    // back), which a machine shared with other work disturbs less than a
    // ratio of medians.
    println!(
        "| in flight | raw async-nats msg/s | flow-events msg/s | nats session msg/s | flow-events / raw (median of rounds; min-max) | client CPU us/msg (raw, flow-events) |"
    );
    println!("|---|---|---|---|---|---|");
    for (l, in_flight) in levels.iter().enumerate() {
        if args.counts[l] == 0 {
            continue;
        }
        let m: Vec<f64> = rates[l].iter().map(|v| median(v.clone())).collect();
        let c: Vec<f64> = cpu[l].iter().map(|v| median(v.clone())).collect();
        let ratios: Vec<f64> = rates[l][1]
            .iter()
            .zip(&rates[l][0])
            .map(|(f, r)| f / r)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "| {in_flight} | {:.0} | {:.0} | {:.0} | {:.2} ({lo:.2}-{hi:.2}) | {:.1}, {:.1} |",
            m[0],
            m[1],
            m[2],
            median(ratios.clone()),
            c[0],
            c[1]
        );
    }
    Ok(())
}
