//! Builds the HTTP server from a listener the caller owns (port 0 in tests), so the real stack
//! is what tests talk to.

use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::middleware::{Condition, Logger};
use actix_web::{web, App, HttpServer};

use crate::breaker::{Breaker, Clock, SystemClock, DEFAULT_TRIAL_CALLS};
use crate::config::Config;
use crate::decisions::{Decisions, FLUSH_INTERVAL};
use crate::known_types::KnownTypes;
use crate::labels::Labels;
use crate::policies::Policies;
use crate::routes::deadline::{self, Connection, KEEP_ALIVE, REQUEST_DEADLINE};
use crate::routes::limit::Limiter;
use crate::routes::{self, AppState};
use crate::store::{InvalidUrl, Store, TypeIndex};
use crate::telemetry::Telemetry;
use crate::upstream::Upstream;

#[derive(Debug)]
pub enum StartupError {
    Bind(String, std::io::Error),
    Redis(InvalidUrl),
    Upstream(reqwest::Error),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartupError::Redis(e) => write!(f, "invalid REDIS_URL: {e}"),
            StartupError::Upstream(e) => write!(f, "invalid EXTERNAL_SERVICE_URL: {e}"),
        }
    }
}

impl std::error::Error for StartupError {}

/// How long a SIGTERM waits for requests in flight.
const SHUTDOWN_TIMEOUT_S: u64 = 10;
/// The `log` target of actix's `Logger` middleware (one info line per request).
const ACCESS_LOG_TARGET: &str = "actix_web::middleware::logger";

pub struct Application {
    port: u16,
    server: Server,
    /// Asks the flush task for its last flush (when the server has stopped).
    stop_flushing: Arc<tokio::sync::Notify>,
    flusher: tokio::task::JoinHandle<()>,
}

/// Flushes `decisions` every `FLUSH_INTERVAL` on a store of its own, and once more when
/// `stop` is notified (then returns). A failure is logged when it starts and when it ends.
async fn flush_decisions(decisions: Arc<Decisions>, store: Store, stop: Arc<tokio::sync::Notify>) {
    use futures_util::future::{select, Either};
    let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let last = {
            let tick = std::pin::pin!(ticks.tick());
            let stopped = std::pin::pin!(stop.notified());
            matches!(select(tick, stopped).await, Either::Right(_))
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match decisions.flush(&store, now_ms).await {
            Ok(()) if failing => {
                failing = false;
                log::info!("limiter analytics are flushed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                log::warn!("limiter analytics not flushed (kept, retried every second): {e}");
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

impl Application {
    /// Binds `HOST:PORT` and builds the server with the real clock.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .map_err(|e| StartupError::Bind(addr, e))?;
        Application::build_with(config, listener, Arc::new(SystemClock))
    }

    /// Builds the server on `listener` with `clock` driving the circuit breaker. Must run
    /// inside a Tokio runtime (the Redis connection is created, lazily, here).
    pub fn build_with(
        config: Config,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let local = listener
            .local_addr()
            .map_err(|e| StartupError::Bind("listener".to_string(), e))?;
        // Checks the Redis settings now; each worker then makes its own (lazy) connections.
        // The cache of known metric types, and what is known of the type index, are one per
        // process.
        let known = KnownTypes::new(config.max_types);
        let labels = Arc::new(Labels::new(config.max_series_per_type));
        let type_index = TypeIndex::new();
        Store::new(&config, type_index.clone()).map_err(StartupError::Redis)?;
        let upstream = match &config.external_service_url {
            Some(url) => Upstream::http(url.clone(), config.external_service_timeout)
                .map_err(StartupError::Upstream)?,
            None => Upstream::simulator(config.external_service_failure_rate),
        };
        let upstream = Arc::new(upstream);
        let breaker = Arc::new(Breaker::new(
            config.cb_failure_threshold,
            config.cb_reset_timeout,
            DEFAULT_TRIAL_CALLS,
            clock,
        ));
        let telemetry = Arc::new(Telemetry::new(&routes::LABELS));
        let policies = Policies::from_config(&config);
        telemetry
            .policy_decisions
            .set_names(policies.rules.iter().map(|r| r.name.clone()).collect());
        let limiter = Limiter::new(policies);
        // The limiter's decisions, counted in memory and flushed by a task of their own.
        let names: Vec<&str> = limiter
            .policies
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let decisions = Decisions::new(&names);
        let stop_flushing = Arc::new(tokio::sync::Notify::new());
        let flusher = tokio::spawn(flush_decisions(
            decisions.clone(),
            Store::new(&config, type_index.clone()).map_err(StartupError::Redis)?,
            stop_flushing.clone(),
        ));
        // Access lines are info records of actix's logger: when `RUST_LOG` hides them, the
        // middleware is left out rather than formatting each request for nothing.
        let access_log = log::log_enabled!(target: ACCESS_LOG_TARGET, log::Level::Info);
        let workers = config.workers;
        let server = HttpServer::new(move || {
            // Runs once per worker, on its thread: the connection's tasks live there too.
            let state = web::Data::new(AppState {
                store: Store::new(&config, type_index.clone())
                    .expect("checked before the workers start"),
                known: known.clone(),
                labels: labels.clone(),
                config: config.clone(),
                limiter: limiter.clone(),
                breaker: breaker.clone(),
                upstream: upstream.clone(),
                telemetry: telemetry.clone(),
                decisions: decisions.clone(),
            });
            let telemetry = telemetry.clone();
            App::new()
                .app_data(state)
                // Innermost: the telemetry and the access log see its 408.
                .wrap_fn(deadline::body_deadline)
                .wrap_fn(move |req, srv| {
                    let route = routes::label_index(req.path());
                    let start = Instant::now();
                    let telemetry = telemetry.clone();
                    let response = srv.call(req);
                    async move {
                        let res = response.await?;
                        telemetry.observe(route, res.status().as_u16(), start.elapsed());
                        Ok(res)
                    }
                })
                // One line per request; %a is the TCP peer (not a forwarded header).
                .wrap(Condition::new(
                    access_log,
                    Logger::new("%a \"%r\" %s %b %Dms"),
                ))
                .configure(routes::configure)
        });
        // `WORKERS`, else actix's default (one per CPU).
        let server = match workers {
            Some(n) => server.workers(n),
            None => server,
        };
        let server = server
            // Slow clients: the head of a connection's first request within REQUEST_DEADLINE
            // (else actix answers 408 and closes); the body by the same deadline (body_deadline);
            // the head of a later request watched by the connection's watchdog.
            .client_request_timeout(REQUEST_DEADLINE)
            .keep_alive(KEEP_ALIVE)
            .on_connect(Connection::on_connect)
            .listen(listener)
            .map_err(|e| StartupError::Bind(local.to_string(), e))?
            // SIGTERM / SIGINT: stop accepting, finish what is in flight (up to this long).
            .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
            .run();
        log::info!("tally-api listening on {local}");
        Ok(Application {
            port: local.port(),
            server,
            stop_flushing,
            flusher,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`stop(true)` waits for requests in flight).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs the server; once it has stopped, the decisions counted since the last flush are
    /// flushed (for at most `FLUSH_INTERVAL` + the Redis timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.stop_flushing.notify_one();
        let mut flusher = self.flusher;
        if tokio::time::timeout(FLUSH_INTERVAL * 3, &mut flusher)
            .await
            .is_err()
        {
            flusher.abort();
        }
        result
    }
}
