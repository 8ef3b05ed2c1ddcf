//! The self-describing endpoints: /openapi.json, the offline /docs page, and /metrics.

use tally_tests::api::{TestApp, EXAMPLE};
use tally_tests::http::header;
use tally_tests::Server;

#[tokio::test]
async fn openapi_json_documents_every_endpoint() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let resp = app.openapi().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    let doc: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).expect("JSON");
    for path in [
        "/health",
        "/api/metrics",
        "/api/metrics/summary",
        "/api/metrics/series",
        "/api/metrics/batch",
        "/api/metrics/types",
        "/external",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/api/ratelimit/decisions",
        "/api/ratelimit/top",
        "/external/state",
        "/dashboard",
        "/favicon.ico",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
}

/// Every operation in the document is served: a bare request (no query, `{}` as a POST body)
/// answers one of the statuses the document lists for it, with the documented content type.
#[tokio::test]
async fn every_documented_operation_is_served_and_answers_a_documented_status() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let doc: serde_json::Value =
        serde_json::from_str(&app.openapi().await.text().await.unwrap()).expect("JSON");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let url = format!("{}{path}", app.base);
            let resp = match method.as_str() {
                "get" => app.client.get(&url).send().await.expect("GET"),
                "post" => app
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .expect("POST"),
                other => panic!("{other} {path}: no request for this method here"),
            };
            let status = resp.status().as_u16().to_string();
            let documented = &op["responses"][status.as_str()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {status}, which the document does not list"
            );
            if let Some(content) = documented["content"].as_object() {
                let ct = header(&resp, "content-type").unwrap_or_default();
                let essence = ct.split(';').next().unwrap_or("").trim();
                assert!(
                    content.contains_key(essence),
                    "{method} {path} {status}: content type {ct:?} is not documented"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} operations");
    // A path the document does not have is not served.
    assert_eq!(app.get("/api/metrics/undocumented").await.status(), 404);
}

#[tokio::test]
async fn the_docs_page_renders_the_openapi_document_without_fetching_anything_else() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    let resp = app.docs().await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("fetch(\"/openapi.json\")"));
    for external in ["src=\"http", "href=\"http", "@import", "cdn"] {
        assert!(
            !html.contains(external),
            "the page must work offline: {external}"
        );
    }
}

#[tokio::test]
async fn metrics_counts_requests_by_route_and_status_with_a_latency_histogram() {
    let server = Server::start();
    let app = TestApp::spawn(&server).await;
    assert_eq!(app.post_metric(EXAMPLE).await.status(), 201);
    assert_eq!(app.post_metric("{").await.status(), 422);
    assert_eq!(app.health().await.status(), 200);
    assert_eq!(app.get("/wp-login.php").await.status(), 404);
    let resp = app.get("/metrics").await;
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    for line in [
        "tally_http_requests_total{route=\"/api/metrics\",status=\"201\"} 1",
        "tally_http_requests_total{route=\"/api/metrics\",status=\"422\"} 1",
        "tally_http_requests_total{route=\"/health\",status=\"200\"} 1",
        "tally_http_requests_total{route=\"other\",status=\"404\"} 1",
        "tally_http_request_duration_seconds_count{route=\"/api/metrics\"} 2",
        "tally_http_request_duration_seconds_bucket{route=\"/api/metrics\",le=\"+Inf\"} 2",
        "tally_ratelimit_decisions_total{decision=\"allowed\"} 1",
        "tally_circuit_breaker_state{state=\"closed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}
