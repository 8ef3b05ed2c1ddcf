//! The one guard for every child process a test starts (redis-server, Valkey, the `tally-api`
//! binary, the images' start commands): its stdout and stderr go to a log file, it is killed
//! (SIGKILL) when the guard is dropped, and if the test is panicking the log is printed first,
//! so a failure always shows what the process said.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process (or none yet, or none any more) with its log file.
pub struct Proc {
    /// What it is, for messages ("tally-api on port 4242").
    pub what: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A guard with nothing started yet; [`Proc::start`] starts (and restarts) the process.
    pub fn new(what: impl Into<String>, log: impl Into<PathBuf>) -> Proc {
        Proc {
            what: what.into(),
            log: log.into(),
            child: None,
        }
    }

    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn(what: impl Into<String>, cmd: Command, log: impl Into<PathBuf>) -> Proc {
        let mut proc = Proc::new(what, log);
        proc.start(cmd);
        proc
    }

    /// Starts `cmd` (killing the previous process, if any) with stdin closed and stdout and
    /// stderr appended to the log (a process that writes its own log file there, like
    /// redis-server's `--logfile`, shares it).
    pub fn start(&mut self, mut cmd: Command) {
        self.kill();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.what));
        self.child = Some(child);
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started and neither killed nor seen to exit.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Its exit status if it has exited by itself (the guard then holds no process).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Started and still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Kills it at once (SIGKILL) and reaps it; nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (what `docker stop` sends), as `kill -TERM <pid>` does.
    pub fn terminate(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.what));
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} ({})", self.what);
    }

    /// Waits up to `timeout` for it to exit by itself; None if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.as_ref()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.what, self.log());
        }
        self.kill();
    }
}

/// Runs `cmd` to its end with its stdout and stderr captured, killed if it takes longer than
/// `timeout`: Ok((status, stdout, stderr)), or Err with what it printed before the deadline.
pub fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    // Both pipes are drained on their own threads so a full pipe never stalls the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ok((status, out, err)),
        None => Err(format!(
            "{cmd:?}: still running after {timeout:?}, killed\n{out}\n{err}"
        )),
    }
}

/// `name` on PATH, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_killed_when_its_guard_is_dropped_and_its_output_is_in_the_log() {
        let dir = crate::TempDir::new("proc-test");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let mut proc = Proc::spawn("sleeper", cmd, dir.path().join("log"));
        let pid = proc.pid().expect("running");
        assert!(crate::wait_until(Duration::from_secs(10), || proc
            .log()
            .contains("started")));
        assert!(proc.is_running());
        drop(proc);
        // Reaped by the guard: no process with that id is left (not even a zombie).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn run_bounded_returns_the_output_or_kills_at_the_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let (status, out, err) = run_bounded(cmd, Duration::from_secs(10)).expect("finished");
        assert_eq!(
            (status.code(), out.trim(), err.trim()),
            (Some(3), "out", "err")
        );
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let e = run_bounded(cmd, Duration::from_millis(100)).expect_err("killed");
        assert!(e.contains("still running after"), "{e}");
    }

    #[test]
    fn which_finds_a_program_on_path_and_nothing_else() {
        assert!(which("sh").is_some_and(|p| p.is_file()));
        assert_eq!(which("no-such-program-here"), None);
    }
}
