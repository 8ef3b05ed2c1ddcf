//! METRIC.ADD / METRIC.SUMMARY against real servers: every field, RESP2 and RESP3, empty and
//! missing series, explicit timestamps.

use tally_tests::redis::Value;
use tally_tests::{field_f64, pairs, Flavor, Server};

#[test]
fn summary_reports_every_aggregate_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        for (v, ts) in [
            ("2", "3000"),
            ("4", "1000"),
            ("4", "2000"),
            ("4", "4000"),
            ("5", "5000"),
            ("5", "6000"),
            ("7", "7000"),
            ("9", "8000"),
        ] {
            s.run(&mut c, &["METRIC.ADD", "cpu", v, "TS", ts]).unwrap();
        }
        let n = s.run(&mut c, &["METRIC.ADD", "cpu", "0.5"]).unwrap();
        assert_eq!(n, Value::Int(9), "{flavor:?}: the reply is the total count");
        let v = s.run(&mut c, &["METRIC.SUMMARY", "cpu"]).unwrap();
        let names: Vec<String> = pairs(&v).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "count", "sum", "min", "max", "avg", "stddev", "first_ts", "last_ts", "p50", "p90",
                "p95", "p99"
            ],
            "{flavor:?}"
        );
        assert_eq!(field_f64(&v, "count"), Some(9.0));
        assert_eq!(field_f64(&v, "sum"), Some(40.5));
        assert_eq!(field_f64(&v, "min"), Some(0.5));
        assert_eq!(field_f64(&v, "max"), Some(9.0));
        assert_eq!(field_f64(&v, "avg"), Some(4.5));
        assert_eq!(field_f64(&v, "first_ts"), Some(1000.0));
        // The untimed sample was stamped with the server's clock.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        assert!((field_f64(&v, "last_ts").unwrap() - now).abs() < 60_000.0);
        let sd = field_f64(&v, "stddev").unwrap();
        let exact = {
            let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, 0.5f64];
            let m = xs.iter().sum::<f64>() / 9.0;
            (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 9.0).sqrt()
        };
        assert!((sd - exact).abs() < 1e-12, "{sd} vs {exact}");
        let ty: String = tally_tests::redis::cmd("TYPE")
            .arg("cpu")
            .query(&mut c)
            .unwrap();
        assert_eq!(ty, "tally-met");
    }
}

#[test]
fn a_missing_series_is_empty_with_nil_fields() {
    let s = Server::start();
    for mut c in [s.conn(), s.conn_resp3()] {
        let v = s.run(&mut c, &["METRIC.SUMMARY", "nothing"]).unwrap();
        let fields = pairs(&v);
        assert_eq!(fields[0], ("count".to_string(), Value::Int(0)));
        assert!(
            fields[1..].iter().all(|(_, v)| *v == Value::Nil),
            "{fields:?}"
        );
        assert_eq!(fields.len(), 12);
    }
}

#[test]
fn resp3_summary_is_a_map_of_doubles() {
    let s = Server::start();
    let mut c = s.conn_resp3();
    s.run(&mut c, &["METRIC.ADD", "m", "0.1"]).unwrap();
    s.run(&mut c, &["METRIC.ADD", "m", "0.2"]).unwrap();
    let v = s.run(&mut c, &["METRIC.SUMMARY", "m"]).unwrap();
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let sum = pairs(&v).into_iter().find(|(k, _)| k == "sum").unwrap().1;
    assert!(
        matches!(sum, Value::Double(d) if (d - 0.3).abs() < 1e-15),
        "{sum:?}"
    );
}

#[test]
fn resp2_doubles_parse_back_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    s.run(&mut c, &["METRIC.ADD", "m", "0.1"]).unwrap();
    s.run(&mut c, &["METRIC.ADD", "m", "1e300"]).unwrap();
    let v = s.run(&mut c, &["METRIC.SUMMARY", "m"]).unwrap();
    assert_eq!(field_f64(&v, "min"), Some(0.1));
    assert_eq!(field_f64(&v, "max"), Some(1e300));
}
