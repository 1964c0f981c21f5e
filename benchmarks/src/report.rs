//! The report: medians, ratios, goals, the printed table and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::drain::DrainRound;
use crate::http::HttpReport;
use crate::memory::Memory;
use crate::outage::Outage;
use crate::stats::median;
use crate::steady::{Client, Run};

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) mem_total_kib: u64,
    pub(crate) kernel: String,
    pub(crate) rabbitmq: String,
    pub(crate) note: &'static str,
}

impl Machine {
    fn probe() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            mem_total_kib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            rabbitmq: rabbitmq_version(),
            note: "broker on the same machine; the machine is shared with other builds and tests, \
                   so figures are noisy: compared clients run side by side, alternated, and medians are reported",
        }
    }
}

/// The broker's version, from `rabbitmqctl` when it is on this machine.
fn rabbitmq_version() -> String {
    std::process::Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown (no rabbitmqctl)".to_owned())
}

/// Medians over the rounds of one client at one level.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Summary {
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) cpu_us_per_msg: f64,
}

/// The steady runs at one in-flight level.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SteadyLevel {
    pub(crate) in_flight: usize,
    pub(crate) count: usize,
    pub(crate) rounds: Vec<BTreeMap<Client, Run>>,
    pub(crate) median: BTreeMap<Client, Summary>,
    /// flow-events / raw lapin throughput: the median of the per-round ratios.
    pub(crate) ratio_to_lapin: Option<f64>,
    /// flow-events / aio-pika throughput: the median of the per-round ratios.
    pub(crate) ratio_to_aio_pika: Option<f64>,
    /// Every other client / raw lapin throughput, likewise.
    pub(crate) ratios_to_lapin: BTreeMap<Client, f64>,
}

impl SteadyLevel {
    pub(crate) fn new(in_flight: usize, count: usize) -> Self {
        Self {
            in_flight,
            count,
            rounds: Vec::new(),
            median: BTreeMap::new(),
            ratio_to_lapin: None,
            ratio_to_aio_pika: None,
            ratios_to_lapin: BTreeMap::new(),
        }
    }

    fn summarise(&mut self) {
        let clients: Vec<Client> = self
            .rounds
            .iter()
            .flat_map(|r| r.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for client in clients {
            let runs: Vec<&Run> = self.rounds.iter().filter_map(|r| r.get(&client)).collect();
            let m = |f: fn(&Run) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
            self.median.insert(
                client,
                Summary {
                    rate: m(|r| r.rate),
                    p50_us: m(|r| r.p50_us),
                    p99_us: m(|r| r.p99_us),
                    cpu_us_per_msg: m(|r| r.cpu_us_per_msg),
                },
            );
        }
        let ratio = |client: Client, other: Client| {
            let per_round: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|r| Some(r.get(&client)?.rate / r.get(&other)?.rate))
                .collect();
            (!per_round.is_empty()).then(|| median(&per_round))
        };
        self.ratio_to_lapin = ratio(Client::Resilient, Client::Lapin);
        self.ratio_to_aio_pika = ratio(Client::Resilient, Client::AioPika);
        for client in self.median.keys().copied().filter(|c| *c != Client::Lapin) {
            if let Some(r) = ratio(client, Client::Lapin) {
                self.ratios_to_lapin.insert(client, r);
            }
        }
    }
}

/// Medians of the drain rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrainSummary {
    pub(crate) drain_rate: f64,
    pub(crate) steady_rate: f64,
    /// The median of the per-round ratios.
    pub(crate) drain_to_steady: f64,
    pub(crate) reconnect_ms: f64,
    pub(crate) connect_ms: f64,
    pub(crate) backoff_in_force_ms: f64,
    pub(crate) rounds_within_reconnect_goal: usize,
}

/// One goal and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Goal {
    pub(crate) goal: String,
    pub(crate) value: String,
    pub(crate) met: bool,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) started_at: String,
    pub(crate) machine: Machine,
    pub(crate) broker: String,
    pub(crate) settings: serde_json::Map<String, serde_json::Value>,
    pub(crate) memory: Option<Memory>,
    pub(crate) steady: Vec<SteadyLevel>,
    pub(crate) drain: Vec<DrainRound>,
    pub(crate) drain_summary: Option<DrainSummary>,
    pub(crate) outage: Option<Outage>,
    pub(crate) http: Option<HttpReport>,
    pub(crate) goals: Vec<Goal>,
}

impl Report {
    pub(crate) fn new(url: &str, rounds: usize) -> Self {
        let mut settings = serde_json::Map::new();
        settings.insert("rounds".into(), rounds.into());
        Self {
            started_at: chrono::Utc::now().to_rfc3339(),
            machine: Machine::probe(),
            broker: crate::topology::redact(url),
            settings,
            memory: None,
            steady: Vec::new(),
            drain: Vec::new(),
            drain_summary: None,
            outage: None,
            http: None,
            goals: Vec::new(),
        }
    }

    /// Computes medians, ratios and goals.
    pub(crate) fn finish(&mut self) {
        for level in &mut self.steady {
            level.summarise();
        }
        if !self.drain.is_empty() {
            let m =
                |f: fn(&DrainRound) -> f64| median(&self.drain.iter().map(f).collect::<Vec<_>>());
            self.drain_summary = Some(DrainSummary {
                drain_rate: m(|r| r.drain_rate),
                steady_rate: m(|r| r.steady_rate),
                drain_to_steady: m(|r| r.drain_to_steady),
                reconnect_ms: m(|r| r.reconnect_ms),
                connect_ms: m(|r| r.connect_ms),
                backoff_in_force_ms: m(|r| r.backoff_in_force_ms),
                rounds_within_reconnect_goal: self
                    .drain
                    .iter()
                    .filter(|r| r.reconnect_within_goal)
                    .count(),
            });
        }
        if let Some(http) = &mut self.http {
            http.summarise();
        }
        self.goals = self.goals();
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for level in &self.steady {
            if let Some(r) = level.ratio_to_lapin
                && level.in_flight > 1
            {
                goals.push(Goal {
                    goal: format!(
                        "throughput / raw lapin >= 1.0 at {} in flight",
                        level.in_flight
                    ),
                    value: format!("{r:.2}"),
                    met: r >= 1.0,
                });
            }
            let cpu = |c: Client| level.median.get(&c).map(|s| s.cpu_us_per_msg);
            if let (Some(ours), Some(raw)) = (cpu(Client::Resilient), cpu(Client::Lapin))
                && level.in_flight > 1
            {
                let r = ours / raw;
                goals.push(Goal {
                    goal: format!(
                        "client CPU per publish <= 1.25x raw lapin at {} in flight",
                        level.in_flight
                    ),
                    value: format!("{r:.2}x ({ours:.1} us against {raw:.1} us)"),
                    met: r <= 1.25,
                });
            }
        }
        for level in &self.steady {
            if let Some(r) = level.ratio_to_aio_pika {
                goals.push(Goal {
                    goal: format!("throughput >= 3x aio-pika at {} in flight", level.in_flight),
                    value: format!("{r:.1}x"),
                    met: r >= 3.0,
                });
            }
        }
        if let Some(o) = &self.outage {
            let p99 = o.phases.while_disconnected.p99_us;
            goals.push(Goal {
                goal: "caller p99 while the broker is cut < 50 us".into(),
                value: format!("{p99:.1} us ({} calls)", o.phases.while_disconnected.count),
                met: o.phases.while_disconnected.count > 0 && p99 < 50.0,
            });
        }
        if let Some(d) = &self.drain_summary {
            goals.push(Goal {
                goal: "drain >= 80% of steady throughput".into(),
                value: format!("{:.0}%", d.drain_to_steady * 100.0),
                met: d.drain_to_steady >= 0.8,
            });
            goals.push(Goal {
                goal: "reconnect within the backoff delay in force + 200 ms".into(),
                value: format!(
                    "{} of {} rounds (median {:.0} ms after the broker came back, {:.0} ms to connect)",
                    d.rounds_within_reconnect_goal,
                    self.drain.len(),
                    d.reconnect_ms,
                    d.connect_ms
                ),
                met: d.rounds_within_reconnect_goal == self.drain.len(),
            });
        }
        if let Some(http) = &self.http {
            goals.extend(http.goals());
        }
        goals
    }

    /// The human-readable table.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "\nmachine: {} cores, {:.1} GiB, RabbitMQ {} (shared machine, noisy figures)",
            m.nproc,
            m.mem_total_kib as f64 / (1024.0 * 1024.0),
            m.rabbitmq
        );
        if !self.steady.is_empty() {
            let rounds = self.steady[0].rounds.len();
            let _ = writeln!(
                out,
                "\nsteady publishing, persistent 1 KiB messages, confirms awaited; median of {rounds} rounds"
            );
            let _ = writeln!(
                out,
                "{:>9}  {:<12} {:>10} {:>11} {:>11} {:>9}  {:>9}  {:>10}",
                "in flight", "client", "msg/s", "p50", "p99", "cpu/msg", "vs lapin", "vs aio-pika"
            );
            for level in &self.steady {
                for (client, s) in &level.median {
                    let vs_lapin = level
                        .ratios_to_lapin
                        .get(client)
                        .map_or(String::new(), |r| format!("{r:.2}"));
                    let vs_py = match level.ratio_to_aio_pika {
                        Some(r) if *client == Client::Resilient => format!("{r:.1}x"),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "{:>9}  {:<12} {:>10.0} {:>11} {:>11} {:>9}  {:>9}  {:>10}",
                        level.in_flight,
                        client.label(),
                        s.rate,
                        fmt_us(s.p50_us),
                        fmt_us(s.p99_us),
                        fmt_us(s.cpu_us_per_msg),
                        vs_lapin,
                        vs_py
                    );
                }
            }
        }
        if let Some(d) = &self.drain_summary {
            let _ = writeln!(
                out,
                "\ndrain of {} buffered events after reconnect (median of {} rounds)",
                self.drain.first().map_or(0, |r| r.events),
                self.drain.len()
            );
            let _ = writeln!(
                out,
                "  drain {:.0} ev/s, steady through the same proxy {:.0} msg/s: {:.0}%",
                d.drain_rate,
                d.steady_rate,
                d.drain_to_steady * 100.0
            );
            for r in &self.drain {
                let _ = writeln!(
                    out,
                    "  round: {} failures, backoff ceiling {:.0} ms, delay in force {:.0} ms; \
                     broker back -> connected {:.0} ms (attempt after {:.0} ms, connect {:.0} ms){}",
                    r.failures_before_up,
                    r.backoff_ceiling_ms,
                    r.backoff_in_force_ms,
                    r.reconnect_ms,
                    r.wait_for_attempt_ms,
                    r.connect_ms,
                    if r.reconnect_within_goal {
                        ""
                    } else {
                        "  [over goal]"
                    }
                );
            }
        }
        if let Some(o) = &self.outage {
            let _ = writeln!(
                out,
                "\noutage: {} publishes/s, broker cut for {:.1} s (backoff {:.1} s, cap {:.1} s)",
                o.plan.rate,
                Duration::from_millis(o.plan.outage_ms).as_secs_f64(),
                o.retry_delay_ms / 1e3,
                o.max_retry_delay_ms / 1e3
            );
            let _ = writeln!(
                out,
                "  loss noticed after {:.0} ms; reconnected {:.0} ms after the restore; its backlog of {} drained {:.0} ms after that; peak pending {}",
                o.loss_noticed_ms, o.reconnect_ms, o.backlog, o.drain_ms, o.peak_pending
            );
            let _ = writeln!(
                out,
                "  outcomes: {} confirmed, {} buffered, {} dropped, {} failed; {}",
                o.outcomes.confirmed,
                o.outcomes.buffered,
                o.outcomes.dropped,
                o.outcomes.failed,
                match o.direct_again_ms {
                    Some(ms) => format!("direct publishing again {ms:.0} ms after reconnecting"),
                    None => "no direct publish again while the load ran (the buffer never emptied)"
                        .to_owned(),
                }
            );
            for (name, l) in [
                ("connected, before the cut", &o.phases.connected_before_cut),
                ("while disconnected", &o.phases.while_disconnected),
                ("anywhere in the cut window", &o.phases.cut_window),
                ("while draining", &o.phases.while_draining),
            ] {
                let _ = writeln!(
                    out,
                    "  caller latency {name:<27} n={:<6} p50 {:>9}  p99 {:>9}  max {:>9}",
                    l.count,
                    fmt_us(l.p50_us),
                    fmt_us(l.p99_us),
                    fmt_us(l.max_us)
                );
            }
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(
                out,
                "\nmemory: {} events of {} B buffered while disconnected: {:.0} B resident per pending event \
                 ({:.0} B per event alone)",
                mem.events, mem.body_bytes, mem.bytes_per_pending_event, mem.bytes_per_event_alone
            );
        }
        if let Some(http) = &self.http {
            out.push_str(&http.table());
        }
        if !self.goals.is_empty() {
            let _ = writeln!(out, "\ngoals");
            for g in &self.goals {
                let _ = writeln!(
                    out,
                    "  [{}] {}: {}",
                    if g.met { "met" } else { "MISSED" },
                    g.goal,
                    g.value
                );
            }
        }
        out
    }
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.1} us")
    }
}
