//! For the tests that disturb the whole broker (alarms, closing every
//! connection, restarting it, changing its limits): `rabbitmqctl`, a lock so
//! that only one such test runs at a time on this machine, and a guard that
//! puts the broker back as it was, even when the test fails.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The broker's `max_message_size` default on 3.x (128 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;

/// Runs `rabbitmqctl` and gives its standard output; `None` when it cannot
/// be run here or fails.
pub fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`rabbitmqctl`], panicking with the command on failure.
pub fn ctl(args: &[&str]) -> String {
    rabbitmqctl(args).unwrap_or_else(|| panic!("rabbitmqctl {} failed", args.join(" ")))
}

/// Whether `rabbitmqctl` works here (it needs the broker's Erlang cookie).
pub fn ctl_available(test: &str) -> bool {
    if rabbitmqctl(&["-q", "status"]).is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("rabbitmqctl is not available and CI=true");
    }
    eprintln!("skipping {test}: rabbitmqctl is not available");
    false
}

/// Holds the machine-wide lock of the broker-disturbing tests: a file
/// created exclusively, holding the owner's pid; one left by a process that
/// is gone is taken over.
#[derive(Debug)]
pub struct BrokerLock {
    path: PathBuf,
}

impl BrokerLock {
    /// Waits (at most ten minutes) for the lock.
    pub fn acquire() -> Self {
        Self::acquire_file("flow-events-broker-faults.lock")
    }

    /// Waits (at most ten minutes) for the lock file `name` in the temp
    /// folder: another lock of the same kind, for another shared resource.
    pub fn acquire_file(name: &str) -> Self {
        let path = std::env::temp_dir().join(name);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    return Self { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                    // An empty file is a lock being written: wait for it.
                    if !owner.is_empty() && !alive {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "broker lock {} held by pid {owner} for ten minutes",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for BrokerLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Puts the broker back when dropped: running, memory watermark 0.4, the
/// largest message it had. Holds the lock until then.
#[derive(Debug)]
pub struct Restore {
    max_message_size: u64,
    _lock: BrokerLock,
}

impl Restore {
    /// Takes the lock, notes the settings to restore, and returns the guard.
    pub fn new() -> Self {
        let lock = BrokerLock::acquire();
        start_broker();
        Self {
            max_message_size: max_message_size(),
            _lock: lock,
        }
    }
}

/// The broker's largest accepted message.
pub fn max_message_size() -> u64 {
    let out = ctl(&["eval", "application:get_env(rabbit, max_message_size)."]);
    // `{ok,134217728}`, or `undefined` for the default.
    out.trim()
        .strip_prefix("{ok,")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE)
}

/// Starts the broker application (a no-op when it runs) and waits for it.
pub fn start_broker() {
    let _ = rabbitmqctl(&["start_app"]);
    let _ = rabbitmqctl(&["await_startup"]);
}

/// Sets the broker's largest accepted message; channels opened from now on
/// use it.
pub fn set_max_message_size(bytes: u64) {
    ctl(&[
        "eval",
        &format!("application:set_env(rabbit, max_message_size, {bytes})."),
    ]);
}

impl Drop for Restore {
    fn drop(&mut self) {
        start_broker();
        let _ = rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
        let _ = rabbitmqctl(&[
            "eval",
            &format!(
                "application:set_env(rabbit, max_message_size, {}).",
                self.max_message_size
            ),
        ]);
    }
}

/// A virtual host and a user of its own, created for one test and deleted
/// (with everything in the virtual host) when dropped, even when the test
/// fails. Changes nothing that other tests use.
#[derive(Debug)]
pub struct OwnVhost {
    pub vhost: String,
    pub user: String,
    pub password: String,
}

impl OwnVhost {
    /// A new virtual host and a user with every permission on it; `None`
    /// when `rabbitmqctl` cannot create them.
    pub fn create(prefix: &str) -> Option<Self> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let own = Self {
            vhost: format!("test.{prefix}.{id}"),
            user: format!("test-{prefix}-{id}"),
            password: format!("p{}", uuid::Uuid::now_v7().simple()),
        };
        rabbitmqctl(&["add_vhost", &own.vhost])?;
        // From here on, dropping `own` deletes what was made.
        rabbitmqctl(&["add_user", &own.user, &own.password])?;
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &own.vhost,
            &own.user,
            ".*",
            ".*",
            ".*",
        ])?;
        Some(own)
    }

    /// The user may publish to `exchange` (and bind from it) only with
    /// routing keys matching the regular expression `pattern`.
    pub fn allow_topics(&self, exchange: &str, pattern: &str) {
        ctl(&[
            "set_topic_permissions",
            "-p",
            &self.vhost,
            &self.user,
            exchange,
            pattern,
            pattern,
        ]);
    }

    /// The URL of the broker for this user and virtual host.
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            self.user,
            self.password,
            super::BROKER,
            self.vhost
        )
    }
}

impl Drop for OwnVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
        let _ = rabbitmqctl(&["delete_user", &self.user]);
    }
}
