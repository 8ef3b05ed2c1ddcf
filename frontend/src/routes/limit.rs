//! The HTTP side of rate limiting: one `RATELIMIT.CHECK` per rate-limited request (through
//! the store), and the IETF draft headers on its response (values from `crate::ratelimit`).

use std::net::IpAddr;

use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponseBuilder};

use crate::config::canonical;
use crate::decisions::{ClientLabel, Outcome, DEFAULT_POLICY};
use crate::ratelimit::{
    client_identity, ratelimit_value, walk_forwarded_for, Decision, Policy, TrustedProxies,
};
use crate::routes::error::ApiError;
use crate::routes::AppState;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The configured policy, with its header value built once (a clone shares it).
#[derive(Debug, Clone)]
pub struct Limiter {
    policy: Policy,
    header: HeaderValue,
}

impl Limiter {
    pub fn new(policy: Policy) -> Limiter {
        let header = HeaderValue::from_str(&policy.policy_value())
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        Limiter { policy, header }
    }
}

fn write_common(builder: &mut HttpResponseBuilder, limiter: &Limiter, d: &Decision) {
    builder.insert_header((RATELIMIT_POLICY, limiter.header.clone()));
    if let Ok(v) = HeaderValue::from_str(&ratelimit_value(d)) {
        builder.insert_header((RATELIMIT, v));
    }
}

/// An allowed request: its response carries the rate-limit headers.
#[derive(Debug)]
pub struct Granted {
    limiter: Limiter,
    decision: Decision,
}

impl Granted {
    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        write_common(builder, &self.limiter, &self.decision);
    }
}

/// A denied request (429).
#[derive(Debug)]
pub struct Denied {
    limiter: Limiter,
    decision: Decision,
}

impl Denied {
    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        write_common(builder, &self.limiter, &self.decision);
        let retry_after = self.limiter.policy.retry_after_s(&self.decision);
        builder.insert_header((RETRY_AFTER, HeaderValue::from(retry_after)));
    }
}

/// One `RATELIMIT.CHECK` for the client of `req` with `cost`: `Ok` to go on, or the 429.
/// Redis being unreachable is a 503 (the limit fails closed).
pub async fn enforce(state: &AppState, req: &HttpRequest, cost: u64) -> Result<Granted, ApiError> {
    let client = client_identity(client_ip(req, &state.config.trusted_proxies));
    let limiter = &state.limiter;
    let policy = &limiter.policy;
    let decision = state
        .store
        .check_rate(client, policy.limit, policy.window_ms(), cost)
        .await?;
    state.telemetry.count_rate_decision(decision.allowed);
    state.decisions.record(
        DEFAULT_POLICY,
        Outcome::of(decision.allowed),
        &ClientLabel::Ip(client),
    );
    if decision.allowed {
        Ok(Granted {
            limiter: limiter.clone(),
            decision,
        })
    } else {
        Err(ApiError::RateLimited(Denied {
            limiter: limiter.clone(),
            decision,
        }))
    }
}

/// The client address of `req` (see `crate::ratelimit`).
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> IpAddr {
    let Some(peer) = req.peer_addr().map(|a| canonical(a.ip())) else {
        // No peer (a test request without a socket): everyone shares one bucket.
        return IpAddr::from([0, 0, 0, 0]);
    };
    if !trusted.contains(peer) {
        return peer;
    }
    let values: Vec<&str> = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    walk_forwarded_for(peer, &values, trusted)
}
