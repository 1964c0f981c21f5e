//! [`UrlRotation`]: connecting to one of several broker URLs, each tried in
//! turn.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{BackendError, BackendErrorKind};
use crate::url::BrokerUrl;

/// Where the next connect starts once one has succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterConnect {
    /// At the URL that worked: a client that keeps to one server.
    Stay,
    /// At the URL after it: when the session is lost, its server may be the
    /// one that died, so the others are tried first.
    MoveOn,
}

/// The URLs of a backend, tried in turn: each connect tries every URL once,
/// starting where the last one left off, and fails only when none could be
/// used.
///
/// A configuration error (a bad URL, refused credentials) outranks the other
/// failures in the error of a connect that fails: it says more than "the
/// other server was down too".
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flow_events_core::backend_kit::{AfterConnect, UrlRotation};
/// use flow_events_core::{BackendError, BrokerUrl};
///
/// let urls = BrokerUrl::new("tcp://a:5672,tcp://b:5672").split();
/// let rotation = UrlRotation::new(0, AfterConnect::MoveOn);
/// let connected = rotation
///     .connect(&urls, "broker URL", |url| {
///         let up = url.expose().contains("//b:");
///         async move { if up { Ok("b") } else { Err(BackendError::connection("refused")) } }
///     })
///     .await;
/// assert_eq!(connected.unwrap(), "b");
/// assert_eq!(rotation.next(), 0, "the next connect starts after b");
/// # }
/// ```
#[derive(Debug)]
pub struct UrlRotation {
    /// The index of the URL the next connect starts from (modulo their number).
    next: AtomicUsize,
    after_connect: AfterConnect,
}

impl UrlRotation {
    /// Starts at the URL of index `start` (modulo their number): a random
    /// one spreads a fleet of services over the nodes of a cluster.
    pub fn new(start: usize, after_connect: AfterConnect) -> Self {
        Self {
            next: AtomicUsize::new(start),
            after_connect,
        }
    }

    /// The index the next connect starts from (modulo the number of URLs).
    pub fn next(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// Tries `connect` on each of `urls` once, in turn, until one succeeds.
    /// `what` names a URL in messages (`"broker URL"`): with no URLs, the
    /// error is "no {what} configured"; with several that all failed, it
    /// says that none of them could be used and why the most telling failed.
    pub async fn connect<S, F, Fut>(
        &self,
        urls: &[BrokerUrl],
        what: &str,
        mut connect: F,
    ) -> Result<S, BackendError>
    where
        F: FnMut(&BrokerUrl) -> Fut,
        Fut: Future<Output = Result<S, BackendError>>,
    {
        let n = urls.len();
        if n == 0 {
            return Err(BackendError::configuration(format!("no {what} configured")));
        }
        let mut first_config_error: Option<BackendError> = None;
        let mut last_error: Option<BackendError> = None;
        for i in connect_order(self.next(), n) {
            match connect(&urls[i]).await {
                Ok(session) => {
                    let next = match self.after_connect {
                        AfterConnect::Stay => i,
                        AfterConnect::MoveOn => (i + 1) % n,
                    };
                    self.next.store(next, Ordering::Relaxed);
                    if n > 1 {
                        tracing::debug!(url = %urls[i], "connected to {what} {} of {n}", i + 1);
                    }
                    return Ok(session);
                }
                Err(e) => {
                    self.next.store((i + 1) % n, Ordering::Relaxed);
                    if n > 1 {
                        tracing::debug!(url = %urls[i], error = %e, "{what} failed; trying the next");
                    }
                    if e.kind() == BackendErrorKind::Configuration && first_config_error.is_none() {
                        first_config_error = Some(e);
                    } else {
                        last_error = Some(e);
                    }
                }
            }
        }
        let error = first_config_error
            .or(last_error)
            .unwrap_or_else(|| BackendError::connection(format!("no {what} could be reached")));
        if n == 1 {
            return Err(error);
        }
        Err(BackendError::new(
            error.kind(),
            format!("none of the {n} {what}s could be used; {}", error.message()),
        ))
    }
}

/// The indexes of `n` URLs in the order a connect tries them: each once,
/// starting at `next` (modulo `n`) and going round.
fn connect_order(next: usize, n: usize) -> impl Iterator<Item = usize> {
    let start = if n == 0 { 0 } else { next % n };
    (0..n).map(move |k| (start + k) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_order_goes_round_once_from_next() {
        assert_eq!(connect_order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(connect_order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(connect_order(7, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(connect_order(5, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(connect_order(5, 0).count(), 0);
    }

    fn urls() -> Vec<BrokerUrl> {
        BrokerUrl::new("tcp://a:1,tcp://b:2,tcp://c:3").split()
    }

    /// Connects to the URLs whose host is in `up`, recording each try.
    async fn try_all(
        rotation: &UrlRotation,
        up: &[&str],
        tried: &mut Vec<String>,
    ) -> Result<String, BackendError> {
        rotation
            .connect(&urls(), "broker URL", |url| {
                let host = url.expose()[6..7].to_owned();
                tried.push(host.clone());
                let result = if up.contains(&host.as_str()) {
                    Ok(host)
                } else if host == "b" {
                    Err(BackendError::configuration("access refused"))
                } else {
                    Err(BackendError::connection("connection refused"))
                };
                async move { result }
            })
            .await
    }

    #[tokio::test]
    async fn each_policy_says_where_the_next_connect_starts() {
        let mut tried = Vec::new();
        let stay = UrlRotation::new(2, AfterConnect::Stay);
        assert_eq!(try_all(&stay, &["a"], &mut tried).await.unwrap(), "a");
        assert_eq!(tried, ["c", "a"]);
        assert_eq!(stay.next(), 0);
        let move_on = UrlRotation::new(0, AfterConnect::MoveOn);
        assert_eq!(try_all(&move_on, &["a"], &mut tried).await.unwrap(), "a");
        assert_eq!(move_on.next(), 1);
    }

    #[tokio::test]
    async fn a_configuration_error_outranks_a_down_server() {
        let rotation = UrlRotation::new(0, AfterConnect::MoveOn);
        let mut tried = Vec::new();
        let err = try_all(&rotation, &[], &mut tried).await.unwrap_err();
        assert_eq!(tried, ["a", "b", "c"]);
        assert_eq!(err.kind(), BackendErrorKind::Configuration);
        assert_eq!(
            err.message(),
            "none of the 3 broker URLs could be used; access refused"
        );
        assert_eq!(rotation.next(), 0, "went round once");
    }

    #[tokio::test]
    async fn one_url_fails_with_its_own_error_and_none_is_a_configuration_error() {
        let rotation = UrlRotation::new(0, AfterConnect::Stay);
        let one = BrokerUrl::new("tcp://a:1").split();
        let err = rotation
            .connect(&one, "broker URL", |_| async {
                Err::<(), _>(BackendError::connection("connection refused"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "connection refused");
        let err = rotation
            .connect(&[], "server URL", |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Configuration);
        assert_eq!(err.message(), "no server URL configured");
    }
}
