//! Rate-limit policies as the API applies them (SPEC section 8): for each tier and route
//! class, the enforced policies (one `RATELIMIT.CHECK` of all of them) and the shadow ones
//! (each evaluated alone, never changing a response), the header values of the IETF draft for
//! every enforced policy, and which policy a denial names.
//!
//! Without `POLICY_FILE` there is one policy, `default` (`RATE_LIMIT` per `RATE_WINDOW`), on
//! the ingest class of the `anonymous` tier: today's behaviour, byte for byte.

mod request;

pub use request::{parse_limits_request, LimitsRequest, MAX_COST, MAX_SUBJECT_LEN};

use crate::config::policy_file::ANONYMOUS;
use crate::config::Config;
pub use crate::store::{Decision, PolicyState};

/// The route classes: writes (`POST /api/metrics`, `/batch`) and reads (summary, series,
/// types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ingest,
    Read,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ingest => "ingest",
            Class::Read => "read",
        }
    }
}

/// One named policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub limit: u64,
    pub window_ms: u64,
    pub shadow: bool,
}

impl Rule {
    /// Its `RateLimit-Policy` item: `"name";q=<limit>;w=<seconds>`.
    pub fn policy_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.limit,
            self.window_ms.div_ceil(1000)
        )
    }
}

/// The policies of one class of one tier (indices into `Policies::rules`, in the tier's
/// order), with its `RateLimit-Policy` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPlan {
    pub enforced: Vec<usize>,
    pub shadow: Vec<usize>,
    pub policy_header: String,
}

/// A tier's two classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPlan {
    pub name: String,
    pub ingest: ClassPlan,
    pub read: ClassPlan,
}

impl TierPlan {
    pub fn class(&self, class: Class) -> &ClassPlan {
        match class {
            Class::Ingest => &self.ingest,
            Class::Read => &self.read,
        }
    }
}

/// Every policy and tier in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub rules: Vec<Rule>,
    /// `tiers[0]` is `anonymous`.
    pub tiers: Vec<TierPlan>,
    /// A `POLICY_FILE` is in force (API keys are read, a 429 names its policy).
    pub from_file: bool,
}

impl Policies {
    pub fn from_config(config: &Config) -> Policies {
        let Some(file) = &config.policy_file else {
            let rules = vec![Rule {
                name: "default".to_string(),
                limit: config.rate_limit,
                window_ms: config.rate_window_ms(),
                shadow: false,
            }];
            let ingest = class_plan(&rules, &[0]);
            let read = class_plan(&rules, &[]);
            return Policies {
                rules,
                tiers: vec![TierPlan {
                    name: ANONYMOUS.to_string(),
                    ingest,
                    read,
                }],
                from_file: false,
            };
        };
        let rules: Vec<Rule> = file
            .policies
            .iter()
            .map(|p| Rule {
                name: p.name.clone(),
                limit: p.limit,
                window_ms: p.window_ms,
                shadow: p.shadow,
            })
            .collect();
        let mut tiers: Vec<TierPlan> = file
            .tiers
            .iter()
            .map(|t| TierPlan {
                name: t.name.clone(),
                ingest: class_plan(&rules, &t.ingest),
                read: class_plan(&rules, &t.read),
            })
            .collect();
        if let Some(i) = tiers.iter().position(|t| t.name == ANONYMOUS) {
            tiers.swap(0, i);
        }
        Policies {
            rules,
            tiers,
            from_file: true,
        }
    }

    pub fn anonymous(&self) -> &TierPlan {
        &self.tiers[0]
    }

    pub fn tier(&self, name: &str) -> Option<&TierPlan> {
        self.tiers.iter().find(|t| t.name == name)
    }

    pub fn rule(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }

    /// `(limit, window_ms)` of `indices`, as `RATELIMIT.CHECK` takes them.
    pub fn arguments(&self, indices: &[usize]) -> Vec<(u64, u64)> {
        indices
            .iter()
            .map(|&i| (self.rules[i].limit, self.rules[i].window_ms))
            .collect()
    }

    /// The `RateLimit` value for `states` of the policies `indices` (same order).
    pub fn ratelimit_header(&self, indices: &[usize], states: &[PolicyState]) -> String {
        indices
            .iter()
            .zip(states)
            .map(|(&i, s)| ratelimit_item(&self.rules[i].name, s.remaining, s.reset_after_ms))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `RateLimit-Policy` value of the policies `indices`.
    pub fn policy_header(&self, indices: &[usize]) -> String {
        policy_header(&self.rules, indices)
    }
}

fn policy_header(rules: &[Rule], indices: &[usize]) -> String {
    indices
        .iter()
        .map(|&i| rules[i].policy_item())
        .collect::<Vec<_>>()
        .join(", ")
}

fn class_plan(rules: &[Rule], indices: &[usize]) -> ClassPlan {
    let (shadow, enforced): (Vec<usize>, Vec<usize>) =
        indices.iter().partition(|&&i| rules[i].shadow);
    ClassPlan {
        policy_header: policy_header(rules, &enforced),
        enforced,
        shadow,
    }
}

/// One `RateLimit` item: `"name";r=<remaining>;t=<seconds to reset, rounded up>`.
pub fn ratelimit_item(name: &str, remaining: i64, reset_after_ms: i64) -> String {
    format!(
        "\"{name}\";r={};t={}",
        remaining.max(0),
        ceil_s(reset_after_ms)
    )
}

/// Whole seconds, rounded up.
pub fn ceil_s(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

/// The states of a one-policy call, from its decision alone (the reply's binding policy is
/// that policy): no `POLICIES` flag needed.
pub fn single_state(decision: &Decision, window_ms: u64) -> PolicyState {
    PolicyState {
        limit: decision.limit,
        window_ms: window_ms as i64,
        remaining: decision.remaining,
        reset_after_ms: decision.reset_after_ms,
    }
}

/// Which of `indices` a denial names: the violated policy (`remaining < cost`, or a limit
/// below the cost when it can never pass) whose limit is the decision's (the module reports
/// the violated one that frees up last); the first violated one if limits tie.
pub fn violated(
    indices: &[usize],
    states: &[PolicyState],
    decision: &Decision,
    cost: u64,
) -> Option<usize> {
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    let candidates: Vec<(usize, &PolicyState)> = indices
        .iter()
        .zip(states)
        .filter(|(_, s)| s.remaining < cost || s.limit < cost)
        .map(|(&i, s)| (i, s))
        .collect();
    candidates
        .iter()
        .find(|(_, s)| s.limit == decision.limit)
        .or(candidates.first())
        .map(|(i, _)| *i)
}

/// `Retry-After` of a denial in whole seconds, at least 1; a request that can never pass
/// (`retry_after_ms` -1) is told to wait one window of the violated policy.
pub fn retry_after_s(decision: &Decision, window_ms: u64) -> i64 {
    if decision.retry_after_ms < 0 {
        return window_ms.div_ceil(1000) as i64;
    }
    ceil_s(decision.retry_after_ms).max(1)
}

#[cfg(test)]
mod tests;
