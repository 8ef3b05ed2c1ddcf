//! The variable names SPEC section 3 and `.env.example` list.

use std::collections::BTreeSet;
use std::fs;

use crate::workspace_root;

/// The backticked UPPER_CASE names of SPEC.md's section 3, if the SPEC is beside the repo.
pub fn live_spec_variables() -> Option<BTreeSet<String>> {
    let root = workspace_root();
    let candidates = [
        root.join("SPEC.md"),
        root.join("shared/SPEC.md"),
        root.parent()?.join("shared/SPEC.md"),
    ];
    let text = candidates.iter().find_map(|p| fs::read_to_string(p).ok())?;
    let start = text.find("\n## 3.")?;
    let section = &text[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let names: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.len() > 2
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Names in `.env.example` (`NAME=value` or commented-out `# NAME=value`), if it exists.
pub fn env_example_variables() -> Option<BTreeSet<String>> {
    let text = fs::read_to_string(workspace_root().join(".env.example")).ok()?;
    Some(
        text.lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(String::from)
            .collect(),
    )
}
