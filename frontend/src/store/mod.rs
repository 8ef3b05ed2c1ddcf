//! The only place that speaks to Redis (the only code that names the `redis` crate). Every call is bounded by a deadline, so a request never
//! hangs on a dead or failing-over server.
//!
//! Connections are lazy: the API starts while Redis is down, answers 503 meanwhile, and
//! recovers by itself.
//! - single node (`REDIS_CLUSTER=false`): the store owns its connections (one `Store` per actix
//!   worker). The *shared* connection is one multiplexed connection used by every read, the
//!   health probe, `RATELIMIT.CHECK`, the type index and the writes that do not WAIT. Each
//!   connection's driver task clears an `alive` flag when the socket closes (Redis killed or
//!   restarted), and a call that meets an I/O error or a timeout clears it too; the next call
//!   then dials a new connection at once (one dial at a time per worker; no back-off, so the
//!   first request after Redis returns succeeds). A read that meets a broken connection is
//!   retried once on a fresh one; a write is not (it may have landed: 503).
//! - cluster (`REDIS_CLUSTER=true`): redis-rs's async cluster client over the seed list (MOVED /
//!   ASK, topology refresh, failover), with bounded retries and timeouts.
//!
//! With `REDIS_WAIT_REPLICAS=n`, a metric write goes out as one pipeline `METRIC.ADD ...; WAIT n
//! timeout` on the same connection, and is acknowledged only if WAIT counts at least n
//! replicas. `WAIT` blocks the connection it is sent on until it returns, so those pipelines
//! never use the shared connection: on a single node each one takes a connection of its own
//! from a per-worker pool (at most `WAIT_CONNECTIONS` in use, `WAIT_IDLE` kept idle), so reads,
//! `/health` and the other writes never queue behind a WAIT, nor does one WAIT behind another.
//! In cluster mode the WAIT pipelines use a second cluster connection (redis-rs routes a
//! pipeline by its first keyed command, so `WAIT` reaches the node that took the write); reads
//! keep the first. Rate-limit records are not WAITed: they are not data the API acknowledges,
//! and a record lost in a failover grants at most one extra request.
//!
//! A batch (`add_metrics`) is one pipeline of `METRIC.ADD`s (plus `WAIT`) on a single node. In
//! cluster mode redis-rs does not split a pipeline: it refuses one whose keys hash to different
//! slots. So the batch is grouped by hash slot (`keys::hash_slot`), one pipeline per slot, each
//! with its own trailing `WAIT` (it then runs on the node that took those writes), all sent
//! concurrently. A pipeline is not a transaction: if Redis fails midway some items may be
//! stored, and the API answers 503 ("not acknowledged", SPEC §6).
//!
//! The type index (`keys::TYPE_INDEX`, a set) lists every metric type and caps them at
//! `MAX_TYPES`. Before the rate-limit check, the types of a POST that this process does not
//! know yet are checked in one round trip (their keys' `TYPE`: a foreign value is a 409; and
//! whether the index has room for the new ones: else a 422); after it, they are added to the
//! index by a Lua script that adds all of them only if the set then holds at most `MAX_TYPES`
//! members (atomic in Redis, so the cap is exact across any number of API instances), and then
//! the write goes out. A type the process has seen stored is cached in memory by the domain
//! (`crate::known_types`, at most `MAX_TYPES` names), so writes of known types cost no extra
//! round trip. An index missing its
//! marker key (`keys::TYPE_INDEX_BUILT`: a deployment that predates the index) is built once
//! from `SCAN cursor MATCH metric:* TYPE tally-met COUNT 1000` (in cluster mode on every
//! primary), never per request.

//!
//! Files: `mod.rs` the `Store` and its commands; `single.rs` the connections to a single node;
//! `tls.rs` TLS over them (`rediss://`);
//! `index.rs` the type index; `labels.rs` the labels (tagged series keys, the per-type series
//! index, `METRIC.EXPORT` of many series); `analytics.rs` the limiter's decision series and
//! denied clients; `reply.rs` the data types and the
//! parsing of replies; `error.rs` the typed errors; `keys.rs` the key scheme.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::RoutingInfo;
use redis::{Cmd, Pipeline, RedisError, RedisResult, TlsCertificates, Value};

use crate::config::Config;

mod analytics;
mod error;
mod index;
pub mod keys;
pub mod labels;
mod limits;
mod reply;
mod single;
mod tls;

pub use analytics::{TOP_PER_MINUTE, TOP_TTL_S};
pub use error::{Argument, InvalidUrl, StoreError};
pub use index::TypeIndex;
pub use limits::{KeyRecord, PolicyState};
pub use reply::{parse_decision, parse_points, parse_summary, Decision, Metric, Point, Summary};
pub use single::{WAIT_CONNECTIONS, WAIT_IDLE};

use error::{refused, with_kind, Result};
use reply::int;
use single::Single;

enum Conn {
    Single(Box<Single>),
    Cluster {
        /// Reads, the health probe, rate limits, the type index, unWAITed writes.
        shared: ClusterConnection,
        /// Writes followed by `WAIT` (a second connection when replicas are required).
        waiting: ClusterConnection,
    },
}
/// Redis, as the API uses it. One per actix worker.
pub struct Store {
    conn: Conn,
    cluster: bool,
    /// `(replicas, timeout_ms)` when writes wait for replicas.
    wait: Option<(u32, u64)>,
    /// Hard cap on one call (connect + response, a read's retry), whatever the client
    /// library does.
    deadline: Duration,
    /// The same for a write followed by WAIT.
    wait_deadline: Duration,
    /// Shared by the process's stores.
    type_index: Arc<TypeIndex>,
    /// `MAX_TYPES`: the cap of the type index.
    max_types: usize,
    /// Cluster mode: which primary serves each slot, and when it was read (see `labels`).
    slot_map: labels::SlotMapCache,
}
impl Store {
    /// Creates the (lazy) connections; nothing is sent yet. Must run inside a Tokio runtime.
    /// `type_index` is shared by the process's stores (`TypeIndex::new()`).
    pub fn new(
        config: &Config,
        type_index: Arc<TypeIndex>,
    ) -> std::result::Result<Store, InvalidUrl> {
        let wait = (config.redis_wait_replicas > 0)
            .then_some((config.redis_wait_replicas, config.redis_wait_timeout_ms));
        let wait_ms = Duration::from_millis(wait.map_or(0, |(_, ms)| ms));
        let connect = config.redis_timeout;
        let response = config.redis_timeout;
        // A WAIT pipeline may legitimately take the WAIT timeout on top of the usual time.
        let wait_response = response + wait_ms;
        let conn = if config.redis_cluster {
            let mut builder =
                ClusterClientBuilder::new(config.redis_urls.iter().map(String::as_str));
            // TLS mode and credentials come from the seeds (config checks they agree); the
            // system roots verify the nodes' certificates unless REDIS_CA_FILE is set.
            if let Some(ca) = &config.redis_ca {
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.clone()),
                });
            }
            let client = builder
                // Bounded: a MOVED/ASK or a refresh after a failover is retried a couple of
                // times, quickly; the overall response timeout caps the whole request.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .connection_timeout(connect)
                .response_timeout(wait_response)
                .overall_response_timeout(Some(wait_response + connect))
                .build()?;
            let connection = |response| {
                client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(connect)
                        .set_response_timeout(response),
                )
            };
            let shared = connection(response);
            let waiting = if wait.is_some() {
                connection(wait_response)
            } else {
                shared.clone()
            };
            Conn::Cluster { shared, waiting }
        } else {
            let client = redis::Client::open(config.redis_urls[0].as_str())?;
            let info = client.get_connection_info().clone();
            let tls = tls::Tls::for_addr(info.addr(), config.redis_ca.as_ref())?;
            Conn::Single(Box::new(Single::new(
                info,
                tls,
                connect,
                response,
                wait_response,
            )))
        };
        // A read may dial, fail on a broken connection, dial again and wait for its answer.
        let deadline = connect * 2 + response;
        Ok(Store {
            conn,
            cluster: config.redis_cluster,
            wait,
            deadline,
            wait_deadline: deadline + wait_ms,
            type_index,
            max_types: config.max_types,
            slot_map: labels::SlotMapCache::default(),
        })
    }

    /// A read (or an idempotent command): retried once on a new connection when it meets a
    /// broken one.
    async fn call(&self, cmd: &Cmd) -> Result<Value> {
        self.call_as(cmd, None, StoreError::from).await
    }

    /// `call`, sent where `routing` says in cluster mode (a single node ignores it), with
    /// `classify` turning a Redis error into a `StoreError`.
    async fn call_as(
        &self,
        cmd: &Cmd,
        routing: Option<RoutingInfo>,
        classify: impl FnOnce(RedisError) -> StoreError,
    ) -> Result<Value> {
        self.bounded(
            self.deadline,
            async {
                match (&self.conn, routing) {
                    (Conn::Single(s), _) => s.query(cmd, true).await,
                    (Conn::Cluster { shared, .. }, None) => {
                        cmd.query_async::<Value>(&mut shared.clone()).await
                    }
                    (Conn::Cluster { shared, .. }, Some(r)) => {
                        shared.clone().route_command(cmd.clone(), r).await
                    }
                }
            },
            classify,
        )
        .await
    }

    /// A write that does not WAIT (never retried: it may have landed).
    async fn call_once(&self, cmd: &Cmd) -> Result<Value> {
        self.bounded(
            self.deadline,
            async {
                match &self.conn {
                    Conn::Single(s) => s.query(cmd, false).await,
                    Conn::Cluster { shared, .. } => {
                        cmd.query_async::<Value>(&mut shared.clone()).await
                    }
                }
            },
            StoreError::from,
        )
        .await
    }

    /// A pipeline of writes; one that ends in `WAIT` (`waits`) goes on a WAIT connection.
    async fn call_pipeline(&self, pipe: &Pipeline, waits: bool) -> Result<Vec<Value>> {
        let deadline = if waits {
            self.wait_deadline
        } else {
            self.deadline
        };
        self.bounded(
            deadline,
            async {
                match &self.conn {
                    Conn::Single(s) if waits => s.query_waiting(pipe).await,
                    Conn::Single(s) => s.query_pipeline(pipe).await,
                    Conn::Cluster { waiting, .. } if waits => {
                        pipe.query_async::<Vec<Value>>(&mut waiting.clone()).await
                    }
                    Conn::Cluster { shared, .. } => {
                        pipe.query_async::<Vec<Value>>(&mut shared.clone()).await
                    }
                }
            },
            StoreError::from,
        )
        .await
    }

    /// `request` within `deadline`, whatever the client library does.
    async fn bounded<T>(
        &self,
        deadline: Duration,
        request: impl Future<Output = RedisResult<T>>,
        classify: impl FnOnce(RedisError) -> StoreError,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, request).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(StoreError::Unavailable("timed out".to_string())),
        }
    }

    /// Sends a write, followed by `WAIT` in the same pipeline when replicas are required.
    async fn write(&self, cmd: Cmd) -> Result<Value> {
        if self.wait.is_none() {
            return self.call_once(&cmd).await;
        }
        let mut replies = self.write_pipeline(vec![cmd]).await?;
        Ok(replies.swap_remove(0))
    }

    /// Sends `writes` (at least one command) as one pipeline, with `WAIT` behind them when
    /// replicas are required; the replies of the writes.
    async fn write_pipeline(&self, writes: Vec<Cmd>) -> Result<Vec<Value>> {
        let n = writes.len();
        let mut pipe = redis::pipe();
        for cmd in writes {
            pipe.add_command(cmd);
        }
        if let Some((replicas, timeout_ms)) = self.wait {
            pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
        }
        let mut replies = self.call_pipeline(&pipe, self.wait.is_some()).await?;
        let sent = n + usize::from(self.wait.is_some());
        if replies.len() != sent {
            return Err(StoreError::Protocol(format!(
                "{} replies to a pipeline of {sent} commands",
                replies.len()
            )));
        }
        if let Some((replicas, _)) = self.wait {
            let acked = replies.pop().as_ref().map_or(Ok(0), int)?;
            if acked < i64::from(replicas) {
                return Err(StoreError::NotAcknowledged {
                    replicas: acked,
                    wanted: replicas,
                });
            }
        }
        Ok(replies)
    }

    /// Stores every metric of a batch: one pipeline of `METRIC.ADD`s (one per hash slot in
    /// cluster mode, sent concurrently; see the module doc). `Ok` only if every write (and
    /// every WAIT) succeeded.
    pub async fn add_metrics(&self, metrics: &[Metric]) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        if !self.cluster {
            self.write_pipeline(
                metrics
                    .iter()
                    .map(|m| metric_add(labels::series_key(&m.kind, &m.tags), m.value, m.ts_ms))
                    .collect(),
            )
            .await?;
            return Ok(());
        }
        let mut by_slot: BTreeMap<u16, Vec<Cmd>> = BTreeMap::new();
        for m in metrics {
            let key = labels::series_key(&m.kind, &m.tags);
            by_slot
                .entry(keys::hash_slot(key.as_bytes()))
                .or_default()
                .push(metric_add(key, m.value, m.ts_ms));
        }
        let results = futures_util::future::join_all(
            by_slot.into_values().map(|cmds| self.write_pipeline(cmds)),
        )
        .await;
        results.into_iter().try_for_each(|r| r.map(drop))
    }

    /// `METRIC.ADD <series key> <value> TS <ts_ms>` (`metric:<kind>` without tags; see
    /// `labels`); returns the series' sample count.
    pub async fn add_metric(&self, m: &Metric) -> Result<i64> {
        let (kind, value, ts_ms) = (m.kind.as_str(), m.value, m.ts_ms);
        self.write(metric_add(labels::series_key(kind, &m.tags), value, ts_ms))
            .await
            .and_then(|v| int(&v))
            .map_err(|e| with_kind(e, kind))
    }

    /// `METRIC.SUMMARY metric:<kind> [WINDOW window_ms]`. A window beyond the retention is
    /// `Refused` (`argument` `WindowMs`, `max` the retention in ms).
    pub async fn summary(&self, kind: &str, window_ms: Option<u64>) -> Result<Summary> {
        let mut cmd = redis::cmd("METRIC.SUMMARY");
        cmd.arg(keys::metric(kind));
        if let Some(w) = window_ms {
            cmd.arg("WINDOW").arg(w);
        }
        let reply = self
            .call_as(&cmd, None, |e| refused(e, &[Argument::WindowMs]))
            .await
            .map_err(|e| with_kind(e, kind))?;
        parse_summary(reply)
    }

    /// `METRIC.RANGE metric:<kind> <from_ms> <to_ms> <bucket_ms>`: the non-empty buckets, oldest
    /// first. Argument errors of the module (too many buckets, ...) are `Refused`.
    pub async fn range(
        &self,
        kind: &str,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<Vec<Point>> {
        let mut cmd = redis::cmd("METRIC.RANGE");
        cmd.arg(keys::metric(kind))
            .arg(from_ms)
            .arg(to_ms)
            .arg(bucket_ms);
        let reply = self
            .call_as(&cmd, None, |e| {
                refused(
                    e,
                    &[
                        Argument::Span,
                        Argument::BucketMs,
                        Argument::FromMs,
                        Argument::ToMs,
                    ],
                )
            })
            .await
            .map_err(|e| with_kind(e, kind))?;
        parse_points(reply)
    }

    /// `RATELIMIT.CHECK ratelimit:<client> <limit> <window_ms> [COST cost]`.
    pub async fn check_rate(
        &self,
        client: IpAddr,
        limit: u64,
        window_ms: u64,
        cost: u64,
    ) -> Result<Decision> {
        let mut cmd = redis::cmd("RATELIMIT.CHECK");
        cmd.arg(keys::ratelimit(client)).arg(limit).arg(window_ms);
        if cost != 1 {
            cmd.arg("COST").arg(cost);
        }
        parse_decision(self.call_once(&cmd).await?)
    }

    /// Redis answers and the module is loaded (a read of a key that is never written); in
    /// cluster mode also every slot is served (`cluster_state:ok`).
    pub async fn health(&self) -> Result<()> {
        let mut probe = redis::cmd("METRIC.SUMMARY");
        probe.arg(keys::HEALTH_PROBE);
        parse_summary(self.call(&probe).await?)?;
        if self.cluster {
            let info = self
                .call(&redis::cmd("CLUSTER").arg("INFO").clone())
                .await?;
            let text = match &info {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::VerbatimString { text, .. } => text.clone(),
                other => return Err(StoreError::Protocol(format!("CLUSTER INFO: {other:?}"))),
            };
            if !text.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(StoreError::Unavailable(
                    "the cluster does not serve every slot".to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// `METRIC.ADD <key> <value> TS <ts_ms>`.
fn metric_add(key: String, value: f64, ts_ms: u64) -> Cmd {
    let mut cmd = redis::cmd("METRIC.ADD");
    cmd.arg(key).arg(value).arg("TS").arg(ts_ms);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_accepts_exactly_the_redis_urls_the_client_library_takes() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:secret@redis:6379/2",
            "redis://[::1]:6379",
            "valkey://valkey:6379",
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=1",
            "not a url",
            "http://a:1",
            "redis://",
            "rediss://redis:6380",
            "rediss://tally-api:secret@redis:6380",
            "valkeys://redis:6380/1",
            "redis://tally-api:secret@redis:6379",
            "rediss://",
            "rediss://0.0.0.0:6380",
            "redis://0.0.0.0:6379",
            "redis://[::]:6379",
            "redis://redis:6379/zero",
            "redis://redis:99999",
            "unix:///run/redis.sock?db=x",
        ] {
            let config = Config::from_lookup(|name| (name == "REDIS_URL").then(|| url.to_string()));
            assert_eq!(
                config.is_ok(),
                redis::Client::open(url).is_ok(),
                "{url}: {config:?}"
            );
        }
    }
}
