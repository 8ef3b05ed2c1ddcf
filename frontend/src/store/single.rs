//! The connections of one worker to a single Redis node: one shared multiplexed connection,
//! redialled at once when it breaks, and a pool of connections for pipelines that end in
//! `WAIT` (see the store's module doc).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisResult,
    Value,
};

use super::error::broken;
use super::tls::Tls;

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
pub(super) struct Single {
    info: ConnectionInfo,
    /// Set for a `rediss://` URL: every connection is TLS over its TCP stream.
    tls: Option<Tls>,
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
    /// No connection yet: the first call dials. `response` bounds an answer on the shared
    /// connection, `wait_response` one on a WAIT connection.
    pub(super) fn new(
        info: ConnectionInfo,
        tls: Option<Tls>,
        connect: Duration,
        response: Duration,
        wait_response: Duration,
    ) -> Single {
        Single {
            info,
            tls,
            connect,
            response,
            wait_response,
            shared: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            wait_idle: Mutex::new(Vec::new()),
            wait_slots: tokio::sync::Semaphore::new(WAIT_CONNECTIONS),
        }
    }

    /// Opens a new connection (`connect` bounds the TCP connect, the TLS handshake if any and
    /// Redis's handshake), its driver
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
                ConnectionAddr::TcpTls { host, port, .. } => {
                    let Some(tls) = &self.tls else {
                        return Err(RedisError::from((
                            redis::ErrorKind::InvalidClientConfig,
                            "a rediss:// address without a TLS configuration",
                        )));
                    };
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    let stream = tls.handshake(stream).await?;
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
    pub(super) async fn query(&self, cmd: &Cmd, retry: bool) -> RedisResult<Value> {
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
    pub(super) async fn query_pipeline(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        self.shared()
            .await?
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// A pipeline that ends in `WAIT`, on a connection of its own from the WAIT pool.
    pub(super) async fn query_waiting(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
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
