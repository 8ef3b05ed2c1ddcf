//! The HTTP layer: actix extractors and responses. One file per resource, and one route table
//! ([`ROUTES`]: path, method, handler) that [`configure`] mounts, that names the telemetry
//! labels ([`LABELS`], [`label_index`]) and past which every path is a JSON 404. Every resource
//! answers a method it does not serve with a JSON 405.
//!
//! Also here: the shared state of a worker's handlers ([`AppState`]), the error responses
//! (`error`), reading a JSON body (`body`), the 408 deadline (`deadline`) and the HTTP side of
//! rate limiting (`limit`).

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::breaker::Breaker;
use crate::config::Config;
use crate::decisions::Decisions;
use crate::known_types::KnownTypes;
use crate::labels::Labels;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::upstream::Upstream;
use error::ApiError;
use limit::Limiter;

pub mod analytics;
pub mod body;
pub mod dashboard;
pub mod deadline;
pub mod docs;
pub mod error;
pub mod external;
pub mod health;
pub mod limit;
pub mod limits_check;
pub mod metrics;
pub mod prometheus;
pub mod series;
pub mod tags;
pub mod types;

/// What a worker's handlers share. Each actix worker (one thread each) has its own Redis
/// connections (`Store`: one multiplexed by that worker's requests, plus its own for writes
/// that WAIT), so a request never waits for another thread to write or read its command; the
/// breaker, the upstream client, the telemetry and the cache of known metric types are one per
/// process.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    /// The metric types seen stored, one cache per process.
    pub known: Arc<KnownTypes>,
    /// The tag sets seen indexed and the overflow counters, one per process.
    pub labels: Arc<Labels>,
    pub breaker: Arc<Breaker>,
    pub upstream: Arc<Upstream>,
    pub telemetry: Arc<Telemetry>,
    pub limiter: Limiter,
    /// The limiter's decisions and denied clients, counted in memory, one per process.
    pub decisions: Arc<Decisions>,
}

/// The one method a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    /// Its name, as the 405's `Allow` header gives it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    fn guard(self) -> actix_web::Route {
        match self {
            Method::Get => web::get(),
            Method::Post => web::post(),
        }
    }
}

/// One endpoint of the API.
#[derive(Clone, Copy)]
pub struct Route {
    /// Its path, also its telemetry label.
    pub path: &'static str,
    pub method: Method,
    /// Attaches the handler: `|r| r.to(handler)`.
    handler: fn(actix_web::Route) -> actix_web::Route,
}

impl Route {
    const fn get(path: &'static str, handler: fn(actix_web::Route) -> actix_web::Route) -> Route {
        Route {
            path,
            method: Method::Get,
            handler,
        }
    }

    const fn post(path: &'static str, handler: fn(actix_web::Route) -> actix_web::Route) -> Route {
        Route {
            path,
            method: Method::Post,
            handler,
        }
    }
}

/// Every endpoint (SPEC §5; the OpenAPI document describes the same list).
pub const ROUTES: [Route; 20] = [
    Route::get("/health", |r| r.to(health::health)),
    Route::post("/api/metrics", |r| r.to(metrics::post_metric)),
    Route::get("/api/metrics/summary", |r| r.to(metrics::summary)),
    Route::post("/api/metrics/batch", |r| r.to(metrics::post_batch)),
    Route::get("/api/metrics/series", |r| r.to(series::series)),
    Route::get("/api/metrics/types", |r| r.to(types::types)),
    Route::get("/api/metrics/tags", |r| r.to(tags::tags)),
    Route::get("/external", |r| r.to(external::external)),
    Route::get("/metrics", |r| r.to(prometheus::metrics)),
    Route::get("/openapi.json", |r| r.to(docs::openapi)),
    Route::get("/docs", |r| r.to(docs::docs)),
    Route::post("/api/limits/check", |r| r.to(limits_check::check)),
    Route::get("/api/ratelimit/decisions", |r| r.to(analytics::decisions)),
    Route::get("/api/ratelimit/top", |r| r.to(analytics::top)),
    Route::get("/external/state", |r| r.to(analytics::breaker)),
    Route::get("/dashboard", |r| r.to(dashboard::page)),
    Route::get("/dashboard/dashboard.js", |r| r.to(dashboard::script)),
    Route::get("/dashboard/uPlot.iife.min.js", |r| {
        r.to(dashboard::uplot_js)
    }),
    Route::get("/dashboard/uPlot.min.css", |r| r.to(dashboard::uplot_css)),
    Route::get("/favicon.ico", |r| r.to(dashboard::favicon)),
];

/// The telemetry label of every path that is not a route (so scans cannot blow up the label
/// set).
pub const OTHER: &str = "other";

/// The telemetry labels: the routes' paths in table order, then [`OTHER`].
pub static LABELS: [&str; ROUTES.len() + 1] = {
    let mut labels = [OTHER; ROUTES.len() + 1];
    let mut i = 0;
    while i < ROUTES.len() {
        labels[i] = ROUTES[i].path;
        i += 1;
    }
    labels
};

/// The index in [`LABELS`] of a request's `path`: its route's, else [`OTHER`]'s. On every
/// request: a scan of ten short strings, no allocation.
pub fn label_index(path: &str) -> usize {
    LABELS[..ROUTES.len()]
        .iter()
        .position(|label| *label == path)
        .unwrap_or(ROUTES.len())
}

/// Mounts every route of [`ROUTES`] (a method it does not serve is a 405), and the 404 of
/// every other path.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in ROUTES {
        cfg.service(
            web::resource(route.path)
                .route((route.handler)(route.method.guard()))
                .default_service(allow(route.method.as_str())),
        );
    }
    cfg.default_service(web::to(not_found));
}

/// The 405 handler of a resource that serves only `methods`.
fn allow(methods: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(methods)) })
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_label_and_any_other_path_is_other() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert_eq!(label_index(route.path), i);
            assert_eq!(LABELS[i], route.path);
        }
        for path in [
            "/",
            "/wp-admin",
            "/api/metrics/",
            "/API/metrics",
            "/health/x",
        ] {
            assert_eq!(LABELS[label_index(path)], OTHER, "{path}");
        }
        let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ROUTES.len(), "a path is listed twice");
    }
}
