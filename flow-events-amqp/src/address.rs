//! One broker address, parsed for lapin, with the means to keep its password
//! out of every message.

use flow_events_core::{BackendError, BrokerUrl};
use lapin::uri::{AMQPScheme, AMQPUri};

use crate::errors::Scrub;

/// A parsed broker URL.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub(crate) uri: AMQPUri,
    /// The URL with its password replaced by `***`.
    pub(crate) redacted: String,
    pub(crate) scrub: Scrub,
}

impl Address {
    /// Parses `url`; `heartbeat_secs` is used unless the URL sets one.
    pub(crate) fn parse(url: &BrokerUrl, heartbeat_secs: u16) -> Result<Self, BackendError> {
        let raw = url.expose();
        let redacted = url.redacted().to_owned();
        let invalid = |reason: &str| {
            BackendError::configuration(format!(
                "invalid broker URL {redacted}: {reason}; expected amqp://user:password@host:5672/vhost or amqps://..."
            ))
        };
        let (scheme, _) = raw.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        if !scheme.eq_ignore_ascii_case("amqp") && !scheme.eq_ignore_ascii_case("amqps") {
            return Err(invalid(&format!(
                "the scheme must be amqp or amqps, not {:?}",
                scheme.chars().take(16).collect::<String>()
            )));
        }
        let mut uri: AMQPUri = raw.parse().map_err(|reason: String| {
            // The parser's message may quote the URL: keep only what is not secret.
            let scrub = Scrub::new([raw]);
            invalid(&scrub.clean(&reason))
        })?;
        if uri.authority.host.is_empty() {
            return Err(invalid("no host"));
        }
        // `amqp://host:5672/` names the empty vhost by the AMQP URI spec, but
        // pika and aio-pika (and the original design's URLs) mean the default
        // vhost `/` by it, and no broker has an empty vhost: take it as `/`.
        if uri.vhost.is_empty() {
            uri.vhost = "/".to_owned();
        }
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(heartbeat_secs);
        }
        let scrub = Scrub::new([raw, uri.authority.userinfo.password.as_str()]);
        Ok(Self {
            uri,
            redacted,
            scrub,
        })
    }

    /// Whether the address uses TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }
}

/// Checks every URL of `url` (a comma-separated list) as the backend will
/// parse it: scheme `amqp` or `amqps`, a host, a URL lapin reads. A service
/// calls it at start-up, so that a URL no retry can fix stops it at once.
///
/// ```
/// use flow_events_core::BrokerUrl;
/// assert!(flow_events_amqp::check_url(&BrokerUrl::new("amqp://u:p@rabbit:5672/%2f")).is_ok());
/// let err = flow_events_amqp::check_url(&BrokerUrl::new("http://u:secret@rabbit/")).unwrap_err();
/// assert!(err.to_string().contains("amqp or amqps") && !err.to_string().contains("secret"));
/// ```
pub fn check_url(url: &BrokerUrl) -> Result<(), BackendError> {
    let urls = url.split();
    if urls.is_empty() {
        return Err(BackendError::configuration("no broker URL given"));
    }
    for u in &urls {
        Address::parse(u, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_events_core::BackendErrorKind;

    fn parse(url: &str) -> Result<Address, BackendError> {
        Address::parse(&BrokerUrl::new(url), 10)
    }

    #[test]
    fn parses_and_sets_heartbeat() {
        let a = parse("amqp://u:secret@rabbit:5673/%2f").unwrap();
        assert_eq!(a.uri.authority.host, "rabbit");
        assert_eq!(a.uri.authority.port, 5673);
        assert_eq!(a.uri.vhost, "/");
        assert_eq!(a.uri.query.heartbeat, Some(10));
        assert_eq!(a.redacted, "amqp://u:***@rabbit:5673/%2f");
        assert!(!a.is_tls());
        assert_eq!(a.scrub.clean("pw secret"), "pw ***");
    }

    #[test]
    fn a_trailing_slash_means_the_default_vhost() {
        for url in [
            "amqp://guest:guest@rabbitmq:5672/",
            "amqp://guest:guest@rabbitmq:5672",
        ] {
            assert_eq!(parse(url).unwrap().uri.vhost, "/", "{url}");
        }
        assert_eq!(parse("amqp://u:p@h/prod").unwrap().uri.vhost, "prod");
    }

    #[test]
    fn url_heartbeat_wins_and_ip_hosts_work() {
        let a = parse("amqps://u:p@10.1.2.3/?heartbeat=30").unwrap();
        assert_eq!(a.uri.query.heartbeat, Some(30));
        assert_eq!(a.uri.authority.host, "10.1.2.3");
        assert_eq!(a.uri.authority.port, 5671);
        assert!(a.is_tls());
    }

    #[test]
    fn invalid_urls_are_configuration_errors_without_password() {
        for url in [
            "http://u:topsecret@h/",
            "amqp://u:topsecret@h:notaport/",
            "amqp://u:topsecret@h/?heartbeat=x",
            "rabbit:5672",
            "amqp://u:topsecret@:5672/",
        ] {
            let e = parse(url).expect_err(url);
            assert_eq!(e.kind(), BackendErrorKind::Configuration, "{url}");
            assert!(e.message().contains("invalid broker URL"), "{e}");
            assert!(!e.to_string().contains("topsecret"), "{e}");
        }
    }
}
