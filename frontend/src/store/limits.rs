//! The store side of rate-limit policies (SPEC section 8): one `RATELIMIT.CHECK` (or `PEEK`)
//! of several policies on any log key, with each policy's state (`POLICIES`), and the API
//! keys, kept only as SHA-256 digests (see `keys` for the key names).

use redis::Value;

use super::error::Result;
use super::keys;
use super::reply::int;
use super::{Decision, Store, StoreError};

/// One policy's state after a call (the `POLICIES` part of the reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    pub limit: i64,
    pub window_ms: i64,
    pub remaining: i64,
    pub reset_after_ms: i64,
}

/// A stored API key's record (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// A short prefix of the digest: what `keys list` shows and `keys revoke` takes.
    pub id: String,
    pub name: String,
    pub tier: String,
    pub created_ms: i64,
}

impl Store {
    /// `RATELIMIT.CHECK key limit window_ms ... [COST cost] POLICIES` (`PEEK` when `peek`):
    /// the decision and every policy's state, in `policies` order.
    pub async fn check_limits(
        &self,
        key: &str,
        policies: &[(u64, u64)],
        cost: u64,
        peek: bool,
    ) -> Result<(Decision, Vec<PolicyState>)> {
        let mut cmd = redis::cmd(if peek {
            "RATELIMIT.PEEK"
        } else {
            "RATELIMIT.CHECK"
        });
        cmd.arg(key);
        for (limit, window_ms) in policies {
            cmd.arg(*limit).arg(*window_ms);
        }
        if cost != 1 {
            cmd.arg("COST").arg(cost);
        }
        cmd.arg("POLICIES");
        let reply = if peek {
            self.call(&cmd).await?
        } else {
            self.call_once(&cmd).await?
        };
        parse_with_states(reply)
    }

    /// `RATELIMIT.CHECK key limit window_ms [COST cost]`: one policy on any log key.
    pub async fn check_rate_at(
        &self,
        key: &str,
        limit: u64,
        window_ms: u64,
        cost: u64,
    ) -> Result<Decision> {
        let mut cmd = redis::cmd("RATELIMIT.CHECK");
        cmd.arg(key).arg(limit).arg(window_ms);
        if cost != 1 {
            cmd.arg("COST").arg(cost);
        }
        super::parse_decision(self.call_once(&cmd).await?)
    }

    /// The record of the key whose SHA-256 digest is `digest_hex`, if it exists (not revoked).
    pub async fn api_key(&self, digest_hex: &str) -> Result<Option<KeyRecord>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys::api_key(digest_hex));
        let reply = self.call(&cmd).await?;
        parse_record(&reply)
    }

    /// Stores a new key's record and indexes its digest under its id.
    pub async fn create_api_key(&self, digest_hex: &str, record: &KeyRecord) -> Result<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(keys::api_key(digest_hex))
            .arg("id")
            .arg(&record.id)
            .arg("name")
            .arg(&record.name)
            .arg("tier")
            .arg(&record.tier)
            .arg("created_ms")
            .arg(record.created_ms);
        self.call_once(&cmd).await?;
        let mut index = redis::cmd("HSET");
        index
            .arg(keys::API_KEY_INDEX)
            .arg(&record.id)
            .arg(digest_hex);
        self.call_once(&index).await?;
        Ok(())
    }

    /// Every stored key: (digest, record), in id order.
    pub async fn api_keys(&self) -> Result<Vec<(String, KeyRecord)>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys::API_KEY_INDEX);
        let index = self.call(&cmd).await?;
        let mut out = Vec::new();
        for (_, digest) in pairs(&index)? {
            if let Some(record) = self.api_key(&digest).await? {
                out.push((digest, record));
            }
        }
        out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        Ok(out)
    }

    /// Deletes a key's record (the key is refused from then on) and its index entry.
    pub async fn revoke_api_key(&self, digest_hex: &str, id: &str) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(keys::api_key(digest_hex));
        self.call_once(&cmd).await?;
        let mut index = redis::cmd("HDEL");
        index.arg(keys::API_KEY_INDEX).arg(id);
        self.call_once(&index).await?;
        Ok(())
    }
}

fn bad(what: &str, v: &Value) -> StoreError {
    StoreError::Protocol(format!("{what}: {v:?}"))
}

/// A RATELIMIT reply with the `POLICIES` element (RESP2 array or RESP3 map).
pub fn parse_with_states(v: Value) -> Result<(Decision, Vec<PolicyState>)> {
    let items: Vec<&Value> = match &v {
        Value::Array(items) if items.len() == 6 => items.iter().collect(),
        Value::Map(entries) if entries.len() == 6 => entries.iter().map(|(_, v)| v).collect(),
        Value::ServerError(_) => return Err(bad("RATELIMIT", &v)),
        other => return Err(bad("RATELIMIT", other)),
    };
    let head = items[..5]
        .iter()
        .map(|v| int(v))
        .collect::<Result<Vec<i64>>>()?;
    let decision = Decision {
        allowed: head[0] == 1,
        limit: head[1],
        remaining: head[2],
        retry_after_ms: head[3],
        reset_after_ms: head[4],
    };
    let Value::Array(states) = items[5] else {
        return Err(bad("RATELIMIT policies", items[5]));
    };
    let states = states
        .iter()
        .map(|s| {
            let f: Vec<i64> = match s {
                Value::Array(f) if f.len() == 4 => f.iter().map(int).collect::<Result<_>>()?,
                Value::Map(f) if f.len() == 4 => {
                    f.iter().map(|(_, v)| int(v)).collect::<Result<_>>()?
                }
                other => return Err(bad("RATELIMIT policy", other)),
            };
            Ok(PolicyState {
                limit: f[0],
                window_ms: f[1],
                remaining: f[2],
                reset_after_ms: f[3],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((decision, states))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// An HGETALL reply as (field, value) pairs.
fn pairs(v: &Value) -> Result<Vec<(String, String)>> {
    match v {
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|kv| {
                Ok((
                    text(&kv[0]).ok_or_else(|| bad("HGETALL", v))?,
                    text(&kv[1]).ok_or_else(|| bad("HGETALL", v))?,
                ))
            })
            .collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, x)| {
                Ok((
                    text(k).ok_or_else(|| bad("HGETALL", v))?,
                    text(x).ok_or_else(|| bad("HGETALL", v))?,
                ))
            })
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad("HGETALL", other)),
    }
}

fn parse_record(v: &Value) -> Result<Option<KeyRecord>> {
    let fields = pairs(v)?;
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(id), Some(tier)) = (get("id"), get("tier")) else {
        return Err(bad("API key record", v));
    };
    Ok(Some(KeyRecord {
        id,
        name: get("name").unwrap_or_default(),
        tier,
        created_ms: get("created_ms").and_then(|s| s.parse().ok()).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policies_reply_is_read_in_resp2_and_resp3() {
        let state = |l, w, r, t| {
            Value::Array(vec![
                Value::Int(l),
                Value::Int(w),
                Value::Int(r),
                Value::Int(t),
            ])
        };
        let resp2 = Value::Array(vec![
            Value::Int(1),
            Value::Int(10),
            Value::Int(9),
            Value::Int(0),
            Value::Int(1000),
            Value::Array(vec![
                state(10, 1000, 9, 1000),
                state(100, 60_000, 99, 60_000),
            ]),
        ]);
        let (d, s) = parse_with_states(resp2).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 9);
        assert_eq!(
            s[1],
            PolicyState {
                limit: 100,
                window_ms: 60_000,
                remaining: 99,
                reset_after_ms: 60_000
            }
        );
        assert!(parse_with_states(Value::Array(vec![Value::Int(1); 5])).is_err());
    }

    #[test]
    fn a_key_record_needs_its_id_and_tier() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            b("id"),
            b("abcd"),
            b("tier"),
            b("pro"),
            b("name"),
            b("ci"),
            b("created_ms"),
            b("5"),
        ]);
        assert_eq!(
            parse_record(&v).unwrap(),
            Some(KeyRecord {
                id: "abcd".into(),
                name: "ci".into(),
                tier: "pro".into(),
                created_ms: 5
            })
        );
        assert_eq!(parse_record(&Value::Array(vec![])).unwrap(), None);
        assert!(parse_record(&Value::Array(vec![b("name"), b("x")])).is_err());
    }
}
