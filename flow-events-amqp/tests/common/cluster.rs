//! For the tests against the local three-node cluster that
//! `scripts/rabbitmq-cluster.sh` runs: its addresses, the script's commands,
//! a lock so that one cluster test runs at a time on this machine, and a
//! guard that starts again every node a test killed, even when it fails.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flow_events_core::redact_url;

use super::broker::BrokerLock;

/// The nodes' URLs: node `n` (1 to 3) is `URLS[n - 1]`.
pub const URLS: [&str; 3] = [
    "amqp://guest:guest@127.0.0.1:5681/%2f",
    "amqp://guest:guest@127.0.0.1:5682/%2f",
    "amqp://guest:guest@127.0.0.1:5683/%2f",
];

/// The node numbers.
pub const NODES: [usize; 3] = [1, 2, 3];

/// `scripts/rabbitmq-cluster.sh` of this checkout.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh")
}

/// Runs the script with `args`: its output, or why it failed.
pub fn run_script(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "rabbitmq-cluster.sh {} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Like [`run_script`], off the runtime's worker threads.
pub async fn run_script_async(args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script(&args)
    })
    .await
    .expect("script task")
}

/// Whether node `n` accepts TCP connections on its AMQP port.
pub fn answers(n: usize) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], 5680 + u16::try_from(n).expect("node")));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The URL of node `n`.
pub fn url(n: usize) -> &'static str {
    URLS[n - 1]
}

/// Every node's URL but `n`'s, comma-separated.
pub fn urls_except(n: usize) -> String {
    NODES
        .iter()
        .filter(|&&m| m != n)
        .map(|&m| url(m))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every node's URL, comma-separated.
pub fn all_urls() -> String {
    URLS.join(",")
}

/// The node whose redacted URL `shown` is (as status and health show it).
pub fn node_of(shown: &str) -> Option<usize> {
    URLS.iter()
        .position(|u| redact_url(u) == shown)
        .map(|i| i + 1)
}

/// The cluster, held by one test at a time: the nodes the test killed are
/// started again when it is dropped (also on a panic).
#[derive(Debug)]
pub struct Cluster {
    killed: Vec<usize>,
    _lock: BrokerLock,
}

impl Cluster {
    /// Takes the cluster tests' lock, and checks that every node answers;
    /// a node left down by an earlier run that could not restore it is
    /// started again. `None` when the cluster is not there: the test fails
    /// under `CI=true`, otherwise it prints why it is skipped.
    pub fn take(test: &str) -> Option<Self> {
        let lock = BrokerLock::acquire_file("flow-events-cluster.lock");
        let up = NODES.iter().filter(|&&n| answers(n)).count();
        let why = if up == NODES.len() {
            return Some(Self {
                killed: Vec::new(),
                _lock: lock,
            });
        } else if up > 0 {
            // Part of it runs: restore it as the guard would have.
            match run_script(&["start"]) {
                Ok(_) if NODES.iter().all(|&n| answers(n)) => {
                    return Some(Self {
                        killed: Vec::new(),
                        _lock: lock,
                    });
                }
                Ok(out) => format!("the local cluster did not come back whole: {out}"),
                Err(e) => e,
            }
        } else {
            "no node of the local RabbitMQ cluster answers at 127.0.0.1:5681-5683 \
             (start it with scripts/rabbitmq-cluster.sh start)"
                .to_owned()
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}; CI=true");
        }
        eprintln!("skipping {test}: {why}");
        None
    }

    /// Kills node `n` with SIGKILL (its Erlang VM crashes); returns when the
    /// VM is gone, with how long the script took. The node is started again
    /// when the guard is dropped.
    pub async fn kill(&mut self, n: usize) -> Duration {
        let started = Instant::now();
        self.killed.push(n);
        let node = n.to_string();
        run_script_async(&["kill-node", &node])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed();
        assert!(
            !answers(n),
            "node {n} still answers after kill-node: is the cluster at 5681-5683 the one the script runs?"
        );
        took
    }

    /// Starts node `n` again and waits until it is back in the cluster.
    pub async fn start_node(&mut self, n: usize) {
        let node = n.to_string();
        run_script_async(&["start-node", &node])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.killed.retain(|&k| k != n);
    }

    /// Whether all three nodes run as one cluster (the script's `status`).
    pub async fn whole(&self) -> Result<String, String> {
        run_script_async(&["status"]).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.killed) {
            if let Err(e) = run_script(&["start-node", &n.to_string()]) {
                eprintln!("could not start node {n} again: {e}");
            }
        }
    }
}
