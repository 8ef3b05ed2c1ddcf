//! The type index (`tally:types`, at most `MAX_TYPES` members; see the store's module doc). The
//! cache of the types this process has seen stored is the domain's (`crate::known_types`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Value};

use super::error::{Result, StoreError};
use super::keys;
use super::reply::{int, name, scan_page};
use super::Store;

/// What this process knows of the type index, shared by its workers.
#[derive(Debug, Default)]
pub struct TypeIndex {
    /// Whether the index is known to be complete (its marker key was seen or written).
    built: AtomicBool,
}

impl TypeIndex {
    pub fn new() -> Arc<TypeIndex> {
        Arc::new(TypeIndex::default())
    }
}

impl Store {
    /// Checks, before any rate-limit budget is spent, that the metric types `new` (distinct,
    /// none of them known to be stored) can be stored: their keys must not hold a foreign value
    /// (`WrongType`) and the index must have room for them (`TooManyTypes`).
    pub async fn check_new_types(&self, new: &[String]) -> Result<()> {
        self.ensure_indexed().await?;
        let types = futures_util::future::join_all(new.iter().map(|kind| {
            let mut cmd = redis::cmd("TYPE");
            cmd.arg(keys::metric(kind));
            async move { (kind, self.call(&cmd).await) }
        }));
        let (types, room) = futures_util::future::join(types, self.index(new, false)).await;
        for (kind, reply) in types {
            match name(&reply?) {
                Some(b"none") => {}
                Some(t) if t == keys::METRIC_TYPE_NAME.as_bytes() => {}
                _ => return Err(StoreError::WrongType(Some(kind.clone()))),
            }
        }
        room
    }

    /// The index script over `kinds` (add them when `add`, else only check): `TooManyTypes`
    /// when the new ones would make more than `MAX_TYPES`.
    async fn index(&self, kinds: &[String], add: bool) -> Result<()> {
        // KEYS[1] the index; ARGV[1] the cap; ARGV[2] 1 = add, 0 = check; ARGV[3..] the types
        // (distinct). All or nothing: the types are added only if the set then holds at most
        // the cap (types already in it are free).
        const SCRIPT: &str = "\
local new = 0
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then new = new + 1 end
end
if new > 0 and redis.call('SCARD', KEYS[1]) + new > tonumber(ARGV[1]) then return -1 end
if ARGV[2] == '1' then
  for i = 3, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
end
return new";
        let max = self.max_types;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT)
            .arg(1)
            .arg(keys::TYPE_INDEX)
            .arg(max)
            .arg(u8::from(add))
            .arg(kinds);
        let reply = if add {
            self.call_once(&cmd).await?
        } else {
            self.call(&cmd).await?
        };
        if int(&reply)? < 0 {
            return Err(StoreError::TooManyTypes { max });
        }
        Ok(())
    }

    /// Adds the new types `new` (checked by `check_new_types`) to the index (`TooManyTypes` if
    /// another instance took the last room since).
    pub async fn register_types(&self, new: &[String]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        self.index(new, true).await
    }

    /// Builds the index from the keyspace once if its marker key is missing (a deployment
    /// older than the index); then never again in this process.
    async fn ensure_indexed(&self) -> Result<()> {
        if self.type_index.built.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut exists = redis::cmd("EXISTS");
        exists.arg(keys::TYPE_INDEX_BUILT);
        if int(&self.call(&exists).await?)? == 0 {
            let types: Vec<String> = self.scan_types().await?.into_iter().collect();
            for chunk in types.chunks(1000) {
                let mut sadd = redis::cmd("SADD");
                sadd.arg(keys::TYPE_INDEX).arg(chunk);
                self.call_once(&sadd).await?;
            }
            let mut set = redis::cmd("SET");
            set.arg(keys::TYPE_INDEX_BUILT).arg(1);
            self.call_once(&set).await?;
            log::info!("type index built from the keyspace: {} types", types.len());
        }
        self.type_index.built.store(true, Ordering::Release);
        Ok(())
    }

    /// Every metric type in the index, sorted (`SMEMBERS`; the index is built first if it
    /// predates this version).
    pub async fn metric_types(&self) -> Result<Vec<String>> {
        self.ensure_indexed().await?;
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(keys::TYPE_INDEX);
        let reply = self.call(&cmd).await?;
        let members = match reply {
            Value::Array(items) | Value::Set(items) => items,
            other => return Err(StoreError::Protocol(format!("SMEMBERS: {other:?}"))),
        };
        let mut types = members
            .iter()
            .map(|m| {
                name(m)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or_else(|| StoreError::Protocol(format!("SMEMBERS item: {m:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        types.sort_unstable();
        Ok(types)
    }

    /// The metric types that have a series: `SCAN ... MATCH metric:* TYPE tally-met` over the
    /// whole keyspace (every primary in cluster mode), sorted, without duplicates. Only to
    /// build the index once.
    async fn scan_types(&self) -> Result<BTreeSet<String>> {
        let mut types = BTreeSet::new();
        if self.cluster {
            let first = self
                .call_as(
                    &scan_cmd(0),
                    Some(RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        None,
                    ))),
                    StoreError::from,
                )
                .await?;
            let Value::Map(per_node) = first else {
                return Err(StoreError::Protocol(format!("SCAN: {first:?}")));
            };
            for (addr, reply) in per_node {
                let addr = name(&addr)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .ok_or_else(|| StoreError::Protocol(format!("SCAN node: {addr:?}")))?;
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| StoreError::Protocol(format!("SCAN node address {addr}")))?;
                let route = || {
                    Some(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    }))
                };
                self.scan_rest(reply, route, &mut types).await?;
            }
        } else {
            let first = self.call(&scan_cmd(0)).await?;
            self.scan_rest(first, || None, &mut types).await?;
        }
        Ok(types)
    }

    /// Reads the SCAN page `reply` into `types`, then the following pages to the end, each
    /// asked where `routing` says.
    async fn scan_rest(
        &self,
        mut reply: Value,
        routing: impl Fn() -> Option<RoutingInfo>,
        types: &mut BTreeSet<String>,
    ) -> Result<()> {
        loop {
            let cursor = scan_page(reply, types)?;
            if cursor == 0 {
                return Ok(());
            }
            reply = self
                .call_as(&scan_cmd(cursor), routing(), StoreError::from)
                .await?;
        }
    }
}
/// `SCAN <cursor> MATCH metric:* TYPE tally-met COUNT 1000`.
fn scan_cmd(cursor: u64) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(format!("{}*", keys::METRIC_PREFIX))
        .arg("TYPE")
        .arg(keys::METRIC_TYPE_NAME)
        .arg("COUNT")
        .arg(1000);
    cmd
}
