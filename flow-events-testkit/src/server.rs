//! Whether the server a test needs is there: under `CI=true` a missing
//! server fails the test; elsewhere the test is skipped with a printed reason.

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
