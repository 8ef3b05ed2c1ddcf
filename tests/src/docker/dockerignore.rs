//! The build context: `.dockerignore` matching and the files the sources include at compile
//! time (which must be in it).

use std::fs;
use std::path::{Path, PathBuf};

use crate::workspace_root;

/// `.dockerignore`, matched as Docker does for the patterns used here: `*` and `?` within one
/// path component, `**` for any number of them, a pattern also excluding what is under what it
/// matches, `!` re-including, the last matching line winning.
pub struct DockerIgnore(Vec<(bool, Vec<String>)>);

impl DockerIgnore {
    pub fn load() -> DockerIgnore {
        let text =
            fs::read_to_string(workspace_root().join(".dockerignore")).expect(".dockerignore");
        DockerIgnore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (negated, pattern) = match l.strip_prefix('!') {
                        Some(p) => (true, p),
                        None => (false, l),
                    };
                    let parts = pattern
                        .trim_matches('/')
                        .split('/')
                        .map(String::from)
                        .collect();
                    (negated, parts)
                })
                .collect(),
        )
    }

    pub fn excludes(&self, path: &str) -> bool {
        let components: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut excluded = false;
        for (negated, pattern) in &self.0 {
            // The path itself or one of its parent directories matches.
            if (1..=components.len()).any(|n| Self::matches(pattern, &components[..n])) {
                excluded = !negated;
            }
        }
        excluded
    }

    pub fn matches(pattern: &[String], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(p), _) if p == "**" => {
                (0..=path.len()).any(|skip| Self::matches(&pattern[1..], &path[skip..]))
            }
            (Some(p), Some(c)) => {
                Self::glob(p.as_bytes(), c.as_bytes()) && Self::matches(&pattern[1..], &path[1..])
            }
            _ => false,
        }
    }

    /// `*` (any run of characters) and `?` (one character) within one component.
    pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                (0..=text.len()).any(|skip| Self::glob(&pattern[1..], &text[skip..]))
            }
            (Some(b'?'), Some(_)) => Self::glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => Self::glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
}

/// Files named by `include_str!`/`include_bytes!` in the `.rs` files under `dir`, resolved as
/// rustc does (relative to the including file), `..` removed.
pub fn included_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            for macro_name in ["include_str!(\"", "include_bytes!(\"", "include!(\""] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = &text[at + macro_name.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    let mut resolved = PathBuf::new();
                    for part in path.parent().unwrap().join(&rest[..end]).components() {
                        match part {
                            std::path::Component::ParentDir => {
                                resolved.pop();
                            }
                            std::path::Component::CurDir => {}
                            other => resolved.push(other),
                        }
                    }
                    out.push(resolved);
                }
            }
        }
    }
    out
}
