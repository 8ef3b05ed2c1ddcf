//! `GET /metrics`: Prometheus text exposition (requests by route and status, latency
//! histogram, rate-limit decisions, breaker state and transitions, external call outcomes).

use actix_web::{web, HttpResponse};

use crate::routes::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body({
            let mut text = state.telemetry.render(&state.breaker);
            state.labels.render(&mut text);
            text
        })
}
