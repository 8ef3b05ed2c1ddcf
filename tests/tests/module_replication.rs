//! Deterministic replication: a replica that follows a primary through a mixed workload ends
//! with the same digest for every key and the same whole-dataset digest (expiries included).

use std::time::Duration;

use tally_tests::redis::Value;
use tally_tests::{digest, wait_until, Flavor, ServerConfig};

#[test]
fn a_replica_ends_with_the_primarys_digests_on_every_flavor() {
    for flavor in Flavor::all() {
        let primary = ServerConfig::new(flavor)
            .arg("--tally.series-ttl-ms", "3600000")
            .start();
        let replica = ServerConfig::new(flavor)
            .arg("--tally.series-ttl-ms", "3600000")
            .start();
        let mut p = primary.conn();
        let mut r = replica.conn();
        let _: Value = tally_tests::redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port)
            .query(&mut r)
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || {
            let info: String = tally_tests::redis::cmd("INFO")
                .arg("replication")
                .query(&mut r)
                .unwrap();
            info.contains("master_link_status:up")
        }));
        // Some state before the replica syncs is covered by the initial sync; the rest streams.
        for i in 0..400u64 {
            let key = format!("rl:{}", i % 7);
            let cost = (1 + i % 3).to_string();
            primary
                .run(
                    &mut p,
                    &[
                        "RATELIMIT.CHECK",
                        &key,
                        "20",
                        "1000",
                        "50",
                        "60000",
                        "COST",
                        &cost,
                    ],
                )
                .unwrap();
            primary
                .run(&mut p, &["RATELIMIT.PEEK", &key, "20", "1000"])
                .unwrap();
            let mkey = format!("metric:{}", i % 4);
            let v = format!("{}.25", i % 17);
            primary.run(&mut p, &["METRIC.ADD", &mkey, &v]).unwrap();
            if i % 5 == 0 {
                let ts = (1_700_000_000_000 + i * 7919).to_string();
                primary
                    .run(&mut p, &["METRIC.ADD", &mkey, &v, "TS", &ts])
                    .unwrap();
            }
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let acked: i64 = tally_tests::redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut p)
            .unwrap();
        assert_eq!(acked, 1, "{flavor:?}");
        let mut keys: Vec<String> = tally_tests::redis::cmd("KEYS")
            .arg("*")
            .query(&mut p)
            .unwrap();
        keys.sort();
        assert_eq!(keys.len(), 11);
        for k in &keys {
            assert_eq!(digest(&mut p, k), digest(&mut r, k), "{flavor:?} key {k}");
            let pt: i64 = tally_tests::redis::cmd("PEXPIRETIME")
                .arg(k)
                .query(&mut p)
                .unwrap();
            let rt: i64 = tally_tests::redis::cmd("PEXPIRETIME")
                .arg(k)
                .query(&mut r)
                .unwrap();
            assert_eq!(pt, rt, "{flavor:?} expiry of {k}");
            assert!(pt > 0, "{k} has an expiry");
        }
        let whole_p: String = tally_tests::redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(&mut p)
            .unwrap();
        let whole_r: String = tally_tests::redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(&mut r)
            .unwrap();
        assert_eq!(whole_p, whole_r, "{flavor:?}");
    }
}
