//! `POST /api/limits/check` (SPEC section 8): exact limits for other services. The named
//! policies of the policy file, checked atomically (or peeked) on the log of (calling key,
//! subject), with the same IETF headers; 200 whether allowed or not.

use actix_web::http::header::HeaderValue;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::policies::{self, parse_limits_request};
use crate::routes::body::read_json;
use crate::routes::error::ApiError;
use crate::routes::limit::{self, Who, RATELIMIT, RATELIMIT_POLICY};
use crate::routes::AppState;
use crate::store::keys;

/// Largest body (a subject of 256 bytes and 16 policy names fit many times over).
const BODY_LIMIT: usize = 16 * 1024;

#[derive(Serialize)]
struct PolicyBody<'a> {
    name: &'a str,
    limit: i64,
    remaining: i64,
    reset_after_ms: i64,
}

#[derive(Serialize)]
struct CheckBody<'a> {
    allowed: bool,
    policy: &'a str,
    limit: i64,
    remaining: i64,
    retry_after_ms: i64,
    reset_after_ms: i64,
    policies: Vec<PolicyBody<'a>>,
}

pub async fn check(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Who::Keyed(caller) = limit::identify(&state, &req).await? else {
        return Err(ApiError::Unauthorized);
    };
    let body = read_json(&req, body, BODY_LIMIT).await?;
    let all = &state.limiter.policies;
    let request = parse_limits_request(&body, all).map_err(ApiError::Invalid)?;
    let key = keys::ratelimit_service(&caller.id, &request.subject);
    let (decision, states) =
        limit::check(&state, &key, &request.policies, request.cost, request.peek).await?;
    // The binding policy: the violated one the module names when denied, else the one whose
    // state is the decision's.
    let binding = if decision.allowed {
        request
            .policies
            .iter()
            .zip(&states)
            .find(|(_, s)| s.limit == decision.limit && s.remaining == decision.remaining)
            .map(|(&i, _)| i)
    } else {
        policies::violated(&request.policies, &states, &decision, request.cost)
    }
    .unwrap_or(request.policies[0]);
    let reply = CheckBody {
        allowed: decision.allowed,
        policy: &all.rules[binding].name,
        limit: decision.limit,
        remaining: decision.remaining.max(0),
        retry_after_ms: decision.retry_after_ms,
        reset_after_ms: decision.reset_after_ms,
        policies: request
            .policies
            .iter()
            .zip(&states)
            .map(|(&i, s)| PolicyBody {
                name: &all.rules[i].name,
                limit: s.limit,
                remaining: s.remaining.max(0),
                reset_after_ms: s.reset_after_ms,
            })
            .collect(),
    };
    let mut resp = HttpResponse::Ok();
    if let Ok(v) = HeaderValue::from_str(&all.policy_header(&request.policies)) {
        resp.insert_header((RATELIMIT_POLICY, v));
    }
    if let Ok(v) = HeaderValue::from_str(&all.ratelimit_header(&request.policies, &states)) {
        resp.insert_header((RATELIMIT, v));
    }
    Ok(resp.json(reply))
}
