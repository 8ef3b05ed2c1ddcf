//! `GET /external`: one call to the external service through the circuit breaker. Always 200:
//! the upstream's answer `{"external":"ok","value":...}`, or a fallback
//! `{"fallback":true,"reason":"external service failure" | "circuit open"}`, or, when the
//! upstream answered without a value (3xx, 4xx; see `upstream`),
//! `{"fallback":true,"reason":"external service redirected" | "external service refused",
//! "upstream_status":404}` (not a failure for the breaker). The breaker's state after the call
//! is in `X-Circuit-State`. Needs no Redis.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::breaker::State;
use crate::routes::AppState;
use crate::telemetry::ExternalOutcome;
use crate::upstream::Reply;

pub const X_CIRCUIT_STATE: HeaderName = HeaderName::from_static("x-circuit-state");

fn respond(state: State, body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((X_CIRCUIT_STATE, HeaderValue::from_static(state.as_str())))
        .json(body)
}

pub async fn external(state: web::Data<AppState>) -> HttpResponse {
    let permit = match state.breaker.try_acquire() {
        Ok(p) => p,
        Err(rejected) => {
            state.telemetry.count_external(ExternalOutcome::Rejected);
            return respond(
                rejected.state,
                json!({"fallback": true, "reason": "circuit open"}),
            );
        }
    };
    // If this request is cancelled while waiting, the permit is dropped and a half-open
    // breaker gets its trial slot back.
    match state.upstream.call().await {
        Ok(Reply::Value(value)) => {
            state.telemetry.count_external(ExternalOutcome::Success);
            respond(permit.success(), json!({"external": "ok", "value": value}))
        }
        Ok(Reply::Declined { status, reason }) => {
            // The upstream is up and answering: a success for the breaker, though the caller
            // gets no value.
            log::info!("external service answered {status} ({reason})");
            state.telemetry.count_external(ExternalOutcome::Success);
            respond(
                permit.success(),
                json!({"fallback": true, "reason": reason, "upstream_status": status}),
            )
        }
        Err(why) => {
            log::warn!("external service failed: {why}");
            state.telemetry.count_external(ExternalOutcome::Failure);
            respond(
                permit.failure(),
                json!({"fallback": true, "reason": "external service failure"}),
            )
        }
    }
}
