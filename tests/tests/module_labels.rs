//! The module's side of labels through a real server: `METRIC.EXPORT` (the mergeable state of
//! a series: all-time, a window, range points) decoded and merged with `tally-core`, equal to
//! one series fed the union; and `METRIC.RANGE ... QUANTILES`, per-bucket quantiles within 1%.

use tally_core::metric::state::{decode_points, State};
use tally_tests::redis::{self, Value};
use tally_tests::{field_f64, now_ms, pairs, Server};

fn add(s: &Server, c: &mut redis::Connection, key: &str, v: f64, ts: u64) {
    s.run(
        c,
        &["METRIC.ADD", key, &v.to_string(), "TS", &ts.to_string()],
    )
    .expect("METRIC.ADD");
}

fn export(s: &Server, c: &mut redis::Connection, words: &[&str]) -> Option<Vec<u8>> {
    match s
        .run(c, &[&["METRIC.EXPORT"], words].concat())
        .expect("EXPORT")
    {
        Value::Nil => None,
        Value::BulkString(b) => Some(b),
        other => panic!("EXPORT replied {other:?}"),
    }
}

#[test]
fn exported_states_merge_into_the_state_of_one_series_fed_the_union() {
    let s = Server::start();
    let mut c = s.conn();
    let base = now_ms() / 60_000 * 60_000 - 300_000;
    for i in 0..300u64 {
        let v = ((i * 7919) % 1000) as f64 / 10.0 - 30.0;
        let ts = base + i * 900;
        let part = ["a", "b", "c"][(i % 3) as usize];
        add(&s, &mut c, part, v, ts);
        add(&s, &mut c, "all", v, ts);
    }
    let from = base.to_string();
    let to = (base + 300_000).to_string();
    for words in [
        vec![],
        vec!["WINDOW", "3600000"],
        vec!["RANGE", from.as_str(), to.as_str(), "60000"],
    ] {
        let whole = export(&s, &mut c, &[&["all"], &words[..]].concat()).expect("all");
        let parts: Vec<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|k| export(&s, &mut c, &[&[*k], &words[..]].concat()).expect("part"))
            .collect();
        if words.first() == Some(&"RANGE") {
            let whole = decode_points(&whole).expect("points");
            assert_eq!(whole.len(), 5, "five minutes");
            let mut merged: std::collections::BTreeMap<u64, State> = Default::default();
            for p in &parts {
                for (ts, st) in decode_points(p).expect("points") {
                    merged.entry(ts).or_default().merge(&st);
                }
            }
            for ((ts, w), (mts, m)) in whole.iter().zip(&merged) {
                assert_eq!(ts, mts);
                assert_eq!(w.bins(), m.bins());
                let (ws, ms) = (w.summary().unwrap(), m.summary().unwrap());
                assert_eq!((ws.count, ws.min, ws.max), (ms.count, ms.min, ms.max));
                assert_eq!(ws.quantiles, ms.quantiles);
            }
            continue;
        }
        let whole = State::decode(&whole).expect("state");
        let mut merged = State::default();
        for p in &parts {
            merged.merge(&State::decode(p).expect("state"));
        }
        assert_eq!(whole.bins(), merged.bins(), "{words:?}: the same bins");
        let (w, m) = (whole.summary().unwrap(), merged.summary().unwrap());
        assert_eq!((w.count, w.min, w.max), (m.count, m.min, m.max));
        assert_eq!(w.quantiles, m.quantiles);
        assert!((w.stddev - m.stddev).abs() < 1e-9 * w.stddev.abs().max(1.0));
        assert!((w.sum - m.sum).abs() < 1e-9 * w.sum.abs().max(1.0));
    }
    // The all-time state summarizes as METRIC.SUMMARY does.
    let summary = s.run(&mut c, &["METRIC.SUMMARY", "all"]).unwrap();
    let state = State::decode(&export(&s, &mut c, &["all"]).unwrap()).unwrap();
    let st = state.summary().unwrap();
    for (name, q) in ["p50", "p90", "p95", "p99"].iter().zip(st.quantiles) {
        assert_eq!(field_f64(&summary, name), q, "{name}");
    }
    assert_eq!(field_f64(&summary, "stddev"), Some(st.stddev));

    // A missing key is nil; another type is WRONGTYPE; bad arguments are named.
    assert_eq!(export(&s, &mut c, &["missing"]), None);
    s.run(&mut c, &["SET", "str", "x"]).unwrap();
    let e = s.run(&mut c, &["METRIC.EXPORT", "str"]).unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    let e = s
        .run(&mut c, &["METRIC.EXPORT", "all", "WINDOW", "3600001"])
        .unwrap_err();
    assert!(e.to_string().contains("window_ms"), "{e}");
    let e = s
        .run(&mut c, &["METRIC.EXPORT", "all", "RANGE", "-", "+", "1500"])
        .unwrap_err();
    assert!(e.to_string().contains("bucket_ms"), "{e}");
}

#[test]
fn range_quantiles_give_each_bucket_p50_to_p99_within_one_percent() {
    let s = Server::start();
    let mut c = s.conn();
    let base = now_ms() / 60_000 * 60_000 - 180_000;
    let mut per_minute: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for i in 0..360u64 {
        let v = 1.0 + ((i * 104_729) % 5000) as f64 / 7.0;
        let ts = base + i * 500;
        per_minute[(i * 500 / 60_000) as usize].push(v);
        add(&s, &mut c, "lat", v, ts);
    }
    let from = base.to_string();
    let to = (base + 179_999).to_string();
    for resp3 in [false, true] {
        let mut conn = if resp3 { s.conn_resp3() } else { s.conn() };
        let reply = s
            .run(
                &mut conn,
                &["METRIC.RANGE", "lat", &from, &to, "60000", "QUANTILES"],
            )
            .unwrap();
        let Value::Array(points) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(points.len(), 3);
        for (p, values) in points.iter().zip(&per_minute) {
            let names: Vec<String> = pairs(p).into_iter().map(|(k, _)| k).collect();
            assert_eq!(
                names,
                ["ts", "count", "sum", "min", "max", "avg", "p50", "p90", "p95", "p99"]
            );
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for (name, q) in [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)] {
                let exact = sorted[(q * sorted.len()).div_ceil(100) - 1];
                let got = field_f64(p, name).expect(name);
                assert!(
                    (got - exact).abs() <= 0.01 * exact,
                    "{name}: {got} vs {exact}"
                );
            }
        }
        // Without the flag the reply is unchanged.
        let plain = s
            .run(&mut conn, &["METRIC.RANGE", "lat", &from, &to, "60000"])
            .unwrap();
        let Value::Array(points) = plain else {
            panic!()
        };
        assert_eq!(pairs(&points[0]).len(), 6);
    }
}
