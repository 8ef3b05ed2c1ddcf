//! Labels (SPEC §9), the domain side: tag validation, the tag sets a write goes to (its own
//! series, or the type's overflow series past `MAX_SERIES_PER_TYPE`), the cache of tag sets
//! this process knows are indexed, the overflow counters, and merging the states of the
//! series a query selects (filters `tag.<key>=<value>`, `group_by`) with `tally-core`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use serde_json::value::RawValue;
use tally_core::metric::state::{decode_points, State};

use crate::store::labels::{member, parse_member, series_key, Part, Tags};
use crate::store::{Metric, Store, StoreError};

/// Most tags on one metric.
pub const MAX_TAGS: usize = 8;
/// Longest tag key (`[a-z_][a-z0-9_]{0,63}`).
pub const MAX_TAG_KEY: usize = 64;
/// Longest tag value, bytes.
pub const MAX_TAG_VALUE: usize = 128;
/// The tag key of the overflow series (reserved: a client may not send it).
pub const OVERFLOW_KEY: &str = "__overflow__";
/// Most tag sets this process remembers as indexed (beyond it, a write asks the index again).
const KNOWN_MAX: usize = 1_000_000;

/// Whether `key` is a valid tag key.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_KEY
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Checks a tag value: 1..=128 bytes of UTF-8 without control characters.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TAG_VALUE {
        return Err(format!(
            "tag {key:?}: the value must be 1 to {MAX_TAG_VALUE} bytes"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "tag {key:?}: the value must not contain control characters"
        ));
    }
    Ok(())
}

/// Validates a metric's `tags` (a JSON object of string values): the tag set, sorted by key.
/// The error names the tag.
pub fn parse_tags(raw: &RawValue) -> Result<Tags, String> {
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| "tags must be an object of string values".to_string())?;
    if map.len() > MAX_TAGS {
        return Err(format!("tags: at most {MAX_TAGS} tags"));
    }
    let mut tags = Vec::with_capacity(map.len());
    for (key, value) in map {
        if !valid_key(&key) {
            return Err(format!(
                "tag {key:?}: keys must match [a-z_][a-z0-9_]{{0,63}}"
            ));
        }
        if key == OVERFLOW_KEY {
            return Err(format!("tag {key:?}: the key is reserved"));
        }
        let value: String = serde_json::from_str(value.get())
            .map_err(|_| format!("tag {key:?}: the value must be a string"))?;
        check_value(&key, &value)?;
        tags.push((key, value));
    }
    Ok(tags)
}

/// The tag sets this process knows are in their type's index (or overflowed), and the
/// overflow counters; one per process.
#[derive(Default)]
pub struct Labels {
    /// `MAX_SERIES_PER_TYPE`.
    cap: usize,
    /// (type, member) -> true: its own series, false: the overflow series.
    known: RwLock<HashMap<(String, String), bool>>,
    /// Samples stored in each type's overflow series by this process.
    overflow: Mutex<BTreeMap<String, u64>>,
}

impl Labels {
    pub fn new(cap: usize) -> Labels {
        Labels {
            cap,
            ..Labels::default()
        }
    }

    /// Sends each tagged metric of `metrics` to its series: its own tag set when the type's
    /// index has it or has room (added before the write, atomically, so every instance sees
    /// it), else the overflow series (`{"__overflow__":"true"}`, counted). One script per type
    /// with unknown tag sets; none once this process knows them.
    pub async fn resolve(&self, store: &Store, metrics: &mut [Metric]) -> Result<(), StoreError> {
        let mut unknown: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            for m in metrics.iter().filter(|m| !m.tags.is_empty()) {
                let key = (m.kind.clone(), member(&m.tags));
                if !known.contains_key(&key) {
                    unknown.entry(m.kind.as_str()).or_default().insert(key.1);
                }
            }
        }
        let asked = futures_util::future::join_all(unknown.into_iter().map(|(kind, members)| {
            let members: Vec<String> = members.into_iter().collect();
            async move {
                let own = store.register_series(kind, &members, self.cap).await?;
                Ok::<_, StoreError>((kind.to_string(), members, own))
            }
        }))
        .await;
        let mut decided: HashMap<(String, String), bool> = HashMap::new();
        for r in asked {
            let (kind, members, own) = r?;
            for (m, own) in members.into_iter().zip(own) {
                decided.insert((kind.clone(), m), own);
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let mut overflowed: Vec<&str> = Vec::new();
        for m in metrics.iter_mut().filter(|m| !m.tags.is_empty()) {
            let key = (m.kind.clone(), member(&m.tags));
            let own = match decided.get(&key) {
                Some(&own) => {
                    if known.len() < KNOWN_MAX {
                        known.insert(key, own);
                    }
                    own
                }
                None => known.get(&key).copied().unwrap_or(true),
            };
            if !own {
                m.tags = vec![(OVERFLOW_KEY.to_string(), "true".to_string())];
                overflowed.push(&m.kind);
            }
        }
        drop(known);
        if !overflowed.is_empty() {
            let mut counts = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            for kind in overflowed {
                *counts.entry(kind.to_string()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// `tally_series_overflow_total{type}` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let counts = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP tally_series_overflow_total Samples stored in a type's overflow series (MAX_SERIES_PER_TYPE reached).\n");
        out.push_str("# TYPE tally_series_overflow_total counter\n");
        for (kind, n) in counts.iter() {
            let label = kind
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "tally_series_overflow_total{{type=\"{label}\"}} {n}");
        }
    }
}

/// Which series a query selects and how it groups them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `tag.<key>=<value>`: every one must match.
    pub filters: Vec<(String, String)>,
    /// `group_by=<key>[,<key>...]`; empty: one merged answer.
    pub group_by: Vec<String>,
}

impl Selector {
    /// From the query's parameters (others are ignored); the 422 detail names the parameter.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Selector, String> {
        let mut s = Selector::default();
        let mut grouped = false;
        for (name, value) in pairs {
            if let Some(key) = name.strip_prefix("tag.") {
                if !valid_key(key) {
                    return Err(format!(
                        "{name}: tag keys must match [a-z_][a-z0-9_]{{0,63}}"
                    ));
                }
                check_value(key, value)?;
                s.filters.push((key.to_string(), value.clone()));
            } else if name == "group_by" {
                if grouped {
                    return Err("group_by: give it once, keys separated by commas".into());
                }
                grouped = true;
                for key in value.split(',') {
                    if !valid_key(key) {
                        return Err(format!(
                            "group_by: {key:?} is not a tag key ([a-z_][a-z0-9_]{{0,63}})"
                        ));
                    }
                    if s.group_by.iter().any(|k| k == key) {
                        return Err(format!("group_by: {key:?} is given twice"));
                    }
                    s.group_by.push(key.to_string());
                }
                if s.group_by.len() > MAX_TAGS {
                    return Err(format!("group_by: at most {MAX_TAGS} keys"));
                }
            }
        }
        Ok(s)
    }

    fn matches(&self, tags: &Tags) -> bool {
        self.filters
            .iter()
            .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
    }

    /// The group of `tags`: its value of each `group_by` key (`None` when it has none).
    fn group_of(&self, tags: &Tags) -> Vec<Option<String>> {
        self.group_by
            .iter()
            .map(|k| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone()))
            .collect()
    }
}

/// One group of an answer (the whole answer without `group_by`): its tag values, the number of
/// series in it that exist, and their merged state(s).
#[derive(Debug, Default)]
pub struct Group<T> {
    pub values: Vec<Option<String>>,
    pub series: usize,
    pub merged: T,
}

/// The series of `kind` a selector may match: the untagged one and every indexed tag set.
async fn candidates(store: &Store, kind: &str) -> Result<Vec<Tags>, StoreError> {
    let mut members = store.series_members(kind).await?;
    // Sorted: the merge order, and so the last bits of a merged sum or stddev, does not
    // depend on the set's order, which differs between deployments.
    members.sort_unstable();
    let mut out = vec![Vec::new()];
    out.extend(members.iter().filter_map(|m| parse_member(m)));
    Ok(out)
}

/// The selected series' encoded states, grouped: one `SMEMBERS`, then one pipelined round
/// trip of `METRIC.EXPORT`s (per node in cluster mode).
async fn exports(
    store: &Store,
    kind: &str,
    selector: &Selector,
    part: Part,
) -> Result<BTreeMap<Vec<Option<String>>, Vec<Vec<u8>>>, StoreError> {
    let selected: Vec<Tags> = candidates(store, kind)
        .await?
        .into_iter()
        .filter(|t| selector.matches(t))
        .collect();
    let keys: Vec<String> = selected.iter().map(|t| series_key(kind, t)).collect();
    let states = store.export_states(kind, &keys, part).await?;
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<Vec<u8>>> = BTreeMap::new();
    if selector.group_by.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    for (tags, state) in selected.iter().zip(states) {
        if let Some(bytes) = state {
            groups
                .entry(selector.group_of(tags))
                .or_default()
                .push(bytes);
        }
    }
    Ok(groups)
}

fn corrupt(e: &str) -> StoreError {
    StoreError::Protocol(format!("METRIC.EXPORT payload: {e}"))
}

/// The merged state of the selected series (all-time or a window), per group, groups sorted
/// by their tag values (a missing value, `null`, first).
pub async fn summaries(
    store: &Store,
    kind: &str,
    selector: &Selector,
    window_ms: Option<u64>,
) -> Result<Vec<Group<State>>, StoreError> {
    let part = window_ms.map_or(Part::AllTime, Part::Window);
    let mut out = Vec::new();
    for (values, payloads) in exports(store, kind, selector, part).await? {
        let mut merged = State::default();
        for p in &payloads {
            merged.merge(&State::decode(p).map_err(corrupt)?);
        }
        out.push(Group {
            values,
            series: payloads.len(),
            merged,
        });
    }
    Ok(out)
}

/// The merged range points of the selected series, per group: (bucket start, state), oldest
/// first.
pub async fn ranges(
    store: &Store,
    kind: &str,
    selector: &Selector,
    (from_ms, to_ms, bucket_ms): (u64, u64, u64),
) -> Result<Vec<Group<Vec<(u64, State)>>>, StoreError> {
    let part = Part::Range(from_ms, to_ms, bucket_ms);
    let mut out = Vec::new();
    for (values, payloads) in exports(store, kind, selector, part).await? {
        let mut points: BTreeMap<u64, State> = BTreeMap::new();
        for p in &payloads {
            for (ts, state) in decode_points(p).map_err(corrupt)? {
                points.entry(ts).or_default().merge(&state);
            }
        }
        out.push(Group {
            values,
            series: payloads.len(),
            merged: points.into_iter().collect(),
        });
    }
    Ok(out)
}

/// `GET /api/metrics/tags`: the number of indexed tag sets of `kind` (the untagged series
/// not counted) and every tag key's values, sorted.
pub async fn tag_values(
    store: &Store,
    kind: &str,
) -> Result<(usize, BTreeMap<String, BTreeSet<String>>), StoreError> {
    let members = store.series_members(kind).await?;
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut series = 0;
    for set in members.iter().filter_map(|m| parse_member(m)) {
        series += 1;
        for (k, v) in set {
            tags.entry(k).or_default().insert(v);
        }
    }
    Ok((series, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn tags_are_validated_naming_the_tag() {
        assert_eq!(
            parse_tags(&raw(r#"{"region":"eu","host":"web-1"}"#)).unwrap(),
            vec![
                ("host".to_string(), "web-1".to_string()),
                ("region".to_string(), "eu".to_string())
            ]
        );
        assert!(parse_tags(&raw("null")).is_err());
        assert_eq!(parse_tags(&raw("{}")).unwrap(), vec![]);
        for (body, needle) in [
            (r#"["a"]"#, "object"),
            (r#"{"Host":"a"}"#, "\"Host\""),
            (r#"{"1a":"a"}"#, "\"1a\""),
            (r#"{"host":""}"#, "\"host\""),
            (r#"{"host":1}"#, "\"host\""),
            (r#"{"host":"a\u0001"}"#, "control"),
            (r#"{"__overflow__":"true"}"#, "reserved"),
            (
                r#"{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1"}"#,
                "at most 8",
            ),
        ] {
            let e = parse_tags(&raw(body)).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
        let long = format!(r#"{{"host":"{}"}}"#, "x".repeat(129));
        assert!(parse_tags(&raw(&long)).unwrap_err().contains("\"host\""));
        let key = format!(r#"{{"{}":"a"}}"#, "k".repeat(65));
        assert!(parse_tags(&raw(&key)).is_err());
        let ok = format!(r#"{{"{}":"{}"}}"#, "k".repeat(64), "é".repeat(64));
        assert!(parse_tags(&raw(&ok)).is_ok());
    }

    #[test]
    fn a_selector_reads_filters_and_group_by_and_names_bad_parameters() {
        let q = |pairs: &[(&str, &str)]| {
            Selector::from_query(
                &pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let s = q(&[
            ("metric_type", "cpu"),
            ("tag.region", "eu"),
            ("group_by", "host,dc"),
        ])
        .unwrap();
        assert_eq!(s.filters, vec![("region".to_string(), "eu".to_string())]);
        assert_eq!(s.group_by, vec!["host".to_string(), "dc".to_string()]);
        let tags = vec![("host".to_string(), "a".to_string())];
        assert_eq!(s.group_of(&tags), vec![Some("a".to_string()), None]);
        assert!(!s.matches(&tags));
        for (pairs, needle) in [
            (vec![("tag.Bad", "x")], "tag.Bad"),
            (vec![("tag.host", "")], "\"host\""),
            (vec![("group_by", "host,host")], "twice"),
            (vec![("group_by", "")], "group_by"),
            (vec![("group_by", "a"), ("group_by", "b")], "once"),
        ] {
            let e = q(&pairs).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }
}
