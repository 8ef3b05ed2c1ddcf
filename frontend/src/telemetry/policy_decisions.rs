//! `tally_ratelimit_decisions_total{policy,outcome}`: per named policy, what it decided
//! (SPEC section 8), counted in memory (no Redis call to count).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// What one policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    Allowed = 0,
    Denied = 1,
    /// A shadow policy would have denied (the response did not change).
    ShadowDenied = 2,
}

const OUTCOMES: [(&str, PolicyOutcome); 3] = [
    ("allowed", PolicyOutcome::Allowed),
    ("denied", PolicyOutcome::Denied),
    ("shadow_denied", PolicyOutcome::ShadowDenied),
];

/// The policies' names and, per policy, a counter per outcome.
type Counters = (Vec<String>, Box<[[AtomicU64; 3]]>);

/// Counters per policy (the names are set once at start-up).
#[derive(Default)]
pub struct PolicyDecisions {
    counters: OnceLock<Counters>,
}

impl PolicyDecisions {
    /// The policies' names, in the order `count` indexes them. Later calls change nothing.
    pub fn set_names(&self, names: Vec<String>) {
        let counts = names.iter().map(|_| Default::default()).collect();
        let _ = self.counters.set((names, counts));
    }

    pub fn count(&self, policy: usize, outcome: PolicyOutcome) {
        if let Some(c) = self.counters.get().and_then(|(_, c)| c.get(policy)) {
            c[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The per-policy lines (the family's HELP and TYPE are written by the caller).
    pub fn render(&self, out: &mut String) {
        let Some((names, counts)) = self.counters.get() else {
            return;
        };
        for (name, c) in names.iter().zip(counts.iter()) {
            for (label, outcome) in OUTCOMES {
                let _ = writeln!(
                    out,
                    "tally_ratelimit_decisions_total{{policy=\"{name}\",outcome=\"{label}\"}} {}",
                    c[outcome as usize].load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_has_its_three_outcomes() {
        let d = PolicyDecisions::default();
        d.count(0, PolicyOutcome::Allowed); // before the names: ignored
        d.set_names(vec!["burst".into(), "probe".into()]);
        d.count(0, PolicyOutcome::Denied);
        d.count(1, PolicyOutcome::ShadowDenied);
        d.count(1, PolicyOutcome::ShadowDenied);
        d.count(7, PolicyOutcome::Allowed); // no such policy: ignored
        let mut out = String::new();
        d.render(&mut out);
        assert_eq!(
            out,
            "tally_ratelimit_decisions_total{policy=\"burst\",outcome=\"allowed\"} 0\n\
             tally_ratelimit_decisions_total{policy=\"burst\",outcome=\"denied\"} 1\n\
             tally_ratelimit_decisions_total{policy=\"burst\",outcome=\"shadow_denied\"} 0\n\
             tally_ratelimit_decisions_total{policy=\"probe\",outcome=\"allowed\"} 0\n\
             tally_ratelimit_decisions_total{policy=\"probe\",outcome=\"denied\"} 0\n\
             tally_ratelimit_decisions_total{policy=\"probe\",outcome=\"shadow_denied\"} 2\n"
        );
    }
}
