//! `GET /openapi.json` (the hand-written OpenAPI 3.0 document) and `GET /docs` (a
//! self-contained page that renders it: no CDN, nothing fetched but `/openapi.json`).

use actix_web::HttpResponse;

pub const OPENAPI: &str = include_str!("../../static/openapi.json");
const DOCS_HTML: &str = include_str!("../../static/docs.html");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
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
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
        }
    }
}
