//! The direction of dependencies inside this crate, checked: storage (`db`), then the
//! foundations every layer may use (`error`, `config`, `clock`, `metrics`, `pagination`), then
//! the domain services (identity, tenancy, templates, servers, secrets, nodes, API keys,
//! audit, mail, limits), then the edges (`http`, `grpc`, `cli`, `preflight`, `background` and
//! the wiring in `lib.rs`, where `AppState` lives). A module may use its own layer and those
//! below it, never one above: a domain service that needs something of an edge gets a narrow
//! handle instead (`servers::Servers`, `nodes::Nodes`, `nodes::NodeLink`, `clock::Clock`).
//! The test reads the sources, so a wrong-way `use` fails `cargo test`, not a review.

use std::path::{Path, PathBuf};

/// What the edges are: nothing below them may name these.
const EDGES: &[&str] = &[
    "http",
    "grpc",
    "cli",
    "preflight",
    "background",
    "AppState",
    "Panel",
    "run",
];

/// The domain services: storage may not name these (nor the edges).
const DOMAIN: &[&str] = &[
    "identity",
    "tenancy",
    "templates",
    "servers",
    "secrets",
    "nodes",
    "apikeys",
    "audit",
    "mailer",
    "limits",
];

/// Top-level modules (a directory or a file under `src/`) and the names they must not use.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut rules: Vec<(&'static str, Vec<&'static str>)> = DOMAIN
        .iter()
        .map(|module| (*module, EDGES.to_vec()))
        .collect();
    let mut below_domain = EDGES.to_vec();
    below_domain.extend_from_slice(DOMAIN);
    for foundation in ["db", "error", "config", "clock", "metrics", "pagination"] {
        rules.push((foundation, below_domain.clone()));
    }
    rules
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::…` path in `text`, `use crate::{a, b::c}` groups
/// included.
fn crate_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                if !head.is_empty() {
                    names.push(head.to_owned());
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(head);
        }
    }
    names
}

#[test]
fn dependencies_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, forbidden) in rules() {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        sources(&src.join(module), &mut files);
        assert!(!files.is_empty(), "module {module} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            // Tests may reach anything (they build the panel to exercise a service).
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for name in crate_names(code) {
                if forbidden.contains(&name.as_str()) {
                    wrong.push(format!("{} uses crate::{name}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn crate_paths_are_read_with_their_groups() {
    assert_eq!(
        crate_names("use crate::{AppState, db::x};\nlet a = crate::http::f();"),
        ["AppState", "db", "http"]
    );
}
