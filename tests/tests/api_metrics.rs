//! POST /api/metrics and GET /api/metrics/summary over the real HTTP stack and a real
//! redis-server with the module: what is stored, what is refused (422 / 413 / 415, nothing
//! stored, no rate-limit budget used), and the JSON of errors.

use std::time::Duration;

use tally_tests::api::{exists, stored_count, TestApp, EXAMPLE};
use tally_tests::http::{header, json, raw_exchange};
use tally_tests::Server;

#[tokio::test]
async fn a_valid_metric_is_stored_and_answered_with_201() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let resp = app.post_metric(EXAMPLE).await;
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    let (status, body) = json(resp).await;
    assert_eq!(status, 201);
    assert_eq!(
        body,
        serde_json::json!({"message": "Metric stored successfully"})
    );
    assert_eq!(stored_count(&server, "cpu"), 1);
}

#[tokio::test]
async fn the_summary_reports_every_aggregate_and_utc_timestamps() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for body in [
        r#"{"timestamp":"2025-01-01T10:00:00","value":25,"type":"mem"}"#,
        r#"{"timestamp":"2025-01-01T11:00:00+01:00","value":75,"type":"mem"}"#,
        r#"{"timestamp":"2025-01-01T10:00:01.500Z","value":50,"type":"mem"}"#,
    ] {
        assert_eq!(app.post_metric(body).await.status(), 201, "{body}");
    }
    let (status, body) = json(app.summary("mem").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "mem");
    assert_eq!(body["count"], 3);
    assert_eq!(body["average"], 50.0);
    assert_eq!(body["sum"], 150.0);
    assert_eq!(body["min"], 25.0);
    assert_eq!(body["max"], 75.0);
    let sd = body["stddev"].as_f64().expect("stddev");
    assert!((sd - (1250.0f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
    assert_eq!(body["first_timestamp"], "2025-01-01T10:00:00Z");
    assert_eq!(body["last_timestamp"], "2025-01-01T10:00:01.500Z");
}

#[tokio::test]
async fn a_type_without_samples_has_count_zero_average_zero_and_nulls() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.summary("nothing-here").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "nothing-here");
    assert_eq!(body["count"], 0);
    assert_eq!(body["average"], 0.0);
    for field in [
        "sum",
        "min",
        "max",
        "stddev",
        "first_timestamp",
        "last_timestamp",
    ] {
        assert!(body[field].is_null(), "{field}: {body}");
    }
    assert!(
        !exists(&server, "metric:nothing-here"),
        "a read creates nothing"
    );
}

#[tokio::test]
async fn a_summary_without_metric_type_or_with_an_empty_one_is_422() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.get("/api/metrics/summary").await).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("metric_type"),
        "{body}"
    );
    let (status, body) = json(app.summary("").await).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("metric_type"),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_bodies_get_422_naming_the_field_and_store_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for (body, field) in [
        ("{not json", "JSON"),
        ("[]", "object"),
        (r#"{"value":75,"type":"cpu"}"#, "timestamp"),
        (
            r#"{"timestamp":"2025-01-01T10:00:00","type":"cpu"}"#,
            "value",
        ),
        (r#"{"timestamp":"2025-01-01T10:00:00","value":75}"#, "type"),
        (
            r#"{"timestamp":"2025-01-01T10:00:00","value":"75","type":"cpu"}"#,
            "value",
        ),
        (
            r#"{"timestamp":"2025-01-01T10:00:00","value":1e999,"type":"cpu"}"#,
            "value",
        ),
        (
            r#"{"timestamp":"2025-01-01T10:00:00","value":75,"type":""}"#,
            "type",
        ),
        (
            r#"{"timestamp":"2025-01-01T10:00:00","value":75,"type":["cpu"]}"#,
            "type",
        ),
        (
            r#"{"timestamp":"yesterday","value":75,"type":"cpu"}"#,
            "timestamp",
        ),
        (
            r#"{"timestamp":"1969-12-31T23:59:59Z","value":75,"type":"cpu"}"#,
            "timestamp",
        ),
    ] {
        let (status, resp) = json(app.post_metric(body).await).await;
        assert_eq!(status, 422, "{body}");
        let detail = resp["detail"].as_str().expect("detail");
        assert!(detail.contains(field), "{body}: {detail}");
    }
    assert_eq!(stored_count(&server, "cpu"), 0);
    assert!(
        !exists(&server, "ratelimit:127.0.0.1"),
        "invalid requests use no rate-limit budget"
    );
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_stores_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let padding = "x".repeat(70 * 1024);
    let body = format!(
        r#"{{"timestamp":"2025-01-01T10:00:00","value":75,"type":"cpu","pad":"{padding}"}}"#
    );
    let (status, resp) = json(app.post_metric(&body).await).await;
    assert_eq!(status, 413);
    assert!(resp["detail"].is_string());
    assert_eq!(stored_count(&server, "cpu"), 0);
    assert!(!exists(&server, "ratelimit:127.0.0.1"));
}

#[tokio::test]
async fn a_body_not_declared_as_json_gets_415_and_stores_nothing() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, resp) = json(app.post_metric_as(EXAMPLE, ct, None).await).await;
        assert_eq!(status, 415, "{ct:?}");
        assert!(resp["detail"]
            .as_str()
            .unwrap()
            .contains("application/json"));
    }
    // Parameters and +json types are JSON.
    let resp = app
        .post_metric_as(EXAMPLE, Some("application/json; charset=utf-8"), None)
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(stored_count(&server, "cpu"), 1);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let (status, body) = json(app.get("/nope").await).await;
    assert_eq!((status, body["detail"].as_str()), (404, Some("Not Found")));
    let resp = app.get("/api/metrics").await;
    assert_eq!(header(&resp, "allow").as_deref(), Some("POST"));
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (405, Some("Method Not Allowed"))
    );
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_with_413_once_it_passes_the_limit() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let mut request = "POST /api/metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                       Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_string();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    for _ in 0..5 {
        request.push_str(&chunk);
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before the whole body is sent.
    let response = raw_exchange(app.port(), request.as_bytes(), Duration::from_secs(20))
        .await
        .expect("the server answers and closes");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"detail\""), "{response}");
    assert_eq!(stored_count(&server, "cpu"), 0);
}
