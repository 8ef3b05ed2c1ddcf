//! Logging (env_logger, `RUST_LOG`, one line per request from actix's `Logger`) and the
//! Prometheus counters behind `GET /metrics`: fixed arrays of atomics, so recording a request
//! allocates nothing and takes no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{Breaker, State};

mod policy_decisions;
pub use policy_decisions::{PolicyDecisions, PolicyOutcome};

/// Starts logging; `RUST_LOG` wins, else `info`. Safe to call twice (tests).
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

const STATUSES: usize = 600;

struct RouteStats {
    by_status: [AtomicU64; STATUSES],
    /// Non-cumulative: `buckets[i]` counts durations in (BUCKETS[i-1], BUCKETS[i]]; the last
    /// slot is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalOutcome {
    #[default]
    Success,
    Failure,
    Rejected,
}

pub struct Telemetry {
    /// One label per slot of `routes` (the route table's paths, then `other`).
    labels: &'static [&'static str],
    routes: Box<[RouteStats]>,
    rate_allowed: AtomicU64,
    rate_denied: AtomicU64,
    external: [AtomicU64; 3],
    /// Per named policy (SPEC section 8).
    pub policy_decisions: PolicyDecisions,
}

impl Telemetry {
    /// Counters for the routes `labels` (a request is observed by its label's index).
    pub fn new(labels: &'static [&'static str]) -> Telemetry {
        Telemetry {
            labels,
            routes: labels.iter().map(|_| RouteStats::default()).collect(),
            rate_allowed: AtomicU64::new(0),
            rate_denied: AtomicU64::new(0),
            external: Default::default(),
            policy_decisions: PolicyDecisions::default(),
        }
    }

    pub fn observe(&self, route: usize, status: u16, elapsed: Duration) {
        let Some(r) = self.routes.get(route) else {
            return;
        };
        if let Some(c) = r.by_status.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        r.buckets[slot].fetch_add(1, Ordering::Relaxed);
        r.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_rate_decision(&self, allowed: bool) {
        let c = if allowed {
            &self.rate_allowed
        } else {
            &self.rate_denied
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_external(&self, outcome: ExternalOutcome) {
        self.external[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, breaker: &Breaker) -> String {
        let mut out = String::with_capacity(4096);
        self.render_requests(&mut out);
        self.render_durations(&mut out);
        self.render_rate_decisions(&mut out);
        render_breaker(&mut out, breaker);
        self.render_external(&mut out);
        out
    }

    /// `tally_http_requests_total`: by route and status, the statuses seen.
    fn render_requests(&self, out: &mut String) {
        out.push_str(
            "# HELP tally_http_requests_total HTTP requests by route and status.\n\
             # TYPE tally_http_requests_total counter\n",
        );
        for (name, r) in self.labels.iter().zip(self.routes.iter()) {
            for (status, c) in r.by_status.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tally_http_requests_total{{route=\"{name}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
    }

    /// `tally_http_request_duration_seconds`: a histogram per route that saw a request.
    fn render_durations(&self, out: &mut String) {
        out.push_str(
            "# HELP tally_http_request_duration_seconds Time from request to response.\n\
             # TYPE tally_http_request_duration_seconds histogram\n",
        );
        for (name, r) in self.labels.iter().zip(self.routes.iter()) {
            if r.count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += r.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tally_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += r.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tally_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {cumulative}\n\
                 tally_http_request_duration_seconds_sum{{route=\"{name}\"}} {}\n\
                 tally_http_request_duration_seconds_count{{route=\"{name}\"}} {cumulative}",
                r.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
    }

    /// `tally_ratelimit_decisions_total`.
    fn render_rate_decisions(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP tally_ratelimit_decisions_total RATELIMIT.CHECK outcomes.\n\
             # TYPE tally_ratelimit_decisions_total counter\n\
             tally_ratelimit_decisions_total{{decision=\"allowed\"}} {}\n\
             tally_ratelimit_decisions_total{{decision=\"denied\"}} {}\n",
            self.rate_allowed.load(Ordering::Relaxed),
            self.rate_denied.load(Ordering::Relaxed),
        );
        self.policy_decisions.render(out);
    }

    /// `tally_external_calls_total`.
    fn render_external(&self, out: &mut String) {
        out.push_str(
            "# HELP tally_external_calls_total /external calls by outcome (rejected = breaker open).\n\
             # TYPE tally_external_calls_total counter\n",
        );
        for (label, outcome) in [
            ("success", ExternalOutcome::Success),
            ("failure", ExternalOutcome::Failure),
            ("rejected", ExternalOutcome::Rejected),
        ] {
            let _ = writeln!(
                out,
                "tally_external_calls_total{{outcome=\"{label}\"}} {}",
                self.external[outcome as usize].load(Ordering::Relaxed)
            );
        }
    }
}

/// `tally_circuit_breaker_state` and `tally_circuit_breaker_transitions_total`.
fn render_breaker(out: &mut String, breaker: &Breaker) {
    let state = breaker.state();
    out.push_str(
        "# HELP tally_circuit_breaker_state 1 for the breaker's current state, else 0.\n\
         # TYPE tally_circuit_breaker_state gauge\n",
    );
    for s in State::ALL {
        let _ = writeln!(
            out,
            "tally_circuit_breaker_state{{state=\"{}\"}} {}",
            s.as_str(),
            u8::from(s == state)
        );
    }
    out.push_str(
        "# HELP tally_circuit_breaker_transitions_total Breaker state changes.\n\
         # TYPE tally_circuit_breaker_transitions_total counter\n",
    );
    for from in State::ALL {
        for to in State::ALL {
            if from != to {
                let _ = writeln!(
                    out,
                    "tally_circuit_breaker_transitions_total{{from=\"{}\",to=\"{}\"}} {}",
                    from.as_str(),
                    to.as_str(),
                    breaker.transitions(from, to)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{ManualClock, DEFAULT_TRIAL_CALLS};

    #[test]
    fn the_exposition_has_counters_histograms_and_the_breaker_state() {
        let t = Telemetry::new(&["/health", "/api/metrics", "other"]);
        let api = 1;
        t.observe(api, 201, Duration::from_micros(700));
        t.observe(api, 429, Duration::from_secs(10));
        t.observe(2, 404, Duration::ZERO);
        t.count_rate_decision(true);
        let b = Breaker::new(
            3,
            Duration::from_secs(1),
            DEFAULT_TRIAL_CALLS,
            ManualClock::new(),
        );
        let text = t.render(&b);
        for line in [
            "tally_http_requests_total{route=\"/api/metrics\",status=\"201\"} 1",
            "tally_http_requests_total{route=\"/api/metrics\",status=\"429\"} 1",
            "tally_http_requests_total{route=\"other\",status=\"404\"} 1",
            "tally_http_request_duration_seconds_bucket{route=\"/api/metrics\",le=\"0.0005\"} 0",
            "tally_http_request_duration_seconds_bucket{route=\"/api/metrics\",le=\"0.001\"} 1",
            "tally_http_request_duration_seconds_bucket{route=\"/api/metrics\",le=\"+Inf\"} 2",
            "tally_http_request_duration_seconds_count{route=\"/api/metrics\"} 2",
            "tally_ratelimit_decisions_total{decision=\"allowed\"} 1",
            "tally_circuit_breaker_state{state=\"closed\"} 1",
            "tally_circuit_breaker_state{state=\"open\"} 0",
            "tally_circuit_breaker_transitions_total{from=\"closed\",to=\"open\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
