//! Scale-out: every module command takes one key at position 1, so Redis Cluster routes it.
//! Rate-limit clients and metric series spread over all three shards of a real cluster, and the
//! cluster answers a command sequence exactly as a single node does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tally_tests::cluster::Cluster;
use tally_tests::redis::{self, Connection, ConnectionLike, Value};
use tally_tests::{command, digest, ints, now_ms, Flavor, Rng, Server};

fn rl_key(i: u64) -> String {
    format!("ratelimit:client-{i}")
}

fn metric_key(i: u64) -> String {
    format!("metric:type-{i}")
}

const CLIENTS: u64 = 24;
const SERIES: u64 = 12;

/// The command sequence: rate-limit CHECK/PEEK (two policies, varying cost) and METRIC.ADD
/// with explicit timestamps, plus reads. Windows are long (60 s, 600 s) so the allowed /
/// limit / remaining fields do not depend on when each side ran the sequence.
fn workload(base_ts: u64) -> Vec<Vec<String>> {
    let mut rng = Rng::new(7);
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let w = |words: &[&str]| words.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Every client and series gets one write first, so every key exists.
    for i in 0..CLIENTS {
        cmds.push(w(&[
            "RATELIMIT.CHECK",
            &rl_key(i),
            "5",
            "60000",
            "20",
            "600000",
        ]));
    }
    for i in 0..SERIES {
        let ts = (base_ts + i * 1000).to_string();
        cmds.push(w(&["METRIC.ADD", &metric_key(i), "1", "TS", &ts]));
    }
    for step in 0..800u64 {
        match rng.below_u64(10) {
            0..=3 => {
                let key = rl_key(rng.below_u64(CLIENTS));
                let cost = rng.below_u64(3).to_string();
                let cmd = if rng.below_u64(4) == 0 {
                    "RATELIMIT.PEEK"
                } else {
                    "RATELIMIT.CHECK"
                };
                cmds.push(w(&[cmd, &key, "5", "60000", "20", "600000", "COST", &cost]));
            }
            4..=8 => {
                let key = metric_key(rng.below_u64(SERIES));
                // Integers and quarters: exact in binary, so sums are exact too.
                let value = format!(
                    "{}.{}",
                    rng.below_u64(2000) as i64 - 500,
                    25 * rng.below_u64(4)
                );
                let ts = (base_ts + step * 750 + rng.below_u64(5000)).to_string();
                cmds.push(w(&["METRIC.ADD", &key, &value, "TS", &ts]));
            }
            _ => {
                let key = metric_key(rng.below_u64(SERIES));
                cmds.push(w(&["METRIC.SUMMARY", &key]));
            }
        }
    }
    for i in 0..SERIES {
        let key = metric_key(i);
        let (from, to) = (base_ts.to_string(), (base_ts + 400_000).to_string());
        cmds.push(w(&["METRIC.SUMMARY", &key]));
        cmds.push(w(&["METRIC.RANGE", &key, "-", "+", "60000"]));
        cmds.push(w(&["METRIC.RANGE", &key, &from, &to, "300000"]));
    }
    cmds
}

fn run(conn: &mut impl ConnectionLike, words: &[String]) -> Value {
    command(words)
        .query(conn)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// What must match between cluster and single node: rate-limit replies without the two
/// time fields (retry_after, reset_after depend on each side's clock); everything else whole.
fn comparable(words: &[String], reply: &Value) -> Value {
    if words[0].starts_with("RATELIMIT.") {
        let f = ints(reply);
        Value::Array(f[..3].iter().map(|&n| Value::Int(n)).collect())
    } else {
        reply.clone()
    }
}

#[test]
fn rate_limits_and_metric_series_spread_over_all_three_shards_and_answer_as_one_node() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let single = Server::start();
    // Half an hour ago, on a minute boundary: inside the default 1 h retention, and in the
    // 60 s tier on both sides whenever each ran.
    let base_ts = (now_ms() - 30 * 60_000) / 60_000 * 60_000;
    let cmds = workload(base_ts);

    let mut cc = cluster.conn();
    let mut sc = single.conn();
    let (mut allowed, mut denied) = (0, 0);
    for words in &cmds {
        let from_cluster = run(&mut cc, words);
        let from_single = run(&mut sc, words);
        assert_eq!(
            comparable(words, &from_cluster),
            comparable(words, &from_single),
            "{words:?}"
        );
        if words[0] == "RATELIMIT.CHECK" {
            if ints(&from_cluster)[0] == 1 {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    assert!(
        allowed > 100 && denied > 50,
        "both outcomes: {allowed}/{denied}"
    );

    // Where every key landed: its slot's primary holds it, and each of the three primaries
    // holds rate-limit logs and metric series.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    let mut per_primary: BTreeMap<u16, (u64, u64)> =
        primaries.iter().map(|&p| (p, (0, 0))).collect();
    let mut owner_conns: BTreeMap<u16, Connection> = primaries
        .iter()
        .map(|&p| (p, cluster.node_conn(p)))
        .collect();
    for (kind, keys) in [
        ("tally-log", (0..CLIENTS).map(rl_key).collect::<Vec<_>>()),
        ("tally-met", (0..SERIES).map(metric_key).collect()),
    ] {
        for key in keys {
            let slot = cluster.keyslot(&key);
            let owner = cluster.primary_for_key(&key);
            let conn = owner_conns.get_mut(&owner).expect("owner is a primary");
            let in_slot: i64 = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query(conn)
                .unwrap();
            assert!(in_slot >= 1, "{key} in slot {slot} on {owner}");
            let t: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            assert_eq!(t, kind, "{key}");
            let counts = per_primary.get_mut(&owner).unwrap();
            if kind == "tally-log" {
                counts.0 += 1;
            } else {
                counts.1 += 1;
                // Same sequence, explicit timestamps: byte-identical series on both sides.
                assert_eq!(digest(conn, &key), digest(&mut sc, &key), "{key}");
            }
        }
    }
    eprintln!("(rate-limit logs, metric series) per primary: {per_primary:?}");
    for (port, (logs, series)) in &per_primary {
        assert!(
            *logs > 0 && *series > 0,
            "primary {port} holds {logs} logs, {series} series"
        );
    }

    // Nothing else is stored anywhere, and each replica holds what its primary holds.
    let mut total = 0;
    for (&port, conn) in owner_conns.iter_mut() {
        let size: u64 = redis::cmd("DBSIZE").query(conn).unwrap();
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(conn).unwrap();
        assert_eq!(acked, 1, "replica of {port} acknowledges");
        for replica in cluster.replicas_of(port) {
            let r: u64 = redis::cmd("DBSIZE")
                .query(&mut cluster.node_conn(replica))
                .unwrap();
            assert_eq!(r, size, "replica {replica} of {port}");
        }
        total += size;
    }
    assert_eq!(total, CLIENTS + SERIES);
    let single_size: u64 = redis::cmd("DBSIZE").query(&mut sc).unwrap();
    assert_eq!(single_size, total);
    eprintln!(
        "{} commands compared ({allowed} allowed / {denied} denied checks) in {:.1}s",
        cmds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn every_command_sent_to_another_shard_is_redirected_to_the_primary_of_its_key() {
    for flavor in Flavor::all() {
        redirects_to_the_owner(flavor);
    }
}

fn redirects_to_the_owner(flavor: Flavor) {
    let cluster = Cluster::start_flavor(flavor);
    let key = "metric:cpu";
    let owner = cluster.primary_for_key(key);
    let slot = cluster.keyslot(key);
    let others: Vec<u16> = cluster
        .primaries()
        .into_iter()
        .filter(|&p| p != owner)
        .collect();
    assert_eq!(others.len(), 2, "{flavor:?}");
    let commands: [&[&str]; 8] = [
        &["RATELIMIT.CHECK", key, "5", "60000"],
        &["RATELIMIT.PEEK", key, "5", "60000", "COST", "2"],
        &["RATELIMIT.RECORD", key, "1700000000000", "1", "60000"],
        &["RATELIMIT.RESTORE", key, "payload"],
        &["METRIC.ADD", key, "75", "TS", "1700000000000"],
        &["METRIC.SUMMARY", key, "WINDOW", "60000"],
        &["METRIC.RANGE", key, "-", "+", "60000"],
        &["METRIC.RESTORE", key, "payload"],
    ];
    for other in others {
        let mut conn = cluster.node_conn(other);
        for words in commands {
            let err = command(words)
                .query::<Value>(&mut conn)
                .expect_err(&format!("{words:?} on {other} must be redirected"));
            assert_eq!(
                err.redirect_node(),
                Some((format!("127.0.0.1:{owner}").as_str(), slot)),
                "{flavor:?}: {words:?} on {other}: {err}"
            );
        }
    }
    // Through the cluster client the same key works, wherever it lives.
    let mut cc = cluster.conn();
    let count: i64 = redis::cmd("METRIC.ADD")
        .arg(key)
        .arg(75)
        .query(&mut cc)
        .unwrap();
    assert_eq!(count, 1, "{flavor:?}");
    let r: Value = redis::cmd("RATELIMIT.CHECK")
        .arg("ratelimit:client-1")
        .arg(5)
        .arg(60000)
        .query(&mut cc)
        .unwrap();
    assert_eq!(&ints(&r)[..3], &[1, 5, 4], "{flavor:?}");
}
