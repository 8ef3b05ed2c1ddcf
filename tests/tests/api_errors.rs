//! Errors say what, never how (SPEC §11, issue 14.11): no response body carries Redis or
//! client library text, a metric type whose key holds a non-tally value answers 409 before any
//! rate-limit budget is used, and no request ever answers 500.

use tally_api::config::Config;
use tally_tests::api::{config, exists, metric, stored_count, TestApp};
use tally_tests::http::{json, remaining};
use tally_tests::{Server, ServerConfig};

/// Text that belongs in the log, never in a body.
const LEAKS: &[&str] = &[
    "Connection refused",
    "connection refused",
    "WRONGTYPE",
    "redis",
    "Redis",
    "ERR",
    "os error",
    "broken pipe",
    "unknown command",
    "Operation against a key",
];

fn assert_no_leak(what: &str, status: u16, body: &serde_json::Value) {
    assert_ne!(status, 500, "{what}: {body}");
    let text = body.to_string();
    for leak in LEAKS {
        assert!(!text.contains(leak), "{what} leaks {leak:?}: {text}");
    }
}

fn limit_100(server: &Server) -> Config {
    Config {
        rate_limit: 100,
        ..config(&server.url())
    }
}

fn run(server: &Server, words: &[&str]) {
    let mut c = server.conn();
    server
        .run(&mut c, words)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"));
}

#[tokio::test]
async fn a_type_whose_key_holds_another_value_is_409_before_any_budget_is_used() {
    let server = Server::start();
    run(&server, &["SET", "metric:cpu", "x"]);
    let app = TestApp::spawn_with(limit_100(&server)).await;

    let (status, body) = json(app.post_metric(&metric("cpu")).await).await;
    assert_eq!(status, 409, "{body}");
    assert_no_leak("POST", status, &body);
    assert!(body["detail"].as_str().unwrap().contains("cpu"), "{body}");

    // A batch with one such type: 409, nothing of it stored.
    let batch = format!("[{},{}]", metric("mem"), metric("cpu"));
    let (status, body) = json(app.post_batch(&batch).await).await;
    assert_eq!(status, 409, "{body}");
    assert_no_leak("batch", status, &body);
    assert!(
        !exists(&server, "metric:mem"),
        "nothing of the batch stored"
    );

    // Reads of it: 409 too, never 500.
    let (status, body) = json(app.summary("cpu").await).await;
    assert_eq!(status, 409, "{body}");
    assert_no_leak("summary", status, &body);
    let (status, body) = json(app.series(&[("metric_type", "cpu")]).await).await;
    assert_eq!(status, 409, "{body}");
    assert_no_leak("series", status, &body);

    // Neither refusal used budget: this is the first request counted.
    let resp = app.post_metric(&metric("mem")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(remaining(&resp), 99);
    let mut c = server.conn();
    let value = server.run(&mut c, &["GET", "metric:cpu"]).expect("GET");
    assert_eq!(
        tally_tests::text(&value),
        "x",
        "the foreign value is untouched"
    );
}

#[tokio::test]
async fn a_known_type_overwritten_with_another_value_is_409_and_then_uses_no_budget() {
    let server = Server::start();
    let app = TestApp::spawn_with(limit_100(&server)).await;
    assert_eq!(app.post_metric(&metric("disk")).await.status(), 201);
    run(&server, &["DEL", "metric:disk"]);
    run(&server, &["SET", "metric:disk", "x"]);
    // The first POST after the overwrite finds out by its write (its budget is spent: the
    // process knew the type, so it sent no check first).
    let (status, body) = json(app.post_metric(&metric("disk")).await).await;
    assert_eq!(status, 409, "{body}");
    assert_no_leak("POST", status, &body);
    // From then on the type is checked before the budget again.
    for _ in 0..3 {
        let (status, body) = json(app.post_metric(&metric("disk")).await).await;
        assert_eq!(status, 409, "{body}");
    }
    let resp = app.post_metric(&metric("net")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(remaining(&resp), 100 - 3);
    assert_eq!(stored_count(&server, "net"), 1);
}

#[tokio::test]
async fn bodies_of_503_say_what_is_wrong_without_redis_or_library_text() {
    let mut server = Server::start();
    let app = TestApp::spawn_with(limit_100(&server)).await;
    assert_eq!(app.post_metric(&metric("up")).await.status(), 201);
    server.kill();
    for (what, resp) in [
        ("POST", app.post_metric(&metric("up")).await),
        ("POST new type", app.post_metric(&metric("other")).await),
        (
            "batch",
            app.post_batch(&format!("[{}]", metric("up"))).await,
        ),
        ("summary", app.summary("up").await),
        ("series", app.series(&[("metric_type", "up")]).await),
        ("types", app.types().await),
        ("health", app.health().await),
    ] {
        let (status, body) = json(resp).await;
        assert_eq!(status, 503, "{what}: {body}");
        assert_no_leak(what, status, &body);
    }
}

#[tokio::test]
async fn without_the_module_every_endpoint_answers_503_without_redis_text() {
    let mut cfg = ServerConfig::new(tally_tests::Flavor::Redis);
    cfg.load_module = false;
    let server = cfg.start();
    let app = TestApp::spawn_with(limit_100(&server)).await;
    for (what, resp) in [
        ("POST", app.post_metric(&metric("cpu")).await),
        (
            "batch",
            app.post_batch(&format!("[{}]", metric("cpu"))).await,
        ),
        ("summary", app.summary("cpu").await),
        ("series", app.series(&[("metric_type", "cpu")]).await),
        ("health", app.health().await),
    ] {
        let (status, body) = json(resp).await;
        assert_eq!(status, 503, "{what}: {body}");
        assert_no_leak(what, status, &body);
        assert!(body.to_string().contains("module"), "{what}: {body}");
    }
}
