//! Realtime analytics through a real server: windows, ranges, quantiles, retention and idle
//! expiry, and the module configuration.

use tally_tests::redis::{self, Value};
use tally_tests::{field_f64, now_ms, pairs, Server, ServerConfig};

#[test]
fn windows_cover_the_last_window_ms_of_server_time() {
    let s = Server::start();
    let mut c = s.conn();
    let now = now_ms();
    // 10 recent samples (last 10 s), 5 from 3 minutes ago, 2 from 2 hours ago.
    for i in 0..10 {
        s.run(
            &mut c,
            &[
                "METRIC.ADD",
                "lat",
                "10",
                "TS",
                &(now - i * 1000).to_string(),
            ],
        )
        .unwrap();
    }
    for _ in 0..5 {
        s.run(
            &mut c,
            &[
                "METRIC.ADD",
                "lat",
                "100",
                "TS",
                &(now - 180_000).to_string(),
            ],
        )
        .unwrap();
    }
    for _ in 0..2 {
        s.run(
            &mut c,
            &[
                "METRIC.ADD",
                "lat",
                "1000",
                "TS",
                &(now - 7_200_000).to_string(),
            ],
        )
        .unwrap();
    }
    let w = |window: &str| {
        s.run(
            &mut c_clone(&s),
            &["METRIC.SUMMARY", "lat", "WINDOW", window],
        )
        .unwrap()
    };
    let recent = w("30000");
    assert_eq!(field_f64(&recent, "count"), Some(10.0));
    assert_eq!(field_f64(&recent, "p99"), Some(10.0));
    let ten_minutes = w("600000");
    assert_eq!(field_f64(&ten_minutes, "count"), Some(15.0));
    assert_eq!(field_f64(&ten_minutes, "max"), Some(100.0));
    // Two hours ago is outside the default one-hour retention: only the all-time view has it.
    let hour = w("3600000");
    assert_eq!(field_f64(&hour, "count"), Some(15.0));
    let all = s.run(&mut c, &["METRIC.SUMMARY", "lat"]).unwrap();
    assert_eq!(field_f64(&all, "count"), Some(17.0));
    assert_eq!(field_f64(&all, "max"), Some(1000.0));
    let names: Vec<String> = pairs(&all).into_iter().map(|(k, _)| k).collect();
    assert_eq!(&names[8..], ["p50", "p90", "p95", "p99"]);
    // An empty window: count 0, everything else nil.
    let empty = s
        .run(&mut c, &["METRIC.SUMMARY", "nothing", "WINDOW", "1000"])
        .unwrap();
    assert_eq!(field_f64(&empty, "count"), Some(0.0));
    assert_eq!(field_f64(&empty, "p50"), None);
}

fn c_clone(s: &Server) -> redis::Connection {
    s.conn()
}

#[test]
fn quantiles_from_the_server_are_within_1_percent_of_exact() {
    let s = Server::start();
    let mut c = s.conn();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut values = Vec::with_capacity(100_000);
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = -(1.0 - u).ln() * 50.0; // exponential, mean 50
            values.push(v);
            pipe.cmd("METRIC.ADD")
                .arg("exp")
                .arg(v.to_string())
                .ignore();
        }
        let _: () = pipe
            .query(&mut c)
            .unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
    }
    values.sort_by(f64::total_cmp);
    let v = s.run(&mut c, &["METRIC.SUMMARY", "exp"]).unwrap();
    for (name, pct) in [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)] {
        let rank = (pct * values.len()).div_ceil(100);
        let exact = values[rank - 1];
        let got = field_f64(&v, name).unwrap();
        assert!(
            ((got - exact) / exact).abs() <= 0.01,
            "{name}: {got} vs {exact}"
        );
    }
    // The same through a window covering everything.
    let w = s
        .run(&mut c, &["METRIC.SUMMARY", "exp", "WINDOW", "600000"])
        .unwrap();
    let got = field_f64(&w, "p99").unwrap();
    let exact = values[(99 * values.len()).div_ceil(100) - 1];
    assert!(
        ((got - exact) / exact).abs() <= 0.01,
        "windowed p99: {got} vs {exact}"
    );
}

#[test]
fn range_returns_non_empty_buckets_oldest_first() {
    let s = Server::start();
    let mut c = s.conn();
    // Aligned to 5 minutes so the 5-minute buckets below hold all four samples.
    let minute = now_ms() / 300_000 * 300_000 - 10 * 60_000;
    for (offset, v) in [(0, 25.0), (30_000, 75.0), (120_000, 10.0), (125_000, 20.0)] {
        s.run(
            &mut c,
            &[
                "METRIC.ADD",
                "cpu",
                &v.to_string(),
                "TS",
                &(minute + offset).to_string(),
            ],
        )
        .unwrap();
    }
    let v = s
        .run(&mut c, &["METRIC.RANGE", "cpu", "-", "+", "60000"])
        .unwrap();
    let Value::Array(points) = v else {
        panic!("{v:?}")
    };
    assert_eq!(points.len(), 2);
    let first = &points[0];
    assert_eq!(field_f64(first, "ts"), Some(minute as f64));
    assert_eq!(field_f64(first, "count"), Some(2.0));
    assert_eq!(field_f64(first, "avg"), Some(50.0));
    assert_eq!(field_f64(first, "sum"), Some(100.0));
    assert_eq!(
        (field_f64(first, "min"), field_f64(first, "max")),
        (Some(25.0), Some(75.0))
    );
    assert_eq!(field_f64(&points[1], "ts"), Some((minute + 120_000) as f64));
    // Explicit bounds, inclusive; 5-minute buckets merge both.
    let v = s
        .run(
            &mut c,
            &[
                "METRIC.RANGE",
                "cpu",
                &minute.to_string(),
                &(minute + 300_000).to_string(),
                "300000",
            ],
        )
        .unwrap();
    let Value::Array(points) = v else { panic!() };
    assert_eq!(points.len(), 1);
    assert_eq!(field_f64(&points[0], "count"), Some(4.0));
    // RESP3: each point is a map.
    let mut c3 = s.conn_resp3();
    let v = s
        .run(&mut c3, &["METRIC.RANGE", "cpu", "-", "+", "60000"])
        .unwrap();
    let Value::Array(points) = v else { panic!() };
    assert!(matches!(points[0], Value::Map(_)));
    // A missing key, and a range that would need too many buckets.
    assert_eq!(
        s.run(&mut c, &["METRIC.RANGE", "nope", "-", "+", "1000"])
            .unwrap(),
        Value::Array(vec![])
    );
    assert!(s
        .run(&mut c, &["METRIC.RANGE", "cpu", "0", "+", "1000"])
        .is_err());
}

fn config_get(c: &mut redis::Connection, name: &str) -> Vec<String> {
    redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap()
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
}

#[test]
fn configuration_is_readable_settable_and_bounds_windows() {
    let s = ServerConfig::new(tally_tests::Flavor::Redis)
        .arg("--tally.retention-ms", "120000")
        .start();
    let mut c = s.conn();
    let v: Vec<String> = config_get(&mut c, "tally.retention-ms");
    assert_eq!(v, ["tally.retention-ms", "120000"]);
    assert!(s
        .run(&mut c, &["METRIC.SUMMARY", "k", "WINDOW", "120001"])
        .is_err());
    config_set(&mut c, "tally.retention-ms", "600000").unwrap();
    s.run(&mut c, &["METRIC.SUMMARY", "k", "WINDOW", "600000"])
        .unwrap();
    let err = config_set(&mut c, "tally.retention-ms", "999");
    assert!(err.is_err(), "below the 1000 ms minimum");
    // Idle expiry: every add sets the TTL.
    let ttl: i64 = {
        config_set(&mut c, "tally.series-ttl-ms", "50000").unwrap();
        s.run(&mut c, &["METRIC.ADD", "idle", "1"]).unwrap();
        redis::cmd("PTTL").arg("idle").query(&mut c).unwrap()
    };
    assert!((40_000..=50_000).contains(&ttl), "{ttl}");
    config_set(&mut c, "tally.series-ttl-ms", "0").unwrap();
    s.run(&mut c, &["METRIC.ADD", "kept", "1"]).unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg("kept").query(&mut c).unwrap();
    assert_eq!(ttl, -1, "off by default: no expiry");
}

#[test]
fn module_arguments_configure_and_bad_ones_refuse_to_load() {
    let mut cfg = ServerConfig::new(tally_tests::Flavor::Redis);
    cfg.module_args = vec!["retention-ms".into(), "300000".into()];
    let s = cfg.start();
    let mut c = s.conn();
    let v: Vec<String> = config_get(&mut c, "tally.retention-ms");
    assert_eq!(v[1], "300000");
    drop(c);
    drop(s);
    // A bad value: the server refuses to start, and its log names the setting.
    let dir = tally_tests::TempDir::new("badarg");
    let out = std::process::Command::new("redis-server")
        .args(["--port", &tally_tests::free_port().to_string(), "--dir"])
        .arg(dir.path())
        .arg("--loadmodule")
        .arg(tally_tests::module_path())
        .args(["retention-ms", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("tally.retention-ms must be an integer between 1000"),
        "{log}"
    );
}

/// The (ts, count) of each point of a METRIC.RANGE reply.
fn points(v: &Value) -> Vec<(u64, u64)> {
    let Value::Array(items) = v else {
        panic!("not an array: {v:?}")
    };
    items
        .iter()
        .map(|p| {
            (
                field_f64(p, "ts").unwrap() as u64,
                field_f64(p, "count").unwrap() as u64,
            )
        })
        .collect()
}

/// Issue 13.2: a series created seconds ago answers its newest seconds at 1 s resolution,
/// and every sample is in exactly one point.
#[test]
fn a_fresh_series_charts_its_last_seconds_one_second_at_a_time() {
    let s = Server::start();
    let mut c = s.conn();
    let now = now_ms();
    let stamps: Vec<u64> = (0..8).map(|i| now - 7000 + i * 1000).collect();
    for ts in &stamps {
        s.run(&mut c, &["METRIC.ADD", "fresh", "5", "TS", &ts.to_string()])
            .unwrap();
    }
    s.run(&mut c, &["METRIC.ADD", "fresh", "5"]).unwrap();
    let to = now_ms();
    let from = now - 10_000;
    let got = points(
        &s.run(
            &mut c,
            &[
                "METRIC.RANGE",
                "fresh",
                &from.to_string(),
                &to.to_string(),
                "1000",
            ],
        )
        .unwrap(),
    );
    assert_eq!(got.iter().map(|p| p.1).sum::<u64>(), 9, "{got:?}");
    for ts in &stamps {
        assert!(
            got.iter().any(|&(t, _)| t == ts / 1000 * 1000),
            "{ts} has its own second: {got:?}"
        );
    }
    // `-` and `+` resolve to the same data.
    let all = points(
        &s.run(&mut c, &["METRIC.RANGE", "fresh", "-", "+", "1000"])
            .unwrap(),
    );
    assert_eq!(all.iter().map(|p| p.1).sum::<u64>(), 9, "{all:?}");
}

/// Issue 14.3: a TS more than 5 minutes ahead is refused and writes nothing; one 2 minutes
/// ahead counts all-time at once and in windows and ranges once server time reaches it.
#[test]
fn a_sample_from_the_future_is_refused_or_waits_for_its_time() {
    let s = Server::start();
    let mut c = s.conn();
    let err = s
        .run(&mut c, &["METRIC.ADD", "cpu", "1", "TS", "253402300799000"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TS must not be more than 300000 ms after the server's time"),
        "{err}"
    );
    let exists: i64 = redis::cmd("EXISTS").arg("cpu").query(&mut c).unwrap();
    assert_eq!(exists, 0, "nothing written");
    let too_far = (now_ms() + 400_000).to_string();
    assert!(s
        .run(&mut c, &["METRIC.ADD", "cpu", "1", "TS", &too_far])
        .is_err());

    for _ in 0..3 {
        s.run(&mut c, &["METRIC.ADD", "cpu", "1"]).unwrap();
    }
    let ahead = now_ms() + 120_000;
    s.run(
        &mut c,
        &["METRIC.ADD", "cpu", "99", "TS", &ahead.to_string()],
    )
    .unwrap();
    s.run(&mut c, &["METRIC.ADD", "cpu", "1"]).unwrap();
    let all = s.run(&mut c, &["METRIC.SUMMARY", "cpu"]).unwrap();
    assert_eq!(field_f64(&all, "count"), Some(5.0));
    for window in ["10000", "60000", "3600000"] {
        let w = s
            .run(&mut c, &["METRIC.SUMMARY", "cpu", "WINDOW", window])
            .unwrap();
        assert_eq!(field_f64(&w, "count"), Some(4.0), "window {window}");
        assert_eq!(field_f64(&w, "max"), Some(1.0), "window {window}");
    }
    let range = points(
        &s.run(&mut c, &["METRIC.RANGE", "cpu", "-", "+", "1000"])
            .unwrap(),
    );
    assert_eq!(range.iter().map(|p| p.1).sum::<u64>(), 4, "{range:?}");
    let explicit = points(
        &s.run(
            &mut c,
            &[
                "METRIC.RANGE",
                "cpu",
                &(ahead - 3_600_000).to_string(),
                &(ahead + 60_000).to_string(),
                "60000",
            ],
        )
        .unwrap(),
    );
    assert_eq!(explicit.iter().map(|p| p.1).sum::<u64>(), 4, "{explicit:?}");
}

/// The internal arguments of the replicated effect are refused from a client.
#[test]
fn retention_and_now_are_internal_arguments() {
    let s = Server::start();
    let mut c = s.conn();
    let ts = now_ms().to_string();
    let err = s
        .run(
            &mut c,
            &[
                "METRIC.ADD",
                "m",
                "1",
                "TS",
                &ts,
                "RETENTION",
                "1000",
                "NOW",
                &ts,
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("internal"), "{err}");
    let exists: i64 = redis::cmd("EXISTS").arg("m").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    let err = s
        .run(
            &mut c,
            &[
                "METRIC.ADD",
                "m",
                "1",
                "TS",
                &ts,
                "RETENTION",
                "1000",
                "THEN",
                &ts,
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("syntax error near 'THEN'"), "{err}");
}
