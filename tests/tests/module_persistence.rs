//! Persistence of both data types: DEBUG RELOAD, restart from an RDB, restart from a rewritten
//! AOF without an RDB preamble, and loading an RDB written by the previous metric encoding.
//! Replies and DEBUG DIGEST-VALUE must be identical before and after.

use std::time::Duration;

use tally_tests::redis::{Connection, Value};
use tally_tests::{digest, wait_until, Flavor, Server, ServerConfig};

const NOW_ISH: u64 = 1_700_000_040_000;

/// A mixed workload: unit and weighted rate-limit logs, several policies, metrics with late,
/// explicit and server-timed samples.
fn workload(s: &Server, c: &mut Connection) {
    for i in 0..50 {
        let key = format!("rl:{}", i % 5);
        s.run(
            c,
            &["RATELIMIT.CHECK", &key, "30", "60000", "100", "3600000"],
        )
        .unwrap();
        if i % 7 == 0 {
            s.run(c, &["RATELIMIT.CHECK", &key, "30", "60000", "COST", "3"])
                .unwrap();
        }
    }
    for i in 0..300u64 {
        let key = format!("metric:{}", i % 3);
        let v = format!("{}", (i * 37 % 101) as f64 / 3.0);
        s.run(c, &["METRIC.ADD", &key, &v]).unwrap();
        let ts = (NOW_ISH + i * 1500).to_string();
        s.run(c, &["METRIC.ADD", &key, &v, "TS", &ts]).unwrap();
    }
}

/// Everything observable about the keys, apart from TTLs: digests and full replies.
fn snapshot(s: &Server, c: &mut Connection) -> Vec<(String, String, Value)> {
    let mut keys: Vec<String> = tally_tests::redis::cmd("KEYS").arg("*").query(c).unwrap();
    keys.sort();
    assert!(keys.len() >= 8, "{keys:?}");
    keys.into_iter()
        .map(|k| {
            let reply = if k.starts_with("metric:") {
                let all = s.run(c, &["METRIC.SUMMARY", &k]).unwrap();
                let range = s.run(c, &["METRIC.RANGE", &k, "-", "+", "60000"]).unwrap();
                Value::Array(vec![all, range])
            } else {
                s.run(c, &["RATELIMIT.PEEK", &k, "1000", "3600000"])
                    .unwrap()
            };
            let d = digest(c, &k);
            (k, d, reply)
        })
        .collect()
}

/// PEEK's retry/reset fields move with the clock; compare only what does not.
fn stable(snap: Vec<(String, String, Value)>) -> Vec<(String, String, Value)> {
    snap.into_iter()
        .map(|(k, d, v)| match v {
            Value::Array(items) if !k.starts_with("metric:") => {
                (k, d, Value::Array(items[..3].to_vec()))
            }
            other => (k, d, other),
        })
        .collect()
}

#[test]
fn debug_reload_keeps_every_value_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        workload(&s, &mut c);
        let before = stable(snapshot(&s, &mut c));
        let _: Value = tally_tests::redis::cmd("DEBUG")
            .arg("RELOAD")
            .query(&mut c)
            .unwrap();
        assert_eq!(stable(snapshot(&s, &mut c)), before, "{flavor:?}");
    }
}

#[test]
fn restart_from_rdb_keeps_every_value_and_expiry() {
    let mut s = Server::start();
    let mut c = s.conn();
    workload(&s, &mut c);
    let before = stable(snapshot(&s, &mut c));
    let ttl_before: i64 = tally_tests::redis::cmd("PTTL")
        .arg("rl:0")
        .query(&mut c)
        .unwrap();
    let _: Value = tally_tests::redis::cmd("SAVE").query(&mut c).unwrap();
    s.restart();
    let mut c = s.conn();
    assert_eq!(stable(snapshot(&s, &mut c)), before);
    let ttl_after: i64 = tally_tests::redis::cmd("PTTL")
        .arg("rl:0")
        .query(&mut c)
        .unwrap();
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "{ttl_before} -> {ttl_after}"
    );
}

/// `flavor` writing an AOF of plain commands (no RDB preamble), every write fsynced.
fn aof_without_preamble(flavor: Flavor) -> tally_tests::Server {
    ServerConfig::new(flavor)
        .arg("--appendonly", "yes")
        .arg("--aof-use-rdb-preamble", "no")
        .arg("--appendfsync", "always")
        .start()
}

#[test]
fn restart_from_a_rewritten_aof_without_rdb_preamble_keeps_every_value() {
    for flavor in Flavor::all() {
        let mut s = aof_without_preamble(flavor);
        let mut c = s.conn();
        workload(&s, &mut c);
        let _: Value = tally_tests::redis::cmd("BGREWRITEAOF")
            .query(&mut c)
            .unwrap();
        wait_for_aof_rewrite(&mut c, flavor);
        // Writes after the rewrite land in the incremental AOF on top of the rewritten base.
        s.run(
            &mut c,
            &["METRIC.ADD", "metric:0", "99", "TS", "1700000090000"],
        )
        .unwrap();
        s.run(&mut c, &["RATELIMIT.CHECK", "rl:1", "500", "60000"])
            .unwrap();
        let before = stable(snapshot(&s, &mut c));
        // The rewritten AOF holds the module's RESTORE commands, not an RDB preamble.
        let aof_text = aof_contents(s.dir());
        assert!(
            aof_text.contains("METRIC.RESTORE"),
            "{flavor:?}: no METRIC.RESTORE in AOF"
        );
        assert!(
            aof_text.contains("RATELIMIT.RESTORE"),
            "{flavor:?}: no RATELIMIT.RESTORE"
        );
        assert!(
            !aof_text.starts_with("REDIS"),
            "an RDB preamble was written"
        );
        s.kill();
        s.restart();
        let mut c = s.conn();
        assert_eq!(stable(snapshot(&s, &mut c)), before, "{flavor:?}");
    }
}

#[test]
fn an_aof_switched_on_at_runtime_gets_explicit_effects_on_every_flavor() {
    for flavor in Flavor::all() {
        let mut s = ServerConfig::new(flavor)
            .arg("--appendfsync", "always")
            .start();
        let mut c = s.conn();
        // No AOF and no replica yet: these writes build no explicit effect.
        workload(&s, &mut c);
        let _: Value = tally_tests::redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .query(&mut c)
            .unwrap();
        wait_for_aof_rewrite(&mut c, flavor);
        // Now every clock-reading write must reach the AOF as its deterministic effect.
        for i in 0..20 {
            let key = format!("rl:{}", i % 3);
            s.run(&mut c, &["RATELIMIT.CHECK", &key, "500", "60000"])
                .unwrap();
            s.run(&mut c, &["METRIC.ADD", "metric:1", "7.5"]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let before = stable(snapshot(&s, &mut c));
        let aof_text = aof_contents(s.dir());
        assert!(
            aof_text.contains("RATELIMIT.RECORD"),
            "{flavor:?}: no RATELIMIT.RECORD in the AOF"
        );
        assert!(
            !aof_text.contains("RATELIMIT.CHECK"),
            "{flavor:?}: a CHECK reached the AOF as it was sent"
        );
        // Replayed later, a verbatim CHECK or ADD would read a later clock and differ.
        std::thread::sleep(Duration::from_millis(50));
        s.kill();
        s.restart_with_args(vec!["--appendonly".into(), "yes".into()]);
        let mut c = s.conn();
        assert_eq!(stable(snapshot(&s, &mut c)), before, "{flavor:?}");
    }
}

/// `PEXPIRETIME` of every key (-1: no expiry), and its digest.
fn expiries(c: &mut Connection, keys: &[&str]) -> Vec<(i64, String)> {
    keys.iter()
        .map(|k| {
            let at: i64 = tally_tests::redis::cmd("PEXPIRETIME")
                .arg(k)
                .query(c)
                .unwrap();
            (at, digest(c, k))
        })
        .collect()
}

/// A key PERSISTed after CHECK stays without a TTL through an AOF rewrite without preamble
/// and its reload (RATELIMIT.RESTORE used to set the log's expiry again), and keys with a TTL
/// keep exactly theirs (the rewrite emits PEXPIREAT after the RESTORE).
#[test]
fn persist_survives_an_aof_rewrite_and_reload_and_ttls_stay_exact_on_every_flavor() {
    for flavor in Flavor::all() {
        let mut s = aof_without_preamble(flavor);
        let mut c = s.conn();
        for key in ["rl:persisted", "rl:ttl"] {
            s.run(&mut c, &["RATELIMIT.CHECK", key, "5", "600000"])
                .unwrap();
            s.run(
                &mut c,
                &["RATELIMIT.CHECK", key, "50", "600000", "COST", "7"],
            )
            .unwrap();
        }
        s.run(&mut c, &["METRIC.ADD", "m:persisted", "1.5"])
            .unwrap();
        s.run(&mut c, &["METRIC.ADD", "m:ttl", "2.5"]).unwrap();
        s.run(&mut c, &["PEXPIRE", "m:ttl", "600000"]).unwrap();
        let persisted: i64 = tally_tests::redis::cmd("PERSIST")
            .arg("rl:persisted")
            .query(&mut c)
            .unwrap();
        assert_eq!(persisted, 1, "{flavor:?}: the key had a TTL");
        let keys = ["rl:persisted", "rl:ttl", "m:persisted", "m:ttl"];
        let before = expiries(&mut c, &keys);
        assert_eq!(before[0].0, -1);
        assert!(before[1].0 > 0 && before[3].0 > 0, "{before:?}");
        let _: Value = tally_tests::redis::cmd("BGREWRITEAOF")
            .query(&mut c)
            .unwrap();
        wait_for_aof_rewrite(&mut c, flavor);
        let aof_text = aof_contents(s.dir());
        assert!(aof_text.contains("RATELIMIT.RESTORE") && !aof_text.starts_with("REDIS"));
        let _: Value = tally_tests::redis::cmd("DEBUG")
            .arg("LOADAOF")
            .query(&mut c)
            .unwrap();
        assert_eq!(expiries(&mut c, &keys), before, "{flavor:?}: DEBUG LOADAOF");
        s.kill();
        s.restart();
        let mut c = s.conn();
        assert_eq!(expiries(&mut c, &keys), before, "{flavor:?}: restart");
    }
}

/// Waits until the AOF is on and its rewrite has finished and succeeded.
fn wait_for_aof_rewrite(c: &mut Connection, flavor: Flavor) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            let info: String = tally_tests::redis::cmd("INFO")
                .arg("persistence")
                .query(c)
                .unwrap();
            info.contains("aof_enabled:1")
                && info.contains("aof_rewrite_in_progress:0")
                && info.contains("aof_rewrite_scheduled:0")
                && info.contains("aof_last_bgrewrite_status:ok")
        }),
        "{flavor:?}: the AOF rewrite did not finish"
    );
}

/// The text of every AOF file in `dir` (Redis 7 keeps them in appendonlydir/).
fn aof_contents(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for d in [dir.to_path_buf(), dir.join("appendonlydir")] {
        if let Ok(entries) = std::fs::read_dir(&d) {
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                if f.to_string_lossy().contains(".aof") && f.is_file() {
                    out.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
                }
            }
        }
    }
    out
}

#[test]
fn an_rdb_written_by_the_first_encodings_still_loads() {
    // tests/data/v1.rdb was saved by the module as of its first commit (rate-limit log v1,
    // metric series v1: all-time aggregates only), after:
    //   METRIC.ADD metric:v1 {10,20,30,40} TS {1000,2000,3000,4000}
    //   RATELIMIT.RECORD rl:v1 1795400000000 1 4294967295   (and +500 ms cost 2, +1000 ms cost 1)
    //   PERSIST rl:v1
    // DEBUG DIGEST-VALUE rl:v1 answered 1aa016e7343481fa9f688196de33efa5df228c96 then.
    let mut s = Server::start();
    s.shutdown();
    std::fs::copy(
        tally_tests::workspace_root().join("tests/data/v1.rdb"),
        s.dir().join("dump.rdb"),
    )
    .unwrap();
    s.restart();
    let mut c = s.conn();
    let v = s.run(&mut c, &["METRIC.SUMMARY", "metric:v1"]).unwrap();
    assert_eq!(tally_tests::field_f64(&v, "count"), Some(4.0));
    assert_eq!(tally_tests::field_f64(&v, "sum"), Some(100.0));
    assert_eq!(tally_tests::field_f64(&v, "min"), Some(10.0));
    assert_eq!(tally_tests::field_f64(&v, "max"), Some(40.0));
    assert_eq!(tally_tests::field_f64(&v, "first_ts"), Some(1000.0));
    assert_eq!(tally_tests::field_f64(&v, "last_ts"), Some(4000.0));
    // No sketch in v1: quantiles are nil until new samples arrive.
    assert_eq!(tally_tests::field_f64(&v, "p50"), None);
    s.run(&mut c, &["METRIC.ADD", "metric:v1", "50", "TS", "5000"])
        .unwrap();
    let v = s.run(&mut c, &["METRIC.SUMMARY", "metric:v1"]).unwrap();
    assert_eq!(tally_tests::field_f64(&v, "count"), Some(5.0));
    let p50 = tally_tests::field_f64(&v, "p50").unwrap();
    assert!(
        (p50 - 50.0).abs() <= 0.5,
        "the sketch holds the new sample: {p50}"
    );
    // The log's encoding is still v1, so its digest (taken from the encoding) is unchanged.
    assert_eq!(
        digest(&mut c, "rl:v1"),
        "1aa016e7343481fa9f688196de33efa5df228c96"
    );
}
