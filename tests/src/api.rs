//! The API under test: [`TestApp`] runs the real HTTP stack in-process on a port-0 listener
//! (one method per endpoint, the breaker's clock driven by the test), [`ApiProc`] runs the
//! release `tally-api` binary as a process, and [`Upstream`] is a tiny scripted upstream for
//! `/external`.

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_api::breaker::ManualClock;
use tally_api::config::Config;
use tally_api::startup::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{self, client_within, header, json};
use crate::redis::Value;
use crate::{free_port, Proc, Server, TempDir};

pub const EXAMPLE: &str = r#"{"timestamp":"2025-01-01T10:00:00","value":75,"type":"cpu"}"#;

/// The defaults, pointed at `redis_url`, listening on loopback, with a simulator that never
/// fails (tests that want failures say so).
pub fn config(redis_url: &str) -> Config {
    Config {
        redis_urls: vec![redis_url.to_string()],
        host: "127.0.0.1".to_string(),
        port: 0,
        external_service_failure_rate: 0.0,
        ..Config::default()
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    /// The API with default settings on `server`.
    pub async fn spawn(server: &Server) -> TestApp {
        TestApp::spawn_with(config(&server.url())).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        // Quiet unless asked (RUST_LOG=info shows one line per request).
        if std::env::var_os("RUST_LOG").is_some() {
            tally_api::telemetry::init_logging();
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let clock = ManualClock::new();
        let app = Application::build_with(config, listener, clock.clone()).expect("build the app");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            client: client_within(Duration::from_secs(20)),
            clock,
            handle,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the base URL")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn health(&self) -> reqwest::Response {
        self.get("/health").await
    }

    /// `POST /api/metrics` with a JSON body.
    pub async fn post_metric(&self, body: &str) -> reqwest::Response {
        self.post_metric_as(body, Some("application/json"), None)
            .await
    }

    /// `POST /api/metrics` with an explicit content type and `X-Forwarded-For`.
    pub async fn post_metric_as(
        &self,
        body: &str,
        content_type: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/api/metrics"))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(xff) = forwarded_for {
            req = req.header("x-forwarded-for", xff);
        }
        req.send().await.expect("POST /api/metrics")
    }

    pub async fn summary(&self, metric_type: &str) -> reqwest::Response {
        self.client
            .get(self.url("/api/metrics/summary"))
            .query(&[("metric_type", metric_type)])
            .send()
            .await
            .expect("GET summary")
    }

    /// `GET /api/metrics/summary?metric_type=<type>&window=<window>` (`window` sent as given).
    pub async fn summary_window(&self, metric_type: &str, window: &str) -> reqwest::Response {
        self.client
            .get(self.url("/api/metrics/summary"))
            .query(&[("metric_type", metric_type), ("window", window)])
            .send()
            .await
            .expect("GET summary?window")
    }

    /// `GET /api/metrics/series` with these query parameters.
    pub async fn series(&self, query: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .get(self.url("/api/metrics/series"))
            .query(query)
            .send()
            .await
            .expect("GET series")
    }

    /// `POST /api/metrics/batch` with a JSON body.
    pub async fn post_batch(&self, body: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/metrics/batch"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /api/metrics/batch")
    }

    pub async fn types(&self) -> reqwest::Response {
        self.get("/api/metrics/types").await
    }

    pub async fn external(&self) -> reqwest::Response {
        self.get("/external").await
    }

    pub async fn prometheus(&self) -> String {
        self.get("/metrics").await.text().await.expect("text")
    }

    pub async fn openapi(&self) -> reqwest::Response {
        self.get("/openapi.json").await
    }

    pub async fn docs(&self) -> reqwest::Response {
        self.get("/docs").await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command now; the future only waits for completion.
        drop(self.handle.stop(false));
    }
}

/// Asserts a 429 with the default 5-per-60 s policy headers, `remaining` left, a `Retry-After`
/// of whole seconds in 1..=60, and the JSON body.
pub async fn assert_too_many_requests(resp: reqwest::Response, remaining: u64) {
    assert_eq!(
        header(&resp, "ratelimit-policy").as_deref(),
        Some("\"default\";q=5;w=60")
    );
    let ratelimit = header(&resp, "ratelimit").expect("RateLimit");
    let prefix = format!("\"default\";r={remaining};t=");
    assert!(ratelimit.starts_with(&prefix), "{ratelimit}");
    let retry: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, body) = json(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body, serde_json::json!({"detail": "Too many requests"}));
}

/// A `POST /api/metrics` body: one sample of `kind`, value 1, at a fixed past time.
pub fn metric(kind: &str) -> String {
    format!(r#"{{"timestamp":"2025-01-01T10:00:00Z","value":1,"type":"{kind}"}}"#)
}

/// `POST /api/metrics` of a JSON `body` to the API at `base`.
pub fn post_body(http: &reqwest::Client, base: &str, body: String) -> reqwest::RequestBuilder {
    http.post(format!("{base}/api/metrics"))
        .header("content-type", "application/json")
        .body(body)
}

/// A valid POST is stored with the whole default budget (5 per 60 s) left but this one: what
/// came before used none.
pub async fn assert_whole_budget(app: &TestApp) {
    let resp = app.post_metric(EXAMPLE).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "ratelimit").as_deref(),
        Some("\"default\";r=4;t=60")
    );
}

/// `count` of `METRIC.SUMMARY metric:<kind>`, read straight from Redis.
pub fn stored_count(server: &Server, kind: &str) -> i64 {
    let mut c = server.conn();
    let v = server
        .run(&mut c, &["METRIC.SUMMARY", &format!("metric:{kind}")])
        .expect("METRIC.SUMMARY");
    crate::field_f64(&v, "count").unwrap_or(0.0) as i64
}

/// Whether `key` exists in Redis.
pub fn exists(server: &Server, key: &str) -> bool {
    let mut c = server.conn();
    server.run(&mut c, &["EXISTS", key]).expect("EXISTS") == Value::Int(1)
}

/// A scripted HTTP upstream on 127.0.0.1:0: answers every request with `status` (and a JSON
/// body on 200, a `Location` header when one is set) after `delay_ms`, and counts the requests
/// it got.
pub struct Upstream {
    pub url: String,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
    location: Arc<Mutex<Option<String>>>,
}

impl Upstream {
    pub async fn start(status: u16) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let url = format!("http://{}/value", listener.local_addr().expect("addr"));
        let status = Arc::new(AtomicU16::new(status));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let location = Arc::new(Mutex::new(None::<String>));
        let (s, d, h, l) = (
            status.clone(),
            delay_ms.clone(),
            hits.clone(),
            location.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (s, d, h, l) = (s.clone(), d.clone(), h.clone(), l.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                    let status = s.load(Ordering::SeqCst);
                    let body = if status == 200 {
                        r#"{"answer":42}"#
                    } else {
                        r#"{"error":"boom"}"#
                    };
                    let location = l
                        .lock()
                        .expect("location")
                        .as_ref()
                        .map(|url| format!("location: {url}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{location}connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Upstream {
            url,
            status,
            delay_ms,
            hits,
            location,
        }
    }

    /// Sends `Location: url` with every answer from now on.
    pub fn set_location(&self, url: &str) {
        *self.location.lock().expect("location") = Some(url.to_string());
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A `tally-api` process (the release binary) on 127.0.0.1:<free port>, killed on drop with
/// its log printed if the test panics.
pub struct ApiProc {
    pub port: u16,
    // Declared before `dir`, which holds its log.
    proc: Proc,
    dir: TempDir,
}

impl ApiProc {
    /// Starts the API against `redis_url` (one URL, or a comma-separated list in cluster mode)
    /// with `env` on top of the defaults; returns once it accepts HTTP (whatever /health says,
    /// so it can be started while Redis is down).
    pub fn start(redis_url: &str, env: &[(&str, &str)]) -> ApiProc {
        let mut last_log = String::new();
        for attempt in 0..5 {
            let dir = TempDir::new("api");
            let port = free_port();
            let mut cmd = Command::new(crate::api_path());
            cmd.env_clear()
                .env("REDIS_URL", redis_url)
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("RUST_LOG", "warn")
                .env("EXTERNAL_SERVICE_FAILURE_RATE", "0")
                .envs(env.iter().copied());
            let proc = Proc::spawn(
                format!("tally-api on port {port}"),
                cmd,
                dir.path().join(format!("api-{attempt}.log")),
            );
            let mut api = ApiProc { port, proc, dir };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && api.is_running() {
                if http::get_status(port, "/health").is_some() {
                    return api;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            last_log = api.log();
            api.kill();
            if !last_log.contains("in use") {
                panic!("tally-api did not start on port {port}:\n{last_log}");
            }
        }
        panic!("tally-api did not start after 5 attempts:\n{last_log}");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the process wrote (its stderr is the API's log).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Whether the process is still running (it never exits by itself).
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The directory of its log (removed with it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `POST /api/metrics` of [`metric_body`] to the API at `base`.
pub fn post_metric(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    value: i64,
) -> reqwest::RequestBuilder {
    post_body(http, base, metric_body(kind, value))
}

/// `POST /api/metrics` of [`metric_body`] as `client`, named in `X-Forwarded-For` (the API
/// must trust 127.0.0.1: `TRUSTED_PROXIES=127.0.0.1`), so each client has its own budget; the
/// status.
pub async fn post_metric_from(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    value: i64,
    client: &str,
) -> u16 {
    post_metric(http, base, kind, value)
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("POST /api/metrics")
        .status()
        .as_u16()
}

/// A metric body for `POST /api/metrics` at the current time.
pub fn metric_body(kind: &str, value: i64) -> String {
    format!(
        r#"{{"timestamp":"{}","value":{value},"type":"{kind}"}}"#,
        now_rfc3339()
    )
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (no chrono here: civil-from-days).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
