//! Test harness: real `redis-server` (or Valkey) processes with the tally module loaded, each on
//! a free loopback port with its own temp dir, stopped when the guard is dropped. Nothing here
//! depends on a server already running or on port 6379.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use redis;
use redis::{Connection, Value};

/// The API under test: in-process (`TestApp`) or as the release binary (`ApiProc`).
pub mod api;
/// A real Redis Cluster of module-loaded servers (3 primaries + 3 replicas).
pub mod cluster;
/// Parsers of the Docker delivery files (Dockerfile, Compose, .dockerignore).
pub mod docker;
/// HTTP requests: a blocking GET, raw bytes over TCP, a bounded `reqwest` client.
pub mod http;
/// Load tallies and waits on observable state for the fault suites.
pub mod load;
pub mod policies;
/// The guard of every child process: killed on drop, its log printed on failure.
pub mod process;
/// The one seeded generator.
pub mod rng;
/// One module-loaded redis-server / Valkey.
pub mod server;
/// Production-style Redis: a throw-away PKI made with `openssl`, TLS-only `redis-server`
/// processes with the module (single node or cluster), `redis-cli --tls` to drive them, and the
/// README's ACL line.
pub mod tls;
/// A headless Chromium driven through WebDriver (chromedriver), for the dashboard suite.
pub mod webdriver;

pub use process::{which, Proc};
pub use rng::Rng;
pub use server::{address_space_limit_of, Flavor, Server, ServerConfig, FUZZ_ADDRESS_SPACE_LIMIT};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of the built module: `$TALLY_MODULE`, else `target/release/libtally.so`.
pub fn module_path() -> PathBuf {
    let path = std::env::var_os("TALLY_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/libtally.so"));
    assert!(
        path.exists(),
        "{} not found: build it first (`make test` does, or `cargo build --release -p tally`)",
        path.display()
    );
    path
}

/// Path of the built API binary: `$TALLY_API`, else `target/release/tally-api`.
pub fn api_path() -> PathBuf {
    let path = std::env::var_os("TALLY_API")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/tally-api"));
    assert!(
        path.is_file(),
        "{} not found: build it first (`make build`, or `cargo build --release -p tally-api`; \
         TALLY_API=/path/to/tally-api to use another)",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A temp dir removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tally-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A command given as words: the first is the name, the rest its arguments.
pub fn command<S: AsRef<str>>(words: &[S]) -> redis::Cmd {
    let mut cmd = redis::cmd(words[0].as_ref());
    for w in &words[1..] {
        cmd.arg(w.as_ref());
    }
    cmd
}

/// Largest n with n (n + 1) / 2 <= total, and whether that is exact: writers that send 1, 2,
/// 3, ... let a sum tell how many of their writes are stored.
pub fn triangular_root(total: u64) -> (u64, bool) {
    let mut n = ((2.0 * total as f64).sqrt()) as u64;
    while n * (n + 1) / 2 > total {
        n -= 1;
    }
    while (n + 1) * (n + 2) / 2 <= total {
        n += 1;
    }
    (n, n * (n + 1) / 2 == total)
}

/// The wall clock in unix milliseconds (the servers' clock, on this machine).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// How many samples a series fed 1, 2, 3, ... by one writer holds, asserting they are exactly
/// 1..=n (a prefix of what was sent). `ctx` names the case in failure messages.
pub fn metric_prefix(conn: &mut Connection, key: &str, ctx: &str) -> u64 {
    let s: Value = redis::cmd("METRIC.SUMMARY").arg(key).query(conn).unwrap();
    let n = field_f64(&s, "count").unwrap_or(0.0) as u64;
    assert_eq!(
        field_f64(&s, "sum"),
        Some((n * (n + 1) / 2) as f64),
        "{ctx} {key}: samples 1..={n}"
    );
    assert_eq!(field_f64(&s, "max"), Some(n as f64), "{ctx} {key}");
    n
}

/// How many checks of cost 1, 2, 3, ... by one writer a rate-limit log holds (read with
/// `RATELIMIT.PEEK key limit window_ms COST 0`), asserting the recorded cost is exactly
/// 1 + ... + m.
pub fn ratelimit_prefix(
    conn: &mut Connection,
    key: &str,
    limit: u64,
    window_ms: u64,
    ctx: &str,
) -> u64 {
    let r: Value = redis::cmd("RATELIMIT.PEEK")
        .arg(key)
        .arg(limit)
        .arg(window_ms)
        .arg("COST")
        .arg(0)
        .query(conn)
        .unwrap();
    let (m, exact) = triangular_root(limit - ints(&r)[2] as u64);
    assert!(exact, "{ctx} {key}: recorded cost is 1 + ... + {m}");
    m
}

/// Waits until `f` returns true, up to `timeout`; false if it never did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An integer array reply (RESP2 RATELIMIT replies).
pub fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) => *n,
                other => panic!("not an integer: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// A reply as (name, value) pairs: a RESP3 map or a flat RESP2 array of pairs.
pub fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(entries) => entries.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv[1].clone()))
            .collect(),
        other => panic!("not a record: {other:?}"),
    }
}

/// The text of a string-ish reply.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        Value::Int(n) => n.to_string(),
        Value::Double(d) => d.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

/// Field `name` of a record reply, as f64 (None for nil).
pub fn field_f64(v: &Value, name: &str) -> Option<f64> {
    let (_, value) = pairs(v)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name} in {v:?}"));
    match value {
        Value::Nil => None,
        Value::Int(n) => Some(n as f64),
        Value::Double(d) => Some(d),
        other => Some(text(&other).parse().expect("number")),
    }
}

/// `DEBUG DIGEST-VALUE key` as text.
pub fn digest(conn: &mut Connection, key: &str) -> String {
    let v: Value = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(conn)
        .expect("DEBUG DIGEST-VALUE");
    match v {
        Value::Array(items) => text(&items[0]),
        other => text(&other),
    }
}
