//! `flow-events dlq`: list, replay and purge a subscription's dead letters on
//! RabbitMQ.
//!
//! Dead letters are read with `basic.get` and left unacknowledged, so that
//! closing the channel puts back every one not replayed or purged, where it
//! was. Replaying publishes a copy with publisher confirms and acks the dead
//! letter only once the broker has confirmed the copy: a failure on the way
//! leaves the dead letter where it was (at worst a duplicate, never a loss).

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use flow_events_core::{dead_letter, redact_url};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Longest wait for one broker operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The most dead letters one `replay` or `purge --id` looks through (they
/// are held unacknowledged until the command ends).
const MAX_PICKED: usize = 100_000;

/// The header counting attempts on the live copies of an event.
const ATTEMPT_HEADER: &str = "x-flow-attempt";

/// What to do with which subscription's dead letters.
#[derive(Debug, Args)]
pub(crate) struct Dlq {
    #[command(subcommand)]
    command: Command,
}

/// Where the dead letters are.
#[derive(Debug, Args)]
struct Target {
    /// The subscription (its queue's name).
    subscription: String,
    /// The broker (the password is never shown).
    #[arg(
        long,
        env = "RABBITMQ_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    url: String,
    /// The suffix of the dead-letter queue's name (`AmqpConfigBuilder::with_dead_letter_queue_suffix`).
    #[arg(long, default_value = ".dead")]
    suffix: String,
}

/// Which dead letters.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// The dead letter of this event id.
    #[arg(long)]
    id: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per dead letter: id, type, original routing key, attempts,
    /// when it failed, why.
    List {
        #[command(flatten)]
        target: Target,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many, oldest first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Publish dead letters again, with the attempt count reset, then remove
    /// them: to the subscription's queue (only it gets them again), or with
    /// `--exchange` to that exchange with the original routing key (every
    /// subscription bound to it gets them).
    Replay {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Which,
        /// Publish to this exchange with the original routing key.
        #[arg(long)]
        exchange: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Remove dead letters for good.
    Purge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Which,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs the command on a runtime of its own.
pub(crate) fn run(dlq: &Dlq) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&dlq.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", redact_url(&e));
            ExitCode::FAILURE
        }
    }
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {OPERATION_TIMEOUT:?}")),
    }
}

/// A channel to the broker of `target`, and the dead-letter queue's name.
async fn open(target: &Target) -> Result<(Connection, Channel, String), String> {
    let shown = redact_url(&target.url);
    let conn = within(
        &format!("connecting to {shown}"),
        Connection::connect(&target.url, ConnectionProperties::default()),
    )
    .await?;
    let channel = within("opening a channel", conn.create_channel()).await?;
    let queue = format!("{}{}", target.subscription, target.suffix);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    within(
        &format!("finding queue {queue}"),
        channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()),
    )
    .await?;
    Ok((conn, channel, queue))
}

/// Takes up to `limit` dead letters of `queue`, unacknowledged.
async fn take(channel: &Channel, queue: &str, limit: usize) -> Result<Vec<Delivery>, String> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = within(
            &format!("reading {queue}"),
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        match got {
            Some(message) => out.push(message.delivery),
            None => break,
        }
    }
    Ok(out)
}

/// A text header.
fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The event id of a dead letter: its message id, else the body's `id`.
fn event_id(d: &Delivery) -> String {
    d.properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
        })
        .unwrap_or_default()
}

/// One dead letter as the listing shows it.
fn describe(d: &Delivery) -> BTreeMap<&'static str, serde_json::Value> {
    let mut row = BTreeMap::new();
    row.insert("id", event_id(d).into());
    row.insert(
        "type",
        d.properties
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_owned())
            .into(),
    );
    for (key, name) in [
        ("error", dead_letter::ERROR_HEADER),
        ("attempts", dead_letter::ATTEMPTS_HEADER),
        ("routing_key", dead_letter::ROUTING_KEY_HEADER),
        ("subscription", dead_letter::SUBSCRIPTION_HEADER),
        ("first_failed_at", dead_letter::FIRST_FAILED_AT_HEADER),
        ("failed_at", dead_letter::FAILED_AT_HEADER),
    ] {
        row.insert(key, header(&d.properties, name).into());
    }
    row.insert("bytes", d.data.len().into());
    row
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.replace(['\t', '\n'], " "),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn list(letters: &[Delivery], json: bool, out: &mut impl Write) -> io::Result<()> {
    if !json {
        writeln!(out, "ID\tTYPE\tROUTING KEY\tATTEMPTS\tFAILED AT\tERROR")?;
    }
    for d in letters {
        let row = describe(d);
        if json {
            writeln!(out, "{}", serde_json::json!(row))?;
        } else {
            let cols = [
                "id",
                "type",
                "routing_key",
                "attempts",
                "failed_at",
                "error",
            ];
            let line: Vec<String> = cols.iter().map(|c| text(&row[c])).collect();
            writeln!(out, "{}", line.join("\t"))?;
        }
    }
    out.flush()
}

/// Asks `question` on stderr; only `y` or `yes` on stdin agrees.
fn confirmed(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The dead letters `which` picks among `letters`, or an error when an id
/// matches none.
fn pick<'a>(letters: &'a [Delivery], which: &Which) -> Result<Vec<&'a Delivery>, String> {
    let picked: Vec<&Delivery> = letters
        .iter()
        .filter(|d| which.all || which.id.as_deref() == Some(event_id(d).as_str()))
        .collect();
    match &which.id {
        Some(id) if picked.is_empty() => Err(format!("no dead letter with id {id}")),
        _ => Ok(picked),
    }
}

/// The properties of a replayed copy: the dead letter's, without the
/// `x-flow-*` account and the attempt count (it starts at 1 again), keeping
/// the original routing key for the consumer.
fn replay_properties(d: &Delivery) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let name = k.as_str();
            let dropped = name == ATTEMPT_HEADER
                || (name.starts_with("x-flow-") && name != dead_letter::ROUTING_KEY_HEADER)
                || name == "x-death"
                || name.starts_with("x-first-death-")
                || name.starts_with("x-last-death-")
                || name == "x-delivery-count";
            if !dropped {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    d.properties.clone().with_headers(headers)
}

async fn execute(command: &Command) -> Result<ExitCode, String> {
    match command {
        Command::List {
            target,
            json,
            limit,
        } => {
            let (conn, channel, queue) = open(target).await?;
            let letters = take(&channel, &queue, *limit).await?;
            let written = list(&letters, *json, &mut io::stdout().lock());
            let _ = channel.close(200, "listed".into()).await;
            let _ = conn.close(200, "done".into()).await;
            Ok(crate::finish(written))
        }
        Command::Replay {
            target,
            which,
            exchange,
            yes,
        } => {
            let (conn, channel, queue) = open(target).await?;
            let letters = take(&channel, &queue, MAX_PICKED).await?;
            let picked = pick(&letters, which)?;
            let to = match exchange {
                Some(x) => format!("exchange {x} with their original routing keys"),
                None => format!("queue {}", target.subscription),
            };
            if !yes
                && !confirmed(&format!(
                    "replay {} dead letter(s) of {} to {to}?",
                    picked.len(),
                    target.subscription
                ))
            {
                eprintln!("nothing replayed");
                return Ok(ExitCode::FAILURE);
            }
            within(
                "enabling publisher confirms",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            for d in &picked {
                let (exchange, routing_key) = match exchange {
                    Some(x) => (
                        x.clone(),
                        header(&d.properties, dead_letter::ROUTING_KEY_HEADER)
                            .unwrap_or_else(|| d.routing_key.as_str().to_owned()),
                    ),
                    None => (String::new(), target.subscription.clone()),
                };
                let id = event_id(d);
                let confirm = within(
                    &format!("replaying {id}"),
                    channel.basic_publish(
                        ShortString::from(exchange.as_str()),
                        ShortString::from(routing_key.as_str()),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &d.data,
                        replay_properties(d),
                    ),
                )
                .await?;
                let confirmation = within(&format!("confirming {id}"), confirm).await?;
                if !confirmation.is_ack() || confirmation.take_message().is_some() {
                    return Err(format!(
                        "the broker did not take the copy of {id} (nacked or unroutable); \
                         its dead letter stays"
                    ));
                }
                within(
                    &format!("removing the dead letter of {id}"),
                    d.ack(BasicAckOptions::default()),
                )
                .await?;
                println!("replayed {id}");
            }
            let _ = channel.close(200, "replayed".into()).await;
            let _ = conn.close(200, "done".into()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { target, which, yes } => {
            let (conn, channel, queue) = open(target).await?;
            if which.all {
                if !yes && !confirmed(&format!("purge every dead letter of {queue}?")) {
                    eprintln!("nothing purged");
                    return Ok(ExitCode::FAILURE);
                }
                let n = within(
                    &format!("purging {queue}"),
                    channel.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()),
                )
                .await?;
                println!("purged {n}");
            } else {
                let letters = take(&channel, &queue, MAX_PICKED).await?;
                let picked = pick(&letters, which)?;
                if !yes
                    && !confirmed(&format!(
                        "purge {} dead letter(s) of {queue}?",
                        picked.len()
                    ))
                {
                    eprintln!("nothing purged");
                    return Ok(ExitCode::FAILURE);
                }
                for d in &picked {
                    within("removing a dead letter", d.ack(BasicAckOptions::default())).await?;
                }
                println!("purged {}", picked.len());
            }
            let _ = channel.close(200, "purged".into()).await;
            let _ = conn.close(200, "done".into()).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
