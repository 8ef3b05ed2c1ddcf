use super::layout::Len;
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

/// Which layout a log is in.
fn layout(log: &Log) -> &'static str {
    match log.0 {
        Repr::Inline { .. } => "inline",
        Repr::Mid { .. } => "mid",
        Repr::Large { .. } => "large",
    }
}

#[test]
fn every_length_of_a_u16_layout_maps_to_itself() {
    for n in 0..=MID_CAPACITY {
        assert_eq!(Len::of(n) as usize, n);
    }
}

#[test]
fn a_small_log_is_one_32_byte_value_and_twelve_entries_add_one_64_byte_box() {
    assert_eq!(std::mem::size_of::<Log>(), 32);
    let p = [pol(100, 60_000)];
    let mut log = Log::new();
    for t in 0..12 {
        log.check(1_700_000_000_000 + t * 1000, &p, 1);
        let heap = if t < 10 { 0 } else { 64 };
        assert_eq!(log.heap_bytes(), heap, "{} entries", t + 1);
    }
    assert_eq!(log.len(), 12);
    assert!(log.heap_bytes() <= 64);
}

#[test]
fn unit_logs_move_through_the_layouts_at_their_capacities_and_back() {
    // The layout a growing log of n unit entries within 65.5 s is in.
    let growing = |n: usize| {
        if n <= SMALL_CAPACITY {
            "inline"
        } else if n <= MID_CAPACITY {
            "mid"
        } else {
            "large"
        }
    };
    let p = [pol(100, 60_000)];
    let mut log = Log::new();
    let mut want: Vec<(u64, u64)> = Vec::new();
    let mut check = |log: &mut Log, now: u64, expected: &str| {
        assert!(log.check(now, &p, 1).0.allowed);
        want.retain(|&(t, _)| t + 60_000 > now);
        want.push((now, 1));
        assert_eq!(log.entries().collect::<Vec<_>>(), want, "at {now}");
        assert_eq!(layout(log), expected, "{} entries at {now}", want.len());
    };
    // 1..=10 inline, 11..=31 in the mid box, the 32nd moves to the large layout.
    for i in 0..32 {
        check(&mut log, i * 1000, growing(i as usize + 1));
    }
    // At 76.5 s the 15 entries at 17..=31 s are live: they fit in half of the mid layout.
    check(&mut log, 76_500, "mid");
    assert_eq!(log.heap_bytes(), 64);
    // 7 live entries (26..=31 s and 76.5 s) stay in the mid box; 5 (29..=31, 76.5 and
    // 85.5 s) go back inline.
    check(&mut log, 85_500, "mid");
    check(&mut log, 88_500, "inline");
    assert_eq!(log.len(), 6);
    assert_eq!(log.heap_bytes(), 0);
    // 3 entries stay live (76.5..=88.5 s) while 37 more arrive.
    for i in 0..37 {
        check(&mut log, 100_000 + i * 100, growing(4 + i as usize));
    }
    // A large log whose entries all expired goes straight back inline.
    check(&mut log, 200_000, "inline");
    assert_eq!(log.len(), 1);
}

#[test]
fn entries_that_do_not_fit_u16_offsets_go_to_the_large_layout_from_any_layout() {
    // Within u16 ms of the oldest live entry (not of the first one) still fits: the base
    // moves up when needed.
    for (n, expected) in [(1, "inline"), (15, "mid")] {
        let p = [pol(100, 65_500)];
        let mut log = Log::new();
        for i in 0..n {
            log.check(i, &p, 1);
        }
        for i in 600..606 {
            log.check(i, &p, 1);
        }
        // The first n entries leave; 65,550 ms from the first, 64,950 from the oldest.
        log.check(65_550, &p, 1);
        assert_eq!(layout(&log), expected);
        let mut want: Vec<(u64, u64)> = (600..606).map(|t| (t, 1)).collect();
        want.push((65_550, 1));
        assert_eq!(log.entries().collect::<Vec<_>>(), want);
    }
    let p = [pol(100, 3_600_000)];
    // A gap wider than u16 milliseconds, from the inline layout and from the mid one.
    for n in [1, 20] {
        let mut log = Log::new();
        for i in 0..n {
            log.check(i, &p, 1);
        }
        log.check(70_000, &p, 1);
        assert_eq!(layout(&log), "large");
        let mut want: Vec<(u64, u64)> = (0..n).map(|i| (i, 1)).collect();
        want.push((70_000, 1));
        assert_eq!(log.entries().collect::<Vec<_>>(), want);
        assert_eq!(log.peek(70_000, &p, 1).remaining, 100 - n - 2);
    }
}

#[test]
fn weighted_entries_go_to_the_large_layout_from_every_phase_and_leave_with_it() {
    let p = [pol(1000, 10_000)];
    for n in [0, 3, SMALL_CAPACITY, 20, MID_CAPACITY, 40] {
        let mut log = Log::new();
        let mut want = Vec::new();
        for i in 0..n as u64 {
            log.check(i * 10, &p, 1);
            want.push((i * 10, 1));
        }
        log.check(1000, &p, 3);
        want.push((1000, 3));
        assert_eq!(layout(&log), "large", "after {n} unit entries");
        log.check(1001, &p, 1);
        want.push((1001, 1));
        assert_eq!(log.entries().collect::<Vec<_>>(), want);
        let used: u64 = want.iter().map(|e| e.1).sum();
        assert_eq!(log.peek(1001, &p, 1).remaining, 1000 - used - 1);
        // Once the weighted entry has left, the unit entries that remain go back inline.
        log.check(11_000, &p, 1);
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(1001, 1), (11_000, 1)]
        );
        assert_eq!(layout(&log), "inline", "after {n} unit entries");
    }
}

#[test]
fn timestamps_from_2_pow_48_use_a_boxed_layout_with_a_full_base() {
    let p = [pol(100, 60_000)];
    let big = 1u64 << 48;
    // Decoded: an inline log whose next entry crosses 2^48 moves to the mid box.
    let mut log = Log::from_entries(60_000, [(big - 2, 1), (big + 3, 1)]).unwrap();
    assert_eq!(layout(&log), "mid");
    assert_eq!(
        log.entries().collect::<Vec<_>>(),
        vec![(big - 2, 1), (big + 3, 1)]
    );
    // It stays boxed when it shrinks: the inline base holds 48 bits only.
    log.check(big + 61_000, &p, 1);
    assert_eq!(log.entries().collect::<Vec<_>>(), vec![(big + 61_000, 1)]);
    assert_eq!(layout(&log), "mid");
    assert_eq!(log.peek(big + 61_000, &p, 1).remaining, 98);
    // Up to i64::MAX, in every layout.
    let top = i64::MAX as u64;
    for n in [1, 12, 40] {
        let entries: Vec<(u64, u64)> = (0..n).map(|i| (top - 100 + i, 1)).collect();
        let log = Log::from_entries(60_000, entries.clone()).unwrap();
        assert_eq!(
            layout(&log),
            if n <= MID_CAPACITY as u64 {
                "mid"
            } else {
                "large"
            }
        );
        assert_eq!(log.entries().collect::<Vec<_>>(), entries);
        assert_eq!(log.peek(top, &[pol(100, 60_000)], 1).remaining, 100 - n - 1);
    }
    let weighted = Log::from_entries(60_000, [(top, 7)]).unwrap();
    assert_eq!(layout(&weighted), "large");
    assert_eq!(weighted.entries().collect::<Vec<_>>(), vec![(top, 7)]);
    // Recording near i64::MAX (RATELIMIT.RECORD's largest `now_ms`) works the same way.
    let mut log = Log::new();
    log.check(top - 1000, &p, 1);
    log.check(top - 999, &p, 1);
    assert_eq!(layout(&log), "mid");
    assert_eq!(
        log.entries().collect::<Vec<_>>(),
        vec![(top - 1000, 1), (top - 999, 1)]
    );
}

#[test]
fn a_clock_that_steps_back_keeps_every_layout_ordered() {
    let p = [pol(100, 60_000)];
    for (n, expected) in [(3, "inline"), (20, "mid"), (40, "large")] {
        let mut log = Log::new();
        for i in 0..n {
            log.check(10_000 + i * 100, &p, 1);
        }
        let newest = log.newest_ms().unwrap();
        assert!(log.check(5_000, &p, 1).0.allowed);
        assert_eq!(layout(&log), expected);
        assert_eq!(log.len(), n as usize + 1);
        let times: Vec<u64> = log.entries().map(|e| e.0).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{expected}: {times:?}"
        );
        assert_eq!(times.last(), Some(&newest));
    }
}

fn is_wide(log: &Log) -> bool {
    matches!(log.0, Repr::Large { wide: true, .. })
}

#[test]
fn a_log_past_2_pow_64_sums_exactly_and_returns_to_the_fast_path_once_it_expires() {
    let max = MAX_AMOUNT;
    let mut log = Log::new();
    assert!(log.check(0, &[pol(1, 10_000)], 1).0.allowed);
    assert!(log.check(1, &[pol(max, 1)], max).0.allowed);
    assert!(!is_wide(&log), "2^63 in all");
    assert!(log.check(2, &[pol(max, 1)], max).0.allowed);
    assert!(log.check(3, &[pol(max, 1)], 2).0.allowed);
    assert!(is_wide(&log), "2^64 + 1 in all");
    // Exact: 2^64 + 1 used. Cost 3 fits once the entries at 0, 1 and 2 (2^64 - 1) have
    // left; cost 4 needs the entry at 3 gone too.
    assert_eq!(
        log.peek(3, &[pol(5, 5000)], 3),
        decision(false, 5, 0, 4999, 5000)
    );
    assert_eq!(
        log.peek(3, &[pol(5, 5000)], 4),
        decision(false, 5, 0, 5000, 5000)
    );
    assert_eq!(
        log.peek(5001, &[pol(5, 5000)], 1),
        decision(false, 5, 0, 1, 2)
    );
    assert_eq!(
        log.peek(5002, &[pol(5, 5000)], 3),
        decision(true, 5, 0, 0, 5000)
    );
    // The round trip keeps the exact sums.
    let copy = Log::from_entries(log.horizon_ms(), log.entries()).unwrap();
    assert!(is_wide(&copy));
    assert_eq!(
        copy.peek(3, &[pol(5, 5000)], 3),
        log.peek(3, &[pol(5, 5000)], 3)
    );
    // Once the entry at 1 has left the horizon (10 s), the live total fits u64 again.
    assert!(log.check(10_001, &[pol(max, 1)], 1).0.allowed);
    assert!(!is_wide(&log));
    assert_eq!(log.len(), 3);
    // 2^63 + 2 left: more than any limit, and free once the entry at 2 leaves.
    assert_eq!(
        log.peek(10_001, &[pol(max, 10_000)], 0),
        decision(false, max, 0, 1, 10_000)
    );
}

#[test]
fn a_large_log_of_unit_entries_costs_about_4_bytes_each() {
    let mut log = Log::new();
    let p = [pol(1_000_000_000, 3_600_000)];
    for i in 0..1000 {
        log.check(1_700_000_000_000 + i / 50, &p, 1);
    }
    let bytes = std::mem::size_of::<Log>() + log.heap_bytes();
    assert!(bytes <= 1000 * 4 + 200, "{bytes} B for 1,000 entries");
}

#[test]
fn unit_cost_logs_stay_exact_across_layout_changes() {
    for seed in 100..120 {
        let mut rng = Lcg(seed);
        let policies = [pol(12, 2000), pol(45, 20_000)];
        let mut log = Log::new();
        let mut admitted: Vec<u64> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut now = 0;
        for _ in 0..3000 {
            // Bursts and long pauses move the log between layouts.
            now += if rng.next(50) == 0 {
                30_000 + rng.next(60_000)
            } else {
                rng.next(400)
            };
            let (d, recorded) = log.check(now, &policies, 1);
            let fits = policies.iter().all(|p| {
                admitted.iter().filter(|&&t| t + p.window_ms > now).count() < p.limit as usize
            });
            assert_eq!(d.allowed, fits, "seed {seed} t={now}");
            if recorded {
                admitted.push(now);
            }
            let live: Vec<u64> = admitted
                .iter()
                .copied()
                .filter(|&t| t + 20_000 > now)
                .collect();
            let kept: Vec<u64> = log
                .entries()
                .map(|e| e.0)
                .filter(|&t| t + 20_000 > now)
                .collect();
            assert_eq!(kept, live, "seed {seed} t={now}");
            seen.insert(layout(&log));
        }
        assert_eq!(seen.len(), 3, "seed {seed} visits every layout: {seen:?}");
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

fn state(limit: u64, window_ms: u64, remaining: u64, reset_after_ms: u64) -> PolicyState {
    PolicyState {
        limit,
        window_ms,
        remaining,
        reset_after_ms,
    }
}

#[test]
fn states_report_every_policy_after_the_call_and_peek_agrees_with_check() {
    let p = [pol(10, 1000), pol(100, 60_000), pol(3, 500)];
    let mut log = Log::new();
    // Empty: full budgets, nothing to reset.
    let empty: Vec<_> = log.states(0, &p, 0).collect();
    assert_eq!(
        empty,
        [
            state(10, 1000, 10, 0),
            state(100, 60_000, 100, 0),
            state(3, 500, 3, 0)
        ]
    );
    log.check(1000, &p, 1);
    log.check(1200, &p, 2);
    // At 1300: every window holds 3, the newest entry (1200) resets each.
    let want = [
        state(10, 1000, 7, 900),
        state(100, 60_000, 97, 59_900),
        state(3, 500, 0, 400),
    ];
    assert_eq!(log.states(1300, &p, 0).collect::<Vec<_>>(), want);
    // At 1700 the 500 ms window holds nothing: full, reset 0; the others still count 3.
    let at_1700: Vec<_> = log.states(1700, &p, 0).collect();
    assert_eq!(at_1700[2], state(3, 500, 3, 0));
    assert_eq!(at_1700[0], state(10, 1000, 7, 500));
    // What a PEEK that would record 2 at 1700 reports is what the CHECK leaves behind.
    let peeked: Vec<_> = log.states(1700, &p, 2).collect();
    let (d, recorded) = log.check(1700, &p, 2);
    assert!(d.allowed && recorded);
    assert_eq!(log.states(1700, &p, 0).collect::<Vec<_>>(), peeked);
    assert_eq!(
        peeked,
        [
            state(10, 1000, 5, 1000),
            state(100, 60_000, 95, 60_000),
            state(3, 500, 1, 500)
        ]
    );
}

#[test]
fn states_after_a_denial_are_the_unchanged_windows() {
    let p = [pol(2, 1000), pol(50, 10_000)];
    let mut log = Log::new();
    log.check(0, &p, 2);
    let (d, recorded) = log.check(100, &p, 1);
    assert!(!d.allowed && !recorded);
    assert_eq!(
        log.states(100, &p, 0).collect::<Vec<_>>(),
        [state(2, 1000, 0, 900), state(50, 10_000, 48, 9900)]
    );
}
