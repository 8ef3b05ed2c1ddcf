//! `POLICY_FILE` (SPEC section 8): named rate-limit policies and the tiers that use them, per
//! route class, read once at start-up as plain data. Validation is strict: an unknown field, an
//! unknown policy in a tier, a missing `anonymous` tier, a limit below 1 or a bad window is an
//! error naming the file, the line and the field (TOML spans from `toml_edit`).

use std::fmt;

use toml_edit::{Document, Item, TableLike, Value};

/// Longest window the module accepts: `window_ms` up to 2^32-1.
pub const MAX_WINDOW_MS: u64 = u32::MAX as u64;
/// Largest limit the module accepts (replies are signed 64-bit).
pub const MAX_LIMIT: u64 = i64::MAX as u64;
/// Most policies in one class of a tier (each one is two arguments of one CHECK and two header
/// items).
pub const MAX_CLASS_POLICIES: usize = 16;
/// Most policies, and most tiers, in one file.
pub const MAX_ENTRIES: usize = 1024;
/// Largest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The two route classes of a tier.
pub const CLASSES: [&str; 2] = ["ingest", "read"];
/// The tier of requests without an API key; every file has it.
pub const ANONYMOUS: &str = "anonymous";

/// One named policy: `limit` per `window_ms`; a shadow one is evaluated, never enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPolicy {
    pub name: String,
    pub limit: u64,
    pub window_ms: u64,
    pub shadow: bool,
}

/// One tier: the policies (indices into `PolicyFile::policies`, in the tier's order) of each
/// class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub ingest: Vec<usize>,
    pub read: Vec<usize>,
}

/// A valid policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: String,
    pub policies: Vec<NamedPolicy>,
    pub tiers: Vec<Tier>,
}

impl PolicyFile {
    pub fn policy(&self, name: &str) -> Option<usize> {
        self.policies.iter().position(|p| p.name == name)
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }
}

/// What is wrong with a policy file, and where: `line` is 1-based (0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFileError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// Reads and validates the file at `path`.
pub fn read(path: &str) -> Result<PolicyFile, PolicyFileError> {
    let whole = |message: String| PolicyFileError {
        file: path.to_string(),
        line: 0,
        field: "(file)".to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(whole(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read it: {e}")))?;
    parse(path, &text)
}

/// Whether `name` is a policy or tier name: `[a-z][a-z0-9_-]{0,31}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// `<integer><s|m|h|d>` in milliseconds, at least 1 s and at most `MAX_WINDOW_MS`.
pub fn parse_window(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a window: <integer><s|m|h|d>, from 1s to 49d");
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(unit_ms) {
        Some(ms) if (1..=MAX_WINDOW_MS).contains(&ms) => Ok(ms),
        _ => Err(bad()),
    }
}

/// Validates `text`, the contents of `file`.
pub fn parse(file: &str, text: &str) -> Result<PolicyFile, PolicyFileError> {
    let p = Parser { file, text };
    let doc = Document::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| p.line(s.start));
        p.err(line, "(syntax)", e.message().trim().to_string())
    })?;
    let root = doc.as_table();
    for (key, _) in root.iter() {
        if key != "policies" && key != "tiers" {
            return Err(p.err(
                p.key_line(root, key),
                key,
                "unknown field (expected policies, tiers)".into(),
            ));
        }
    }
    let policies = p.policies(root)?;
    let tiers = p.tiers(root, &policies)?;
    Ok(PolicyFile {
        path: file.to_string(),
        policies,
        tiers,
    })
}

/// One named entry of a section: (name, its table, its field, its line).
type Entry<'t> = (String, &'t dyn TableLike, String, usize);

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
}

impl Parser<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn err(&self, line: usize, field: &str, message: String) -> PolicyFileError {
        PolicyFileError {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message,
        }
    }

    /// The line of `key` in `table` (its key, else its value).
    fn key_line(&self, table: &dyn TableLike, key: &str) -> usize {
        match table.get_key_value(key) {
            Some((k, item)) => k
                .span()
                .or_else(|| item.span())
                .map_or(1, |s| self.line(s.start)),
            None => 1,
        }
    }

    fn value_line(&self, v: &Value, fallback: usize) -> usize {
        v.span().map_or(fallback, |s| self.line(s.start))
    }

    /// A sub-table (`[a.b]` or `b = { ... }`), else an error naming `field`.
    fn table<'t>(
        &self,
        parent: &'t dyn TableLike,
        key: &str,
        field: &str,
    ) -> Result<&'t dyn TableLike, PolicyFileError> {
        let item = parent.get(key).expect("a listed key");
        item.as_table_like().ok_or_else(|| {
            self.err(
                self.key_line(parent, key),
                field,
                format!("must be a table, not {}", item.type_name()),
            )
        })
    }

    /// The named entries of the section `section` (`policies`, `tiers`) of `root`, each a
    /// table with a valid name: (name, table, field, line).
    fn entries<'t>(
        &self,
        root: &'t dyn TableLike,
        section: &str,
        what: &str,
    ) -> Result<Vec<Entry<'t>>, PolicyFileError> {
        let table = self.table(root, section, section)?;
        if table.len() > MAX_ENTRIES {
            return Err(self.err(
                self.key_line(root, section),
                section,
                format!("at most {MAX_ENTRIES} {section}"),
            ));
        }
        let mut out = Vec::new();
        for (name, _) in table.iter() {
            let field = format!("{section}.{name}");
            let line = self.key_line(table, name);
            if !valid_name(name) {
                return Err(self.err(
                    line,
                    &field,
                    format!("a {what} name matches [a-z][a-z0-9_-]{{0,31}}"),
                ));
            }
            let entry = self.table(table, name, &field)?;
            out.push((name.to_string(), entry, field, line));
        }
        Ok(out)
    }

    fn policies(&self, root: &dyn TableLike) -> Result<Vec<NamedPolicy>, PolicyFileError> {
        if !root.contains_key("policies") {
            return Ok(Vec::new());
        }
        self.entries(root, "policies", "policy")?
            .into_iter()
            .map(|(name, entry, field, line)| self.policy(&name, entry, &field, line))
            .collect()
    }

    fn policy(
        &self,
        name: &str,
        entry: &dyn TableLike,
        field: &str,
        line: usize,
    ) -> Result<NamedPolicy, PolicyFileError> {
        let (mut limit, mut window_ms, mut shadow) = (None, None, false);
        for (key, item) in entry.iter() {
            let f = format!("{field}.{key}");
            let at = self.key_line(entry, key);
            match key {
                "limit" => match item.as_integer() {
                    Some(n) if n >= 1 => limit = Some(n as u64),
                    _ => {
                        return Err(self.err(
                            at,
                            &f,
                            format!("must be an integer from 1 to {MAX_LIMIT}"),
                        ))
                    }
                },
                "window" => {
                    let s = item.as_str().ok_or_else(|| {
                        self.err(
                            at,
                            &f,
                            "must be a string such as \"1s\", \"5m\", \"1h\"".into(),
                        )
                    })?;
                    window_ms = Some(parse_window(s).map_err(|m| self.err(at, &f, m))?);
                }
                "shadow" => {
                    shadow = item
                        .as_bool()
                        .ok_or_else(|| self.err(at, &f, "must be true or false".into()))?;
                }
                _ => {
                    return Err(self.err(
                        at,
                        &f,
                        "unknown field (expected limit, window, shadow)".into(),
                    ))
                }
            }
        }
        let missing = |what: &str| self.err(line, &format!("{field}.{what}"), "is missing".into());
        Ok(NamedPolicy {
            name: name.to_string(),
            limit: limit.ok_or_else(|| missing("limit"))?,
            window_ms: window_ms.ok_or_else(|| missing("window"))?,
            shadow,
        })
    }

    fn tiers(
        &self,
        root: &dyn TableLike,
        policies: &[NamedPolicy],
    ) -> Result<Vec<Tier>, PolicyFileError> {
        if !root.contains_key("tiers") {
            return Err(self.err(1, "tiers", "is missing (it needs [tiers.anonymous])".into()));
        }
        let mut out = Vec::new();
        for (name, entry, field, _) in self.entries(root, "tiers", "tier")? {
            let mut tier = Tier {
                name,
                ingest: Vec::new(),
                read: Vec::new(),
            };
            for (class, item) in entry.iter() {
                let f = format!("{field}.{class}");
                let at = self.key_line(entry, class);
                let list = match class {
                    "ingest" => &mut tier.ingest,
                    "read" => &mut tier.read,
                    _ => {
                        return Err(self.err(
                            at,
                            &f,
                            "unknown field (expected ingest, read)".into(),
                        ))
                    }
                };
                *list = self.class(item, policies, &f, at)?;
            }
            out.push(tier);
        }
        if !out.iter().any(|t| t.name == ANONYMOUS) {
            return Err(self.err(
                self.key_line(root, "tiers"),
                "tiers.anonymous",
                "is missing (requests without an API key use it)".into(),
            ));
        }
        Ok(out)
    }

    /// A class's list of policy names, as indices.
    fn class(
        &self,
        item: &Item,
        policies: &[NamedPolicy],
        field: &str,
        line: usize,
    ) -> Result<Vec<usize>, PolicyFileError> {
        let array = item
            .as_array()
            .ok_or_else(|| self.err(line, field, "must be an array of policy names".into()))?;
        if array.len() > MAX_CLASS_POLICIES {
            return Err(self.err(
                line,
                field,
                format!("at most {MAX_CLASS_POLICIES} policies"),
            ));
        }
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let at = self.value_line(v, line);
            let name = v
                .as_str()
                .ok_or_else(|| self.err(at, &f, "must be a policy name (a string)".into()))?;
            let index = policies
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| self.err(at, &f, format!("unknown policy {name:?}")))?;
            if out.contains(&index) {
                return Err(self.err(at, &f, format!("policy {name:?} is listed twice")));
            }
            out.push(index);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
