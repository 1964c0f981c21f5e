//! [`NatsBackend`]: connects sessions to NATS JetStream, trying each
//! configured URL in turn.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use flow_events_core::backend_kit::{AfterConnect, SessionLoss, UrlRotation};
use flow_events_core::{Backend, BackendError, BackendInfo, Config, Session};
use tokio_util::sync::CancellationToken;

use crate::address::Address;
use crate::config::NatsConfig;
use crate::errors;
use crate::redact::Scrub;
use crate::session::{NatsSession, SessionShared, Settings};
use crate::topology::{self, StreamSpec};

/// Publish acks awaited at once on one connection, at most. A publish past
/// it waits for a free place (async-nats' backpressure).
const MAX_ACKS_IN_FLIGHT: usize = 16_384;

/// The NATS JetStream backend: each [`Backend::connect`] opens one
/// connection, creates or checks the events' stream (and the dead-letter
/// stream), and gives a session that publishes with JetStream acks and
/// consumes through durable pull consumers.
///
/// The NATS settings come from a [`NatsConfig`] (`NATS_*` variables); the
/// resilience settings, the publish timeout and the largest event from
/// core's `Config`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use flow_events_core::{Backend, Config, Event};
/// use flow_events_nats::{NatsBackend, NatsConfig};
///
/// let nats = NatsConfig::builder().with_url("nats://127.0.0.1:4222").build()?;
/// let backend = NatsBackend::new(&Config::default(), nats);
/// let session = backend.connect().await?;
/// let event = Event::try_new("invoice.paid", serde_json::json!({"invoice": 7}))?;
/// session.send(&event).await?.await?; // handed over, then acked by the stream
/// session.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBackend {
    inner: Arc<Inner>,
}

struct Inner {
    nats: NatsConfig,
    settings: Arc<Settings>,
    name: String,
    /// The URLs, tried in turn; a connect starts at the one that worked last.
    urls: UrlRotation,
}

impl NatsBackend {
    /// A backend with the resilience settings of `config` (publish timeout,
    /// largest event) and the NATS settings `nats`. Nothing is checked or
    /// connected until [`Backend::connect`].
    pub fn new(config: &Config, nats: NatsConfig) -> Self {
        let settings = Settings {
            stream: nats.stream().to_owned(),
            prefix: nats.subject_prefix().to_owned(),
            dead_letter: nats
                .dead_letter()
                .then(|| (nats.dead_letter_stream(), nats.dead_letter_prefix())),
            ack_wait: nats.ack_wait(),
            retry_delay: nats.retry_delay(),
            max_event_bytes: config.max_event_bytes(),
            publish_timeout: config.publish_timeout(),
            operation_timeout: config.publish_timeout().max(Duration::from_secs(1)),
            duplicates: AtomicU64::new(0),
        };
        Self {
            inner: Arc::new(Inner {
                nats,
                settings: Arc::new(settings),
                name: "flow-events".to_owned(),
                urls: UrlRotation::new(0, AfterConnect::Stay),
            }),
        }
    }

    /// Names the connections on the server (`flow-events` by default).
    pub fn with_connection_name(self, name: impl Into<String>) -> Self {
        let inner = Inner {
            nats: self.inner.nats.clone(),
            settings: self.inner.settings.clone(),
            name: name.into(),
            urls: UrlRotation::new(0, AfterConnect::Stay),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The NATS settings.
    pub fn nats_config(&self) -> &NatsConfig {
        &self.inner.nats
    }

    /// Publishes the stream acknowledged as duplicates since this backend
    /// was made: events sent again (after a lost connection or a lost ack)
    /// that the stream's duplicate window dropped.
    pub fn duplicates_dropped(&self) -> u64 {
        self.inner.settings.duplicates.load(Ordering::Relaxed)
    }

    /// The secrets of the configuration, to scrub from client errors.
    fn scrub(&self, address: &Address) -> Scrub {
        let nats = &self.inner.nats;
        Scrub::new(
            address
                .secrets()
                .chain(nats.password().map(|s| s.expose()))
                .chain(nats.token().map(|s| s.expose()))
                .chain(nats.nkey().map(|s| s.expose())),
        )
    }

    /// Opens a session on one address.
    async fn connect_to(&self, address: &Address) -> Result<NatsSession, BackendError> {
        let nats = &self.inner.nats;
        let settings = &self.inner.settings;
        let scrub = Arc::new(self.scrub(address));
        let state = Arc::new(SessionLoss::new());
        let options = address
            .options(nats, &self.inner.name, state.clone())
            .await?;
        let what = format!("connecting to {}", address.redacted);
        let limit = nats.connect_timeout();
        // async-nats bounds each attempt by its connection timeout; this
        // bounds the whole call (name resolution, TLS, handshake).
        let client = match tokio::time::timeout(
            limit + Duration::from_secs(1),
            options.connect(address.server.clone()),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(errors::connect(&e, &what, &scrub)),
            Err(_) => return Err(BackendError::timeout(&what, limit)),
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let session = NatsSession {
            client,
            js,
            shared: Arc::new(SessionShared {
                state,
                settings: settings.clone(),
                scrub,
            }),
            cancel: CancellationToken::new(),
            closing: Arc::new(crate::pull::Closing::new()),
            url: address.redacted.clone(),
        };
        let streams = self.stream_specs();
        let checked = topology::within(
            settings.operation_timeout,
            &format!("setting up stream {}", settings.stream),
            async {
                for spec in &streams {
                    topology::ensure_stream(&session.js, spec, &session.shared.scrub).await?;
                }
                Ok(())
            },
        )
        .await;
        if let Err(e) = checked {
            Session::close(&session).await;
            return Err(e);
        }
        Ok(session)
    }

    /// The events' stream and, when on, the dead-letter stream.
    fn stream_specs(&self) -> Vec<StreamSpec> {
        let nats = &self.inner.nats;
        let mut specs = vec![StreamSpec {
            name: nats.stream().to_owned(),
            subject: format!("{}.>", nats.subject_prefix()),
            retention: nats.retention(),
            duplicate_window: nats.duplicate_window(),
            max_age: nats.max_age(),
            description: "flow-events: events".to_owned(),
        }];
        if nats.dead_letter() {
            specs.push(StreamSpec {
                name: nats.dead_letter_stream(),
                subject: format!("{}.>", nats.dead_letter_prefix()),
                retention: crate::config::Retention::Limits,
                duplicate_window: nats.duplicate_window(),
                max_age: None,
                description: "flow-events: dead letters".to_owned(),
            });
        }
        specs
    }
}

#[async_trait]
impl Backend for NatsBackend {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        let Some(url) = self.inner.nats.url() else {
            return Err(BackendError::configuration(format!(
                "no NATS URL configured (set {})",
                crate::config::ENV_URL
            )));
        };
        let tls = self.inner.nats.tls();
        let session = self
            .inner
            .urls
            .connect(&url.split(), "NATS URL", |url| {
                let address = Address::parse(url, tls);
                async move { self.connect_to(&address?).await }
            })
            .await?;
        Ok(Arc::new(session))
    }

    /// `messaging.system` `nats` and the subject as the destination.
    fn message_attributes(&self, event: &flow_events_core::Event) -> Vec<(&'static str, String)> {
        let subject = format!(
            "{}.{}",
            self.inner.nats.subject_prefix(),
            event.event_type()
        );
        vec![
            ("messaging.system", "nats".to_owned()),
            ("messaging.destination.name", subject),
        ]
    }

    fn info(&self) -> BackendInfo {
        BackendInfo::new("nats", self.inner.nats.redacted_url())
            .with_display_name("NATS")
            .with_dependency("nats")
    }
}

impl fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackend")
            .field("url", &self.info().url)
            .field("stream", &self.inner.nats.stream())
            .field("subject_prefix", &self.inner.nats.subject_prefix())
            .finish_non_exhaustive()
    }
}
