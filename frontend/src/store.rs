//! The only place that speaks to Redis. Every call is bounded by a deadline, so a request never
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
//! the write goes out. A type the process has seen stored is cached in memory (at most
//! `MAX_TYPES` names), so writes of known types cost no extra round trip. An index missing its
//! marker key (`keys::TYPE_INDEX_BUILT`: a deployment that predates the index) is built once
//! from `SCAN cursor MATCH metric:* TYPE tally-met COUNT 1000` (in cluster mode on every
//! primary), never per request.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisResult,
    Value,
};

use crate::config::Config;
use crate::keys;
use crate::payload::Metric;
use crate::ratelimit::Decision;

/// Why a Redis call did not succeed. The `String`s are for the log, never for a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No connection, a timeout, a node loading or failing over: try again later.
    Unavailable(String),
    /// Redis answers but the tally module is not loaded.
    ModuleMissing,
    /// The write was taken but fewer replicas than required confirmed it.
    NotAcknowledged { replicas: i64, wanted: u32 },
    /// A metric type's key holds a value that is not a metric series (`WRONGTYPE`); the type,
    /// when known.
    WrongType(Option<String>),
    /// Storing these types would make more than `max` distinct types (`MAX_TYPES`).
    TooManyTypes { max: usize },
    /// Redis refused the command for another reason.
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
            StoreError::WrongType(Some(kind)) => {
                write!(
                    f,
                    "the key of metric type {kind:?} holds another Redis type"
                )
            }
            StoreError::WrongType(None) => f.write_str("a metric key holds another Redis type"),
            StoreError::TooManyTypes { max } => {
                write!(f, "the type index already holds {max} types (MAX_TYPES)")
            }
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
                "WRONGTYPE" => StoreError::WrongType(None),
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

/// Whether `e` says the connection it came from is broken (or stuck): it is then dropped, and
/// the next call dials a new one.
fn broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Most WAIT pipelines in flight at once per worker (each on a connection of its own).
pub const WAIT_CONNECTIONS: usize = 256;
/// WAIT connections a worker keeps open while idle.
pub const WAIT_IDLE: usize = 16;

/// One multiplexed connection and whether its driver task still runs.
#[derive(Clone)]
struct Live {
    conn: MultiplexedConnection,
    alive: Arc<AtomicBool>,
}

impl Live {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn kill(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Runs `request` on this connection; an error that says the connection is broken marks
    /// it dead.
    async fn run<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let r = request(self.conn.clone()).await;
        if let Err(e) = &r {
            if broken(e) {
                self.kill();
            }
        }
        r
    }
}

/// The task that drives a connection: it ends when the socket closes.
type Driver = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The connections of one worker to a single Redis node (see the module doc).
struct Single {
    info: ConnectionInfo,
    connect: Duration,
    /// Response timeout of the shared connection.
    response: Duration,
    /// Response timeout of a WAIT connection (`response` + the WAIT timeout).
    wait_response: Duration,
    shared: Mutex<Option<Live>>,
    /// Held while the shared connection is dialled, so concurrent requests share one dial.
    dialing: tokio::sync::Mutex<()>,
    wait_idle: Mutex<Vec<Live>>,
    wait_slots: tokio::sync::Semaphore,
}

impl Single {
    /// Opens a new connection (`connect` bounds the TCP connect and the handshake), its driver
    /// spawned on the current runtime; the driver clears `alive` when the socket closes.
    async fn dial(&self, response: Duration) -> RedisResult<Live> {
        let cfg = AsyncConnectionConfig::new().set_response_timeout(Some(response));
        let redis = self.info.redis_settings();
        let setup = async {
            match self.info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    let (conn, driver) =
                        MultiplexedConnection::new_with_config(redis, stream, cfg).await?;
                    Ok((conn, Box::pin(driver) as Driver))
                }
                ConnectionAddr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    let (conn, driver) =
                        MultiplexedConnection::new_with_config(redis, stream, cfg).await?;
                    Ok((conn, Box::pin(driver) as Driver))
                }
                other => Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "unsupported address",
                    format!("{other}"),
                ))),
            }
        };
        let (conn, driver) = match tokio::time::timeout(self.connect, setup).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            }
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        tokio::spawn(async move {
            driver.await;
            flag.store(false, Ordering::Release);
        });
        Ok(Live { conn, alive })
    }

    fn current(&self) -> Option<Live> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.as_ref().filter(|l| l.is_alive()).cloned()
    }

    /// The shared connection, dialled now if there is none or it is dead.
    async fn shared(&self) -> RedisResult<Live> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let live = self.dial(self.response).await?;
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        Ok(live)
    }

    /// A command on the shared connection; with `retry`, a broken connection (not a timeout)
    /// is replaced and the command sent once more.
    async fn query(&self, cmd: &Cmd, retry: bool) -> RedisResult<Value> {
        let send = |mut c: MultiplexedConnection| async move { cmd.query_async(&mut c).await };
        match self.shared().await?.run(send).await {
            Err(e) if retry && broken(&e) && !e.is_timeout() => {
                log::info!("retrying a read on a new connection after: {e}");
                self.shared().await?.run(send).await
            }
            r => r,
        }
    }

    /// A pipeline on the shared connection (never retried).
    async fn query_pipeline(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        self.shared()
            .await?
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// A pipeline that ends in `WAIT`, on a connection of its own from the WAIT pool.
    async fn query_waiting(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let _slot =
            self.wait_slots.acquire().await.map_err(|_| {
                RedisError::from((redis::ErrorKind::Client, "the WAIT pool is closed"))
            })?;
        let idle = {
            let mut idle = self.wait_idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(Live::is_alive);
            idle.pop()
        };
        let live = match idle {
            Some(live) => live,
            None => self.dial(self.wait_response).await?,
        };
        let r = live
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await;
        // Dropped if the request was cancelled (the deadline): a connection that may still be
        // blocked in WAIT never goes back to the pool.
        if live.is_alive() {
            let mut idle = self.wait_idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < WAIT_IDLE {
                idle.push(live);
            }
        }
        r
    }
}

enum Conn {
    Single(Box<Single>),
    Cluster {
        /// Reads, the health probe, rate limits, the type index, unWAITed writes.
        shared: ClusterConnection,
        /// Writes followed by `WAIT` (a second connection when replicas are required).
        waiting: ClusterConnection,
    },
}

/// Metric types this process has seen stored, shared by its workers; at most `max` names.
pub struct KnownTypes {
    names: RwLock<HashSet<String>>,
    /// Whether the index is known to be complete (its marker key was seen or written).
    indexed: AtomicBool,
    max: usize,
}

impl KnownTypes {
    pub fn new(max: usize) -> Arc<KnownTypes> {
        Arc::new(KnownTypes {
            names: RwLock::new(HashSet::new()),
            indexed: AtomicBool::new(false),
            max,
        })
    }

    fn contains(&self, kind: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(kind)
    }

    fn insert_all<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        for kind in kinds {
            if names.len() >= self.max {
                return;
            }
            if !names.contains(kind) {
                names.insert(kind.to_string());
            }
        }
    }

    fn forget_all<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        for kind in kinds {
            names.remove(kind);
        }
    }
}

/// The types of a POST that are not known yet: `Store::admit` checked them (their keys hold no
/// foreign value, the index has room); the write adds them to the index first.
#[derive(Debug, Default)]
pub struct Admitted {
    new: Vec<String>,
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
    known: Arc<KnownTypes>,
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
    /// Creates the (lazy) connections; nothing is sent yet. Must run inside a Tokio runtime.
    /// `known` is the process-wide cache of stored types (`KnownTypes::new(MAX_TYPES)`).
    pub fn new(config: &Config, known: Arc<KnownTypes>) -> std::result::Result<Store, RedisError> {
        let wait = (config.redis_wait_replicas > 0)
            .then_some((config.redis_wait_replicas, config.redis_wait_timeout_ms));
        let wait_ms = Duration::from_millis(wait.map_or(0, |(_, ms)| ms));
        let connect = config.redis_timeout;
        let response = config.redis_timeout;
        // A WAIT pipeline may legitimately take the WAIT timeout on top of the usual time.
        let wait_response = response + wait_ms;
        let conn = if config.redis_cluster {
            let client = ClusterClientBuilder::new(config.redis_urls.iter().map(String::as_str))
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
            Conn::Single(Box::new(Single {
                info: client.get_connection_info().clone(),
                connect,
                response,
                wait_response,
                shared: Mutex::new(None),
                dialing: tokio::sync::Mutex::new(()),
                wait_idle: Mutex::new(Vec::new()),
                wait_slots: tokio::sync::Semaphore::new(WAIT_CONNECTIONS),
            }))
        };
        // A read may dial, fail on a broken connection, dial again and wait for its answer.
        let deadline = connect * 2 + response;
        Ok(Store {
            conn,
            cluster: config.redis_cluster,
            wait,
            deadline,
            wait_deadline: deadline + wait_ms,
            known,
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

    /// Checks, before any rate-limit budget is spent, that the metric types `kinds` can be
    /// stored: for those this process does not know yet (none if all are known: no round
    /// trip), their keys must not hold a foreign value (`WrongType`) and the index must have
    /// room for the new ones (`TooManyTypes`).
    pub async fn admit(&self, kinds: &[&str]) -> Result<Admitted> {
        let mut unknown: Vec<String> = kinds
            .iter()
            .filter(|k| !self.known.contains(k))
            .map(|k| k.to_string())
            .collect();
        if unknown.is_empty() {
            return Ok(Admitted::default());
        }
        unknown.sort_unstable();
        unknown.dedup();
        self.ensure_indexed().await?;
        let types = futures_util::future::join_all(unknown.iter().map(|kind| {
            let mut cmd = redis::cmd("TYPE");
            cmd.arg(keys::metric(kind));
            async move { (kind, self.call(&cmd).await) }
        }));
        let (types, room) = futures_util::future::join(types, self.index(&unknown, false)).await;
        for (kind, reply) in types {
            match name(&reply?) {
                Some(b"none") => {}
                Some(t) if t == keys::METRIC_TYPE_NAME.as_bytes() => {}
                _ => return Err(StoreError::WrongType(Some(kind.clone()))),
            }
        }
        room?;
        Ok(Admitted { new: unknown })
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
        let max = self.known.max;
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

    /// Adds the admitted new types to the index (`TooManyTypes` if another instance took the
    /// last room since `admit`).
    async fn register(&self, admitted: &Admitted) -> Result<()> {
        if admitted.new.is_empty() {
            return Ok(());
        }
        self.index(&admitted.new, true).await
    }

    /// After a write: its types are known from now on; after a `WRONGTYPE`, none of them is.
    fn remember<'a, T>(&self, kinds: impl Iterator<Item = &'a str>, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => {
                self.known.insert_all(kinds);
                Ok(v)
            }
            Err(StoreError::WrongType(kind)) => {
                let kinds: Vec<&str> = kinds.collect();
                self.known.forget_all(kinds.iter().copied());
                let kind = kind.or_else(|| (kinds.len() == 1).then(|| kinds[0].to_string()));
                Err(StoreError::WrongType(kind))
            }
            Err(e) => Err(e),
        }
    }

    /// Builds the index from the keyspace once if its marker key is missing (a deployment
    /// older than the index); then never again in this process.
    async fn ensure_indexed(&self) -> Result<()> {
        if self.known.indexed.load(Ordering::Acquire) {
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
        self.known.indexed.store(true, Ordering::Release);
        Ok(())
    }

    /// Stores every metric of a batch: one pipeline of `METRIC.ADD`s (one per hash slot in
    /// cluster mode, sent concurrently; see the module doc). `Ok` only if every write (and
    /// every WAIT) succeeded.
    pub async fn add_metrics(&self, admitted: &Admitted, metrics: &[Metric]) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        self.register(admitted).await?;
        let r = self.add_metrics_unindexed(metrics).await;
        self.remember(metrics.iter().map(|m| m.kind.as_str()), r)
    }

    async fn add_metrics_unindexed(&self, metrics: &[Metric]) -> Result<()> {
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

    /// `METRIC.ADD metric:<kind> <value> TS <ts_ms>`; returns the series' sample count.
    /// The type goes into the index first if `admit` found it new.
    pub async fn add_metric(
        &self,
        admitted: &Admitted,
        kind: &str,
        value: f64,
        ts_ms: u64,
    ) -> Result<i64> {
        self.register(admitted).await?;
        let r = self
            .write(metric_add(keys::metric(kind), value, ts_ms))
            .await;
        let r = r.and_then(|v| int(&v));
        self.remember(std::iter::once(kind), r)
    }

    /// `METRIC.SUMMARY metric:<kind> [WINDOW window_ms]`. A window beyond the retention is
    /// `Refused` with the module's message (`window_ms must be an integer between 1 and <ms>`).
    pub async fn summary(&self, kind: &str, window_ms: Option<u64>) -> Result<Summary> {
        let mut cmd = redis::cmd("METRIC.SUMMARY");
        cmd.arg(keys::metric(kind));
        if let Some(w) = window_ms {
            cmd.arg("WINDOW").arg(w);
        }
        let reply = self
            .call_as(&cmd, None, |e| refused(e, &["window_ms"]))
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
                refused(e, &["the range spans", "bucket_ms", "from_ms", "to_ms"])
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

/// A `WrongType` error names `kind`.
fn with_kind(e: StoreError, kind: &str) -> StoreError {
    match e {
        StoreError::WrongType(None) => StoreError::WrongType(Some(kind.to_string())),
        e => e,
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
    fn the_cache_of_known_types_holds_at_most_max_types_names() {
        let known = KnownTypes::new(2);
        known.insert_all(["a", "b", "c", "a"]);
        assert!(known.contains("a") && known.contains("b") && !known.contains("c"));
        known.forget_all(["a"]);
        known.insert_all(["c"]);
        assert!(!known.contains("a") && known.contains("c"));
    }

    #[test]
    fn wrongtype_is_its_own_error_and_io_errors_break_the_connection() {
        let wrong = redis::make_extension_error(
            "WRONGTYPE".to_string(),
            Some("Operation against a key holding the wrong kind of value".to_string()),
        );
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert!(broken(&io));
        assert!(!broken(&wrong));
        assert_eq!(
            with_kind(StoreError::from(wrong), "cpu"),
            StoreError::WrongType(Some("cpu".to_string()))
        );
    }

    #[test]
    fn connection_errors_mean_redis_is_unavailable() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
    }
}
