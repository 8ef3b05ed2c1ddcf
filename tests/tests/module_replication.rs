//! Deterministic replication: a replica that follows a primary through a mixed workload ends
//! with the same digest for every key and the same whole-dataset digest (expiries included).

use std::time::Duration;

use tally_tests::redis::{Connection, Value};
use tally_tests::{digest, wait_until, Flavor, Server, ServerConfig};

/// A mixed workload on `prefix`-named keys: weighted CHECKs under two policies, PEEKs, and
/// ADDs timed by the server and (one in five) by an explicit TS.
fn writes(primary: &Server, p: &mut Connection, prefix: &str, n: u64) {
    for i in 0..n {
        let key = format!("{prefix}rl:{}", i % 5);
        let cost = (1 + i % 3).to_string();
        let check = [
            "RATELIMIT.CHECK",
            &key,
            "20",
            "1000",
            "50",
            "60000",
            "COST",
            &cost,
        ];
        primary.run(p, &check).unwrap();
        primary
            .run(p, &["RATELIMIT.PEEK", &key, "20", "1000"])
            .unwrap();
        let mkey = format!("{prefix}metric:{}", i % 3);
        let v = format!("{}.5", i % 13);
        primary.run(p, &["METRIC.ADD", &mkey, &v]).unwrap();
        if i % 5 == 0 {
            let ts = (1_700_000_000_000 + i * 7919).to_string();
            primary
                .run(p, &["METRIC.ADD", &mkey, &v, "TS", &ts])
                .unwrap();
        }
        if i % 40 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn replicaof(replica: &mut Connection, primary: Option<&Server>) {
    let cmd = match primary {
        Some(p) => tally_tests::redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(p.port)
            .clone(),
        None => tally_tests::redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .clone(),
    };
    let _: Value = cmd.query(replica).unwrap();
    if primary.is_some() {
        assert!(wait_until(Duration::from_secs(10), || {
            info(replica, "replication").contains("master_link_status:up")
        }));
    }
}

fn info(c: &mut Connection, section: &str) -> String {
    tally_tests::redis::cmd("INFO")
        .arg(section)
        .query(c)
        .unwrap()
}

/// Same keys, same per-key digests and expiries, same whole-dataset digest.
fn assert_same_dataset(p: &mut Connection, r: &mut Connection, what: &str) {
    let acked: i64 = tally_tests::redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(p)
        .unwrap();
    assert_eq!(acked, 1, "{what}");
    let mut keys: Vec<String> = tally_tests::redis::cmd("KEYS").arg("*").query(p).unwrap();
    keys.sort();
    for k in &keys {
        assert_eq!(digest(p, k), digest(r, k), "{what}: key {k}");
        let expiry = |c: &mut Connection| -> i64 {
            tally_tests::redis::cmd("PEXPIRETIME")
                .arg(k)
                .query(c)
                .unwrap()
        };
        assert_eq!(expiry(p), expiry(r), "{what}: expiry of {k}");
    }
    let whole = |c: &mut Connection| -> String {
        tally_tests::redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(c)
            .unwrap()
    };
    assert_eq!(whole(p), whole(r), "{what}");
}

/// Writes made while nothing consumes their effect (no replica, no backlog, no AOF) skip
/// building it; a replica that attaches later gets them through the full sync, and every
/// write after that as the explicit effect (never the clock-reading command itself), on
/// every flavor. Then the replica is detached and attached again, which is a partial resync
/// from the backlog.
#[test]
fn writes_before_and_after_a_replica_attaches_reach_it_on_every_flavor() {
    for flavor in Flavor::all() {
        let primary = ServerConfig::new(flavor).start();
        let replica = ServerConfig::new(flavor).start();
        let (mut p, mut r) = (primary.conn(), replica.conn());
        writes(&primary, &mut p, "before:", 200);
        replicaof(&mut r, Some(&primary));
        writes(&primary, &mut p, "after:", 200);
        writes(&primary, &mut p, "before:", 100);
        assert_same_dataset(&mut p, &mut r, &format!("{flavor:?} after the full sync"));
        let stats = info(&mut r, "commandstats").to_lowercase();
        assert!(
            stats.contains("cmdstat_ratelimit.record:"),
            "{flavor:?}: {stats}"
        );
        assert!(
            !stats.contains("cmdstat_ratelimit.check:"),
            "{flavor:?}: {stats}"
        );

        // The primary keeps its backlog after the replica leaves: writes go on building
        // their effect, and the replica catches up by partial resync.
        replicaof(&mut r, None);
        writes(&primary, &mut p, "gap:", 100);
        replicaof(&mut r, Some(&primary));
        writes(&primary, &mut p, "before:", 50);
        assert_same_dataset(&mut p, &mut r, &format!("{flavor:?} after the resync"));
    }
}

#[test]
fn a_replica_ends_with_the_primarys_digests_on_every_flavor() {
    for flavor in Flavor::all() {
        let primary = ServerConfig::new(flavor)
            .arg("--tally.series-ttl-ms", "3600000")
            .start();
        let replica = ServerConfig::new(flavor)
            .arg("--tally.series-ttl-ms", "3600000")
            .start();
        let (mut p, mut r) = (primary.conn(), replica.conn());
        replicaof(&mut r, Some(&primary));
        writes(&primary, &mut p, "", 400);
        assert_same_dataset(&mut p, &mut r, &format!("{flavor:?}"));
        let keys: Vec<String> = tally_tests::redis::cmd("KEYS")
            .arg("*")
            .query(&mut p)
            .unwrap();
        assert_eq!(keys.len(), 8);
        for k in &keys {
            let at: i64 = tally_tests::redis::cmd("PEXPIRETIME")
                .arg(k)
                .query(&mut p)
                .unwrap();
            assert!(at > 0, "{k} has an expiry");
        }
    }
}

fn config_set_retention(c: &mut Connection, ms: u64) {
    let _: Value = tally_tests::redis::cmd("CONFIG")
        .arg("SET")
        .arg("tally.retention-ms")
        .arg(ms)
        .query(c)
        .unwrap();
}

/// Issue 14.10: the retention a write was applied with travels with its effect. Lower the
/// retention on the primary only (dropping old buckets), raise it again, write more: the
/// replica and an AOF replay (no RDB preamble) keep exactly the primary's buckets, and the
/// dropped data does not come back.
#[test]
fn a_run_time_retention_change_reaches_replicas_and_the_aof_on_every_flavor() {
    for flavor in Flavor::all() {
        let primary = ServerConfig::new(flavor)
            .arg("--appendonly", "yes")
            .arg("--aof-use-rdb-preamble", "no")
            .start();
        let replica = ServerConfig::new(flavor).start();
        let (mut p, mut r) = (primary.conn(), replica.conn());
        replicaof(&mut r, Some(&primary));
        let now = tally_tests::now_ms();
        let add = |p: &mut Connection, ts: Option<u64>| {
            let ts = ts.map(|t| t.to_string());
            let mut words = vec!["METRIC.ADD", "m", "2.5"];
            if let Some(ts) = &ts {
                words.extend(["TS", ts]);
            }
            primary.run(p, &words).unwrap();
        };
        // 30 minutes of history up to 10 minutes ago, one sample every 15 s (the next write
        // opens a new minute, which is when old buckets are dropped).
        for i in 0..120 {
            add(&mut p, Some(now - 2_400_000 + i * 15_000));
        }
        config_set_retention(&mut p, 60_000);
        add(&mut p, None);
        add(&mut p, Some(now - 30_000));
        config_set_retention(&mut p, 3_600_000);
        add(&mut p, None);
        add(&mut p, Some(now - 1_200_000)); // older than what was dropped
        let window = |c: &mut Connection| {
            let v: Value = tally_tests::redis::cmd("METRIC.SUMMARY")
                .arg("m")
                .arg("WINDOW")
                .arg(3_600_000)
                .query(c)
                .unwrap();
            tally_tests::field_f64(&v, "count")
        };
        let kept = window(&mut p);
        assert!(
            kept < Some(10.0),
            "{flavor:?}: the old minutes were dropped: {kept:?}"
        );
        assert_same_dataset(&mut p, &mut r, &format!("{flavor:?}: replica"));
        let before = digest(&mut p, "m");
        let _: Value = tally_tests::redis::cmd("DEBUG")
            .arg("LOADAOF")
            .query(&mut p)
            .unwrap();
        assert_eq!(
            digest(&mut p, "m"),
            before,
            "{flavor:?}: after DEBUG LOADAOF"
        );
        assert_eq!(window(&mut p), kept, "{flavor:?}: nothing came back");
    }
}

/// An AOF written before the effect carried its retention (`METRIC.ADD key value TS ts`)
/// still replays, as then: relative to the newest timestamp.
#[test]
fn an_aof_of_effects_without_the_retention_still_replays() {
    let mut server = ServerConfig::new(Flavor::Redis)
        .arg("--appendonly", "yes")
        .arg("--aof-use-rdb-preamble", "no")
        .start();
    let mut c = server.conn();
    // The files exist once the server has started; stop it and append old-style effects.
    server.run(&mut c, &["PING"]).unwrap();
    server.shutdown();
    let dir = server.dir().join("appendonlydir");
    let incr = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .expect("an incremental AOF file");
    let now = tally_tests::now_ms();
    let mut text = String::new();
    for (v, ts) in [("1.5", now - 7_200_000), ("2.5", now - 1000), ("3.5", now)] {
        let ts = ts.to_string();
        let words = ["METRIC.ADD", "old", v, "TS", &ts];
        text.push_str(&format!("*{}\r\n", words.len()));
        for w in words {
            text.push_str(&format!("${}\r\n{w}\r\n", w.len()));
        }
    }
    let mut bytes = std::fs::read(&incr).unwrap();
    bytes.extend_from_slice(text.as_bytes());
    std::fs::write(&incr, bytes).unwrap();
    server.restart();
    let mut c = server.conn();
    let all: Value = tally_tests::redis::cmd("METRIC.SUMMARY")
        .arg("old")
        .query(&mut c)
        .unwrap();
    assert_eq!(tally_tests::field_f64(&all, "count"), Some(3.0));
    let hour: Value = tally_tests::redis::cmd("METRIC.SUMMARY")
        .arg("old")
        .arg("WINDOW")
        .arg(3_600_000)
        .query(&mut c)
        .unwrap();
    assert_eq!(tally_tests::field_f64(&hour, "count"), Some(2.0));
}
