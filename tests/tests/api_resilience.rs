//! Redis faults: the API starts while Redis is down, answers 503 (never a 201 that was not
//! stored) while it is down, /health says why, and everything recovers by itself when Redis
//! returns, without restarting the API.

use std::time::{Duration, Instant};

use tally_tests::api::{stored_count, TestApp, EXAMPLE};
use tally_tests::http::json;
use tally_tests::{Server, ServerConfig};

/// Polls /health until it is 200, up to `timeout`.
async fn wait_healthy(app: &TestApp, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if app.health().await.status() == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn assert_unavailable(app: &TestApp) {
    let started = Instant::now();
    let (status, body) = json(app.health().await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(body["detail"].is_string(), "{body}");
    let (status, body) = json(app.post_metric(EXAMPLE).await).await;
    assert_eq!(status, 503, "never a 201 that was not stored: {body}");
    assert!(body["detail"].is_string());
    let (status, body) = json(app.summary("cpu").await).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].is_string());
    // A "does not hang" bound: each answer comes within the API's Redis timeouts (ms when
    // nothing listens), far below this on any machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503s must come within the timeouts, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_is_ok_when_redis_and_the_module_answer() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.health().await).await;
    assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
}

#[tokio::test]
async fn redis_stopped_mid_test_gives_503s_and_the_api_recovers_when_it_returns() {
    let mut server = Server::start();
    let app = TestApp::spawn(&server).await;
    assert_eq!(app.post_metric(EXAMPLE).await.status(), 201);

    server.kill();
    assert_unavailable(&app).await;
    // /external needs no Redis.
    assert_eq!(app.external().await.status(), 200);

    server.restart();
    assert!(
        wait_healthy(&app, Duration::from_secs(15)).await,
        "did not recover"
    );
    assert_eq!(app.post_metric(EXAMPLE).await.status(), 201);
    let (status, body) = json(app.summary("cpu").await).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(stored_count(&server, "cpu"), 1);
}

#[tokio::test]
async fn the_api_starts_while_redis_is_down_and_connects_when_it_comes_up() {
    let mut server = Server::start();
    server.kill();
    let app = TestApp::spawn(&server).await;
    assert_unavailable(&app).await;
    server.restart();
    assert!(
        wait_healthy(&app, Duration::from_secs(15)).await,
        "did not connect"
    );
    assert_eq!(app.post_metric(EXAMPLE).await.status(), 201);
}

#[tokio::test]
async fn health_is_503_when_the_module_is_not_loaded() {
    let mut cfg = ServerConfig::new(tally_tests::Flavor::Redis);
    cfg.load_module = false;
    let server = cfg.start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.health().await).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["detail"].as_str().unwrap().contains("module"),
        "{body}"
    );
    let (status, body) = json(app.post_metric(EXAMPLE).await).await;
    assert_eq!(status, 503, "{body}");
}
