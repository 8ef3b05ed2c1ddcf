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
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(OPENAPI).expect("valid JSON")
    }

    /// `(path, method)` of every route `routes::configure` mounts: the route table.
    fn route_table() -> Vec<(String, String)> {
        crate::routes::ROUTES
            .iter()
            .map(|r| (r.path.to_string(), r.method.as_str().to_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn the_openapi_document_is_json_and_describes_every_route() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.0.3");
        let table = route_table();
        assert!(table.len() >= 10, "{table:?}");
        for (path, method) in &table {
            assert!(
                doc["paths"][path.as_str()].get(method.as_str()).is_some(),
                "{method} {path} is served but not documented"
            );
        }
        // And nothing is documented that is not served.
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                assert!(
                    table.iter().any(|(p, m)| p == path && m == method),
                    "{method} {path} is documented but not served"
                );
            }
        }
    }

    /// Every `$ref` in `v` (recursively).
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_operation_documents_its_error_statuses_and_never_500() {
        let doc = doc();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} has no success"
                );
                assert!(
                    !responses.contains_key("500") && !responses.contains_key("default"),
                    "{method} {path}: no endpoint answers 500, and `default` would hide what it answers"
                );
                let mut needed = vec![];
                if method == "post" {
                    // Validation, size, media type, slow client, Redis; the metric writes also
                    // a non-tally key and the limiter (/api/limits/check answers 200 denied).
                    needed.extend(["400", "408", "413", "415", "422", "503"]);
                    if path.starts_with("/api/metrics") {
                        needed.extend(["409", "429"]);
                    }
                }
                if path.starts_with("/api/metrics") || path == "/api/limits/check" {
                    // With POLICY_FILE every limited route answers an unknown key 401 (the
                    // limiter analytics under /api/ratelimit are not limited).
                    needed.push("401");
                }
                if path.starts_with("/api/") || path == "/health" {
                    needed.push("503");
                }
                if path.starts_with("/api/metrics/s") {
                    needed.extend(["409", "422"]);
                }
                for status in needed {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} does not document {status}"
                    );
                }
                if let Some(r429) = responses.get("429") {
                    for h in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
                        assert!(r429["headers"].get(h).is_some(), "{path} 429 lacks {h}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_external_answer_branches_are_mutually_exclusive() {
        let doc = doc();
        let one_of = doc["paths"]["/external"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"]["oneOf"]
            .as_array()
            .expect("oneOf");
        let names: Vec<&str> = one_of
            .iter()
            .map(|r| r["$ref"].as_str().expect("$ref"))
            .map(|r| r.rsplit('/').next().unwrap_or(r))
            .collect();
        assert_eq!(names, ["ExternalOk", "Fallback"]);
        // Each branch requires a property the other forbids.
        for (this, other) in [("ExternalOk", "Fallback"), ("Fallback", "ExternalOk")] {
            let a = &doc["components"]["schemas"][this];
            let b = &doc["components"]["schemas"][other];
            assert_eq!(b["additionalProperties"], false, "{other}");
            let required = a["required"].as_array().expect("required");
            assert!(
                required
                    .iter()
                    .any(|r| b["properties"].get(r.as_str().unwrap_or("")).is_none()),
                "{this} requires nothing {other} forbids"
            );
        }
    }
}
