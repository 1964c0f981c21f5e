//! The compose files set only variables the service reads: a misspelt or
//! retired name would be ignored without a word.

use std::path::PathBuf;

use crate::common::service_variables;

/// The variables the compose file `text` sets in the `environment` of
/// `service`, in the map form (`KEY: value`) or the list form (`- KEY=value`).
fn environment_of(text: &str, service: &str) -> Vec<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut names = Vec::new();
    let mut in_service = None;
    let mut in_environment = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = indent(line);
        if let Some(env_depth) = in_environment {
            if depth > env_depth {
                let entry = trimmed.trim_start_matches("- ");
                let name = entry.split([':', '=']).next().unwrap_or_default().trim();
                names.push(name.trim_matches('"').to_owned());
                continue;
            }
            in_environment = None;
        }
        if let Some(service_depth) = in_service {
            if depth <= service_depth {
                in_service = None;
            } else if trimmed == "environment:" {
                in_environment = Some(depth);
                continue;
            }
        }
        if trimmed == format!("{service}:") && depth == 2 {
            in_service = Some(depth);
        }
    }
    names
}

#[test]
fn compose_files_set_only_variables_the_service_reads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let known = service_variables();
    let mut files = 0;
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("repository root") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("docker-compose") && name.ends_with(".yml")) {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).expect("compose file");
        for var in environment_of(&text, "admin-service") {
            assert!(
                known.contains(&var),
                "{name} sets {var}, which admin-service does not read; it reads {known:?}"
            );
            checked += 1;
        }
    }
    assert!(
        files >= 3,
        "found {files} compose files in {}",
        root.display()
    );
    assert!(checked > 0, "no variable found in the compose files");
}

#[test]
fn the_reader_sees_both_forms_and_only_the_service() {
    let text = "services:\n  rabbitmq:\n    environment:\n      RABBITMQ_DEFAULT_USER: x\n  admin-service:\n    image: a\n    environment:\n      PORT: \"8012\"\n      # a comment\n      RABBITMQ_URL: amqp://h\n    ports:\n      - \"8012:8012\"\n  other:\n    environment:\n      - PORT=1\n";
    assert_eq!(
        environment_of(text, "admin-service"),
        ["PORT", "RABBITMQ_URL"]
    );
    assert_eq!(environment_of(text, "other"), ["PORT"]);
}
