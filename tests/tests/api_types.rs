//! Bounded key creation (SPEC §11, issue 14.7): at most `MAX_TYPES` distinct metric types, a
//! new type beyond it refused with a 422 naming the limit (nothing stored, no budget used);
//! `/api/metrics/types` reads the type index (`tally:types`), built once from the keyspace for
//! a deployment that predates it, never a keyspace scan per request; and a known type costs
//! no extra round trip.

use std::collections::BTreeMap;

use tally_api::config::Config;
use tally_tests::api::{config, exists, metric, post_body, stored_count, TestApp};
use tally_tests::http::{json, remaining};
use tally_tests::redis::Value;
use tally_tests::Server;

fn with_max_types(server: &Server, max_types: usize) -> Config {
    Config {
        max_types,
        rate_limit: 100,
        ..config(&server.url())
    }
}

fn run(server: &Server, words: &[&str]) -> Value {
    let mut c = server.conn();
    server
        .run(&mut c, words)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// `calls` per command (lower case) since the last `CONFIG RESETSTAT`, without the test's own
/// `CONFIG` and `INFO`.
fn command_calls(server: &Server) -> BTreeMap<String, u64> {
    let info = tally_tests::text(&run(server, &["INFO", "commandstats"]));
    info.lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_ascii_lowercase(), calls.parse().ok()?))
        })
        .filter(|(name, _)| !name.starts_with("config") && !name.starts_with("info"))
        .collect()
}

#[tokio::test]
async fn a_new_type_beyond_max_types_is_422_naming_the_limit_stores_nothing_and_uses_no_budget() {
    let server = Server::start();
    let app = TestApp::spawn_with(with_max_types(&server, 3)).await;
    for kind in ["a", "b", "c"] {
        let resp = app.post_metric(&metric(kind)).await;
        assert_eq!(resp.status(), 201, "{kind}");
    }
    let (status, body) = json(app.post_metric(&metric("d")).await).await;
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("MAX_TYPES") && detail.contains('3'),
        "{detail}"
    );
    assert!(!exists(&server, "metric:d"), "nothing stored");

    // A batch holding one new type is refused whole.
    let batch = format!("[{},{}]", metric("a"), metric("e"));
    let (status, body) = json(app.post_batch(&batch).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("MAX_TYPES"));
    assert!(!exists(&server, "metric:e"));
    assert_eq!(stored_count(&server, "a"), 1, "no item of the batch stored");

    // Neither refusal used budget: 3 requests so far, this is the 4th.
    let resp = app.post_metric(&metric("a")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(remaining(&resp), 100 - 4);

    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"types": ["a", "b", "c"]}));
    assert_eq!(int(&run(&server, &["SCARD", "tally:types"])), 3);
}

#[tokio::test]
async fn types_come_from_the_index_built_once_never_from_a_scan_per_request() {
    let server = Server::start();
    // A deployment that predates the index: series, a rate-limit key, a foreign key.
    run(&server, &["METRIC.ADD", "metric:old2", "1"]);
    run(&server, &["METRIC.ADD", "metric:old1", "1"]);
    run(
        &server,
        &["RATELIMIT.CHECK", "ratelimit:10.0.0.1", "5", "60000"],
    );
    run(&server, &["SET", "metric:foreign", "x"]);
    let app = TestApp::spawn_with(with_max_types(&server, 10)).await;

    let (status, body) = json(app.types().await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"types": ["old1", "old2"]}));
    assert!(exists(&server, "tally:types:built"));

    run(&server, &["CONFIG", "RESETSTAT"]);
    assert_eq!(app.post_metric(&metric("new")).await.status(), 201);
    for _ in 0..5 {
        let (status, body) = json(app.types().await).await;
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!({"types": ["new", "old1", "old2"]}));
    }
    let calls = command_calls(&server);
    assert!(
        !calls.contains_key("scan"),
        "no SCAN after the build: {calls:?}"
    );
    assert!(!calls.contains_key("keys"), "{calls:?}");
    assert_eq!(calls.get("smembers"), Some(&5), "{calls:?}");

    // The old types count against MAX_TYPES too (3 of 10 used).
    assert_eq!(int(&run(&server, &["SCARD", "tally:types"])), 3);
}

#[tokio::test]
async fn writes_of_a_type_already_known_add_no_round_trip() {
    let server = Server::start();
    let app = TestApp::spawn_with(with_max_types(&server, 10)).await;
    assert_eq!(app.post_metric(&metric("cpu")).await.status(), 201);
    run(&server, &["CONFIG", "RESETSTAT"]);
    for _ in 0..5 {
        assert_eq!(app.post_metric(&metric("cpu")).await.status(), 201);
    }
    let batch = format!("[{},{}]", metric("cpu"), metric("cpu"));
    assert_eq!(app.post_batch(&batch).await.status(), 201);
    let calls = command_calls(&server);
    let expected: BTreeMap<String, u64> = [("metric.add", 7), ("ratelimit.check", 6)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(calls, expected, "only the rate-limit check and the writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_holds_exactly_across_api_instances_racing_for_the_last_slots() {
    let server = Server::start();
    let apps = [
        TestApp::spawn_with(with_max_types(&server, 5)).await,
        TestApp::spawn_with(with_max_types(&server, 5)).await,
    ];
    let kinds: Vec<String> = (0..20).map(|i| format!("race{i:02}")).collect();
    let mut tasks = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let (http, base, kind) = (
            apps[i % 2].client.clone(),
            apps[i % 2].base.clone(),
            kind.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = post_body(&http, &base, metric(&kind))
                .send()
                .await
                .expect("POST");
            (kind, resp.status().as_u16())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let stored: Vec<&String> = results
        .iter()
        .filter(|(_, s)| *s == 201)
        .map(|(k, _)| k)
        .collect();
    let refused = results.iter().filter(|(_, s)| *s == 422).count();
    assert_eq!((stored.len(), refused), (5, 15), "{results:?}");
    assert_eq!(int(&run(&server, &["SCARD", "tally:types"])), 5);
    for (kind, status) in &results {
        assert_eq!(exists(&server, &format!("metric:{kind}")), *status == 201);
    }
    let (_, body) = json(apps[1].types().await).await;
    let mut sorted = stored.clone();
    sorted.sort();
    assert_eq!(body, serde_json::json!({ "types": sorted }));
}
