//! The HTTP side of rate limiting: who the caller is (an API key, or the client address), one
//! `RATELIMIT.CHECK` of every enforced policy of the route's class (through the store), the
//! shadow policies after an allowed one, and the IETF draft headers (values from
//! `crate::policies`) on every limited response.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponseBuilder};
use serde::Serialize;

use crate::apikeys::{self, Caller, KeyCache};
use crate::config::canonical;
use crate::decisions::{ClientLabel, Outcome};
use crate::policies::{
    self, single_state, Class, ClassPlan, Decision, Policies, PolicyState, TierPlan,
};
use crate::ratelimit::{client_identity, walk_forwarded_for, TrustedProxies};
use crate::routes::error::ApiError;
use crate::routes::AppState;
use crate::store::keys;
use crate::telemetry::PolicyOutcome;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The policies in force, with each tier's `RateLimit-Policy` values built once (a clone
/// shares them).
#[derive(Debug, Clone)]
pub struct Limiter {
    pub policies: Arc<Policies>,
    /// Per tier (same index as `policies.tiers`): ingest, read.
    headers: Arc<Vec<[HeaderValue; 2]>>,
    pub keys: Arc<KeyCache>,
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
}

impl Limiter {
    pub fn new(policies: Policies) -> Limiter {
        let headers = policies
            .tiers
            .iter()
            .map(|t| {
                [
                    header(&t.ingest.policy_header),
                    header(&t.read.policy_header),
                ]
            })
            .collect();
        Limiter {
            policies: Arc::new(policies),
            headers: Arc::new(headers),
            keys: KeyCache::new(),
        }
    }

    fn policy_header(&self, tier: usize, class: Class) -> HeaderValue {
        self.headers[tier][class as usize].clone()
    }
}

/// Who a request is, for the limits.
#[derive(Debug, Clone)]
pub enum Who {
    /// No API key: the client address (section 2), tier `anonymous`.
    Anonymous(IpAddr),
    /// A valid API key.
    Keyed(Arc<Caller>),
}

/// The rate-limit headers of a limited response.
#[derive(Debug)]
struct Headers {
    policy: HeaderValue,
    ratelimit: String,
}

impl Headers {
    fn write(&self, builder: &mut HttpResponseBuilder) {
        builder.insert_header((RATELIMIT_POLICY, self.policy.clone()));
        if let Ok(v) = HeaderValue::from_str(&self.ratelimit) {
            builder.insert_header((RATELIMIT, v));
        }
    }
}

/// An allowed request: its response carries the rate-limit headers (none when its class has
/// no enforced policy).
#[derive(Debug)]
pub struct Granted {
    headers: Option<Headers>,
}

impl Granted {
    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        if let Some(h) = &self.headers {
            h.write(builder);
        }
    }
}

/// A denied request (429).
#[derive(Debug)]
pub struct Denied {
    headers: Headers,
    retry_after_s: i64,
    /// The violated policy, named in the body when a policy file is in force.
    policy: Option<String>,
}

#[derive(Serialize)]
struct DeniedBody<'a> {
    detail: &'a str,
    policy: &'a str,
}

impl Denied {
    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        self.headers.write(builder);
        builder.insert_header((RETRY_AFTER, HeaderValue::from(self.retry_after_s)));
    }

    /// The body when it names the policy (else the plain `{"detail": ...}`).
    pub fn body(&self) -> Option<String> {
        let policy = self.policy.as_deref()?;
        serde_json::to_string(&DeniedBody {
            detail: "Too many requests",
            policy,
        })
        .ok()
    }
}

/// The caller of `req`: with a policy file, a key (`Authorization: Bearer` or `X-API-Key`)
/// must be valid (else 401, before any budget is used); without one, or without a policy file,
/// the client address.
pub async fn identify(state: &AppState, req: &HttpRequest) -> Result<Who, ApiError> {
    let limiter = &state.limiter;
    if limiter.policies.from_file {
        let text = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        let has_key_header = req.headers().contains_key(X_API_KEY)
            || text(&AUTHORIZATION).is_some_and(|a| {
                a.trim_start()
                    .get(..6)
                    .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
            });
        if let Some(key) = apikeys::presented(text(&AUTHORIZATION), text(&X_API_KEY)) {
            let caller = limiter.keys.resolve(&state.store, key).await?;
            return match caller {
                Some(c) if limiter.policies.tier(&c.tier).is_some() => Ok(Who::Keyed(c)),
                Some(c) => {
                    log::warn!(
                        "API key {} has tier {:?}, which POLICY_FILE does not define: refused",
                        c.id,
                        c.tier
                    );
                    Err(ApiError::Unauthorized)
                }
                None => Err(ApiError::Unauthorized),
            };
        }
        if has_key_header {
            // A key header that is not text.
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(Who::Anonymous(client_identity(client_ip(
        req,
        &state.config.trusted_proxies,
    ))))
}

/// The tier of `who` and its index.
fn tier_of<'a>(policies: &'a Policies, who: &Who) -> (usize, &'a TierPlan) {
    let name = match who {
        Who::Anonymous(_) => return (0, policies.anonymous()),
        Who::Keyed(c) => c.tier.as_str(),
    };
    policies
        .tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == name)
        .unwrap_or((0, policies.anonymous()))
}

/// The log of `who`'s budget of `class`.
fn budget_key(who: &Who, class: Class) -> String {
    match (who, class) {
        (Who::Anonymous(ip), Class::Ingest) => keys::ratelimit(*ip),
        (Who::Anonymous(ip), Class::Read) => keys::ratelimit_read(*ip),
        (Who::Keyed(c), class) => keys::ratelimit_key(&c.id, class.as_str()),
    }
}

/// One check of the enforced policies `indices` on `key`: the decision and each policy's
/// state (one policy needs no `POLICIES` flag: the decision is its state).
pub async fn check(
    state: &AppState,
    key: &str,
    indices: &[usize],
    cost: u64,
    peek: bool,
) -> Result<(Decision, Vec<PolicyState>), ApiError> {
    let policies = &state.limiter.policies;
    let args = policies.arguments(indices);
    if let ([(limit, window_ms)], false) = (args.as_slice(), peek) {
        let d = state
            .store
            .check_rate_at(key, *limit, *window_ms, cost)
            .await?;
        return Ok((d, vec![single_state(&d, *window_ms)]));
    }
    Ok(state.store.check_limits(key, &args, cost, peek).await?)
}

/// The rate limit of the route class `class` for `req` with `cost`: `Ok` to go on, or the 401
/// or 429. Redis being unreachable is a 503 (the limit fails closed).
pub async fn enforce(
    state: &AppState,
    req: &HttpRequest,
    class: Class,
    cost: u64,
) -> Result<Granted, ApiError> {
    let who = identify(state, req).await?;
    let limiter = &state.limiter;
    let policies = &limiter.policies;
    let (tier_index, tier) = tier_of(policies, &who);
    let plan = tier.class(class);
    if plan.enforced.is_empty() && plan.shadow.is_empty() {
        return Ok(Granted { headers: None });
    }
    let key = budget_key(&who, class);
    if plan.enforced.is_empty() {
        shadows(state, plan, &key, cost, &who.label()).await;
        return Ok(Granted { headers: None });
    }
    let (decision, states) = check(state, &key, &plan.enforced, cost, false).await?;
    state.telemetry.count_rate_decision(decision.allowed);
    let headers = Headers {
        policy: limiter.policy_header(tier_index, class),
        ratelimit: policies.ratelimit_header(&plan.enforced, &states),
    };
    let client = who.label();
    if decision.allowed {
        for &i in &plan.enforced {
            record(state, i, PolicyOutcome::Allowed, &client);
        }
        shadows(state, plan, &key, cost, &client).await;
        return Ok(Granted {
            headers: Some(headers),
        });
    }
    let violated =
        policies::violated(&plan.enforced, &states, &decision, cost).unwrap_or(plan.enforced[0]);
    record(state, violated, PolicyOutcome::Denied, &client);
    let rule = &policies.rules[violated];
    Err(ApiError::RateLimited(Denied {
        headers,
        retry_after_s: policies::retry_after_s(&decision, rule.window_ms),
        policy: policies.from_file.then(|| rule.name.clone()),
    }))
}

/// One decision of policy `i` for `client`: counted for `/metrics` and for the limiter
/// analytics (in memory; flushed by a task of their own, never on the request path).
fn record(state: &AppState, i: usize, outcome: PolicyOutcome, client: &ClientLabel<'_>) {
    state.telemetry.policy_decisions.count(i, outcome);
    let outcome = match outcome {
        PolicyOutcome::Allowed => Outcome::Allowed,
        PolicyOutcome::Denied => Outcome::Denied,
        PolicyOutcome::ShadowDenied => Outcome::ShadowDenied,
    };
    let name = &state.limiter.policies.rules[i].name;
    state.decisions.record(name, outcome, client);
}

impl Who {
    /// How the limiter analytics name the caller: the client address, or the key's name (its
    /// id when it has none).
    pub fn label(&self) -> ClientLabel<'_> {
        match self {
            Who::Anonymous(ip) => ClientLabel::Ip(*ip),
            Who::Keyed(c) if c.name.is_empty() => ClientLabel::Key(&c.id),
            Who::Keyed(c) => ClientLabel::Key(&c.name),
        }
    }
}

/// Each shadow policy of `plan`, alone on its own log, for a request the enforced ones let
/// through: a would-deny is counted, never answered; a failure is logged, never answered.
async fn shadows(
    state: &AppState,
    plan: &ClassPlan,
    budget_key: &str,
    cost: u64,
    client: &ClientLabel<'_>,
) {
    let policies = &state.limiter.policies;
    for &i in &plan.shadow {
        let rule = &policies.rules[i];
        let key = keys::ratelimit_shadow(&rule.name, budget_key);
        match state
            .store
            .check_rate_at(&key, rule.limit, rule.window_ms, cost)
            .await
        {
            Ok(d) => {
                let outcome = if d.allowed {
                    PolicyOutcome::Allowed
                } else {
                    PolicyOutcome::ShadowDenied
                };
                record(state, i, outcome, client);
            }
            Err(e) => log::warn!("shadow policy {:?} not evaluated: {e}", rule.name),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn caller(id: &str, tier: &str) -> Who {
        Who::Keyed(Arc::new(Caller {
            id: id.to_string(),
            name: String::new(),
            tier: tier.to_string(),
        }))
    }

    #[test]
    fn the_budget_follows_the_key_or_the_client_address_per_class() {
        let v4 = Who::Anonymous("203.0.113.7".parse().unwrap());
        let v6 = Who::Anonymous(client_identity("2001:db8:1:2::9".parse().unwrap()));
        let keyed = caller("5b1e0c3a9d2f4e71", "pro");
        let cases = [
            (&v4, Class::Ingest, "ratelimit:203.0.113.7"),
            (&v4, Class::Read, "ratelimit:read:203.0.113.7"),
            (&v6, Class::Ingest, "ratelimit:2001:db8:1:2::"),
            (
                &keyed,
                Class::Ingest,
                "ratelimit:key:5b1e0c3a9d2f4e71:ingest",
            ),
            (&keyed, Class::Read, "ratelimit:key:5b1e0c3a9d2f4e71:read"),
        ];
        for (who, class, key) in cases {
            assert_eq!(budget_key(who, class), key, "{who:?} {class:?}");
        }
        assert_eq!(
            keys::ratelimit_shadow("probe", "ratelimit:key:5b1e0c3a9d2f4e71:ingest"),
            "ratelimit:shadow:probe:key:5b1e0c3a9d2f4e71:ingest"
        );
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards_it() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = |ip: &str| format!("{ip}:40000").parse().unwrap();
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("198.51.100.1", None, "198.51.100.1"),
            // An untrusted peer's X-Forwarded-For is ignored (spoofable).
            ("198.51.100.1", Some("6.6.6.6"), "198.51.100.1"),
            // A trusted proxy's is walked from the right.
            ("10.0.0.1", Some("6.6.6.6, 203.0.113.7"), "203.0.113.7"),
            ("10.0.0.1", Some("203.0.113.7, 10.0.0.9"), "203.0.113.7"),
            ("10.0.0.1", None, "10.0.0.1"),
        ];
        for (from, xff, want) in cases {
            let mut req = TestRequest::default().peer_addr(peer(from));
            if let Some(xff) = xff {
                req = req.insert_header((X_FORWARDED_FOR, *xff));
            }
            let req = req.to_http_request();
            assert_eq!(
                client_ip(&req, &trusted),
                want.parse::<IpAddr>().unwrap(),
                "{from} {xff:?}"
            );
        }
    }

    #[test]
    fn a_keyed_caller_is_in_its_tier_and_anyone_else_in_anonymous() {
        let config = crate::config::Config {
            policy_file: Some(
                crate::config::policy_file::parse(
                    "p.toml",
                    "[tiers.pro]\n[tiers.anonymous]\n[tiers.team]\n",
                )
                .unwrap(),
            ),
            ..Default::default()
        };
        let policies = Policies::from_config(&config);
        let anon = Who::Anonymous("203.0.113.7".parse().unwrap());
        assert_eq!(tier_of(&policies, &anon).1.name, "anonymous");
        let (i, t) = tier_of(&policies, &caller("a", "team"));
        assert_eq!(
            (t.name.as_str(), &policies.tiers[i].name),
            ("team", &t.name)
        );
        assert_eq!(tier_of(&policies, &caller("a", "pro")).1.name, "pro");
    }
}
