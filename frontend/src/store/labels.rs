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
    /// for a missing key. One pipeline on a single node; in cluster mode one pipeline per hash
    /// slot, all sent at once over the multiplexed connection to each node (so each node gets
    /// its commands back to back: one round trip per node, not one per series).
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
}
