//! Shared by the `fault_api_*` suites (included with `#[path] mod support;`): the release
//! `tally-api` binary started as a real process on a free loopback port (killed on drop, its
//! log printed if the test panics), and a tally of what every request got back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_tests::{free_port, TempDir};

/// Bound on every request the fault suites send: the API's Redis timeout is 1 s
/// (`REDIS_TIMEOUT_MS`), so an answer later than this is a hang.
pub const REQUEST_BOUND: Duration = Duration::from_secs(3);

/// A `tally-api` process on 127.0.0.1:<free port>, SIGKILLed on drop.
pub struct ApiProc {
    pub port: u16,
    child: Option<Child>,
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
            let log_path = dir.path().join(format!("api-{attempt}.log"));
            let log = File::create(&log_path).expect("create api log");
            let mut cmd = Command::new(tally_tests::api_path());
            cmd.env_clear()
                .env("REDIS_URL", redis_url)
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("RUST_LOG", "warn")
                .env("EXTERNAL_SERVICE_FAILURE_RATE", "0")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            let child = cmd.spawn().expect("spawn tally-api");
            let mut api = ApiProc {
                port,
                child: Some(child),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && api.is_running() {
                if blocking_get_status(port, "/health").is_some() {
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

    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// Whether the process is still running (it never exits by itself).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ApiProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of tally-api on port {} ---\n{}",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// Status of `GET path` over a plain blocking socket (start-up probe; no runtime needed).
pub fn blocking_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A client whose every request must finish within [`REQUEST_BOUND`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .connect_timeout(REQUEST_BOUND)
        .build()
        .expect("client")
}

/// One answered request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub took: Duration,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {:?}", self.status, self.body))
    }
}

/// Sends `req`; Err describes a transport failure (reset, timeout, refused).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Reply, String> {
    let started = Instant::now();
    let res = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let body = res.text().await.map_err(|e| format!("body: {e:?}"))?;
    Ok(Reply {
        status,
        body,
        took: started.elapsed(),
    })
}

/// What a run of requests got: statuses per label, transport failures, the slowest answer.
#[derive(Default, Debug)]
pub struct Seen {
    pub statuses: BTreeMap<String, BTreeMap<u16, usize>>,
    pub failures: Vec<String>,
    pub slowest: Duration,
    pub total: usize,
}

pub type Shared = Arc<Mutex<Seen>>;

impl Seen {
    pub fn shared() -> Shared {
        Arc::new(Mutex::new(Seen::default()))
    }

    /// Records one outcome under `label`.
    pub fn record(&mut self, label: &str, outcome: &Result<Reply, String>) {
        self.total += 1;
        match outcome {
            Ok(r) => {
                *self
                    .statuses
                    .entry(label.to_string())
                    .or_default()
                    .entry(r.status)
                    .or_default() += 1;
                self.slowest = self.slowest.max(r.took);
            }
            Err(e) => self.failures.push(format!("{label}: {e}")),
        }
    }

    /// Every status seen under `label`.
    pub fn of(&self, label: &str) -> BTreeMap<u16, usize> {
        self.statuses.get(label).cloned().unwrap_or_default()
    }

    /// Panics unless every answer under each label is in its allowed set, no request failed in
    /// transport, and none took longer than `bound`.
    pub fn assert_only(&self, allowed: &[(&str, &[u16])], bound: Duration) {
        assert!(
            self.failures.is_empty(),
            "{} requests failed in transport (reset, hang or refused), e.g. {:?}\n{self:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        for (label, statuses) in &self.statuses {
            let ok = allowed
                .iter()
                .find(|(l, _)| l == label)
                .unwrap_or_else(|| panic!("unexpected label {label}"))
                .1;
            for s in statuses.keys() {
                assert!(ok.contains(s), "{label} answered {s}: {self:?}");
            }
        }
        assert!(
            self.slowest <= bound,
            "slowest answer took {:?} (> {bound:?})",
            self.slowest
        );
    }
}

/// A metric body for `POST /api/metrics` at the current time.
/// `POST /api/metrics` of [`metric_body`] to the API at `base`.
pub fn post_metric(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    value: i64,
) -> reqwest::RequestBuilder {
    http.post(format!("{base}/api/metrics"))
        .header("content-type", "application/json")
        .body(metric_body(kind, value))
}

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
