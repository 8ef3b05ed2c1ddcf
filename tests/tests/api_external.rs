//! GET /external through the circuit breaker: the simulator, a real local upstream that fails
//! and recovers (the breaker's clock is driven by the test, no sleeping), timeouts, the
//! X-Circuit-State header and the breaker in /metrics. Needs no Redis.

use std::time::Duration;

use tally_api::config::Config;
use tally_tests::api::{config, TestApp, Upstream};
use tally_tests::free_port;
use tally_tests::http::{header, json};

/// Redis is never started: /external must not need it.
fn no_redis() -> Config {
    config(&format!("redis://127.0.0.1:{}", free_port()))
}

async fn call(app: &TestApp) -> (String, serde_json::Value) {
    let resp = app.external().await;
    let state = header(&resp, "x-circuit-state").expect("X-Circuit-State");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "/external always answers 200: {body}");
    (state, body)
}

#[tokio::test]
async fn the_simulator_answers_ok_with_a_value_while_closed() {
    let app = TestApp::spawn_with(no_redis()).await;
    let (state, body) = call(&app).await;
    assert_eq!(state, "closed");
    assert_eq!(body["external"], "ok");
    assert!(body["value"].is_u64(), "{body}");
}

#[tokio::test]
async fn a_failing_simulator_gives_the_fallback_and_opens_the_breaker() {
    let app = TestApp::spawn_with(Config {
        external_service_failure_rate: 1.0,
        ..no_redis()
    })
    .await;
    let failure = serde_json::json!({"fallback": true, "reason": "external service failure"});
    assert_eq!(call(&app).await, ("closed".to_string(), failure.clone()));
    assert_eq!(call(&app).await, ("closed".to_string(), failure.clone()));
    assert_eq!(call(&app).await, ("open".to_string(), failure));
    let open = serde_json::json!({"fallback": true, "reason": "circuit open"});
    assert_eq!(call(&app).await, ("open".to_string(), open));
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_upstream_and_closes_when_it_recovers() {
    let upstream = Upstream::start(500).await;
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(upstream.url.clone()),
        cb_failure_threshold: 3,
        cb_reset_timeout: Duration::from_secs(10),
        ..no_redis()
    })
    .await;
    for expected in ["closed", "closed", "open"] {
        let (state, body) = call(&app).await;
        assert_eq!(state, expected);
        assert_eq!(body["reason"], "external service failure");
    }
    assert_eq!(upstream.hits(), 3);

    // Open: refused at once, the upstream is not called.
    let (state, body) = call(&app).await;
    assert_eq!(
        (state.as_str(), body["reason"].as_str()),
        ("open", Some("circuit open"))
    );
    assert_eq!(upstream.hits(), 3);

    // After the reset timeout a trial goes through; it fails: open again.
    app.clock.advance(Duration::from_secs(10));
    let (state, body) = call(&app).await;
    assert_eq!(
        (state.as_str(), body["reason"].as_str()),
        ("open", Some("external service failure"))
    );
    assert_eq!(upstream.hits(), 4);
    app.clock.advance(Duration::from_secs(9));
    assert_eq!(call(&app).await.1["reason"], "circuit open");

    // The upstream recovers; the next trial closes the breaker and passes its JSON through.
    upstream.set_status(200);
    app.clock.advance(Duration::from_secs(1));
    let (state, body) = call(&app).await;
    assert_eq!(state, "closed");
    assert_eq!(
        body,
        serde_json::json!({"external": "ok", "value": {"answer": 42}})
    );
    assert_eq!(call(&app).await.0, "closed");

    let metrics = app.prometheus().await;
    for line in [
        "tally_circuit_breaker_state{state=\"closed\"} 1",
        "tally_circuit_breaker_state{state=\"open\"} 0",
        "tally_circuit_breaker_transitions_total{from=\"closed\",to=\"open\"} 1",
        "tally_circuit_breaker_transitions_total{from=\"open\",to=\"half_open\"} 2",
        "tally_circuit_breaker_transitions_total{from=\"half_open\",to=\"open\"} 1",
        "tally_circuit_breaker_transitions_total{from=\"half_open\",to=\"closed\"} 1",
        "tally_external_calls_total{outcome=\"rejected\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_slow_upstream_times_out_and_counts_as_a_failure() {
    let upstream = Upstream::start(200).await;
    // Far longer than the bound below: only the 100 ms timeout can answer in time.
    upstream.set_delay(Duration::from_secs(60));
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(upstream.url.clone()),
        external_service_timeout: Duration::from_millis(100),
        cb_failure_threshold: 1,
        ..no_redis()
    })
    .await;
    let started = std::time::Instant::now();
    let (state, body) = call(&app).await;
    // A "does not hang" bound, generous for a 100 ms timeout on a loaded machine: waiting for
    // the upstream would take 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (state.as_str(), body["reason"].as_str()),
        ("open", Some("external service failure"))
    );
}

#[tokio::test]
async fn an_unreachable_upstream_counts_as_a_failure() {
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(format!("http://127.0.0.1:{}/", free_port())),
        cb_failure_threshold: 2,
        ..no_redis()
    })
    .await;
    assert_eq!(call(&app).await.0, "closed");
    let (state, body) = call(&app).await;
    assert_eq!(
        (state.as_str(), body["reason"].as_str()),
        ("open", Some("external service failure"))
    );
}

#[tokio::test]
async fn a_404_gives_the_fallback_with_its_status_and_never_opens_the_breaker() {
    let upstream = Upstream::start(404).await;
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(upstream.url.clone()),
        cb_failure_threshold: 2,
        ..no_redis()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            call(&app).await,
            (
                "closed".to_string(),
                serde_json::json!({
                    "fallback": true,
                    "reason": "external service refused",
                    "upstream_status": 404
                })
            )
        );
    }
    assert_eq!(upstream.hits(), 5, "every call reached the upstream");
    let metrics = app.prometheus().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "tally_circuit_breaker_transitions_total{from=\"closed\",to=\"open\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_302_is_not_followed_and_does_not_open_the_breaker() {
    // Following the redirect would reach `target`, which answers 200.
    let target = Upstream::start(200).await;
    let upstream = Upstream::start(302).await;
    upstream.set_location(&target.url);
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(upstream.url.clone()),
        cb_failure_threshold: 2,
        ..no_redis()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(&app).await,
            (
                "closed".to_string(),
                serde_json::json!({
                    "fallback": true,
                    "reason": "external service redirected",
                    "upstream_status": 302
                })
            )
        );
    }
    assert_eq!(upstream.hits(), 3);
    assert_eq!(target.hits(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn only_consecutive_5xx_open_the_breaker_and_a_4xx_between_them_resets_the_count() {
    let upstream = Upstream::start(500).await;
    let app = TestApp::spawn_with(Config {
        external_service_url: Some(upstream.url.clone()),
        cb_failure_threshold: 3,
        ..no_redis()
    })
    .await;
    for status in [500, 503, 404, 500, 502] {
        upstream.set_status(status);
        let (state, body) = call(&app).await;
        assert_eq!(state, "closed", "after a {status}: {body}");
    }
    upstream.set_status(500);
    let (state, body) = call(&app).await;
    assert_eq!(
        (state.as_str(), body["reason"].as_str()),
        ("open", Some("external service failure")),
        "three 5xx in a row"
    );
    assert_eq!(upstream.hits(), 6);
}
