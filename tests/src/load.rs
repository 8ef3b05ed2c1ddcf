//! Load and phases for the fault suites: [`Seen`] tallies what every request of a load got
//! back, and the `until*` helpers move a test from one phase to the next when an observable
//! state is reached (a status seen, a counter moved, PING answered), never after a fixed
//! sleep; each has a deadline and says what it waited for when it runs out.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Reply;

/// How often a wait looks at the state again.
const POLL: Duration = Duration::from_millis(20);

/// Waits (async) until `check` holds, looking every 20 ms; panics after `timeout` with `what`
/// and the last `state` (what the test saw instead).
pub async fn until<S: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), S>,
) {
    until_async(what, timeout, || std::future::ready(check())).await;
}

/// [`until`] for a check that is itself async (an HTTP request).
pub async fn until_async<S: std::fmt::Debug, F: Future<Output = Result<(), S>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match check().await {
            Ok(()) => return,
            Err(state) => state,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; last seen: {state:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (async) until `GET base/health` answers `status`.
pub async fn until_health(http: &reqwest::Client, base: &str, status: u16, timeout: Duration) {
    until_async(&format!("/health answers {status}"), timeout, || async {
        match crate::http::send(http.get(format!("{base}/health"))).await {
            Ok(r) if r.status == status => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// Waits (async) until every label of `labels` has had `status` at least `n` times in `seen`.
pub async fn until_seen(seen: &Shared, labels: &[&str], status: u16, n: usize, timeout: Duration) {
    until(
        &format!("{labels:?} each answered {status} {n} times"),
        timeout,
        || {
            let seen = seen.lock().unwrap();
            if labels.iter().all(|l| seen.count(l, status) >= n) {
                Ok(())
            } else {
                Err(labels.iter().map(|l| (*l, seen.of(l))).collect::<Vec<_>>())
            }
        },
    )
    .await;
}

/// What a run of requests got: statuses per label, transport failures, the slowest answer.
#[derive(Default, Debug)]
pub struct Seen {
    pub statuses: BTreeMap<String, BTreeMap<u16, usize>>,
    pub failures: Vec<String>,
    pub slowest: Duration,
    pub total: usize,
}

pub type Shared = Arc<Mutex<Seen>>;

impl Seen {
    pub fn shared() -> Shared {
        Arc::new(Mutex::new(Seen::default()))
    }

    /// Records one outcome under `label`.
    pub fn record(&mut self, label: &str, outcome: &Result<Reply, String>) {
        self.total += 1;
        match outcome {
            Ok(r) => {
                *self
                    .statuses
                    .entry(label.to_string())
                    .or_default()
                    .entry(r.status)
                    .or_default() += 1;
                self.slowest = self.slowest.max(r.took);
            }
            Err(e) => self.failures.push(format!("{label}: {e}")),
        }
    }

    /// How many answers under `label` had `status`.
    pub fn count(&self, label: &str, status: u16) -> usize {
        self.statuses
            .get(label)
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Every status seen under `label`.
    pub fn of(&self, label: &str) -> BTreeMap<u16, usize> {
        self.statuses.get(label).cloned().unwrap_or_default()
    }

    /// Panics unless every answer under each label is in its allowed set, no request failed in
    /// transport, and none took longer than `bound`.
    pub fn assert_only(&self, allowed: &[(&str, &[u16])], bound: Duration) {
        assert!(
            self.failures.is_empty(),
            "{} requests failed in transport (reset, hang or refused), e.g. {:?}\n{self:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        for (label, statuses) in &self.statuses {
            let ok = allowed
                .iter()
                .find(|(l, _)| l == label)
                .unwrap_or_else(|| panic!("unexpected label {label}"))
                .1;
            for s in statuses.keys() {
                assert!(ok.contains(s), "{label} answered {s}: {self:?}");
            }
        }
        assert!(
            self.slowest <= bound,
            "slowest answer took {:?} (> {bound:?})",
            self.slowest
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_returns_once_the_state_is_reached() {
        let mut polls = 0;
        until("the third poll", Duration::from_secs(10), || {
            polls += 1;
            if polls >= 3 {
                Ok(())
            } else {
                Err(polls)
            }
        })
        .await;
        assert_eq!(polls, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting until the impossible; last seen: 7")]
    async fn until_names_what_it_waited_for_and_the_last_state_when_it_times_out() {
        until("the impossible", Duration::from_millis(50), || Err(7)).await;
    }

    #[test]
    fn seen_counts_statuses_per_label_and_transport_failures_apart() {
        let mut seen = Seen::default();
        let reply = |status| {
            Ok(Reply {
                status,
                body: String::new(),
                took: Duration::from_millis(1),
            })
        };
        seen.record("post", &reply(201));
        seen.record("post", &reply(201));
        seen.record("post", &reply(503));
        seen.record("post", &Err("reset".to_string()));
        assert_eq!(seen.count("post", 201), 2);
        assert_eq!(seen.count("post", 503), 1);
        assert_eq!(seen.count("health", 200), 0);
        assert_eq!(seen.total, 4);
        assert_eq!(seen.failures, ["post: reset"]);
    }
}
