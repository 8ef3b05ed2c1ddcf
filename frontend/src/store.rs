//! The only place that speaks to Redis. One module call per stage; every call is bounded by a
//! deadline, so a request never hangs on a dead or failing-over server.
//!
//! Connections are lazy: the API starts while Redis is down, answers 503 meanwhile, and
//! recovers by itself.
//! - single node (`REDIS_CLUSTER=false`): a redis-rs `ConnectionManager` (one multiplexed
//!   connection per actix worker, shared by that worker's requests; it reconnects after I/O
//!   errors);
//! - cluster (`REDIS_CLUSTER=true`): redis-rs's async cluster client over the seed list (MOVED /
//!   ASK, topology refresh, failover), with bounded retries and timeouts.
//!
//! With `REDIS_WAIT_REPLICAS=n`, a metric write goes out as one pipeline `METRIC.ADD ...; WAIT n
//! timeout` on the same connection (in cluster mode redis-rs routes a pipeline by its first keyed
//! command, so `WAIT` reaches the node that took the write) and is acknowledged only if WAIT
//! counts at least n replicas. Rate-limit records are not WAITed: they are not data the API
//! acknowledges, and a record lost in a failover grants at most one extra request.
//!
//! A batch (`add_metrics`) is one pipeline of `METRIC.ADD`s (plus `WAIT`) on a single node. In
//! cluster mode redis-rs does not split a pipeline: it refuses one whose keys hash to different
//! slots. So the batch is grouped by hash slot (`keys::hash_slot`), one pipeline per slot, each
//! with its own trailing `WAIT` (it then runs on the node that took those writes), all sent
//! concurrently. A pipeline is not a transaction: if Redis fails midway some items may be
//! stored, and the API answers 503 ("not acknowledged", SPEC §6).
//!
//! `metric_types` walks `SCAN cursor MATCH metric:* TYPE tally-met COUNT 1000` until the cursor
//! is 0; in cluster mode the first call goes to every primary (`AllMasters`) and each primary's
//! cursor is then followed on that node (`ByAddress`). Never `KEYS`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use crate::config::Config;
use crate::keys;
use crate::payload::Metric;
use crate::ratelimit::Decision;

/// Why a Redis call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No connection, a timeout, a node loading or failing over: try again later.
    Unavailable(String),
    /// Redis answers but the tally module is not loaded.
    ModuleMissing,
    /// The write was taken but fewer replicas than required confirmed it.
    NotAcknowledged { replicas: i64, wanted: u32 },
    /// Redis refused the command (e.g. `WRONGTYPE`: the key holds something else).
    Server(String),
    /// The module refused an argument the client chose (a window beyond the retention, a range
    /// of too many buckets): the module's message without `ERR`. The client's fault: 422.
    Refused(String),
    /// A reply the API does not understand.
    Protocol(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "Redis unavailable: {why}"),
            StoreError::ModuleMissing => f.write_str("the tally module is not loaded in Redis"),
            StoreError::NotAcknowledged { replicas, wanted } => write!(
                f,
                "write not acknowledged: {replicas} of {wanted} replicas confirmed it"
            ),
            StoreError::Server(msg) => write!(f, "Redis error: {msg}"),
            StoreError::Refused(msg) => f.write_str(msg),
            StoreError::Protocol(msg) => write!(f, "unexpected Redis reply: {msg}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        match e.code() {
            // A server-side error reply.
            Some(code) => match code {
                "LOADING" | "CLUSTERDOWN" | "MASTERDOWN" | "TRYAGAIN" | "READONLY" | "MOVED"
                | "ASK" | "NOREPLICAS" | "BUSY" => StoreError::Unavailable(e.to_string()),
                "ERR" if e.detail().is_some_and(|d| d.contains("unknown command")) => {
                    StoreError::ModuleMissing
                }
                _ => StoreError::Server(e.to_string()),
            },
            // I/O, connect/response timeouts, no node for the slot, ...
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// An `ERR` reply whose message starts with one of `arguments` (`window_ms`, ...) is the module
/// refusing a client-chosen argument; anything else converts as usual.
fn refused(e: RedisError, arguments: &[&str]) -> StoreError {
    if e.code() == Some("ERR") {
        if let Some(detail) = e.detail() {
            if arguments.iter().any(|a| detail.starts_with(a)) {
                return StoreError::Refused(detail.to_string());
            }
        }
    }
    StoreError::from(e)
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Redis, as the API uses it. Cheap to share (`Arc` inside the connections).
pub struct Store {
    conn: Conn,
    cluster: bool,
    /// `(replicas, timeout_ms)` when writes wait for replicas.
    wait: Option<(u32, u64)>,
    /// Hard cap on one call (connect + response + WAIT), whatever the client library does.
    deadline: Duration,
}

/// `METRIC.SUMMARY`, as the API reports it (`None` = nil: no samples).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    /// Quantiles, when the module reports them (SPEC §5): outer `None` = not reported.
    pub p50: Option<Option<f64>>,
    pub p90: Option<Option<f64>>,
    pub p95: Option<Option<f64>>,
    pub p99: Option<Option<f64>>,
}

/// One bucket of `METRIC.RANGE`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Bucket start, unix ms.
    pub ts: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}

impl Store {
    /// Creates the (lazy) connection; nothing is sent yet. Must run inside a Tokio runtime.
    pub fn new(config: &Config) -> std::result::Result<Store, RedisError> {
        let wait = (config.redis_wait_replicas > 0)
            .then_some((config.redis_wait_replicas, config.redis_wait_timeout_ms));
        let wait_ms = wait.map_or(0, |(_, ms)| ms);
        let connect = config.redis_timeout;
        // A response may legitimately take the WAIT timeout on top of the usual time.
        let response = config.redis_timeout + Duration::from_millis(wait_ms);
        let conn = if config.redis_cluster {
            let client = ClusterClientBuilder::new(config.redis_urls.iter().map(String::as_str))
                // Bounded: a MOVED/ASK or a refresh after a failover is retried a couple of
                // times, quickly; the overall response timeout caps the whole request.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .connection_timeout(connect)
                .response_timeout(response)
                .overall_response_timeout(Some(response + connect))
                .build()?;
            let cfg = ClusterConfig::new()
                .set_connection_timeout(connect)
                .set_response_timeout(response);
            Conn::Cluster(client.get_pending_async_connection_with_config(cfg))
        } else {
            let client = redis::Client::open(config.redis_urls[0].as_str())?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response))
                // One quick retry per reconnect: while Redis is down requests fail fast (503)
                // instead of queueing behind a long backoff.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(200));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, cfg)?)
        };
        Ok(Store {
            conn,
            cluster: config.redis_cluster,
            wait,
            deadline: connect * 2 + response,
        })
    }

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
            async {
                match (self.conn.clone(), routing) {
                    (Conn::Single(mut c), _) => cmd.query_async::<Value>(&mut c).await,
                    (Conn::Cluster(mut c), None) => cmd.query_async::<Value>(&mut c).await,
                    (Conn::Cluster(mut c), Some(r)) => c.route_command(cmd.clone(), r).await,
                }
            },
            classify,
        )
        .await
    }

    async fn call_pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        self.bounded(
            async {
                match self.conn.clone() {
                    Conn::Single(mut c) => pipe.query_async::<Vec<Value>>(&mut c).await,
                    Conn::Cluster(mut c) => pipe.query_async::<Vec<Value>>(&mut c).await,
                }
            },
            StoreError::from,
        )
        .await
    }

    /// `request` within the store's deadline, whatever the client library does.
    async fn bounded<T>(
        &self,
        request: impl Future<Output = RedisResult<T>>,
        classify: impl FnOnce(RedisError) -> StoreError,
    ) -> Result<T> {
        match tokio::time::timeout(self.deadline, request).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(StoreError::Unavailable("timed out".to_string())),
        }
    }

    /// Sends a write, followed by `WAIT` in the same pipeline when replicas are required.
    async fn write(&self, cmd: Cmd) -> Result<Value> {
        if self.wait.is_none() {
            return self.call(&cmd).await;
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
        let mut replies = self.call_pipeline(&pipe).await?;
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
                    .map(|m| metric_add(keys::metric(&m.kind), m.value, m.ts_ms))
                    .collect(),
            )
            .await?;
            return Ok(());
        }
        let mut by_slot: BTreeMap<u16, Vec<Cmd>> = BTreeMap::new();
        for m in metrics {
            let key = keys::metric(&m.kind);
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

    /// The metric types that have a series: `SCAN ... MATCH metric:* TYPE tally-met` over the
    /// whole keyspace (every primary in cluster mode), sorted, without duplicates.
    pub async fn metric_types(&self) -> Result<Vec<String>> {
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
        Ok(types.into_iter().collect())
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

    /// `METRIC.ADD metric:<kind> <value> TS <ts_ms>`; returns the series' sample count.
    pub async fn add_metric(&self, kind: &str, value: f64, ts_ms: u64) -> Result<i64> {
        int(&self
            .write(metric_add(keys::metric(kind), value, ts_ms))
            .await?)
    }

    /// `METRIC.SUMMARY metric:<kind> [WINDOW window_ms]`. A window beyond the retention is
    /// `Refused` with the module's message (`window_ms must be an integer between 1 and <ms>`).
    pub async fn summary(&self, kind: &str, window_ms: Option<u64>) -> Result<Summary> {
        let mut cmd = redis::cmd("METRIC.SUMMARY");
        cmd.arg(keys::metric(kind));
        if let Some(w) = window_ms {
            cmd.arg("WINDOW").arg(w);
        }
        parse_summary(
            self.call_as(&cmd, None, |e| refused(e, &["window_ms"]))
                .await?,
        )
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
                refused(e, &["the range spans", "bucket_ms", "from_ms", "to_ms"])
            })
            .await?;
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
        parse_decision(self.call(&cmd).await?)
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

/// One SCAN reply `[cursor, [key, ...]]`: adds the types of its keys to `types` and returns
/// the next cursor (0 = done).
fn scan_page(v: Value, types: &mut BTreeSet<String>) -> Result<u64> {
    let bad = |v: &Value| StoreError::Protocol(format!("SCAN: {v:?}"));
    let Value::Array(parts) = &v else {
        return Err(match v {
            Value::ServerError(e) => StoreError::from(RedisError::from(e)),
            other => bad(&other),
        });
    };
    let [cursor, Value::Array(keys)] = parts.as_slice() else {
        return Err(bad(&v));
    };
    let cursor = name(cursor)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| bad(&v))?;
    for key in keys {
        let key = name(key).ok_or_else(|| bad(&v))?;
        if let Some(kind) = key.strip_prefix(keys::METRIC_PREFIX.as_bytes()) {
            types.insert(String::from_utf8_lossy(kind).into_owned());
        }
    }
    Ok(cursor)
}

/// The reply of `METRIC.RANGE`: an array of records (RESP2 flat pairs or RESP3 maps).
pub fn parse_points(v: Value) -> Result<Vec<Point>> {
    let Value::Array(items) = v else {
        return Err(StoreError::Protocol(format!("METRIC.RANGE: {v:?}")));
    };
    items
        .into_iter()
        .map(|item| {
            let mut p = Point::default();
            for (k, v) in record(item, "METRIC.RANGE")? {
                let Some(k) = name(&k) else { continue };
                let n = || {
                    number(&v)?
                        .ok_or_else(|| StoreError::Protocol(format!("nil in a point: {v:?}")))
                };
                match k {
                    b"ts" => p.ts = n()? as i64,
                    b"count" => p.count = n()? as u64,
                    b"sum" => p.sum = n()?,
                    b"min" => p.min = n()?,
                    b"max" => p.max = n()?,
                    b"avg" => p.avg = n()?,
                    _ => {}
                }
            }
            Ok(p)
        })
        .collect()
}

/// A record reply as its (name, value) pairs: a RESP2 flat array of pairs or a RESP3 map.
fn record(v: Value, what: &str) -> Result<Vec<(Value, Value)>> {
    match v {
        Value::Map(entries) => Ok(entries),
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut it = items.into_iter();
            let mut out = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(StoreError::Protocol(format!("{what}: {other:?}"))),
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(StoreError::Protocol(format!(
            "expected an integer: {other:?}"
        ))),
    }
}

/// A number field: RESP2 bulk string or integer, RESP3 double; nil is `None`.
fn number(v: &Value) -> Result<Option<f64>> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(n) => Ok(Some(*n as f64)),
        Value::Double(d) => Ok(Some(*d)),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Protocol(format!("not a number: {v:?}"))),
        other => Err(StoreError::Protocol(format!("not a number: {other:?}"))),
    }
}

fn name(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The record reply of `METRIC.SUMMARY`: a RESP2 flat array of pairs or a RESP3 map. Fields
/// are found by name; unknown ones are ignored, so new module fields do not break the API.
pub fn parse_summary(v: Value) -> Result<Summary> {
    let pairs = record(v, "METRIC.SUMMARY")?;
    let mut s = Summary::default();
    for (k, v) in &pairs {
        let Some(k) = name(k) else { continue };
        match k {
            b"count" => s.count = number(v)?.unwrap_or(0.0) as u64,
            b"sum" => s.sum = number(v)?,
            b"min" => s.min = number(v)?,
            b"max" => s.max = number(v)?,
            b"avg" => s.avg = number(v)?,
            b"stddev" => s.stddev = number(v)?,
            b"first_ts" => s.first_ts = number(v)?.map(|t| t as i64),
            b"last_ts" => s.last_ts = number(v)?.map(|t| t as i64),
            b"p50" => s.p50 = Some(number(v)?),
            b"p90" => s.p90 = Some(number(v)?),
            b"p95" => s.p95 = Some(number(v)?),
            b"p99" => s.p99 = Some(number(v)?),
            _ => {}
        }
    }
    Ok(s)
}

/// The reply of `RATELIMIT.CHECK`: a RESP2 array of 5 integers or a RESP3 map.
pub fn parse_decision(v: Value) -> Result<Decision> {
    let ints: Vec<i64> = match &v {
        Value::Array(items) if items.len() == 5 => {
            items.iter().map(int).collect::<Result<Vec<_>>>()?
        }
        Value::Map(entries) if entries.len() == 5 => entries
            .iter()
            .map(|(_, v)| int(v))
            .collect::<Result<Vec<_>>>()?,
        other => return Err(StoreError::Protocol(format!("RATELIMIT.CHECK: {other:?}"))),
    };
    Ok(Decision {
        allowed: ints[0] == 1,
        limit: ints[1],
        remaining: ints[2],
        retry_after_ms: ints[3],
        reset_after_ms: ints[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn an_empty_summary_has_count_zero_and_nil_fields() {
        let mut items = vec![bulk("count"), Value::Int(0)];
        for f in ["sum", "min", "max", "avg", "stddev", "first_ts", "last_ts"] {
            items.push(bulk(f));
            items.push(Value::Nil);
        }
        let s = parse_summary(Value::Array(items)).unwrap();
        assert_eq!(s, Summary::default());
    }

    #[test]
    fn summary_fields_are_read_by_name_from_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            bulk("count"),
            Value::Int(2),
            bulk("avg"),
            bulk("50"),
            bulk("first_ts"),
            Value::Int(1000),
            bulk("p99"),
            Value::Nil,
            bulk("something_new"),
            bulk("x"),
        ]);
        let s = parse_summary(resp2).unwrap();
        assert_eq!((s.count, s.avg, s.first_ts), (2, Some(50.0), Some(1000)));
        assert_eq!(s.p99, Some(None));
        assert_eq!(s.p50, None);
        let resp3 = Value::Map(vec![
            (bulk("count"), Value::Int(1)),
            (bulk("max"), Value::Double(75.5)),
        ]);
        let s = parse_summary(resp3).unwrap();
        assert_eq!((s.count, s.max), (1, Some(75.5)));
    }

    #[test]
    fn a_decision_is_read_from_five_integers() {
        let d = parse_decision(Value::Array(
            [0, 5, 0, 1200, 59000].map(Value::Int).to_vec(),
        ))
        .unwrap();
        assert!(!d.allowed);
        assert_eq!(
            (d.limit, d.retry_after_ms, d.reset_after_ms),
            (5, 1200, 59000)
        );
        assert!(parse_decision(Value::Array(vec![Value::Int(1)])).is_err());
    }

    #[test]
    fn connection_errors_mean_redis_is_unavailable() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
    }
}
