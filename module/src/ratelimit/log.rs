//! The sliding-window log: an exact record of what was admitted and when.
//!
//! Pure Rust with no Redis import: every operation takes `now_ms` as an argument, so the whole
//! algorithm is tested as tables of (time, request) -> reply.
//!
//! An entry recorded at `t` counts in a window of `w` ms while `now < t + w`: an entry exactly
//! `w` ms old has left the window. A request of cost `c` is allowed iff, for every policy,
//! the cost recorded in its window plus `c` is at most its limit.
//!
//! Layout: timestamps are `u32` millisecond offsets from `base` (4 bytes per entry). Costs are
//! implicit while every entry has cost 1; the first entry of another cost adds a parallel array
//! of wrapping cumulative costs (8 more bytes per entry) so window sums stay O(log n).
//! Expired entries are dropped from the front by advancing `head`, and the storage is compacted
//! once more than half of it is dead, so trimming is amortized O(1).

/// The longest window (and so the longest span of live entries) a log supports: offsets are u32.
pub const MAX_WINDOW_MS: u64 = u32::MAX as u64;

/// One `(limit, window_ms)` rule; `window_ms` is in `1..=MAX_WINDOW_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub limit: u64,
    pub window_ms: u64,
}

/// The reply of RATELIMIT.CHECK / RATELIMIT.PEEK, field for field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// 0 when allowed; exact ms until the same request would be allowed; -1 if never.
    pub retry_after_ms: i64,
    pub reset_after_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    base: u64,
    /// Longest window ever recorded with: entries older than this can no longer matter.
    horizon: u32,
    /// Index of the first live entry in `times` (and `cum`).
    head: usize,
    times: Vec<u32>,
    /// Empty while every entry has cost 1; else `cum[i]` is the wrapping sum of the costs of
    /// entries `0..=i` (dead ones included: only differences are ever used).
    cum: Vec<u64>,
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.times.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn horizon_ms(&self) -> u64 {
        u64::from(self.horizon)
    }

    /// Timestamp of the newest entry.
    pub fn newest_ms(&self) -> Option<u64> {
        self.times.last().map(|&t| self.base + u64::from(t))
    }

    /// When the key can expire: the longest window after the newest entry.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.newest_ms().map(|t| t + self.horizon_ms())
    }

    /// Live entries as `(timestamp_ms, cost)`, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (self.head..self.times.len()).map(|i| (self.ts(i), self.cost_between(i, i + 1)))
    }

    /// Heap bytes owned by the log, for MEMORY USAGE.
    pub fn heap_bytes(&self) -> usize {
        self.times.capacity() * std::mem::size_of::<u32>()
            + self.cum.capacity() * std::mem::size_of::<u64>()
    }

    /// Rebuilds a log from its entries (decoding); they must be sorted, have cost >= 1 and span
    /// at most `MAX_WINDOW_MS`, and `horizon_ms` must be a valid window.
    pub fn from_entries(
        horizon_ms: u64,
        entries: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, &'static str> {
        if horizon_ms == 0 || horizon_ms > MAX_WINDOW_MS {
            return Err("horizon out of range");
        }
        let mut log = Log {
            horizon: horizon_ms as u32,
            ..Log::default()
        };
        for (ts, cost) in entries {
            if cost == 0 {
                return Err("entry with zero cost");
            }
            match log.newest_ms() {
                None => log.base = ts,
                Some(newest) if ts < newest => return Err("entries out of order"),
                Some(_) if ts - log.base > MAX_WINDOW_MS => return Err("entries span too long"),
                Some(_) => {}
            }
            log.push(ts, cost);
        }
        Ok(log)
    }

    /// RATELIMIT.PEEK: the reply CHECK would give now, recording nothing.
    pub fn peek(&self, now_ms: u64, policies: &[Policy], cost: u64) -> Decision {
        let mut best: Option<(Decision, u64)> = None; // (decision, tie-break key)
        let mut never: Option<Decision> = None;
        let mut denied = false;
        let record_at = self.newest_ms().map_or(now_ms, |t| t.max(now_ms));

        for p in policies {
            let start = self.window_start(now_ms, p.window_ms);
            let used = self.cost_between(start, self.times.len());
            let newest_in_window =
                (start < self.times.len()).then(|| self.ts(self.times.len() - 1));
            let reset_now = newest_in_window.map_or(0, |t| t + p.window_ms - now_ms);

            if cost > p.limit {
                never.get_or_insert(Decision {
                    allowed: false,
                    limit: p.limit,
                    remaining: p.limit.saturating_sub(used),
                    retry_after_ms: -1,
                    reset_after_ms: reset_now,
                });
                continue;
            }
            match used.checked_add(cost).filter(|&total| total <= p.limit) {
                Some(total) if !denied => {
                    let remaining = p.limit - total;
                    let reset = if cost > 0 {
                        record_at + p.window_ms - now_ms
                    } else {
                        reset_now
                    };
                    let d = Decision {
                        allowed: true,
                        limit: p.limit,
                        remaining,
                        retry_after_ms: 0,
                        reset_after_ms: reset,
                    };
                    // Binding: least remaining; on a tie, the one that resets last.
                    let better = best.as_ref().is_none_or(|(b, _)| {
                        (remaining, std::cmp::Reverse(reset))
                            < (b.remaining, std::cmp::Reverse(b.reset_after_ms))
                    });
                    if better {
                        best = Some((d, 0));
                    }
                }
                Some(_) => {}
                None => {
                    let retry = self.retry_after(start, used, cost, p, now_ms);
                    let d = Decision {
                        allowed: false,
                        limit: p.limit,
                        remaining: p.limit.saturating_sub(used),
                        retry_after_ms: retry as i64,
                        reset_after_ms: reset_now,
                    };
                    // Binding: the violated policy that frees up last.
                    let better = !denied || best.as_ref().is_none_or(|(_, r)| retry > *r);
                    if better {
                        best = Some((d, retry));
                    }
                    denied = true;
                }
            }
        }
        if let Some(d) = never {
            return d;
        }
        best.map(|(d, _)| d).unwrap_or(Decision {
            allowed: true,
            limit: 0,
            remaining: 0,
            retry_after_ms: 0,
            reset_after_ms: 0,
        })
    }

    /// RATELIMIT.CHECK: decides, and if allowed records `cost` at `now_ms`. Returns the
    /// decision and whether anything was recorded (so the caller knows to replicate).
    pub fn check(&mut self, now_ms: u64, policies: &[Policy], cost: u64) -> (Decision, bool) {
        let decision = self.peek(now_ms, policies, cost);
        let recorded = decision.allowed && cost > 0;
        if recorded {
            let horizon = policies.iter().map(|p| p.window_ms).max().unwrap_or(1);
            self.record(now_ms, cost, horizon);
        }
        (decision, recorded)
    }

    /// Appends `cost` at `max(now_ms, newest)` (the log stays ordered if the clock steps
    /// back), after dropping entries older than the horizon. This is the replicated effect of
    /// an allowed CHECK: deterministic given the log, `now_ms`, `cost` and `horizon_ms`.
    pub fn record(&mut self, now_ms: u64, cost: u64, horizon_ms: u64) {
        debug_assert!(cost > 0 && (1..=MAX_WINDOW_MS).contains(&horizon_ms));
        self.horizon = self.horizon.max(horizon_ms.min(MAX_WINDOW_MS) as u32);
        self.trim(now_ms);
        let ts = self.newest_ms().map_or(now_ms, |t| t.max(now_ms));
        if self.is_empty() {
            self.compact();
            self.base = ts;
        } else if ts - self.base > MAX_WINDOW_MS {
            self.rebase();
        }
        self.push(ts, cost);
    }

    fn push(&mut self, ts: u64, cost: u64) {
        let weighted = cost != 1 || !self.cum.is_empty();
        if weighted {
            let before = self.cost_between(0, self.times.len());
            if self.cum.is_empty() {
                // First entry of another cost: from now on costs are explicit.
                self.cum = (1..=self.times.len() as u64).collect();
            }
            self.cum.push(before.wrapping_add(cost));
        }
        self.times.push((ts - self.base) as u32);
    }

    /// Drops the entries that no window within the horizon can see any more.
    fn trim(&mut self, now_ms: u64) {
        self.head = self.window_start(now_ms, self.horizon_ms());
        if self.head > 16 && self.head * 2 > self.times.len() {
            self.compact();
        }
    }

    /// Physically removes dead entries and releases memory that is mostly unused.
    fn compact(&mut self) {
        self.times.drain(..self.head);
        if !self.cum.is_empty() && self.head > 0 {
            // Keep `cum[i]` = total cost of entries `0..=i` for the new index 0.
            let dropped = self.cum[self.head - 1];
            self.cum.drain(..self.head);
            for c in &mut self.cum {
                *c = c.wrapping_sub(dropped);
            }
        }
        self.head = 0;
        if self.times.capacity() > 4 * self.times.len().max(4) {
            self.times.shrink_to(2 * self.times.len());
            self.cum.shrink_to(2 * self.cum.len());
        }
    }

    /// Moves `base` to the oldest live entry so new offsets fit in u32 again.
    fn rebase(&mut self) {
        self.compact();
        let shift = self.times.first().copied().unwrap_or(0);
        for t in &mut self.times {
            *t -= shift;
        }
        self.base += u64::from(shift);
    }

    fn ts(&self, i: usize) -> u64 {
        self.base + u64::from(self.times[i])
    }

    /// Total cost of entries `from..to` (absolute indices).
    fn cost_between(&self, from: usize, to: usize) -> u64 {
        if self.cum.is_empty() {
            return (to - from) as u64;
        }
        let upto = |i: usize| if i == 0 { 0 } else { self.cum[i - 1] };
        upto(to).wrapping_sub(upto(from))
    }

    /// First live index whose entry is still inside a window of `window_ms` ending at `now_ms`.
    fn window_start(&self, now_ms: u64, window_ms: u64) -> usize {
        // Entry t is in the window iff t + window > now, i.e. offset > now - window - base.
        let Some(cutoff) = now_ms.checked_sub(window_ms) else {
            return self.head;
        };
        let Some(cutoff) = cutoff.checked_sub(self.base) else {
            return self.head;
        };
        let live = &self.times[self.head..];
        self.head + live.partition_point(|&t| u64::from(t) <= cutoff)
    }

    /// Exact ms until enough of the window's oldest entries leave it for `cost` to fit.
    fn retry_after(&self, start: usize, used: u64, cost: u64, p: &Policy, now_ms: u64) -> u64 {
        // Entries start..=k must leave, where k is the first index at which the cost dropped
        // since `start` reaches `need`.
        let need = used + cost - p.limit; // > 0 and <= used, since cost <= limit < used + cost
        let k = if self.cum.is_empty() {
            start + need as usize - 1
        } else {
            let before = if start == 0 { 0 } else { self.cum[start - 1] };
            start + self.cum[start..].partition_point(|&c| c.wrapping_sub(before) < need)
        };
        (self.ts(k) + p.window_ms).saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn pol(limit: u64, window_ms: u64) -> Policy {
        Policy { limit, window_ms }
    }

    fn decision(allowed: bool, limit: u64, remaining: u64, retry: i64, reset: u64) -> Decision {
        Decision {
            allowed,
            limit,
            remaining,
            retry_after_ms: retry,
            reset_after_ms: reset,
        }
    }

    /// Runs (now, cost, expected) steps of CHECK against one policy set.
    fn run(policies: &[Policy], steps: &[(u64, u64, Decision)]) -> Log {
        let mut log = Log::new();
        for (i, &(now, cost, want)) in steps.iter().enumerate() {
            let (got, _) = log.check(now, policies, cost);
            assert_eq!(got, want, "step {i} at t={now} cost={cost}");
        }
        log
    }

    #[test]
    fn check_denies_the_sixth_request_in_the_window() {
        let p = [pol(5, 60_000)];
        run(
            &p,
            &[
                (1000, 1, decision(true, 5, 4, 0, 60_000)),
                (2000, 1, decision(true, 5, 3, 0, 60_000)),
                (3000, 1, decision(true, 5, 2, 0, 60_000)),
                (4000, 1, decision(true, 5, 1, 0, 60_000)),
                (5000, 1, decision(true, 5, 0, 0, 60_000)),
                // Oldest entry (t=1000) leaves at 61000: 55000 ms from t=6000.
                (6000, 1, decision(false, 5, 0, 55_000, 59_000)),
            ],
        );
    }

    #[test]
    fn an_entry_exactly_window_ms_old_no_longer_counts() {
        let p = [pol(1, 1000)];
        run(
            &p,
            &[
                (0, 1, decision(true, 1, 0, 0, 1000)),
                (999, 1, decision(false, 1, 0, 1, 1)),
                (1000, 1, decision(true, 1, 0, 0, 1000)),
            ],
        );
    }

    #[test]
    fn cost_equal_to_limit_is_allowed_once_and_above_limit_never() {
        let p = [pol(10, 1000)];
        run(
            &p,
            &[
                (0, 10, decision(true, 10, 0, 0, 1000)),
                (1, 1, decision(false, 10, 0, 999, 999)),
                (2, 11, decision(false, 10, 0, -1, 998)),
                (1000, 11, decision(false, 10, 10, -1, 0)),
            ],
        );
    }

    #[test]
    fn retry_after_is_exact_with_weighted_entries() {
        let p = [pol(10, 1000)];
        let mut log = run(
            &p,
            &[
                (0, 3, decision(true, 10, 7, 0, 1000)),
                (100, 4, decision(true, 10, 3, 0, 1000)),
                (200, 2, decision(true, 10, 1, 0, 1000)),
            ],
        );
        // Cost 5 needs 4 units freed: entries at 0 (3) and 100 (4) must go; 100 leaves at 1100.
        assert_eq!(log.peek(300, &p, 5), decision(false, 10, 1, 800, 900));
        // Cost 3 needs 2 units: the entry at 0 is enough; it leaves at 1000.
        assert_eq!(log.peek(300, &p, 3), decision(false, 10, 1, 700, 900));
        assert_eq!(log.check(1000, &p, 3).0, decision(true, 10, 1, 0, 1000));
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(100, 4), (200, 2), (1000, 3)]
        );
    }

    #[test]
    fn every_policy_must_allow_and_the_binding_one_is_reported() {
        // 3 per second and 5 per 10 seconds.
        let p = [pol(3, 1000), pol(5, 10_000)];
        run(
            &p,
            &[
                (0, 1, decision(true, 3, 2, 0, 1000)),
                (10, 1, decision(true, 3, 1, 0, 1000)),
                (20, 1, decision(true, 3, 0, 0, 1000)),
                (30, 1, decision(false, 3, 0, 970, 990)),
                // At 1500 the 1 s window is clear; the 10 s one holds 3 and binds.
                (1500, 1, decision(true, 5, 1, 0, 10_000)),
                (1510, 1, decision(true, 5, 0, 0, 10_000)),
                // 1 s still fits (2 of 3); 10 s is full until the t=0 entry leaves at 10000.
                (1520, 1, decision(false, 5, 0, 8480, 9990)),
            ],
        );
    }

    #[test]
    fn denial_reports_the_violated_policy_that_frees_up_last() {
        let p = [pol(1, 1000), pol(2, 5000)];
        let mut log = Log::new();
        log.check(0, &p, 1);
        log.check(1000, &p, 1);
        // At 1500: 1 s policy violated until 2000; 5 s policy violated until 5000.
        assert_eq!(log.peek(1500, &p, 1), decision(false, 2, 0, 3500, 4500));
    }

    #[test]
    fn a_denied_request_records_nothing() {
        let p = [pol(1, 1000)];
        let mut log = Log::new();
        assert!(log.check(0, &p, 1).1);
        assert!(!log.check(1, &p, 1).1);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn cost_zero_is_allowed_and_records_nothing() {
        let p = [pol(1, 1000)];
        let mut log = Log::new();
        log.check(0, &p, 1);
        assert_eq!(log.check(5, &p, 0), (decision(true, 1, 0, 0, 995), false));
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn peek_on_an_empty_log_reports_a_full_budget() {
        let log = Log::new();
        assert_eq!(
            log.peek(0, &[pol(5, 60_000)], 1),
            decision(true, 5, 4, 0, 60_000)
        );
        assert_eq!(
            log.peek(0, &[pol(5, 60_000)], 0),
            decision(true, 5, 5, 0, 0)
        );
    }

    #[test]
    fn a_clock_that_goes_backwards_keeps_the_log_ordered_and_counts_future_entries() {
        let p = [pol(2, 1000)];
        let mut log = Log::new();
        log.check(5000, &p, 1);
        // The clock steps back 3 s: the entry from "the future" still counts, and the new
        // entry is recorded at the newest timestamp so the log stays sorted.
        assert_eq!(log.check(2000, &p, 1).0, decision(true, 2, 0, 0, 4000));
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(5000, 1), (5000, 1)]
        );
        assert_eq!(log.peek(2000, &p, 1), decision(false, 2, 0, 4000, 4000));
    }

    #[test]
    fn old_entries_are_trimmed_to_the_longest_window_and_the_expiry_follows_the_newest() {
        let mut log = Log::new();
        for t in 0..100 {
            log.check(t * 10, &[pol(1000, 100)], 1);
        }
        // Entries older than 100 ms relative to the last record at 990 are gone.
        assert_eq!(log.len(), 10);
        assert_eq!(log.expires_at_ms(), Some(1090));
        // A longer window widens the horizon for good.
        log.check(1000, &[pol(1000, 5000)], 1);
        assert_eq!(log.horizon_ms(), 5000);
        assert_eq!(log.expires_at_ms(), Some(6000));
    }

    #[test]
    fn offsets_rebase_when_the_log_outlives_u32_milliseconds() {
        let p = [pol(10, MAX_WINDOW_MS)];
        let mut log = Log::new();
        log.check(1, &p, 1);
        let late = MAX_WINDOW_MS - 10;
        log.check(late, &p, 1);
        log.check(late + 100, &p, 1); // the first entry leaves; base must move
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(late, 1), (late + 100, 1)]
        );
        assert_eq!(log.peek(late + 100, &p, 1).remaining, 7);
    }

    #[test]
    fn from_entries_round_trips_and_refuses_bad_input() {
        let mut log = Log::new();
        for (t, c) in [(10, 1), (20, 5), (20, 1), (30, 2)] {
            log.check(t, &[pol(100, 1000)], c);
        }
        let copy = Log::from_entries(log.horizon_ms(), log.entries()).unwrap();
        assert_eq!(
            copy.entries().collect::<Vec<_>>(),
            log.entries().collect::<Vec<_>>()
        );
        assert_eq!(
            copy.peek(40, &[pol(100, 1000)], 1),
            log.peek(40, &[pol(100, 1000)], 1)
        );
        assert!(Log::from_entries(0, []).is_err());
        assert!(Log::from_entries(10, [(5, 1), (4, 1)]).is_err());
        assert!(Log::from_entries(10, [(5, 0)]).is_err());
        assert!(Log::from_entries(10, [(0, 1), (MAX_WINDOW_MS + 1, 1)]).is_err());
    }

    /// A small deterministic generator, so the randomized test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn in_any_window_the_recorded_cost_never_exceeds_the_limit() {
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let policies = [pol(7, 1000), pol(20, 5000)];
            let mut log = Log::new();
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            let mut now = 0;
            for _ in 0..2000 {
                now += rng.next(60);
                let cost = 1 + rng.next(3);
                let (d, recorded) = log.check(now, &policies, cost);
                // Cross-check against a brute-force count over everything admitted so far.
                let fits = policies.iter().all(|p| {
                    let used: u64 = admitted
                        .iter()
                        .filter(|(t, _)| t + p.window_ms > now)
                        .map(|(_, c)| c)
                        .sum();
                    used + cost <= p.limit
                });
                assert_eq!(d.allowed, fits, "seed {seed} t={now}");
                if recorded {
                    admitted.push((now, cost));
                } else {
                    // retry_after is exact: one ms earlier is still denied, at it allowed.
                    let r = d.retry_after_ms as u64;
                    assert!(log.peek(now + r, &policies, cost).allowed);
                    if r > 0 {
                        assert!(!log.peek(now + r - 1, &policies, cost).allowed);
                    }
                }
            }
            for p in &policies {
                for &(t, _) in &admitted {
                    let in_window: u64 = admitted
                        .iter()
                        .filter(|(u, _)| *u >= t && *u < t + p.window_ms)
                        .map(|(_, c)| c)
                        .sum();
                    assert!(in_window <= p.limit, "seed {seed}: window at {t}");
                }
            }
        }
    }
}
