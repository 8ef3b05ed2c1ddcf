//! Labels (SPEC §9): the key scheme of tagged series, the per-type series index, and reading
//! the mergeable state of many series (`METRIC.EXPORT`) in one pipelined round trip per node.
//!
//! Key scheme (injective, no hash tag: `{` and `}` never appear unescaped):
//!
//! | key | what |
//! |---|---|
//! | `metric:<type>` | the series of a metric without tags (unchanged) |
//! | `series:<type*>\|<key>=<value*>,<key>=<value*>...` | the series of one tag set, tags sorted by key |
//! | `tally:series:<type*>` | the type's series index: a set of tag sets (`<key>=<value*>,...`) |
//!
//! `*`: percent-escaped: `%`, `|`, `,`, `=`, `{`, `}`, bytes up to space and DEL become `%XX`.
//! Tag keys (`[a-z_][a-z0-9_]{0,63}`) need no escape. The type's escape makes the first `|` end
//! it; the values' escape makes `,` and `=` separators; so two tag sets (or types) never share
//! a key. The overflow series of a type is the tag set `__overflow__=true`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, Value};

use super::error::{refused, with_kind, Argument, Result, StoreError};
use super::reply::int;
use super::{Conn, Store};

/// Prefix of tagged series keys.
pub const SERIES_PREFIX: &str = "series:";
/// Prefix of the per-type series indexes.
pub const SERIES_INDEX_PREFIX: &str = "tally:series:";
/// The tag set of a type's overflow series (its index member and key suffix).
pub const OVERFLOW_MEMBER: &str = "__overflow__=true";

/// One tag set, sorted by key, keys distinct.
pub type Tags = Vec<(String, String)>;

/// `s` percent-escaped as the scheme says.
pub fn escape(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch <= ' ' || ch == '\x7f' || "%|,={}".contains(ch) {
            let _ = write!(out, "%{:02X}", ch as u32);
        } else {
            out.push(ch);
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for text `escape` never produces.
pub fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The index member of a tag set: `<key>=<value*>,...` in key order.
pub fn member(tags: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&escape(v));
    }
    out
}

/// The tag set of an index member (`None` for a member this scheme never writes).
pub fn parse_member(member: &str) -> Option<Tags> {
    member
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), unescape(v)?))
        })
        .collect()
}

/// The key of the series of `kind` with `tags` (`metric:<type>` without tags).
pub fn series_key(kind: &str, tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return super::keys::metric(kind);
    }
    member_key(kind, &member(tags))
}

/// The key of the series of `kind` whose index member is `member` (not empty).
pub fn member_key(kind: &str, member: &str) -> String {
    format!("{SERIES_PREFIX}{}|{member}", escape(kind))
}

/// `tally:series:<type*>`.
pub fn index_key(kind: &str) -> String {
    format!("{SERIES_INDEX_PREFIX}{}", escape(kind))
}

/// Which samples of each series `METRIC.EXPORT` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    AllTime,
    /// `WINDOW window_ms`.
    Window(u64),
    /// `RANGE from_ms to_ms bucket_ms`.
    Range(u64, u64, u64),
}

impl Store {
    /// Adds the tag sets `members` (distinct, not the overflow one) to the index of `kind`,
    /// each only while the index holds fewer than `cap` tag sets (the overflow series does not
    /// count): one atomic script, so the cap is exact across API instances. For each member:
    /// true if it is (now) in the index, false if it overflowed (the overflow series is then
    /// in the index).
    pub async fn register_series(
        &self,
        kind: &str,
        members: &[String],
        cap: usize,
    ) -> Result<Vec<bool>> {
        // KEYS[1] the index; ARGV[1] the cap; ARGV[2] the overflow member; ARGV[3..] members.
        const SCRIPT: &str = "\
local out = {}
local cap = tonumber(ARGV[1])
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = 1
  elseif redis.call('SCARD', KEYS[1]) - redis.call('SISMEMBER', KEYS[1], ARGV[2]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  else
    redis.call('SADD', KEYS[1], ARGV[2])
    out[#out + 1] = 0
  end
end
return out";
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT)
            .arg(1)
            .arg(index_key(kind))
            .arg(cap)
            .arg(OVERFLOW_MEMBER)
            .arg(members);
        let reply = self.call_once(&cmd).await?;
        let Value::Array(items) = reply else {
            return Err(StoreError::Protocol(format!("series index: {reply:?}")));
        };
        if items.len() != members.len() {
            return Err(StoreError::Protocol("series index: reply length".into()));
        }
        items.iter().map(|v| Ok(int(v)? == 1)).collect()
    }

    /// The tag sets in the index of `kind` (`SMEMBERS`), as stored (index members).
    pub async fn series_members(&self, kind: &str) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(index_key(kind));
        match self.call(&cmd).await? {
            Value::Array(items) | Value::Set(items) => items
                .iter()
                .map(|m| match m {
                    Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                    Value::SimpleString(s) => Ok(s.clone()),
                    other => Err(StoreError::Protocol(format!("SMEMBERS item: {other:?}"))),
                })
                .collect(),
            other => Err(StoreError::Protocol(format!("SMEMBERS: {other:?}"))),
        }
    }

    /// `METRIC.EXPORT` of each of `keys` (series keys of `kind`): the encoded state, `None`
    /// for a missing key. One pipeline on a single node. In cluster mode one pipeline per
    /// primary: the keys are grouped by the node that serves their slot (the cached slot map,
    /// see [`group_by_node`]) and each node gets all its commands in one pipeline, sent to its
    /// address (Redis Cluster serves a multi-slot pipeline when the node owns every slot): one
    /// round trip per node, not one per series. If a node's pipeline fails in any way (MOVED,
    /// ASK, CLUSTERDOWN, TRYAGAIN, a connection error, a timeout: the map may be stale), the
    /// map is dropped (read again by the next request) and this request falls back to one
    /// pipeline per hash slot, routed by redis-rs (which follows redirections).
    pub async fn export_states(
        &self,
        kind: &str,
        keys: &[String],
        part: Part,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmds: Vec<Cmd> = keys.iter().map(|k| export_cmd(k, part)).collect();
        let replies = if !self.cluster {
            let mut pipe = redis::pipe();
            // Error replies come back as values (a refusal is then read like a single call's).
            pipe.ignore_errors();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            self.read_pipeline(&pipe).await
        } else {
            match self.export_per_node(keys, &cmds).await {
                Some(replies) => Ok(replies),
                None => self.export_per_slot(keys, cmds).await,
            }
        };
        let replies = replies.map_err(|e| with_kind(e, kind))?;
        if replies.len() != keys.len() {
            return Err(StoreError::Protocol("METRIC.EXPORT: reply count".into()));
        }
        replies
            .into_iter()
            .map(|v| match v {
                Value::Nil => Ok(None),
                Value::BulkString(b) => Ok(Some(b)),
                Value::ServerError(e) => Err(with_kind(refused(e.into(), &REFUSABLE), kind)),
                other => Err(StoreError::Protocol(format!("METRIC.EXPORT: {other:?}"))),
            })
            .collect()
    }

    /// Cluster mode: the replies of `cmds` (one per key of `keys`), one pipeline per primary
    /// sent to its address, all at once; `None` if the slot map is unknown or incomplete, or
    /// if any node's pipeline fails or answers a cluster error (the map is then dropped).
    async fn export_per_node(&self, keys: &[String], cmds: &[Cmd]) -> Option<Vec<Value>> {
        let Conn::Cluster { shared, .. } = &self.conn else {
            return None;
        };
        let map = self.slot_map().await?;
        let Some(groups) = group_by_node(keys, &map) else {
            self.slot_map.forget();
            return None;
        };
        let results = futures_util::future::join_all(groups.iter().map(|((host, port), at)| {
            let mut pipe = redis::pipe();
            for &i in at {
                pipe.add_command(cmds[i].clone());
            }
            let route = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            };
            let mut conn = shared.clone();
            async move {
                tokio::time::timeout(self.deadline, conn.route_pipeline(pipe, 0, at.len(), route))
                    .await
            }
        }))
        .await;
        let mut out = vec![Value::Nil; keys.len()];
        for ((_, at), result) in groups.iter().zip(results) {
            match result {
                Ok(Ok(values))
                    if values.len() == at.len() && !values.iter().any(is_cluster_error) =>
                {
                    for (&i, v) in at.iter().zip(values) {
                        out[i] = v;
                    }
                }
                _ => {
                    self.slot_map.forget();
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Cluster mode: the replies of `cmds`, one pipeline per hash slot (redis-rs routes each
    /// one and follows MOVED / ASK), all sent at once.
    async fn export_per_slot(&self, keys: &[String], cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let mut by_slot: BTreeMap<u16, Vec<(usize, Cmd)>> = BTreeMap::new();
        for (i, (key, cmd)) in keys.iter().zip(cmds).enumerate() {
            by_slot
                .entry(super::keys::hash_slot(key.as_bytes()))
                .or_default()
                .push((i, cmd));
        }
        let groups: Vec<Vec<(usize, Cmd)>> = by_slot.into_values().collect();
        let results = futures_util::future::join_all(groups.iter().map(|g| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (_, cmd) in g {
                pipe.add_command(cmd.clone());
            }
            async move { self.read_pipeline(&pipe).await }
        }))
        .await;
        let mut out = vec![Value::Nil; keys.len()];
        for (g, r) in groups.iter().zip(results) {
            for ((i, _), v) in g.iter().zip(r?) {
                out[*i] = v;
            }
        }
        Ok(out)
    }

    /// The cached slot map, read again (`CLUSTER SLOTS`) when missing or older than
    /// [`SLOT_MAP_TTL`]; `None` if it cannot be read.
    async fn slot_map(&self) -> Option<Arc<SlotMap>> {
        if let Some(map) = self.slot_map.fresh() {
            return Some(map);
        }
        let reply = self
            .call(&redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await
            .ok()?;
        let map = Arc::new(SlotMap::parse(&reply)?);
        self.slot_map.set(map.clone());
        Some(map)
    }

    /// A pipeline of reads on the shared connection (one node's pipeline in cluster mode); a
    /// module refusal of an argument is `Refused`.
    async fn read_pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>> {
        self.bounded(
            self.deadline,
            async {
                match &self.conn {
                    Conn::Single(s) => s.query_pipeline(pipe).await,
                    Conn::Cluster { shared, .. } => {
                        pipe.query_async::<Vec<Value>>(&mut shared.clone()).await
                    }
                }
            },
            |e| refused(e, &REFUSABLE),
        )
        .await
    }
}

/// The arguments of METRIC.EXPORT the module may refuse (a window beyond the retention, ...).
const REFUSABLE: [Argument; 5] = [
    Argument::WindowMs,
    Argument::Span,
    Argument::BucketMs,
    Argument::FromMs,
    Argument::ToMs,
];

/// How long a slot map is trusted before it is read again (a stale one is also dropped at
/// its first failure).
pub const SLOT_MAP_TTL: Duration = Duration::from_secs(10);

/// A primary's address as `CLUSTER SLOTS` names it (the address redis-rs connects to).
pub type NodeAddr = (String, u16);

/// Which primary serves each hash slot, from `CLUSTER SLOTS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first slot, last slot, node)`, sorted, not overlapping.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMap {
    /// A map of `ranges` (`(first slot, last slot, node)`, in any order).
    pub fn new(mut ranges: Vec<(u16, u16, NodeAddr)>) -> SlotMap {
        ranges.sort();
        SlotMap { ranges }
    }

    /// The primary serving `slot`, if the map knows one.
    pub fn node_of(&self, slot: u16) -> Option<&NodeAddr> {
        let after = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, node) = self.ranges.get(after.checked_sub(1)?)?;
        (slot <= *last).then_some(node)
    }

    /// The map of a `CLUSTER SLOTS` reply: `[[first, last, [host, port, ...], replicas...]...]`;
    /// a range whose primary has no usable host (empty, `?`) is left out.
    fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(items) = reply else {
            return None;
        };
        let mut ranges = Vec::new();
        for item in items {
            let Value::Array(fields) = item else {
                return None;
            };
            let [Value::Int(first), Value::Int(last), Value::Array(primary), ..] = &fields[..]
            else {
                return None;
            };
            let (Some(host), Some(Value::Int(port))) = (primary.first(), primary.get(1)) else {
                return None;
            };
            let host = match host {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            if host.is_empty() || host == "?" {
                continue;
            }
            ranges.push((
                u16::try_from(*first).ok()?,
                u16::try_from(*last).ok()?,
                (host, u16::try_from(*port).ok()?),
            ));
        }
        Some(SlotMap::new(ranges))
    }
}

/// A store's cached [`SlotMap`] and when it was read.
#[derive(Default)]
pub(super) struct SlotMapCache(Mutex<Option<(Instant, Arc<SlotMap>)>>);

impl SlotMapCache {
    fn fresh(&self) -> Option<Arc<SlotMap>> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < SLOT_MAP_TTL)
            .map(|(_, map)| map.clone())
    }

    fn set(&self, map: Arc<SlotMap>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), map));
    }

    fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// `keys` grouped by the primary serving their hash slot: each node once (in the order of
/// its first key), with the indexes of its keys in order. `None` if a slot has no primary in
/// `map`.
pub fn group_by_node(keys: &[String], map: &SlotMap) -> Option<Vec<(NodeAddr, Vec<usize>)>> {
    let mut groups: Vec<(NodeAddr, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let node = map.node_of(super::keys::hash_slot(key.as_bytes()))?;
        match groups.iter_mut().find(|(n, _)| n == node) {
            Some((_, at)) => at.push(i),
            None => groups.push((node.clone(), vec![i])),
        }
    }
    Some(groups)
}

/// A reply that says the node does not (or not yet) serve the key's slot.
fn is_cluster_error(v: &Value) -> bool {
    let Value::ServerError(e) = v else {
        return false;
    };
    let code = e.code();
    [
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "LOADING",
    ]
    .contains(&code)
}

/// `METRIC.EXPORT key [WINDOW w | RANGE from to bucket]`.
fn export_cmd(key: &str, part: Part) -> Cmd {
    let mut cmd = redis::cmd("METRIC.EXPORT");
    cmd.arg(key);
    match part {
        Part::AllTime => {}
        Part::Window(w) => {
            cmd.arg("WINDOW").arg(w);
        }
        Part::Range(from, to, bucket) => {
            cmd.arg("RANGE").arg(from).arg(to).arg(bucket);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_follow_the_scheme_and_untagged_series_keep_their_key() {
        assert_eq!(series_key("cpu", &[]), "metric:cpu");
        assert_eq!(
            series_key("cpu", &tags(&[("host", "web-1"), ("region", "eu")])),
            "series:cpu|host=web-1,region=eu"
        );
        assert_eq!(index_key("c|p{u}"), "tally:series:c%7Cp%7Bu%7D");
        assert_eq!(
            series_key("cpu", &tags(&[("__overflow__", "true")])),
            format!("series:cpu|{OVERFLOW_MEMBER}")
        );
    }

    #[test]
    fn the_scheme_is_injective_and_has_no_hash_tag() {
        let values = [
            "a", "a,b", "a=b", "a;b", "a:b", "a|b", "{x}", "}{", "a\\b", "a b", " ", "%", "%25",
            "é", "a,host=b", "=", ",",
        ];
        let mut seen = std::collections::HashMap::new();
        for kind in ["cpu", "cpu|host=a", "c{p}u", "c u"] {
            for v in values {
                for w in values {
                    for set in [
                        tags(&[("host", v)]),
                        tags(&[("host", v), ("region", w)]),
                        tags(&[("a", v), ("host", w)]),
                    ] {
                        let key = series_key(kind, &set);
                        if !set.is_empty() && kind != "c{p}u" {
                            assert!(!key.contains('{') && !key.contains('}'), "{key}");
                        }
                        assert_eq!(parse_member(&member(&set)), Some(set.clone()));
                        if let Some(prev) = seen.insert(key.clone(), (kind, set.clone())) {
                            assert_eq!(prev, (kind, set), "{key}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            unescape(&escape("a b,c=d{e}|%é")).as_deref(),
            Some("a b,c=d{e}|%é")
        );
    }

    fn node(port: u16) -> NodeAddr {
        ("127.0.0.1".to_string(), port)
    }

    #[test]
    fn the_slot_map_finds_the_primary_of_every_slot_it_covers() {
        let map = SlotMap::new(vec![
            (10923, 16383, node(3)),
            (0, 5460, node(1)),
            (5461, 10922, node(2)),
        ]);
        assert_eq!(map.node_of(0), Some(&node(1)));
        assert_eq!(map.node_of(5460), Some(&node(1)));
        assert_eq!(map.node_of(5461), Some(&node(2)));
        assert_eq!(map.node_of(10923), Some(&node(3)));
        assert_eq!(map.node_of(16383), Some(&node(3)));
        let holes = SlotMap::new(vec![(0, 99, node(1)), (200, 16383, node(2))]);
        assert_eq!(holes.node_of(100), None);
        assert_eq!(holes.node_of(199), None);
        assert_eq!(holes.node_of(200), Some(&node(2)));
        assert_eq!(SlotMap::default().node_of(0), None);
    }

    #[test]
    fn keys_are_grouped_once_per_node_whatever_their_slots() {
        let map = SlotMap::new(vec![
            (0, 5460, node(1)),
            (5461, 10922, node(2)),
            (10923, 16383, node(3)),
        ]);
        let keys: Vec<String> = (0..100)
            .map(|h| member_key("latency", &format!("host=web-{h}")))
            .collect();
        let groups = group_by_node(&keys, &map).unwrap();
        // Three pipelines, though the keys hash to (about) a hundred slots.
        assert_eq!(groups.len(), 3);
        let slots: std::collections::BTreeSet<u16> = keys
            .iter()
            .map(|k| super::super::keys::hash_slot(k.as_bytes()))
            .collect();
        assert!(slots.len() > 90, "{}", slots.len());
        let mut seen: Vec<usize> = Vec::new();
        for (addr, at) in &groups {
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
            for &i in at {
                let slot = super::super::keys::hash_slot(keys[i].as_bytes());
                assert_eq!(map.node_of(slot), Some(addr));
            }
            seen.extend(at);
        }
        seen.sort();
        assert_eq!(seen, (0..keys.len()).collect::<Vec<_>>());
        // A slot the map does not cover: no grouping (the caller falls back to per-slot).
        let partial = SlotMap::new(vec![(0, 5460, node(1))]);
        assert_eq!(group_by_node(&keys, &partial), None);
        assert_eq!(group_by_node(&[], &partial), Some(vec![]));
    }

    #[test]
    fn cluster_slots_replies_are_read_with_their_primaries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let range = |first, last, host: &str, port| {
            Value::Array(vec![
                Value::Int(first),
                Value::Int(last),
                Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(9), bulk("replica")]),
            ])
        };
        let reply = Value::Array(vec![
            range(5461, 16383, "127.0.0.1", 2),
            range(0, 5460, "127.0.0.1", 1),
        ]);
        assert_eq!(
            SlotMap::parse(&reply),
            Some(SlotMap::new(vec![
                (0, 5460, node(1)),
                (5461, 16383, node(2))
            ]))
        );
        // An unknown primary leaves its range out.
        let reply = Value::Array(vec![range(0, 5460, "?", 1), range(5461, 16383, "", 2)]);
        assert_eq!(SlotMap::parse(&reply), Some(SlotMap::default()));
        assert_eq!(SlotMap::parse(&Value::Nil), None);
        assert_eq!(SlotMap::parse(&Value::Array(vec![Value::Int(1)])), None);
    }

    #[test]
    fn only_cluster_errors_count_as_a_stale_map() {
        let err = |text: &str| match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert!(is_cluster_error(&err("MOVED 3999 127.0.0.1:6381")));
        assert!(is_cluster_error(&err("ASK 3999 127.0.0.1:6381")));
        assert!(is_cluster_error(&err("CLUSTERDOWN The cluster is down")));
        assert!(is_cluster_error(&err(
            "TRYAGAIN Multiple keys request during rehashing"
        )));
        assert!(!is_cluster_error(&err(
            "ERR window_ms exceeds the retention"
        )));
        assert!(!is_cluster_error(&Value::Nil));
    }
}
