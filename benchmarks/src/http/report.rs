//! The results of the HTTP part: each `wrk` run, the medians, the ratios to
//! the Python service and the goals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Service;
use crate::report::Goal;
use crate::stats::median;

/// One `wrk` run, and what the service said it did meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WrkRun {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    /// Answered requests a second, those with an error status left out.
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// Answers with a status of 400 or more.
    pub(crate) errors_status: u64,
    /// Connect, read, write errors and timeouts.
    pub(crate) errors_socket: u64,
    /// The admin-service's own counters after the run (warm-up included):
    /// `flow_events_confirmed_total`, `flow_events_buffered_total`.
    #[serde(default)]
    pub(crate) confirmed_total: Option<f64>,
    #[serde(default)]
    pub(crate) buffered_total: Option<f64>,
}

/// Medians of one service.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct HttpSummary {
    pub(crate) rate: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// The HTTP part of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HttpReport {
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    pub(crate) seconds: u32,
    pub(crate) body_bytes: usize,
    pub(crate) rounds: Vec<BTreeMap<Service, WrkRun>>,
    pub(crate) median: BTreeMap<Service, HttpSummary>,
    /// admin-service connected / Python throughput, median of the rounds' ratios.
    pub(crate) throughput_to_python: Option<f64>,
    /// admin-service connected / Python p99, median of the rounds' ratios.
    pub(crate) p99_to_python: Option<f64>,
}

impl HttpReport {
    pub(crate) fn summarise(&mut self) {
        let services: std::collections::BTreeSet<Service> =
            self.rounds.iter().flat_map(|r| r.keys().copied()).collect();
        for service in services {
            let runs: Vec<&WrkRun> = self.rounds.iter().filter_map(|r| r.get(&service)).collect();
            let m = |f: fn(&WrkRun) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
            self.median.insert(
                service,
                HttpSummary {
                    rate: m(|r| r.rate),
                    p50_us: m(|r| r.p50_us),
                    p99_us: m(|r| r.p99_us),
                },
            );
        }
        let ratio = |f: fn(&WrkRun) -> f64| {
            let per_round: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|r| {
                    Some(f(r.get(&Service::AdminConnected)?) / f(r.get(&Service::Python)?))
                })
                .collect();
            (!per_round.is_empty()).then(|| median(&per_round))
        };
        self.throughput_to_python = ratio(|r| r.rate);
        self.p99_to_python = ratio(|r| r.p99_us);
    }

    /// The goals of the HTTP path.
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(r) = self.throughput_to_python {
            goals.push(Goal {
                goal: "HTTP, broker connected: throughput >= 15x the Python service".into(),
                value: format!("{r:.1}x"),
                met: r >= 15.0,
            });
        }
        if let Some(r) = self.p99_to_python {
            goals.push(Goal {
                goal: "HTTP, broker connected: p99 <= 1/10 of the Python service's".into(),
                value: format!("{:.3} (1/{:.0})", r, 1.0 / r),
                met: r <= 0.1,
            });
        }
        if let Some(s) = self.median.get(&Service::AdminBrokerDown) {
            goals.push(Goal {
                goal: "HTTP, broker down: >= 60 000 requests/s".into(),
                value: format!("{:.0} requests/s", s.rate),
                met: s.rate >= 60_000.0,
            });
        }
        goals
    }

    /// The printed table.
    pub(crate) fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nHTTP POST /events, {}-byte events, wrk {} threads {} connections {} s; median of {} rounds",
            self.body_bytes,
            self.threads,
            self.connections,
            self.seconds,
            self.rounds.len()
        );
        for (service, s) in &self.median {
            let _ = writeln!(
                out,
                "  {:<34} {:>9.0} requests/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
                service.label(),
                s.rate,
                s.p50_us / 1e3,
                s.p99_us / 1e3
            );
        }
        for (i, round) in self.rounds.iter().enumerate() {
            for (service, r) in round {
                let _ = writeln!(
                    out,
                    "  round {} {:<34} {:>9.0}/s p99 {:>8.2} ms, {} errors ({} status){}",
                    i + 1,
                    service.label(),
                    r.rate,
                    r.p99_us / 1e3,
                    r.errors_status + r.errors_socket,
                    r.errors_status,
                    match (r.confirmed_total, r.buffered_total) {
                        (Some(c), Some(b)) =>
                            format!("; service: {c:.0} confirmed, {b:.0} buffered"),
                        _ => String::new(),
                    }
                );
            }
        }
        out
    }
}
