//! Streams and consumers: created at connect or subscribe, or checked when
//! they exist; topic patterns mapped to subject filters.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use flow_events_core::{BackendError, TopicPattern};

use crate::config::Retention;
use crate::errors;
use crate::redact::Scrub;

/// Bounds `fut` by `limit`; `what` names the wait in the error.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::timeout(what, limit)),
    }
}

/// The stream settings the backend needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamSpec {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) retention: Retention,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) description: String,
}

impl StreamSpec {
    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![self.subject.clone()],
            retention: match self.retention {
                Retention::Interest => RetentionPolicy::Interest,
                Retention::Limits => RetentionPolicy::Limits,
            },
            storage: StorageType::File,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age.unwrap_or_default(),
            description: Some(self.description.clone()),
            ..Default::default()
        }
    }

    /// What differs between the stream as it is and as configured.
    fn differences(&self, existing: &stream::Config) -> Vec<String> {
        let wanted = self.config();
        let mut out = Vec::new();
        if !existing.subjects.contains(&self.subject) {
            out.push(format!(
                "subjects {:?} (configured: [{:?}])",
                existing.subjects, self.subject
            ));
        }
        if existing.retention != wanted.retention {
            out.push(format!(
                "retention {:?} (configured: {:?})",
                existing.retention, wanted.retention
            ));
        }
        if existing.storage != wanted.storage {
            out.push(format!(
                "storage {:?} (configured: {:?})",
                existing.storage, wanted.storage
            ));
        }
        if existing.duplicate_window != wanted.duplicate_window {
            out.push(format!(
                "duplicate_window {:?} (configured: {:?})",
                existing.duplicate_window, wanted.duplicate_window
            ));
        }
        if existing.max_age != wanted.max_age {
            out.push(format!(
                "max_age {:?} (configured: {:?}; zero is no limit)",
                existing.max_age, wanted.max_age
            ));
        }
        out
    }
}

/// Creates the stream of `spec`, or checks the one that exists: a stream
/// with other settings is a configuration error naming each difference.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
    scrub: &Scrub,
) -> Result<(), BackendError> {
    let name = &spec.name;
    let what = format!("looking up stream {name}");
    match js.get_stream(name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| BackendError::connection(scrub.clean(&format!("{what}: {e}"))))?;
            check(spec, &info.config)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                let what = format!("creating stream {name} for {}", spec.subject);
                match js.create_stream(spec.config()).await {
                    Ok(_) => {
                        tracing::info!(stream = %name, subject = %spec.subject, "created stream {name}");
                        Ok(())
                    }
                    Err(e) => {
                        // Another service may have created it meanwhile:
                        // then it must have our settings.
                        if let Ok(mut stream) = js.get_stream(name).await
                            && let Ok(info) = stream.info().await
                        {
                            return check(spec, &info.config);
                        }
                        Err(errors::create_stream(&e, &what, scrub))
                    }
                }
            }
            _ => Err(errors::get_stream(&e, &what, scrub)),
        },
    }
}

fn check(spec: &StreamSpec, existing: &stream::Config) -> Result<(), BackendError> {
    let differences = spec.differences(existing);
    if differences.is_empty() {
        return Ok(());
    }
    Err(BackendError::configuration(format!(
        "stream {} exists with other settings: {}; update or delete the stream, or change the NATS_* settings",
        spec.name,
        differences.join(", ")
    )))
}

/// The subject filter of a subscription's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// The consumer's filter subject.
    pub(crate) subject: String,
    /// Whether the filter takes exactly the pattern's events; when not, it
    /// takes more, and the deliveries are matched against the pattern.
    pub(crate) exact: bool,
}

/// Maps `pattern` to a filter subject under `prefix`.
///
/// AMQP's `*` is NATS's `*`. AMQP's `#` matches zero or more words, NATS's
/// `>` one or more, and only as the last word: so `#` alone is `>`, and
/// `….*.#` is `….>`, exactly; any other `#` gets the narrowest filter that
/// takes every matching event (the words before the `#`, then `>`), and the
/// deliveries are matched against the pattern (the others are acked unseen).
/// `order.#` therefore reads every subject under the prefix: it must take
/// `order` itself, which `order.>` does not.
pub(crate) fn filter(prefix: &str, pattern: &TopicPattern) -> Result<Filter, BackendError> {
    let words: Vec<&str> = pattern.as_str().split('.').collect();
    if words.contains(&">") {
        return Err(BackendError::configuration(format!(
            "topic pattern {pattern}: the word '>' is a NATS wildcard; use '#' or '*'"
        )));
    }
    let join = |ws: &[&str], tail: Option<&str>| {
        let mut s = prefix.to_owned();
        for w in ws.iter().copied().chain(tail) {
            s.push('.');
            s.push_str(w);
        }
        s
    };
    let Some(first_hash) = words.iter().position(|w| *w == "#") else {
        return Ok(Filter {
            subject: join(&words, None),
            exact: true,
        });
    };
    // Every matching event has at least `least` words, and its first words
    // match the pattern's words before the first `#`.
    let least = words.iter().filter(|w| **w != "#").count();
    if least == 0 {
        // Only `#`s: every event.
        return Ok(Filter {
            subject: join(&[], Some(">")),
            exact: true,
        });
    }
    let last = words.len() - 1;
    // `….*.#` is one or more words after the others: `….>`, exactly.
    let exact = first_hash == last && last >= 1 && words[last - 1] == "*";
    let fixed = first_hash.min(least - 1);
    Ok(Filter {
        subject: join(&words[..fixed], Some(">")),
        exact,
    })
}

/// The durable consumer name of a subscription. Subscription names may hold
/// `.`, which consumer names may not: `_` is written `__` and `.` is written
/// `_d`, so that different subscriptions never share a consumer.
pub fn consumer_name(subscription: &str) -> String {
    let mut out = String::with_capacity(subscription.len() + 4);
    for c in subscription.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The settings of a subscription's consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSpec {
    pub(crate) name: String,
    pub(crate) filter: String,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) description: String,
}

impl ConsumerSpec {
    fn config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.name.clone()),
            description: Some(self.description.clone()),
            // Like a queue made now: it gets the events published from now on.
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            filter_subject: self.filter.clone(),
            ..Default::default()
        }
    }
}

/// Gets the subscription's durable consumer, creating it when it is
/// missing; one that filters other subjects is a configuration error, one
/// with another `ack_wait` or `max_deliver` is updated (on 2.9 servers a
/// create of an existing durable consumer updates the fields it may).
pub(crate) async fn ensure_consumer<I>(
    stream: &jetstream::stream::Stream<I>,
    spec: &ConsumerSpec,
    scrub: &Scrub,
) -> Result<consumer::Consumer<pull::Config>, BackendError> {
    let name = &spec.name;
    match stream.consumer_info(name).await {
        Ok(info) => {
            if info.config.filter_subject != spec.filter {
                return Err(BackendError::configuration(format!(
                    "consumer {name} exists with filter subject {:?}, this subscription needs {:?}: \
                     delete the consumer or use another subscription name",
                    info.config.filter_subject, spec.filter
                )));
            }
        }
        Err(e) => match e.kind() {
            ConsumerInfoErrorKind::NotFound => {}
            ConsumerInfoErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {}
            ConsumerInfoErrorKind::InvalidName => {
                return Err(BackendError::configuration(format!(
                    "subscription name gives the consumer name {name:?}, which NATS refuses"
                )));
            }
            ConsumerInfoErrorKind::TimedOut => {
                return Err(BackendError::new(
                    flow_events_core::BackendErrorKind::Timeout,
                    format!("looking up consumer {name}: timed out"),
                ));
            }
            ConsumerInfoErrorKind::JetStream(api) => {
                return Err(BackendError::new(
                    errors::api_kind(&api),
                    scrub.clean(&format!("looking up consumer {name}: {api}")),
                ));
            }
            _ => {
                return Err(BackendError::connection(
                    scrub.clean(&format!("looking up consumer {name}: {e}")),
                ));
            }
        },
    }
    let what = format!("creating consumer {name} on {}", spec.filter);
    stream
        .create_consumer(spec.config())
        .await
        .map_err(|e| errors::consumer(&e, &what, scrub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pattern: &str) -> (String, bool) {
        let filter = filter("p", &TopicPattern::new(pattern).unwrap()).unwrap();
        (filter.subject, filter.exact)
    }

    #[test]
    fn patterns_map_to_filters() {
        assert_eq!(f("order.created"), ("p.order.created".into(), true));
        assert_eq!(f("order.*"), ("p.order.*".into(), true));
        assert_eq!(f("*.created"), ("p.*.created".into(), true));
        assert_eq!(f("#"), ("p.>".into(), true));
        assert_eq!(f("order.*.#"), ("p.order.>".into(), true));
        assert_eq!(f("*.#"), ("p.>".into(), true));
        // `#` that may match zero words, or in the middle: wider, matched after.
        assert_eq!(f("order.#"), ("p.>".into(), false));
        assert_eq!(f("a.b.#"), ("p.a.>".into(), false));
        assert_eq!(f("a.#.z"), ("p.a.>".into(), false));
        assert_eq!(f("#.created"), ("p.>".into(), false));
        assert_eq!(f("a.*.#.z"), ("p.a.*.>".into(), false));
        assert_eq!(f("a.#.#"), ("p.>".into(), false));
        assert_eq!(f("#.#"), ("p.>".into(), true));
        assert_eq!(f("*.#.z"), ("p.*.>".into(), false));
    }

    #[test]
    fn a_wider_filter_takes_every_matching_event() {
        use flow_events_core::EventType;
        let types = [
            "a", "a.b", "a.b.c", "a.z", "a.b.z", "b.z", "z", "x.a.z", "a.x.y.z",
        ];
        for pattern in ["a.#", "a.#.z", "#.z", "a.*.#", "a.#.#", "*.#.z", "a.b.#"] {
            let p = TopicPattern::new(pattern).unwrap();
            let filter = filter("p", &p).unwrap();
            for t in types {
                let subject = format!("p.{t}");
                if p.matches(&EventType::new(t).unwrap()) {
                    assert!(
                        subject_matches(&filter.subject, &subject),
                        "{pattern}: {} misses {t}",
                        filter.subject
                    );
                } else if filter.exact {
                    assert!(
                        !subject_matches(&filter.subject, &subject),
                        "{pattern}: {t}"
                    );
                }
            }
        }
    }

    /// NATS subject matching, for the test.
    fn subject_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, w) in f.iter().enumerate() {
            match *w {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                w if i < s.len() && s[i] == w => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    #[test]
    fn a_literal_wildcard_word_is_refused() {
        let p = TopicPattern::new("order.>").unwrap();
        assert!(filter("p", &p).is_err());
    }

    #[test]
    fn consumer_names_are_distinct_and_valid() {
        assert_eq!(consumer_name("billing"), "billing");
        assert_eq!(consumer_name("a.b"), "a_db");
        assert_eq!(consumer_name("a_db"), "a__db");
        assert_eq!(consumer_name("ct-x:y"), "ct-x:y");
        for name in ["a.b", "a_b", "a__b", "a_.b", "a._b", "x.y.z"] {
            assert!(!consumer_name(name).contains('.'));
        }
        let names: std::collections::HashSet<String> = ["a.b", "a_b", "a_db", "a__b", "a_d.b"]
            .iter()
            .map(|n| consumer_name(n))
            .collect();
        assert_eq!(names.len(), 5);
    }
}
