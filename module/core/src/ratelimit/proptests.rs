//! Property tests of the sliding-window log: decisions against a brute-force model, and the
//! log's decoder fed arbitrary or corrupted bytes.

use proptest::prelude::*;

use super::encoding;
use super::log::{Decision, Log, Policy, MAX_WINDOW_MS};
use crate::test_support::{config, mutate, mutation};

// ---------------------------------------------------------------------------------------------
// The sliding-window log against a brute-force model
// ---------------------------------------------------------------------------------------------

/// An exact, slow model of the log: every entry kept while any window within the horizon
/// could see it, decisions by summing costs in u128 (exact: no sum of u64 costs this model
/// meets comes near 2^128), so a log whose sums wrap or saturate too early disagrees.
#[derive(Default)]
struct Model {
    /// Entries still stored, `(ts, cost)`, oldest first.
    live: Vec<(u64, u64)>,
    /// Every entry ever recorded.
    all: Vec<(u64, u64)>,
    newest: Option<u64>,
    horizon: u64,
}

impl Model {
    /// Cost that counts at `now` in a window of `w`: entries with `ts + w > now` (entries
    /// "from the future", left by a clock that stepped back, count too).
    fn used(&self, now: u64, w: u64) -> u128 {
        self.live
            .iter()
            .filter(|(t, _)| t + w > now)
            .map(|&(_, c)| u128::from(c))
            .sum()
    }

    /// Earliest `t >= now` at which `cost` fits policy `p` (entries only ever leave windows).
    fn fits_at(&self, now: u64, p: &Policy, cost: u64) -> u64 {
        let mut candidates: Vec<u64> = self
            .live
            .iter()
            .map(|(t, _)| t + p.window_ms)
            .filter(|&t| t > now)
            .collect();
        candidates.sort_unstable();
        std::iter::once(now)
            .chain(candidates)
            .find(|&t| self.used(t, p.window_ms) + u128::from(cost) <= u128::from(p.limit))
            .expect("fits once every entry has left")
    }

    /// The checks a decision must pass, given the request.
    fn verify(&self, now: u64, policies: &[Policy], cost: u64, d: &Decision) {
        let record_at = self.newest.map_or(now, |n| n.max(now));
        if let Some(p) = policies.iter().find(|p| cost > p.limit) {
            assert!(!d.allowed && d.retry_after_ms == -1, "{d:?}");
            assert_eq!(d.limit, p.limit, "the first policy the cost can never fit");
            let used = self.used(now, p.window_ms);
            assert_eq!(
                u128::from(d.remaining),
                u128::from(p.limit).saturating_sub(used),
                "{d:?}"
            );
            assert_eq!(d.reset_after_ms, self.reset_now(now, p.window_ms), "{d:?}");
            return;
        }
        let cost = u128::from(cost);
        let used: Vec<u128> = policies
            .iter()
            .map(|p| self.used(now, p.window_ms))
            .collect();
        let lim = |p: &Policy| u128::from(p.limit);
        let allowed = policies.iter().zip(&used).all(|(p, u)| u + cost <= lim(p));
        assert_eq!(d.allowed, allowed, "{d:?} used {used:?}");
        if allowed {
            assert_eq!(d.retry_after_ms, 0);
            let least = policies
                .iter()
                .zip(&used)
                .map(|(p, u)| lim(p) - u - cost)
                .min()
                .unwrap();
            assert_eq!(
                u128::from(d.remaining),
                least,
                "remaining of the binding policy"
            );
            let binding = policies.iter().zip(&used).any(|(p, u)| {
                let reset = if cost > 0 {
                    record_at + p.window_ms - now
                } else {
                    self.reset_now(now, p.window_ms)
                };
                p.limit == d.limit && lim(p) - u - cost == least && reset == d.reset_after_ms
            });
            assert!(binding, "{d:?} is no binding policy's reply");
        } else {
            // Exact retry: the latest instant at which some violated policy frees up.
            let retry = policies
                .iter()
                .zip(&used)
                .filter(|(p, u)| *u + cost > lim(p))
                .map(|(p, _)| self.fits_at(now, p, cost as u64) - now)
                .max()
                .unwrap();
            assert_eq!(d.retry_after_ms, retry as i64, "{d:?}");
            assert!(retry >= 1);
            let binding = policies.iter().zip(&used).any(|(p, u)| {
                *u + cost > lim(p)
                    && self.fits_at(now, p, cost as u64) - now == retry
                    && p.limit == d.limit
                    && lim(p).saturating_sub(*u) == u128::from(d.remaining)
                    && self.reset_now(now, p.window_ms) == d.reset_after_ms
            });
            assert!(binding, "{d:?} is no violated policy's reply");
        }
    }

    /// ms until a window of `w` holds nothing, at `now`.
    fn reset_now(&self, now: u64, w: u64) -> u64 {
        self.live
            .iter()
            .map(|(t, _)| t + w)
            .filter(|&e| e > now)
            .max()
            .map_or(0, |e| e - now)
    }

    /// An allowed CHECK: drop what the (possibly widened) horizon no longer sees at `now`, then
    /// record at `max(now, newest)` so the log stays ordered if the clock stepped back.
    fn record(&mut self, now: u64, cost: u64, horizon: u64) {
        self.horizon = self.horizon.max(horizon);
        let h = self.horizon;
        self.live.retain(|(t, _)| t + h > now);
        let ts = self.newest.map_or(now, |n| n.max(now));
        self.newest = Some(ts);
        self.live.push((ts, cost));
        self.all.push((ts, cost));
    }
}

#[derive(Clone, Debug)]
struct Step {
    /// Clock movement before the request (negative: the clock stepped back).
    dt: i64,
    cost: u64,
    /// Which policy set of the case the request uses.
    set: usize,
    peek: bool,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        // Limits past the log's inline (10) and mid (31) capacities move it between layouts.
        prop_oneof![4 => 1..=12u64, 1 => 1..=48u64],
        prop_oneof![
            // Short windows and small clock steps make the exact boundaries (an entry exactly
            // `window_ms` old) common.
            4 => 1..=20u64,
            6 => 1..=2000u64,
            2 => 1..=100_000u64,
            1 => Just(MAX_WINDOW_MS),
            1 => 1..=MAX_WINDOW_MS,
        ],
    )
        .prop_map(|(limit, window_ms)| Policy { limit, window_ms })
}

fn step(sets: usize) -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            6 => 0..20i64,
            10 => 0..300i64,
            2 => -3000..0i64,
            1 => 0..(1i64 << 33),
            1 => -(1i64 << 33)..0,
        ],
        prop_oneof![8 => 0..=3u64, 1 => 0..=20u64],
        0..sets,
        prop::bool::weighted(0.15),
    )
        .prop_map(|(dt, cost, set, peek)| Step {
            dt,
            cost,
            set,
            peek,
        })
}

/// Clock start: realistic unix ms, or near the largest `now_ms` RATELIMIT.RECORD accepts.
fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..(1u64 << 45),
        1 => (i64::MAX as u64 - (1 << 44))..(i64::MAX as u64 - (1 << 43)),
    ]
}

/// Amounts up to what CHECK accepts, with the largest ones common: two or three of them in a
/// window pass 2^64.
fn huge_amount() -> impl Strategy<Value = u64> {
    const MAX: u64 = super::log::MAX_AMOUNT;
    prop_oneof![
        3 => Just(MAX),
        2 => (MAX - 16)..=MAX,
        2 => (MAX / 2)..=MAX,
        1 => 1..=MAX,
        1 => Just(1u64 << 62),
    ]
}

/// Policies whose limits and windows swing between tiny and the largest accepted, so entries
/// admitted under short windows or huge limits pile up under long windows and small limits.
fn adversarial_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![2 => 1..=12u64, 3 => huge_amount()],
        prop_oneof![
            3 => 1..=3u64,
            2 => 1..=2000u64,
            2 => Just(MAX_WINDOW_MS),
            1 => 1..=MAX_WINDOW_MS,
        ],
    )
        .prop_map(|(limit, window_ms)| Policy { limit, window_ms })
}

fn adversarial_step(sets: usize) -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            6 => 0..4i64,
            3 => 0..300i64,
            1 => -20..0i64,
            1 => 0..(1i64 << 33),
        ],
        prop_oneof![3 => 0..=3u64, 4 => huge_amount()],
        0..sets,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(dt, cost, set, peek)| Step {
            dt,
            cost,
            set,
            peek,
        })
}

/// Runs the steps against the log and the model; returns everything admitted.
fn run(start: u64, sets: &[Vec<Policy>], steps: &[Step]) -> (Log, Model) {
    let mut log = Log::new();
    let mut model = Model::default();
    let mut now = start;
    for s in steps {
        now = now.saturating_add_signed(s.dt);
        let policies = &sets[s.set];
        let d = if s.peek {
            log.peek(now, policies, s.cost)
        } else {
            let (d, recorded) = log.check(now, policies, s.cost);
            assert_eq!(recorded, d.allowed && s.cost > 0);
            d
        };
        model.verify(now, policies, s.cost, &d);
        // retry_after is exact: denied one ms before, allowed at it (for the same request).
        if d.retry_after_ms > 0 {
            let r = d.retry_after_ms as u64;
            assert!(!log.peek(now + r - 1, policies, s.cost).allowed);
            assert!(log.peek(now + r, policies, s.cost).allowed);
        }
        if !s.peek && d.allowed && s.cost > 0 {
            let horizon = policies.iter().map(|p| p.window_ms).max().unwrap();
            model.record(now, s.cost, horizon);
        }
        assert_eq!(log.entries().collect::<Vec<_>>(), model.live, "at {now}");
        assert_eq!(log.len(), model.live.len());
        assert_eq!(log.horizon_ms(), model.horizon);
        assert_eq!(log.expires_at_ms(), model.newest.map(|n| n + model.horizon));
    }
    (log, model)
}

/// decode(encode(log)) holds the same entries and horizon and answers the same.
fn assert_round_trip(log: &Log, now: u64, policies: &[Policy]) {
    let bytes = encoding::encode(log);
    let back = encoding::decode(&bytes).expect("a log's own encoding decodes");
    assert_eq!(
        back.entries().collect::<Vec<_>>(),
        log.entries().collect::<Vec<_>>()
    );
    assert_eq!(back.horizon_ms(), log.horizon_ms());
    assert_eq!(back.expires_at_ms(), log.expires_at_ms());
    for cost in [0, 1, 3] {
        assert_eq!(
            back.peek(now, policies, cost),
            log.peek(now, policies, cost)
        );
    }
    assert_eq!(encoding::encode(&back), bytes, "the encoding is canonical");
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn with_one_policy_set_no_window_ever_holds_more_than_its_limit(
        start in start(),
        policies in proptest::collection::vec(policy(), 1..=3),
        steps in proptest::collection::vec(step(1), 1..150),
    ) {
        let sets = [policies];
        let (log, model) = run(start, &sets, &steps);
        // Over every recorded timestamp (not just the live ones): any window [t, t + w)
        // holds at most `limit`.
        for p in &sets[0] {
            for &(t, _) in &model.all {
                let in_window: u64 = model
                    .all
                    .iter()
                    .filter(|(u, _)| *u >= t && *u - t < p.window_ms)
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(in_window <= p.limit, "window of {:?} at {}", p, t);
            }
        }
        if log.horizon_ms() > 0 {
            let end = model.newest.unwrap();
            assert_round_trip(&log, end, &sets[0]);
        }
    }

    #[test]
    fn with_changing_policies_and_a_wandering_clock_decisions_match_the_model(
        start in start(),
        sets in proptest::collection::vec(proptest::collection::vec(policy(), 1..=3), 1..=3),
        steps in proptest::collection::vec(step(3), 1..150),
    ) {
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| Step { set: s.set % sets.len(), ..s })
            .collect();
        let (log, model) = run(start, &sets, &steps);
        if log.horizon_ms() > 0 {
            assert_round_trip(&log, model.newest.unwrap(), &sets[0]);
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Huge costs and limits mixed with small ones, and windows from 1 ms to the longest: the
    /// live total passes 2^64 in many cases, and every reply field (and the retry instant)
    /// still equals the exact model's; the log's own encoding still round-trips.
    #[test]
    fn with_huge_costs_and_limits_every_reply_field_matches_the_exact_model(
        start in start(),
        sets in proptest::collection::vec(
            proptest::collection::vec(adversarial_policy(), 1..=3),
            2..=4,
        ),
        steps in proptest::collection::vec(adversarial_step(4), 1..120),
    ) {
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| Step { set: s.set % sets.len(), ..s })
            .collect();
        let (log, model) = run(start, &sets, &steps);
        if log.horizon_ms() > 0 {
            let end = model.newest.unwrap();
            for set in &sets {
                assert_round_trip(&log, end, set);
            }
        }
    }
}

/// The run the review reported: one entry of 1 under the longest window, two of 2^63-1 under
/// 1 ms windows at different milliseconds, one more of 1. The live total is 2^64 (it wrapped
/// to 0 and PEEK reported a full budget); the model has it exactly.
#[test]
fn a_live_total_of_2_pow_64_denies_as_the_exact_model_does() {
    let max = super::log::MAX_AMOUNT;
    let pol = |limit, window_ms| vec![Policy { limit, window_ms }];
    let sets = [
        pol(1, MAX_WINDOW_MS),
        pol(max, 1),
        pol(1, 1),
        pol(5, 60_000),
    ];
    let step = |dt, cost, set, peek| Step {
        dt,
        cost,
        set,
        peek,
    };
    let mut steps = vec![
        step(0, 1, 0, false),
        step(1, max, 1, false),
        step(1, max, 1, false),
        step(1, 1, 2, false),
        step(0, 1, 3, true),
        step(0, 0, 3, true),
    ];
    // Five more requests under the 5-per-minute policy: all denied.
    steps.extend((0..5).map(|_| step(1, 1, 3, false)));
    let (log, model) = run(1_700_000_000_000, &sets, &steps);
    assert_eq!(model.live.len(), 4, "nothing more admitted");
    let total: u128 = log.entries().map(|(_, c)| u128::from(c)).sum();
    assert_eq!(total, 1 << 64);
    let now = model.newest.unwrap() + 5;
    let d = log.peek(now, &sets[3], 1);
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
}

// ---------------------------------------------------------------------------------------------
// The decoder: arbitrary and corrupted payloads
// ---------------------------------------------------------------------------------------------

/// Whatever a decoded log holds, using it must not panic and it must encode to a payload that
/// decodes to the same entries.
fn exercise_log(log: &mut Log, now: u64) {
    let policies = [
        Policy {
            limit: 5,
            window_ms: 1000,
        },
        Policy {
            limit: 100,
            window_ms: MAX_WINDOW_MS,
        },
    ];
    let _ = log.expires_at_ms();
    let _ = log.heap_bytes();
    let _ = log.peek(now, &policies, 1);
    let bytes = encoding::encode(log);
    let back = encoding::decode(&bytes).expect("re-encoded payload decodes");
    assert_eq!(
        back.entries().collect::<Vec<_>>(),
        log.entries().collect::<Vec<_>>()
    );
    let _ = log.check(now, &policies, 2);
    let _ = log.expires_at_ms();
}

/// A well-formed v1 log payload with arbitrary field values: it gets past the framing, so the
/// decoder's own checks are tested. Timestamps stay within what the module itself writes
/// (RATELIMIT.RECORD takes `now_ms <= i64::MAX`); see the report on larger ones.
fn structured_log_payload() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![any::<u64>(), 0..=MAX_WINDOW_MS + 1],
        prop_oneof![
            3 => 0..(1u64 << 45),
            1 => 0..=i64::MAX as u64,
            1 => (i64::MAX as u64 - (1 << 34))..=i64::MAX as u64,
        ],
        proptest::collection::vec(
            (
                prop_oneof![
                    3 => 0..10_000u64,
                    1 => 0..=MAX_WINDOW_MS + 1,
                    1 => any::<u64>(),
                ],
                prop_oneof![3 => 0..4u64, 1 => any::<u64>()],
            ),
            0..8,
        ),
        0..4u64,
    )
        .prop_map(|(horizon, first, entries, first_cost)| {
            let mut w = crate::codec::Writer::new(encoding::ENCODING_VERSION);
            w.uint(horizon);
            w.uint(entries.len() as u64 + 1);
            w.uint(first);
            w.uint(first_cost);
            for (delta, cost) in entries {
                w.uint(delta);
                w.uint(cost);
            }
            w.finish()
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn a_decoded_log_with_timestamps_the_module_can_write_works_without_panicking(
        bytes in structured_log_payload(),
        now in prop_oneof![0..(1u64 << 45), Just(i64::MAX as u64), 0..=i64::MAX as u64],
    ) {
        if let Ok(mut decoded) = encoding::decode(&bytes) {
            exercise_log(&mut decoded, now);
        }
    }

    #[test]
    fn the_log_decoder_never_panics_on_arbitrary_or_corrupted_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..64),
        start in 0..(1u64 << 45),
        costs in proptest::collection::vec((0..5000u64, 1..4u64), 0..20),
        mutations in proptest::collection::vec(mutation(), 1..4),
        now in start(),
    ) {
        let mut log = Log::new();
        let mut t = start;
        for (dt, cost) in costs {
            t += dt;
            log.check(t, &[Policy { limit: 50, window_ms: 60_000 }], cost);
        }
        let valid = encoding::encode(&log);
        for bytes in [raw, mutate(valid, &mutations)] {
            if let Ok(mut decoded) = encoding::decode(&bytes) {
                exercise_log(&mut decoded, now);
            }
        }
    }
}
