//! Whether the server a test needs is there: under `CI=true` a missing
//! server fails the test; elsewhere the test is skipped with a printed reason.
//! A [`Server`] names one, and gives a proxy in front of it;
//! [`require!`](crate::require) returns from a test without it.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Whether `server` (its name, for the messages) answers at `addr`. Not
/// reachable: panics under `CI=true`, otherwise prints why `test` is skipped
/// and returns `false`.
pub fn reachable(server: &str, addr: &str, test: &str) -> bool {
    let parsed: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{server} address {addr:?}: {e}"));
    match TcpStream::connect_timeout(&parsed, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{server} is not reachable at {addr} ({e}) and CI=true");
            }
            eprintln!("skipping {test}: {server} is not reachable at {addr} ({e})");
            false
        }
    }
}

/// A server the tests of a crate need, by name and address: whether it is
/// there, and a proxy in front of it.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    name: &'static str,
    addr: &'static str,
}

impl Server {
    /// The server `name` (for the messages) at `addr` (`host:port`).
    pub const fn new(name: &'static str, addr: &'static str) -> Self {
        Self { name, addr }
    }

    /// Its address, `host:port`.
    pub const fn addr(&self) -> &'static str {
        self.addr
    }

    /// Whether it answers; see [`reachable`]: not reachable, panics under
    /// `CI=true`, otherwise prints why `test` is skipped.
    pub fn available(&self, test: &str) -> bool {
        reachable(self.name, self.addr, test)
    }

    /// A TCP proxy in front of it, whose connections can be faulted.
    pub async fn proxy(&self) -> crate::proxy::TcpProxy {
        crate::proxy::TcpProxy::start(self.addr)
            .await
            .unwrap_or_else(|e| panic!("a proxy to {} at {}: {e}", self.name, self.addr))
    }
}

/// Returns from the test when `server` (a [`Server`]) is not there, after
/// saying why; under `CI=true` a missing server fails the test instead.
#[macro_export]
macro_rules! require {
    ($server:expr, $test:expr) => {
        if !$server.available($test) {
            return;
        }
    };
}
