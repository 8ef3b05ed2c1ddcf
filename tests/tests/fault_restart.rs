//! Crash safety: with `appendonly yes` and `appendfsync always`, every write the server
//! acknowledged before a SIGKILL is there after the restart, including across an AOF rewrite
//! done mid-load (RDB preamble for the metric test, plain RESTORE commands for the rate-limit
//! one). Writers send values 1, 2, 3, ... so what survives is checked exactly: a prefix of
//! what was sent that covers everything acknowledged (at most the one in-flight write more).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tally_tests::redis::{self, Value};
use tally_tests::{
    ints, metric_prefix, ratelimit_prefix, wait_until, Flavor, Server, ServerConfig,
};

const WRITERS: usize = 2;
const LIMIT: u64 = 1_000_000_000;
const WINDOW_MS: u64 = 600_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// METRIC.ADD key i: count i, sum 1 + ... + i.
    Metric,
    /// RATELIMIT.CHECK key LIMIT WINDOW COST i: recorded cost 1 + ... + i.
    RateLimit,
}

/// What one writer saw: the last value sent and the last one acknowledged.
#[derive(Debug)]
struct Writer {
    sent: u64,
    acked: u64,
}

fn spawn_writer(
    url: String,
    key: String,
    kind: Kind,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Writer> {
    thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = Writer { sent: 0, acked: 0 };
        for i in 1..=10_000_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            w.sent = i;
            let reply: redis::RedisResult<Value> = match kind {
                Kind::Metric => redis::cmd("METRIC.ADD").arg(&key).arg(i).query(&mut conn),
                Kind::RateLimit => redis::cmd("RATELIMIT.CHECK")
                    .arg(&key)
                    .arg(LIMIT)
                    .arg(WINDOW_MS)
                    .arg("COST")
                    .arg(i)
                    .query(&mut conn),
            };
            match reply {
                Ok(v) => {
                    match kind {
                        Kind::Metric => assert_eq!(v, Value::Int(i as i64), "count of {key}"),
                        Kind::RateLimit => assert_eq!(ints(&v)[0], 1, "{key} check {i}"),
                    }
                    w.acked = i;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break, // killed
            }
        }
        w
    })
}

fn aof_rewrite_done(server: &Server) -> bool {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut server.conn())
        .unwrap();
    info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
}

/// When the SIGKILL comes relative to an AOF rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rewrite {
    /// The rewrite finished, then more writes went to the new incremental file.
    Finished,
    /// BGREWRITEAOF was just issued: the kill may land while the child is writing the base.
    InProgress,
}

/// Writers on `WRITERS` keys; BGREWRITEAOF once they are under way; SIGKILL (after the rewrite
/// and more writes, or right away); restart; then every key holds exactly 1..=n with
/// acked <= n <= acked + 1.
fn kill_mid_load_and_restart(
    flavor: Flavor,
    kind: Kind,
    rdb_preamble: bool,
    rewrite: Rewrite,
) -> (u64, u64, u64) {
    let started = Instant::now();
    let mut server = ServerConfig::new(flavor)
        .arg("--appendonly", "yes")
        .arg("--appendfsync", "always")
        .arg(
            "--aof-use-rdb-preamble",
            if rdb_preamble { "yes" } else { "no" },
        )
        .start();
    let keys: Vec<String> = (0..WRITERS)
        .map(|i| format!("{kind:?}:crash-{i}").to_lowercase())
        .collect();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = keys
        .iter()
        .map(|k| {
            spawn_writer(
                server.url(),
                k.clone(),
                kind,
                progress.clone(),
                stop.clone(),
            )
        })
        .collect();
    let at = |n: u64| {
        wait_until(Duration::from_secs(10), || {
            progress.load(Ordering::Relaxed) >= n
        })
    };
    assert!(at(200), "{flavor:?}: writers under way");
    let _: Value = redis::cmd("BGREWRITEAOF")
        .query(&mut server.conn())
        .unwrap();
    if rewrite == Rewrite::Finished {
        assert!(
            wait_until(Duration::from_secs(10), || aof_rewrite_done(&server)),
            "{flavor:?}: AOF rewrite finished"
        );
        let after_rewrite = progress.load(Ordering::Relaxed);
        assert!(
            at(after_rewrite + 200),
            "{flavor:?}: writing after the rewrite"
        );
    }
    let loaded = Instant::now();
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Writer> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let restarted = Instant::now();
    server.restart();
    let restart_s = restarted.elapsed().as_secs_f64();
    let load_s = restarted.duration_since(loaded).as_secs_f64();
    let mut conn = server.conn();
    let (mut sent, mut acked, mut kept) = (0, 0, 0);
    for (key, w) in keys.iter().zip(&seen) {
        let ctx = format!("{flavor:?}");
        let n = match kind {
            Kind::Metric => metric_prefix(&mut conn, key, &ctx),
            Kind::RateLimit => ratelimit_prefix(&mut conn, key, LIMIT, WINDOW_MS, &ctx),
        };
        assert!(
            n == w.acked || (n == w.acked + 1 && n == w.sent),
            "{flavor:?} {key}: {n} kept, {} acknowledged, {} sent",
            w.acked,
            w.sent
        );
        sent += w.sent;
        acked += w.acked;
        kept += n;
    }
    eprintln!(
        "{flavor:?} {kind:?} (rdb preamble {rdb_preamble}, kill with rewrite {rewrite:?}): \
         {sent} sent, {acked} acknowledged, {kept} kept, 0 lost; kill+join {load_s:.1}s, \
         restart {restart_s:.1}s, total {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (sent, acked, kept)
}

#[test]
fn metric_samples_acknowledged_before_a_sigkill_are_all_there_after_the_restart() {
    for flavor in Flavor::all() {
        for rewrite in [Rewrite::Finished, Rewrite::InProgress] {
            let (_, acked, kept) = kill_mid_load_and_restart(flavor, Kind::Metric, true, rewrite);
            assert!(acked >= 200 && kept >= acked, "{flavor:?}");
        }
    }
}

#[test]
fn rate_limit_checks_acknowledged_before_a_sigkill_are_all_there_after_the_restart() {
    for flavor in Flavor::all() {
        for rewrite in [Rewrite::Finished, Rewrite::InProgress] {
            let (_, acked, kept) =
                kill_mid_load_and_restart(flavor, Kind::RateLimit, false, rewrite);
            assert!(acked >= 200 && kept >= acked, "{flavor:?}");
        }
    }
}
