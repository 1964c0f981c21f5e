//! The alert rules and the Grafana dashboard beside this crate name only
//! metrics the library reports, and the dashboard is a dashboard: every panel
//! has a query, every query a known metric. (`promtool` checks and unit-tests
//! the rules themselves in CI.)

use std::collections::BTreeSet;

use flow_events_core::metrics::{ALL, MetricKind};

/// Every `flow_events_...` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("flow_events_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

/// Whether the library reports `name` (a histogram's series included).
fn reported(name: &str) -> bool {
    ALL.iter().any(|m| {
        m.name == name
            || (m.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{}{s}", m.name)))
    })
}

fn read(file: &str) -> String {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_alert_rules_name_only_reported_metrics() {
    for file in ["alerts.yml", "alerts.test.yml"] {
        let used = names(&read(file));
        assert!(used.len() >= 8, "{file}: {used:?}");
        for name in &used {
            assert!(
                reported(name),
                "{file} names {name}, which the library does not report"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_only_reported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("dashboard.json")).expect("dashboard.json is JSON");
    assert_eq!(dashboard["uid"], "flow-events");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let named = names(expr);
            assert!(!named.is_empty(), "{title}: {expr}");
            used.extend(named);
        }
    }
    for name in &used {
        assert!(
            reported(name),
            "the dashboard names {name}, which the library does not report"
        );
    }
    // The metrics an operator watches first are all on it.
    for wanted in [
        "flow_events_connection_state",
        "flow_events_pending_events",
        "flow_events_oldest_pending_age_seconds",
        "flow_events_drained_total",
        "flow_events_publish_duration_seconds_bucket",
        "flow_events_handled_total",
        "flow_events_dead_lettered_total",
        "flow_events_handler_duration_seconds_bucket",
    ] {
        assert!(used.contains(wanted), "{wanted} is not on the dashboard");
    }
}
