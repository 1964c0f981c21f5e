//! Property: a broker password of any characters, in the URL as it is or
//! percent-encoded, never appears in the configuration's `Debug`, the URL's
//! display, the status, the health report, an error or a log line, whether the
//! backend can parse the URL or not.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Config, ConnectionMonitor, Event, EventSink, Resilient};
use proptest::prelude::*;

/// Log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Everything the service could show of a URL with `password`, as text.
fn everything_shown(url: &str) -> String {
    let mut shown = Vec::new();
    let config = Config::builder()
        .with_retry_delay(Duration::from_millis(5))
        .with_max_retry_delay(Duration::from_millis(5))
        .build()
        .expect("config");
    let amqp = AmqpConfig::builder()
        .with_url(url)
        .build()
        .expect("AMQP config");
    let broker_url = amqp.url().unwrap().clone();
    shown.push(format!("{amqp:?}\n{broker_url}\n{broker_url:?}"));
    // Read from the environment, a URL the backend cannot use is refused
    // with an error that must not show the password either.
    if let Err(e) =
        AmqpConfig::from_lookup(|name| (name == flow_events_amqp::ENV_URL).then(|| url.to_owned()))
    {
        shown.push(format!("{e}\n{e:?}"));
    }
    if let Err(e) = flow_events_amqp::check_url(&broker_url) {
        shown.push(format!("{e}\n{e:?}"));
    }
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backend = AmqpBackend::new(&config, amqp);
        let events = Resilient::builder(backend)
            .with_config(config)
            .start()
            .await
            .unwrap();
        // Wait for the first failed attempt (refused, or the URL refused).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.status().last_error.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no attempt made");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let outcome = events.publish(Event::try_new("a.b", 1).unwrap()).await;
        shown.push(format!("{outcome:?}"));
        shown.push(format!("{:?}", events.status()));
        shown.push(serde_json::to_string(&events.health("svc")).unwrap());
        shown.push(format!("{events:?}"));
        let report = events.shutdown(Duration::ZERO).await;
        shown.push(format!("{report:?}"));
    });
    shown.push(String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned());
    shown.join("\n")
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_password_is_ever_shown(
        password in prop_oneof![
            // What a URL allows in a password as it is (sub-delimiters included).
            "[A-Za-z0-9._~!$&'()*+,;=:-]{6,20}",
            "[A-Za-z0-9]{3,8}[!$&'()*+,;=:]{1,4}[A-Za-z0-9]{2,8}",
            // Anything printable, `/#?@%` and spaces included, and beyond ASCII.
            "[ -~\u{a0}-\u{17f}\u{4e00}-\u{4e20}]{6,20}",
        ]
        .prop_filter("a scheme separator would start a second URL", |p| !p.contains("://")),
        encode in any::<bool>(),
    ) {
        let port = closed_port();
        let in_url = if encode { percent_encoded(&password) } else { password.clone() };
        let url = format!("amqp://user:{in_url}@127.0.0.1:{port}/%2f");
        let shown = everything_shown(&url);
        prop_assert!(!shown.contains(&password), "{password:?} shown in\n{shown}");
        prop_assert!(!shown.contains(&in_url), "{in_url:?} shown in\n{shown}");
    }
}
