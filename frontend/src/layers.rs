//! The layers of the crate, checked on its source: each top-level module imports only modules
//! of its own layer or below, `redis` is named only in the store, `actix` only in the routes
//! and start-up, and no production source file exceeds 700 lines.
//!
//! ```text
//! config                                               plain data
//! store                                                the only code naming `redis`
//! breaker, upstream, telemetry, ratelimit, payload,
//! known_types, top_clients, decisions                 the domain: no actix
//! routes                                               actix extractors and responses
//! startup (and main.rs)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layer of each top-level module (higher may import lower, never the reverse).
const LAYERS: &[(&str, u8)] = &[
    ("config", 0),
    ("store", 1),
    ("breaker", 2),
    ("upstream", 2),
    ("telemetry", 2),
    ("ratelimit", 2),
    ("payload", 2),
    ("known_types", 2),
    ("policies", 2),
    ("apikeys", 2),
    ("labels", 2),
    ("top_clients", 2),
    ("decisions", 2),
    ("routes", 3),
    ("startup", 4),
    ("cli", 4),
];

const MAX_LINES: usize = 700;

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in layers.rs"))
        .1
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a source file (before its `#[cfg(test)]` module), without comments.
fn production(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect()
}

/// `(top-level module, file, production lines)` of every source file but lib.rs, main.rs
/// and this one (test code).
fn files() -> Vec<(String, PathBuf, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a name")
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" || top == "layers" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source readable");
        let lines = production(&text).into_iter().map(str::to_string).collect();
        out.push((top, rel.to_path_buf(), lines));
    }
    out
}

/// The modules a line names as `crate::<module>`.
fn crate_refs(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .filter(|(i, _)| !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            line[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn no_module_imports_one_above_it() {
    let mut edges = BTreeSet::new();
    let mut upward = Vec::new();
    for (top, file, lines) in files() {
        for line in &lines {
            for target in crate_refs(line) {
                if target == top || target.is_empty() {
                    continue;
                }
                edges.insert(format!("{top} -> {target}"));
                if layer(&target) > layer(&top) {
                    upward.push(format!("{}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    println!("edges between top-level modules:\n{}", {
        let v: Vec<String> = edges.into_iter().collect();
        v.join("\n")
    });
    assert!(upward.is_empty(), "imports of a higher layer:\n{upward:#?}");
}

#[test]
fn redis_is_named_only_in_the_store_and_actix_only_in_routes_and_startup() {
    let mut wrong = Vec::new();
    for (top, file, lines) in files() {
        for line in &lines {
            let redis = line.contains("redis::") || line.trim_start().starts_with("use redis");
            let actix = line.contains("actix_web") || line.contains("actix_");
            if (redis && top != "store") || (actix && layer(&top) < layer("routes")) {
                wrong.push(format!("{}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_production_source_file_is_over_700_lines() {
    let long: Vec<String> = files()
        .into_iter()
        .filter(|(_, _, lines)| lines.len() > MAX_LINES)
        .map(|(_, file, lines)| format!("{}: {} lines", file.display(), lines.len()))
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

#[test]
fn the_checks_see_an_upward_import() {
    assert_eq!(crate_refs("use crate::routes::AppState;"), ["routes"]);
    assert_eq!(crate_refs("notcrate::y; a(crate::store::Store)"), ["store"]);
    assert!(layer("store") < layer("routes"));
}
