//! Failover: writes acknowledged with `WAIT 1` (on the same connection, right behind the
//! write, as the API does with REDIS_WAIT_REPLICAS=1) survive the SIGKILL of their primary
//! and the election of its replica, byte for byte; and the killed primary comes back as a
//! replica of its successor with the same data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tally_tests::cluster::Cluster;
use tally_tests::redis::{self, Connection, Value};
use tally_tests::{
    digest, field_f64, ints, metric_prefix, now_ms, ratelimit_prefix, wait_until, Rng,
};

const RL_LIMIT: u64 = 30;
const RL_WINDOW: u64 = 600_000;
/// Budget of the in-flight rate-limit key: never the reason for a denial.
const HOT_LIMIT: u64 = 1_000_000_000;
const WAIT_MS: u64 = 1000;

/// Sends `cmd` then `WAIT 1 timeout` in one pipeline on `conn`: (reply, replicas that acked).
fn write_and_wait(conn: &mut Connection, cmd: &redis::Cmd) -> redis::RedisResult<(Value, i64)> {
    redis::pipe()
        .add_command(cmd.clone())
        .cmd("WAIT")
        .arg(1)
        .arg(WAIT_MS)
        .query(conn)
}

/// What the writes of the settled phase add up to. Each is followed by its own WAIT; the
/// phase ends with a WAIT per primary that covers every write before it, so the whole model
/// is acknowledged (even a write whose own WAIT timed out on a busy machine).
#[derive(Default)]
struct Settled {
    /// series -> (count, sum) of the samples written (integer values: exact sums).
    series: BTreeMap<String, (u64, i64)>,
    /// rate-limit key -> cost of the allowed checks.
    used: BTreeMap<String, u64>,
    tried: u64,
    /// Writes whose own WAIT returned >= 1.
    acked: u64,
}

/// One in-flight writer: METRIC.ADD of 1, 2, 3, ... (or RATELIMIT.CHECK with COST 1, 2, 3,
/// ...) on one key, each followed by WAIT, until the connection dies.
struct Writer {
    sent: u64,
    last_acked: u64,
    acked: u64,
}

fn spawn_writer(
    port: u16,
    key: String,
    metric: bool,
    base_ts: u64,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Writer> {
    thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = Writer {
            sent: 0,
            last_acked: 0,
            acked: 0,
        };
        for i in 1..=1_000_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut cmd = if metric {
                redis::cmd("METRIC.ADD")
            } else {
                redis::cmd("RATELIMIT.CHECK")
            };
            if metric {
                cmd.arg(&key).arg(i).arg("TS").arg(base_ts + i);
            } else {
                cmd.arg(&key)
                    .arg(HOT_LIMIT)
                    .arg(RL_WINDOW)
                    .arg("COST")
                    .arg(i);
            }
            w.sent = i;
            match write_and_wait(&mut conn, &cmd) {
                Ok((reply, replicas)) => {
                    if metric {
                        assert_eq!(reply, Value::Int(i as i64), "count after sample {i}");
                    } else {
                        assert_eq!(ints(&reply)[0], 1, "check {i} allowed");
                    }
                    if replicas >= 1 {
                        w.last_acked = i;
                        w.acked += 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => break, // the primary died under us
            }
        }
        w
    })
}

#[test]
fn writes_acknowledged_by_wait_survive_a_sigkilled_primary_and_its_replicas_takeover() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let base_ts = (now_ms() - 20 * 60_000) / 60_000 * 60_000;
    let rl_keys: Vec<String> = (0..24).map(|i| format!("ratelimit:client-{i}")).collect();
    let series_keys: Vec<String> = (0..12).map(|i| format!("metric:type-{i}")).collect();
    let owner: BTreeMap<String, u16> = rl_keys
        .iter()
        .chain(&series_keys)
        .map(|k| (k.clone(), cluster.primary_for_key(k)))
        .collect();
    let mut conns: BTreeMap<u16, Connection> = cluster
        .primaries()
        .into_iter()
        .map(|p| (p, cluster.node_conn(p)))
        .collect();

    // 1. A settled workload over every shard.
    let mut settled = Settled::default();
    let mut rng = Rng::new(11);
    for step in 0..600u64 {
        let metric = rng.below_u64(2) == 0;
        let key = if metric {
            &series_keys[rng.below_u64(12) as usize]
        } else {
            &rl_keys[rng.below_u64(24) as usize]
        };
        let conn = conns.get_mut(&owner[key]).unwrap();
        settled.tried += 1;
        if metric {
            let v = rng.below_u64(1000) as i64 - 100;
            let mut cmd = redis::cmd("METRIC.ADD");
            cmd.arg(key).arg(v).arg("TS").arg(base_ts + step * 997);
            let (_, replicas) = write_and_wait(conn, &cmd).unwrap();
            settled.acked += u64::from(replicas >= 1);
            let e = settled.series.entry(key.clone()).or_default();
            e.0 += 1;
            e.1 += v;
        } else {
            let cost = 1 + rng.below_u64(3);
            let mut cmd = redis::cmd("RATELIMIT.CHECK");
            cmd.arg(key)
                .arg(RL_LIMIT)
                .arg(RL_WINDOW)
                .arg("COST")
                .arg(cost);
            let (reply, replicas) = write_and_wait(conn, &cmd).unwrap();
            settled.acked += u64::from(replicas >= 1);
            if ints(&reply)[0] == 1 {
                *settled.used.entry(key.clone()).or_default() += cost;
            }
        }
    }
    for (port, conn) in conns.iter_mut() {
        let replicas: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(conn).unwrap();
        assert_eq!(replicas, 1, "the replica of {port} has every settled write");
    }

    // 2. The victim: the primary of metric:type-0. Its keys' digests before the kill.
    let victim = owner["metric:type-0"];
    let victim_keys: Vec<&String> = owner
        .iter()
        .filter(|(_, &p)| p == victim)
        .map(|(k, _)| k)
        .collect();
    let before: BTreeMap<&String, String> = victim_keys
        .iter()
        .map(|k| (*k, digest(conns.get_mut(&victim).unwrap(), k)))
        .collect();
    drop(conns);

    // 3. Writers in flight on the victim when it dies.
    let hot = |prefix: &str| {
        (0..)
            .map(|j| format!("{prefix}:hot-{j}"))
            .find(|k| cluster.primary_for_key(k) == victim)
            .unwrap()
    };
    let (hot_series, hot_rl) = (hot("metric"), hot("ratelimit"));
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        spawn_writer(
            victim,
            hot_series.clone(),
            true,
            base_ts,
            progress.clone(),
            stop.clone(),
        ),
        spawn_writer(
            victim,
            hot_rl.clone(),
            false,
            base_ts,
            progress.clone(),
            stop.clone(),
        ),
    ];
    let busy = wait_until(Duration::from_secs(10), || {
        progress.load(Ordering::Relaxed) >= 400
    });
    assert_eq!(cluster.kill_primary_of("metric:type-0"), victim);
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    assert!(busy, "writers made progress before the kill");
    let [series_writer, rl_writer] = writers.map(|w| w.join().expect("writer thread"));

    // 4. The replica takes over.
    let successor = cluster.wait_failover("metric:type-0");
    let failover_s = killed_at.elapsed().as_secs_f64();
    assert_ne!(successor, victim);
    let mut new = cluster.node_conn(successor);

    // Every settled key of the victim is byte-identical on its successor.
    for k in &victim_keys {
        assert_eq!(digest(&mut new, k), before[k], "{k} after failover");
    }
    // And every acknowledged write of every shard is there, read through the cluster client.
    let mut cc = cluster.conn();
    for (key, &(count, sum)) in &settled.series {
        let s: Value = redis::cmd("METRIC.SUMMARY")
            .arg(key)
            .query(&mut cc)
            .unwrap();
        assert_eq!(field_f64(&s, "count"), Some(count as f64), "{key}");
        assert_eq!(field_f64(&s, "sum"), Some(sum as f64), "{key}");
    }
    for key in &rl_keys {
        let used = settled.used.get(key).copied().unwrap_or(0);
        let r: Value = redis::cmd("RATELIMIT.PEEK")
            .arg(key)
            .arg(RL_LIMIT)
            .arg(RL_WINDOW)
            .arg("COST")
            .arg(0)
            .query(&mut cc)
            .unwrap();
        assert_eq!(ints(&r)[2], (RL_LIMIT - used) as i64, "{key} remaining");
    }

    // The in-flight series holds samples 1..=n for one n: a prefix of what was sent, covering
    // everything acknowledged (the replica applies the stream in order).
    let n = metric_prefix(&mut new, &hot_series, "in flight");
    assert!(
        (series_writer.last_acked..=series_writer.sent).contains(&n),
        "{n} samples survive; {} acknowledged, {} sent",
        series_writer.last_acked,
        series_writer.sent
    );
    // The in-flight rate-limit log holds costs 1..=m for one m, likewise.
    let m = ratelimit_prefix(&mut new, &hot_rl, HOT_LIMIT, RL_WINDOW, "in flight");
    assert!(
        (rl_writer.last_acked..=rl_writer.sent).contains(&m),
        "{m} checks survive; {} acknowledged, {} sent",
        rl_writer.last_acked,
        rl_writer.sent
    );

    // The new primary takes writes through the cluster client.
    let count: i64 = redis::cmd("METRIC.ADD")
        .arg("metric:type-0")
        .arg(1)
        .query(&mut cc)
        .unwrap();
    let (count0, _) = settled.series["metric:type-0"];
    assert_eq!(count as u64, count0 + 1);

    // 5. The killed primary restarts from its AOF and nodes.conf, rejoins as a replica of its
    // successor and converges on its data (dropping anything it never replicated).
    cluster.restart_node(victim);
    cluster.wait_ready();
    assert_eq!(cluster.replicas_of(successor), vec![victim]);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut new).unwrap();
    let mut old = cluster.node_conn(victim);
    let _: Value = redis::cmd("READONLY").query(&mut old).unwrap();
    for k in victim_keys
        .iter()
        .map(|k| k.as_str())
        .chain([hot_series.as_str(), hot_rl.as_str()])
    {
        assert_eq!(
            digest(&mut old, k),
            digest(&mut new, k),
            "{k} on the rejoined node"
        );
    }

    eprintln!(
        "settled: {} writes tried, {} acknowledged by their own WAIT, all by the last, 0 lost ({} keys on the victim, digests \
         equal); in flight: series {} sent / {} acknowledged / {n} kept, rate limit {} sent / \
         {} acknowledged / {m} kept; failover {failover_s:.1}s; total {:.1}s",
        settled.tried,
        settled.acked,
        victim_keys.len(),
        series_writer.sent,
        series_writer.acked,
        rl_writer.sent,
        rl_writer.acked,
        started.elapsed().as_secs_f64()
    );
}
