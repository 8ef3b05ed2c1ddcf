//! Limiter analytics (SPEC §10): each instance counts its rate-limit decisions per (policy,
//! outcome) and its denied clients in memory, and a background task flushes them to Redis at
//! most once a second ([`FLUSH_INTERVAL`]). A request only touches memory: an atomic add, and
//! for a denial one entry of a bounded table ([`crate::top_clients`]); never a Redis call.
//!
//! - Decisions: `tally:decisions:<policy>:<outcome>` are the module's series; a flush adds one
//!   sample per non-zero counter, its value the number of decisions since the last flush. So a
//!   bucket's `sum` over every instance's samples is the decisions of every instance, exactly.
//!   Policy names come from the configuration (never from a client), so the keys are bounded.
//! - Denied clients: one Space-Saving table of [`CAPACITY`] entries per instance and minute;
//!   each flush adds the deltas to `tally:top:<minute>` (a sorted set trimmed to
//!   `TOP_PER_MINUTE` members, expiring after an hour). `GET /api/ratelimit/top` sums the
//!   minutes of its window. Error bound: see `crate::top_clients` (no count is over the truth;
//!   exact for a client that kept its entry in each instance's table, which holds for every
//!   client above `N / CAPACITY` of an instance's `N` denials in that minute once it is in, and
//!   for every client of a minute in which at most `CAPACITY` distinct clients were denied by
//!   that instance; and that stayed among the `TOP_PER_MINUTE` largest of that minute).
//!
//! A flush that fails is retried on the next tick: its counts are given back (a decision write
//! that landed but whose answer was lost may then count twice; a denied-client write is
//! retried whole).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{Store, StoreError};
use crate::top_clients::SpaceSaving;
pub use crate::top_clients::CAPACITY;

/// How often an instance writes its counts (at most).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The one policy there is today: `RATE_LIMIT` per `RATE_WINDOW`.
pub const DEFAULT_POLICY: &str = "default";
/// Width of the denied-client buckets in Redis, seconds.
pub const TOP_BUCKET_S: u64 = 60;
/// Longest window of `/api/ratelimit/top`, seconds (the buckets expire after it).
pub const MAX_TOP_WINDOW_S: u64 = 3600;

/// What the limiter decided for one request under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// A shadow policy would have denied it (it was not enforced).
    ShadowDenied,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Denied, Outcome::ShadowDenied];

    /// An enforced policy's decision.
    pub const fn of(allowed: bool) -> Outcome {
        if allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        }
    }

    /// The spelling of the keys and of the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::ShadowDenied => "shadow_denied",
        }
    }

    const fn index(self) -> usize {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied => 1,
            Outcome::ShadowDenied => 2,
        }
    }
}

/// Who was limited: a client address (its rate-limit identity), or an API key's name.
#[derive(Debug, Clone, Copy)]
pub enum ClientLabel<'a> {
    Ip(IpAddr),
    Key(&'a str),
}

impl fmt::Display for ClientLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientLabel::Ip(ip) => write!(f, "{ip}"),
            ClientLabel::Key(name) => f.write_str(name),
        }
    }
}

/// The denied clients of the current minute.
struct Top {
    minute_s: u64,
    table: SpaceSaving,
}

/// One instance's counts, shared by its workers.
pub struct Decisions {
    policies: Vec<Box<str>>,
    counts: Vec<[AtomicU64; 3]>,
    top: Mutex<Top>,
}

impl Decisions {
    /// Counters for the configured `policies` (a decision of another policy is not counted).
    pub fn new(policies: &[&str]) -> Arc<Decisions> {
        Arc::new(Decisions {
            policies: policies.iter().map(|p| Box::from(*p)).collect(),
            counts: policies.iter().map(|_| Default::default()).collect(),
            top: Mutex::new(Top {
                minute_s: 0,
                table: SpaceSaving::new(CAPACITY),
            }),
        })
    }

    /// The policies counted, in configuration order.
    pub fn policies(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| &**p)
    }

    /// Counts one decision. A denial also counts against `client` in the bounded table.
    pub fn record(&self, policy: &str, outcome: Outcome, client: &ClientLabel) {
        let Some(i) = self.policies.iter().position(|p| **p == *policy) else {
            log::warn!("decision of unknown policy {policy:?} not counted");
            return;
        };
        self.counts[i][outcome.index()].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Denied {
            let name = client.to_string();
            self.top
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .table
                .add(&name);
        }
    }

    /// The counts not yet flushed, per (policy, outcome), non-zero ones only.
    pub fn pending(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (policy, row) in self.policies.iter().zip(&self.counts) {
            for outcome in Outcome::ALL {
                let n = row[outcome.index()].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((policy.to_string(), outcome.as_str(), n));
                }
            }
        }
        out
    }

    /// Writes what was counted since the last flush (see the module doc); `now_ms` is the
    /// samples' time and picks the minute of the denied clients.
    pub async fn flush(&self, store: &Store, now_ms: u64) -> Result<(), StoreError> {
        let mut taken = Vec::new();
        for (i, row) in self.counts.iter().enumerate() {
            for outcome in Outcome::ALL {
                let n = row[outcome.index()].swap(0, Ordering::Relaxed);
                if n > 0 {
                    taken.push((i, outcome, n));
                }
            }
        }
        let samples: Vec<(String, &str, u64)> = taken
            .iter()
            .map(|(i, o, n)| (self.policies[*i].to_string(), o.as_str(), *n))
            .collect();
        let mut result = Ok(());
        for ((i, outcome, n), r) in taken
            .iter()
            .zip(store.add_decisions(&samples, now_ms).await)
        {
            if let Err(e) = r {
                self.counts[*i][outcome.index()].fetch_add(*n, Ordering::Relaxed);
                result = Err(e);
            }
        }
        let minute_s = now_ms / 1000 / TOP_BUCKET_S * TOP_BUCKET_S;
        let (bucket, deltas) = {
            let mut top = self.top.lock().unwrap_or_else(|e| e.into_inner());
            if top.minute_s == 0 {
                top.minute_s = minute_s;
            }
            (top.minute_s, top.table.take_deltas())
        };
        // Denials since the last flush go to the minute the table is about (they are at most
        // one flush interval old); then a new minute starts a new table.
        let written = store.add_denied_clients(bucket, &deltas).await;
        let mut top = self.top.lock().unwrap_or_else(|e| e.into_inner());
        match written {
            Ok(()) => {
                if top.minute_s != minute_s {
                    top.table.clear();
                    top.minute_s = minute_s;
                }
            }
            Err(e) => {
                top.table.untake(&deltas);
                result = Err(e);
            }
        }
        result
    }

    /// The decisions of every instance per policy and outcome over the last `window_s`
    /// seconds, in `bucket_s` buckets (every bucket, zero when nothing was flushed in it),
    /// oldest first: `(bucket start unix seconds, decisions)`.
    pub async fn series(
        &self,
        store: &Store,
        window_s: u64,
        bucket_s: u64,
        now_ms: u64,
    ) -> Result<BTreeMap<String, [Vec<(u64, u64)>; 3]>, StoreError> {
        let to_ms = now_ms;
        let from_ms = now_ms.saturating_sub(window_s * 1000);
        let bucket_ms = bucket_s * 1000;
        let queries = self.policies.iter().flat_map(|policy| {
            Outcome::ALL.map(|outcome| async move {
                let points = store
                    .decision_range(policy, outcome.as_str(), from_ms, to_ms, bucket_ms)
                    .await?;
                let sums: Vec<(u64, u64)> = points
                    .iter()
                    .map(|p| (p.ts.max(0) as u64, p.sum.max(0.0).round() as u64))
                    .collect();
                Ok::<_, StoreError>((policy, outcome, fill(&sums, from_ms, to_ms, bucket_ms)))
            })
        });
        let mut out: BTreeMap<String, [Vec<(u64, u64)>; 3]> = BTreeMap::new();
        for r in futures_util::future::join_all(queries).await {
            let (policy, outcome, points) = r?;
            out.entry(policy.to_string()).or_default()[outcome.index()] = points;
        }
        Ok(out)
    }

    /// The `limit` most-denied clients of every instance over the last `window_s` seconds
    /// (whole minutes: every minute bucket the window touches), largest first, ties by name.
    pub async fn top(
        &self,
        store: &Store,
        window_s: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let now_s = now_ms / 1000;
        let first = now_s.saturating_sub(window_s) / TOP_BUCKET_S * TOP_BUCKET_S;
        let last = now_s / TOP_BUCKET_S * TOP_BUCKET_S;
        let minutes = (first..=last).step_by(TOP_BUCKET_S as usize);
        let replies =
            futures_util::future::join_all(minutes.map(|m| store.denied_clients(m))).await;
        let mut buckets = Vec::new();
        for r in replies {
            buckets.push(r?);
        }
        Ok(merge_top(buckets, limit))
    }
}

/// Every bucket of `[from_ms, to_ms]` (starts at multiples of `bucket_ms`, in seconds) with
/// its value from `points` (`(start ms, n)`), zero where there is none.
pub fn fill(points: &[(u64, u64)], from_ms: u64, to_ms: u64, bucket_ms: u64) -> Vec<(u64, u64)> {
    let by_start: HashMap<u64, u64> = points.iter().copied().collect();
    let first = from_ms / bucket_ms;
    let last = to_ms / bucket_ms;
    (first..=last)
        .map(|b| {
            let start = b * bucket_ms;
            (start / 1000, by_start.get(&start).copied().unwrap_or(0))
        })
        .collect()
}

/// Sums the minutes' `(client, denials)` and keeps the `limit` largest (ties by name).
pub fn merge_top(buckets: Vec<Vec<(String, u64)>>, limit: usize) -> Vec<(String, u64)> {
    let mut sums: HashMap<String, u64> = HashMap::new();
    for bucket in buckets {
        for (client, n) in bucket {
            *sums.entry(client).or_default() += n;
        }
    }
    let mut all: Vec<(String, u64)> = sums.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_is_filled_and_points_land_on_their_start() {
        let got = fill(&[(20_000, 3), (40_000, 1)], 15_000, 45_000, 10_000);
        assert_eq!(got, vec![(10, 0), (20, 3), (30, 0), (40, 1)]);
    }

    #[test]
    fn minutes_are_summed_and_the_largest_kept() {
        let a = vec![("x".to_string(), 5), ("y".to_string(), 2)];
        let b = vec![("y".to_string(), 4), ("z".to_string(), 6)];
        assert_eq!(
            merge_top(vec![a, b], 2),
            vec![("y".to_string(), 6), ("z".to_string(), 6)]
        );
    }

    #[test]
    fn decisions_are_counted_per_policy_and_outcome_and_unknown_policies_ignored() {
        let d = Decisions::new(&["default", "minute"]);
        let ip = ClientLabel::Ip("203.0.113.7".parse().unwrap());
        d.record("default", Outcome::Allowed, &ip);
        d.record("default", Outcome::Allowed, &ip);
        d.record("minute", Outcome::Denied, &ip);
        d.record("minute", Outcome::ShadowDenied, &ClientLabel::Key("mobile"));
        d.record("nope", Outcome::Denied, &ip);
        assert_eq!(
            d.pending(),
            vec![
                ("default".to_string(), "allowed", 2),
                ("minute".to_string(), "denied", 1),
                ("minute".to_string(), "shadow_denied", 1)
            ]
        );
        let top = d.top.lock().unwrap().table.top();
        assert_eq!(top, vec![("203.0.113.7".to_string(), 1)]);
        assert_eq!(d.policies().collect::<Vec<_>>(), ["default", "minute"]);
    }
}
