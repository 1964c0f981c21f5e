//! admin-service: a small HTTP service that publishes events through
//! flow-events and keeps working while RabbitMQ is down.
//!
//! Without `RABBITMQ_URL` it runs on the embedded in-memory broker; with it,
//! on RabbitMQ. See the README for the endpoints and the settings.

mod app;
mod backend;
mod http;
mod logging;
mod openapi;
mod settings;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use flow_events_core::{ConnectionMonitor, ENV_REQUIRED, Resilient, StartError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::AppState;
use crate::settings::Settings;

/// mimalloc rather than the system allocator: each request allocates a few
/// dozen times (the request, the event, its buffer entry, the answer), and
/// glibc's malloc and free took about a quarter of the service's instructions
/// per request (valgrind's callgrind, `POST /events` with the broker down).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("admin-service: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(settings.log_format, &settings.log_filter) {
        eprintln!("admin-service: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("admin-service: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("admin-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        port,
        service_name,
        shutdown_grace,
        api_token,
        http: limits,
        outbox_path,
        config,
        amqp,
        ..
    } = settings;
    let selected = backend::select(&config, &amqp, &service_name)?;
    if selected.name == "memory" && config.required() {
        tracing::warn!("{ENV_REQUIRED}=true has no effect without RABBITMQ_URL");
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on port {port} (PORT)"))?;
    tracing::info!(
        service = %service_name, port, backend = selected.name,
        "starting {service_name} on port {port} with {}", selected.description
    );
    if api_token.is_some() {
        tracing::info!(
            protected = true,
            "the API is protected: POST /events and GET /metrics need Authorization: Bearer <API_TOKEN>"
        );
    } else {
        tracing::warn!(
            protected = false,
            "the API is not protected: anyone who reaches port {port} can publish events \
             (set API_TOKEN or API_TOKEN_FILE)"
        );
    }

    // One signal listener for the whole run: a signal during start-up is not lost.
    let signal = shutdown_signal();
    tokio::pin!(signal);

    // The metrics recorder first: the sink takes its counters when it starts.
    let prometheus = flow_events_axum::install_prometheus()
        .context("cannot install the Prometheus metrics recorder")?;
    let builder = Resilient::builder(selected.backend.clone());
    let builder = match &outbox_path {
        Some(path) => with_outbox(builder, path)?,
        None => builder,
    };
    let start = builder.with_config(config).start();
    let events = tokio::select! {
        started = start => match started {
            Ok(events) => events,
            Err(e @ StartError::BrokerUnavailable { .. }) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to start (set {ENV_REQUIRED}=false to start without RabbitMQ)"
                )));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("failed to start")),
        },
        signal = &mut signal => {
            tracing::info!("received {signal} while starting; exiting");
            return Ok(());
        }
    };

    let state = AppState::new(
        events.clone(),
        service_name.clone(),
        limits,
        api_token,
        prometheus,
    );
    let app = app::router(state.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(http::serve(listener, app, limits, stop_rx));
    tracing::info!(
        port,
        "{service_name} listening on http://{addr} (health: /health, events: POST /events, metrics: /metrics)"
    );

    let server_result = tokio::select! {
        signal = &mut signal => {
            tracing::info!("received {signal}, shutting down: no new requests, finishing open ones");
            None
        }
        ended = &mut server => Some(ended),
    };
    state.begin_shutdown();
    let _ = stop_tx.send(true);
    let server_result = match server_result {
        Some(ended) => Some(ended),
        None => match tokio::time::timeout(shutdown_grace, &mut server).await {
            Ok(ended) => Some(ended),
            Err(_) => {
                tracing::warn!(
                    "open requests did not finish within {shutdown_grace:?} (SHUTDOWN_GRACE); closing them"
                );
                server.abort();
                None
            }
        },
    };

    let pending = events.status().pending_events;
    tracing::info!(
        pending,
        "draining {pending} pending events for up to {shutdown_grace:?} (SHUTDOWN_GRACE)"
    );
    let report = events.shutdown(shutdown_grace).await;
    log_remaining(&report.remaining);
    let status = events.status();
    tracing::info!(
        published = status.published,
        confirmed = status.confirmed,
        dropped = status.dropped_events,
        left = report.remaining.len(),
        "{service_name} stopped; {} events left undelivered",
        report.remaining.len()
    );

    match server_result {
        Some(Ok(())) | None => Ok(()),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
    }
}

/// Each event still pending at exit is logged by id and type (never its
/// payload, which may be large or hold personal data): it was not delivered.
fn log_remaining(remaining: &[flow_events_core::Event]) {
    for event in remaining {
        tracing::warn!(
            id = %event.id(), event_type = %event.event_type(),
            "undelivered event {} {}", event.event_type(), event.id()
        );
    }
}

/// Resolves on Ctrl-C or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No Ctrl-C handler can be installed: wait for SIGTERM only.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = term => "SIGTERM",
    }
}

/// Keeps pending events in the durable outbox at `path` (`FLOW_EVENTS_OUTBOX_PATH`).
#[cfg(feature = "outbox")]
fn with_outbox(
    builder: flow_events_core::ResilientBuilder,
    path: &std::path::Path,
) -> anyhow::Result<flow_events_core::ResilientBuilder> {
    let store = flow_events_outbox::RedbStore::open(path).with_context(|| {
        format!(
            "cannot open the outbox {} (FLOW_EVENTS_OUTBOX_PATH)",
            path.display()
        )
    })?;
    tracing::info!(outbox = %path.display(), "pending events are kept in the durable outbox {}", path.display());
    Ok(builder.with_store(store))
}

#[cfg(not(feature = "outbox"))]
fn with_outbox(
    _builder: flow_events_core::ResilientBuilder,
    path: &std::path::Path,
) -> anyhow::Result<flow_events_core::ResilientBuilder> {
    anyhow::bail!(
        "FLOW_EVENTS_OUTBOX_PATH is set to {} but this build has no outbox (enable the `outbox` feature)",
        path.display()
    )
}
