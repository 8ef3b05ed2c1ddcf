//! The realtime-analytics REST endpoints (SPEC §5) over the real HTTP stack and a real
//! redis-server with the module: quantiles and windows in the summary, series for charts,
//! batches (validated whole, one rate-limit check of their size, one pipeline) and the list of
//! metric types (SCAN ... TYPE tally-met).

use serde_json::{json as j, Value};
use tally_api::config::Config;
use tally_api::routes::metrics::rfc3339;
use tally_tests::api::{
    assert_too_many_requests, assert_whole_budget, config, exists, stored_count, TestApp,
};
use tally_tests::http::{header, json};
use tally_tests::{now_ms, Flavor, Server, ServerConfig};

/// Unix ms as the RFC 3339 text the API reads and writes.
fn ts(ms: u64) -> String {
    rfc3339(Some(ms as i64)).expect("a representable time")
}

/// One metric object of a POST body.
fn metric(kind: &str, value: f64, ms: u64) -> String {
    j!({"timestamp": ts(ms), "value": value, "type": kind}).to_string()
}

/// A JSON array of metric objects.
fn batch(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// The API on `server` with a rate limit that tests storing many samples do not hit.
async fn roomy_app(server: &Server) -> TestApp {
    TestApp::spawn_with(Config {
        rate_limit: 10_000,
        ..config(&server.url())
    })
    .await
}

const QUANTILES: [&str; 4] = ["p50", "p90", "p95", "p99"];

#[tokio::test]
async fn every_summary_has_p50_to_p99_within_one_percent_and_null_without_samples() {
    let server = Server::start();
    let app = roomy_app(&server).await;
    let base = now_ms() - 60_000;
    let items: Vec<String> = (1..=100)
        .map(|v| metric("lat", f64::from(v), base + v as u64))
        .collect();
    assert_eq!(app.post_batch(&batch(&items)).await.status(), 201);

    let (status, body) = json(app.summary("lat").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 100);
    // The exact sample quantile is the value of rank ceil(q * count): 50, 90, 95, 99.
    for (field, exact) in QUANTILES.iter().zip([50.0, 90.0, 95.0, 99.0]) {
        let got = body[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {body}"));
        assert!(
            (got - exact).abs() <= exact * 0.01,
            "{field} = {got}, exact {exact}"
        );
    }
    assert!(
        body.get("window").is_none(),
        "all-time has no window: {body}"
    );

    let (status, body) = json(app.summary("never-posted").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["count"].clone(), body["average"].clone()),
        (j!(0), j!(0.0))
    );
    for field in QUANTILES {
        assert!(
            body.get(field).is_some_and(Value::is_null),
            "{field}: {body}"
        );
    }
}

#[tokio::test]
async fn a_window_of_60_s_is_echoed_and_counts_only_the_recent_samples() {
    let server = Server::start();
    let app = roomy_app(&server).await;
    let now = now_ms();
    for body in [
        metric("cpu", 10.0, now - 10_000),
        metric("cpu", 90.0, now - 2 * 3_600_000),
    ] {
        assert_eq!(app.post_metric(&body).await.status(), 201, "{body}");
    }

    let (status, body) = json(app.summary_window("cpu", "60").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "cpu");
    assert_eq!(body["window"], 60);
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["average"], 10.0);
    assert_eq!(
        (body["min"].clone(), body["max"].clone()),
        (j!(10.0), j!(10.0))
    );
    let p50 = body["p50"].as_f64().expect("p50");
    assert!((p50 - 10.0).abs() <= 0.1, "{p50}");

    let (status, body) = json(app.summary("cpu").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2, "all-time sees both: {body}");
    assert_eq!(body["average"], 50.0);
    assert!(body.get("window").is_none());

    // A window with nothing in it: count 0, quantiles null, the window still echoed.
    let (status, body) = json(app.summary_window("idle", "60").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["count"].clone(), body["window"].clone()),
        (j!(0), j!(60))
    );
    assert!(body["p99"].is_null(), "{body}");
}

#[tokio::test]
async fn a_window_that_is_not_a_positive_integer_or_beyond_the_retention_is_422() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for window in [
        "abc",
        "0",
        "-5",
        "1.5",
        "",
        "60s",
        "99999999999999999999999",
    ] {
        let (status, body) = json(app.summary_window("cpu", window).await).await;
        assert_eq!(status, 422, "window={window:?}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("window")),
            "{window:?}: {body}"
        );
    }
    // The default retention is one hour.
    let (status, _) = json(app.summary_window("cpu", "3600").await).await;
    assert_eq!(status, 200);
    for window in ["3601", "18446744073709551615"] {
        let (status, body) = json(app.summary_window("cpu", window).await).await;
        assert_eq!(status, 422, "{window}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("between 1 and 3600 "), "{detail}");
    }
}

#[tokio::test]
async fn the_window_limit_follows_the_module_retention_as_configured_in_redis() {
    let server = ServerConfig::new(Flavor::Redis)
        .arg("--tally.retention-ms", "600000")
        .start();
    let app = TestApp::spawn(&server).await;
    assert_eq!(app.summary_window("cpu", "600").await.status(), 200);
    let (status, body) = json(app.summary_window("cpu", "601").await).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("between 1 and 600 ")),
        "{body}"
    );
    // Changed at run time with CONFIG SET: the API has nothing cached.
    let mut c = server.conn();
    server
        .run(&mut c, &["CONFIG", "SET", "tally.retention-ms", "1200000"])
        .expect("CONFIG SET");
    assert_eq!(app.summary_window("cpu", "601").await.status(), 200);
}

#[tokio::test]
async fn the_series_has_the_documented_shape_non_empty_buckets_oldest_first() {
    let server = Server::start();
    let app = roomy_app(&server).await;
    // Five-minute aligned, 5 to 10 minutes ago: inside the retention, stored per minute.
    let base = now_ms() / 300_000 * 300_000 - 300_000;
    let items = [
        metric("cpu", 25.0, base),
        metric("cpu", 75.0, base + 30_000),
        metric("cpu", 10.0, base + 120_500),
        metric("memory", 999.0, base),
    ];
    assert_eq!(app.post_batch(&batch(&items)).await.status(), 201);

    let (status, body) = json(app.series(&[("metric_type", "cpu")]).await).await;
    assert_eq!(status, 200, "{body}");
    // Every point also carries p50..p99 (SPEC section 9), and the body the number of series.
    assert_eq!(
        body,
        j!({
            "type": "cpu",
            "bucket": 60,
            "series": 1,
            "points": [
                {"timestamp": ts(base), "count": 2, "average": 50.0, "min": 25.0, "max": 75.0, "sum": 100.0,
                 "p50": 25.0, "p90": 75.0, "p95": 75.0, "p99": 75.0},
                {"timestamp": ts(base + 120_000), "count": 1, "average": 10.0, "min": 10.0, "max": 10.0, "sum": 10.0,
                 "p50": 10.0, "p90": 10.0, "p95": 10.0, "p99": 10.0},
            ]
        })
    );
    assert!(ts(base).ends_with(":00Z"), "{}", ts(base));

    // One five-minute bucket holds all three.
    let (status, body) = json(
        app.series(&[("metric_type", "cpu"), ("bucket", "300")])
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["bucket"], 300);
    let p50 = body["points"][0]["p50"].as_f64().expect("p50");
    assert!((p50 - 25.0).abs() <= 0.25, "{body}");
    assert_eq!(
        body["points"],
        j!([{"timestamp": ts(base), "count": 3, "average": 110.0 / 3.0, "min": 10.0, "max": 75.0, "sum": 110.0,
             "p50": p50, "p90": 75.0, "p95": 75.0, "p99": 75.0}])
    );

    // from/to are inclusive bounds (RFC 3339, any offset).
    let from = ts(base + 60_000);
    let to = ts(base + 180_000);
    let (status, body) = json(
        app.series(&[("metric_type", "cpu"), ("from", &from), ("to", &to)])
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let stamps: Vec<&Value> = body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| &p["timestamp"])
        .collect();
    assert_eq!(stamps, [&j!(ts(base + 120_000))]);

    // A type without samples: no points (and nothing created).
    let (status, body) = json(app.series(&[("metric_type", "nothing")]).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        j!({"type": "nothing", "bucket": 60, "series": 0, "points": []})
    );
    assert!(!exists(&server, "metric:nothing"));
}

/// Issue 13.2: the chart of the newest seconds of a series created seconds ago is not empty,
/// and shows each second on its own.
#[tokio::test]
async fn a_fresh_series_charts_its_last_seconds_one_second_at_a_time() {
    let server = Server::start();
    let app = roomy_app(&server).await;
    let now = now_ms();
    let stamps: Vec<u64> = (0..5).map(|i| now - 8_000 + i * 2_000).collect();
    let items: Vec<String> = stamps.iter().map(|&t| metric("fresh", 1.0, t)).collect();
    assert_eq!(app.post_batch(&batch(&items)).await.status(), 201);
    let from = ts(now - 10_000);
    let (status, body) = json(
        app.series(&[("metric_type", "fresh"), ("from", &from), ("bucket", "1")])
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let points = body["points"].as_array().expect("points");
    let want: Vec<Value> = stamps.iter().map(|&t| j!(ts(t / 1000 * 1000))).collect();
    let got: Vec<Value> = points.iter().map(|p| p["timestamp"].clone()).collect();
    assert_eq!(got, want, "{body}");
    assert!(points.iter().all(|p| p["count"] == 1), "{body}");
}

#[tokio::test]
async fn bad_series_parameters_are_422_with_a_detail() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    assert_eq!(
        app.post_metric(&metric("cpu", 1.0, now_ms() - 5_000))
            .await
            .status(),
        201
    );
    let day_ago = ts(now_ms() - 86_400_000);
    for kind in ["cpu", "missing"] {
        for query in [
            vec![("metric_type", kind), ("from", "yesterday")],
            vec![("metric_type", kind), ("to", "2025-13-01T00:00:00Z")],
            vec![
                ("metric_type", kind),
                ("from", "2025-01-01T11:00:00Z"),
                ("to", "2025-01-01T10:00:00Z"),
            ],
            vec![("metric_type", kind), ("bucket", "0")],
            vec![("metric_type", kind), ("bucket", "-60")],
            vec![("metric_type", kind), ("bucket", "1.5")],
            vec![("metric_type", kind), ("bucket", "minute")],
            vec![("metric_type", kind), ("from", "1960-01-01T00:00:00Z")],
            // 86,400 buckets of 1 s: more than 10,000, whether or not the series exists.
            vec![
                ("metric_type", kind),
                ("from", day_ago.as_str()),
                ("bucket", "1"),
            ],
            vec![("metric_type", "")],
            vec![],
        ] {
            let (status, body) = json(app.series(&query).await).await;
            assert_eq!(status, 422, "{query:?}: {body}");
            assert!(body["detail"].is_string(), "{body}");
        }
    }
}

#[tokio::test]
async fn a_batch_is_stored_whole_and_answered_201_with_the_number_stored() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let now = now_ms();
    let items = [
        metric("cpu", 1.0, now - 3_000),
        metric("cpu", 2.0, now - 2_000),
        metric("memory", 3.0, now - 1_000),
    ];
    let resp = app.post_batch(&batch(&items)).await;
    assert_eq!(
        header(&resp, "ratelimit-policy").as_deref(),
        Some("\"default\";q=5;w=60")
    );
    let ratelimit = header(&resp, "ratelimit").expect("RateLimit");
    assert!(
        ratelimit.starts_with("\"default\";r=2;"),
        "costs 3: {ratelimit}"
    );
    let (status, body) = json(resp).await;
    assert_eq!((status, body), (201, j!({"stored": 3})));
    assert_eq!(stored_count(&server, "cpu"), 2);
    assert_eq!(stored_count(&server, "memory"), 1);
    let (_, body) = json(app.summary("cpu").await).await;
    assert_eq!(
        (body["count"].clone(), body["sum"].clone()),
        (j!(2), j!(3.0))
    );
}

#[tokio::test]
async fn a_batch_with_one_bad_item_is_422_naming_it_stores_nothing_and_uses_no_budget() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let now = now_ms();
    let mut items: Vec<String> = (0..3).map(|i| metric("cpu", 1.0, now - i)).collect();
    items.push(r#"{"timestamp":"2025-01-01T10:00:00","value":"high","type":"cpu"}"#.to_string());
    items.push(metric("cpu", 1.0, now));
    let (status, body) = json(app.post_batch(&batch(&items)).await).await;
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("item 3: ") && detail.contains("value"),
        "{detail}"
    );
    assert_eq!(stored_count(&server, "cpu"), 0);
    assert!(!exists(&server, "metric:cpu"), "nothing stored");
    assert!(!exists(&server, "ratelimit:127.0.0.1"), "no budget used");

    for (body, needle) in [
        ("[]", "at least one"),
        (
            r#"{"timestamp":"2025-01-01","value":1,"type":"cpu"}"#,
            "array",
        ),
        ("[{", "malformed"),
        (
            r#"[{"timestamp":"2025-01-01","value":1,"type":""}]"#,
            "item 0: type",
        ),
    ] {
        let (status, resp) = json(app.post_batch(body).await).await;
        assert_eq!(status, 422, "{body}: {resp}");
        let detail = resp["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{body}: {detail}");
    }

    // The whole budget is still there.
    assert_whole_budget(&app).await;
}

#[tokio::test]
async fn a_batch_of_more_than_batch_max_items_or_bytes_is_413() {
    let server = Server::start();
    let app = TestApp::spawn_with(Config {
        batch_max: 3,
        ..config(&server.url())
    })
    .await;
    let items: Vec<String> = (0..4).map(|i| metric("cpu", 1.0, now_ms() - i)).collect();
    let (status, body) = json(app.post_batch(&batch(&items)).await).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("BATCH_MAX")));
    assert_eq!(
        app.post_batch(&batch(&items[..3])).await.status(),
        201,
        "BATCH_MAX itself is fine"
    );
    // The body limit for 3 items is the 64 KiB floor.
    let huge = format!(
        r#"[{{"timestamp":"2025-01-01","value":1,"type":"cpu","pad":"{}"}}]"#,
        "x".repeat(70 * 1024)
    );
    let (status, _) = json(app.post_batch(&huge).await).await;
    assert_eq!(status, 413);
    assert_eq!(stored_count(&server, "cpu"), 3);
    let resp = app.get("/api/metrics/batch").await;
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow").as_deref(), Some("POST"));
}

#[tokio::test]
async fn a_batch_larger_than_the_remaining_budget_is_429_with_the_rate_limit_headers() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let now = now_ms();
    let three: Vec<String> = (0..3).map(|i| metric("cpu", 1.0, now - i)).collect();
    assert_eq!(app.post_batch(&batch(&three)).await.status(), 201);

    // 2 left, 3 asked: denied whole.
    let resp = app.post_batch(&batch(&three)).await;
    assert_too_many_requests(resp, 2).await;
    assert_eq!(
        stored_count(&server, "cpu"),
        3,
        "the denied batch stored nothing"
    );

    // More items than RATE_LIMIT can never pass: told to wait one window.
    let six: Vec<String> = (0..6).map(|i| metric("disk", 1.0, now - i)).collect();
    let fresh = Server::start();
    let other = TestApp::spawn(&fresh).await;
    let resp = other.post_batch(&batch(&six)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("60"));

    // Two left: a batch of two still passes.
    assert_eq!(app.post_batch(&batch(&three[..2])).await.status(), 201);
    assert_eq!(stored_count(&server, "cpu"), 5);
}

#[tokio::test]
async fn types_are_sorted_deduplicated_and_only_metric_series() {
    let server = Server::start();
    let app = roomy_app(&server).await;
    let (status, body) = json(app.types().await).await;
    assert_eq!((status, body), (200, j!({"types": []})));

    let now = now_ms();
    let items = [
        metric("memory", 1.0, now),
        metric("cpu", 1.0, now),
        metric("cpu", 2.0, now),
        metric("disk io", 3.0, now),
    ];
    assert_eq!(app.post_batch(&batch(&items)).await.status(), 201);
    assert!(exists(&server, "ratelimit:127.0.0.1"));
    let mut c = server.conn();
    server
        .run(&mut c, &["SET", "metric:fake", "a plain string"])
        .expect("SET");
    server
        .run(&mut c, &["METRIC.ADD", "other:cpu", "1"])
        .expect("METRIC.ADD outside metric:*");

    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200);
    assert_eq!(body, j!({"types": ["cpu", "disk io", "memory"]}));
}

#[tokio::test]
async fn types_walk_the_scan_cursor_over_the_whole_keyspace() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let mut c = server.conn();
    let mut pipe = tally_tests::redis::pipe();
    for i in 0..2500 {
        pipe.cmd("METRIC.ADD").arg(format!("metric:t{i:04}")).arg(1);
        pipe.cmd("SET").arg(format!("plain:{i}")).arg(1);
    }
    pipe.query::<()>(&mut c).expect("pipeline");
    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200);
    let types = body["types"].as_array().expect("types");
    assert_eq!(types.len(), 2500);
    assert_eq!(
        (types[0].clone(), types[2499].clone()),
        (j!("t0000"), j!("t2499"))
    );
}

#[tokio::test]
async fn the_analytics_endpoints_answer_503_while_redis_is_down() {
    let mut server = Server::start();
    let app = TestApp::spawn(&server).await;
    server.kill();
    let now = now_ms();
    for resp in [
        app.post_batch(&batch(&[metric("cpu", 1.0, now)])).await,
        app.types().await,
        app.series(&[("metric_type", "cpu")]).await,
        app.summary_window("cpu", "60").await,
    ] {
        let (status, body) = json(resp).await;
        assert_eq!(status, 503, "{body}");
        assert!(body["detail"].is_string());
    }
}

#[tokio::test]
async fn in_cluster_mode_a_batch_spans_every_shard_with_wait_and_types_scan_every_primary() {
    let cluster = tally_tests::cluster::Cluster::start();
    let app = TestApp::spawn_with(Config {
        redis_cluster: true,
        redis_urls: cluster.seed_urls(),
        redis_wait_replicas: 1,
        redis_wait_timeout_ms: 2000,
        rate_limit: 10_000,
        ..config("redis://127.0.0.1:1")
    })
    .await;
    let now = now_ms();
    // 40 types hash to slots on every primary; each type twice, so slots hold several writes.
    let kinds: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    let items: Vec<String> = kinds
        .iter()
        .flat_map(|k| [metric(k, 1.0, now - 1_000), metric(k, 3.0, now)])
        .collect();
    let (status, body) = json(app.post_batch(&batch(&items)).await).await;
    assert_eq!((status, body), (201, j!({"stored": 80})));
    let shards: std::collections::BTreeSet<u16> = kinds
        .iter()
        .map(|k| cluster.primary_for_key(&format!("metric:{k}")))
        .collect();
    assert_eq!(shards.len(), 3, "the batch spans every primary");

    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, j!({ "types": kinds }));
    for k in ["k00", "k17", "k39"] {
        let (_, body) = json(app.summary(k).await).await;
        assert_eq!(
            (body["count"].clone(), body["average"].clone()),
            (j!(2), j!(2.0))
        );
    }
}
