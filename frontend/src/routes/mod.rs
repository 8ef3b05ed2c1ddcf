//! One file per resource; `configure` mounts them all. Every resource answers a method it does
//! not serve with a JSON 405, and unknown paths get a JSON 404.

use actix_web::{web, HttpResponse};

use crate::error::ApiError;

pub mod docs;
pub mod external;
pub mod health;
pub mod metrics;
pub mod prometheus;
pub mod series;
pub mod types;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/health")
            .route(web::get().to(health::health))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/api/metrics")
            .route(web::post().to(metrics::post_metric))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/api/metrics/summary")
            .route(web::get().to(metrics::summary))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/api/metrics/batch")
            .route(web::post().to(metrics::post_batch))
            .default_service(allow("POST")),
    )
    .service(
        web::resource("/api/metrics/series")
            .route(web::get().to(series::series))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/api/metrics/types")
            .route(web::get().to(types::types))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/external")
            .route(web::get().to(external::external))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(prometheus::metrics))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(docs::openapi))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/docs")
            .route(web::get().to(docs::docs))
            .default_service(allow("GET")),
    );
}

/// The 405 handler of a resource that serves only `methods`.
fn allow(methods: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(methods)) })
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
