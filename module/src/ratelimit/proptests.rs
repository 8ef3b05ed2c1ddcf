//! Property tests (proptest) for the pure parts the commands stand on: the strict argument
//! parsers, the sliding-window log against a brute-force model, and the decoders of both data
//! types fed arbitrary or corrupted bytes. Unit tests only (the Redis allocator is off under
//! `cfg(test)`), so they run with `cargo test -p tally`.

use proptest::prelude::*;

use super::log::{Decision, Log, Policy, MAX_WINDOW_MS};
use crate::args;
use crate::error::Error;

// ---------------------------------------------------------------------------------------------
// Argument parsers
// ---------------------------------------------------------------------------------------------

/// Bytes that look like numbers more often than uniform bytes do.
fn numberish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..32),
        "[-+ 0-9.eExXa-fA-FnNiItTyY_,]{0,26}".prop_map(String::into_bytes),
        "0{0,4}[0-9]{1,22}".prop_map(String::into_bytes),
        any::<u64>().prop_map(|v| v.to_string().into_bytes()),
        any::<f64>().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// The documented grammar of the integer parsers: 1 to 20 ASCII digits (leading zeros
/// allowed), value at most u64::MAX. (Redis's own string2ll also refuses leading zeros.)
fn plain_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn message(e: Error) -> String {
    match e {
        Error::Arg(m) => m,
        other => panic!("argument errors are Error::Arg, got {other:?}"),
    }
}

/// `cases` per property; failures are reported with their shrunk input, not written to a
/// regressions file in the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn positive_accepts_exactly_plain_digits_in_range(
        b in numberish(),
        max in prop_oneof![Just(u64::MAX), Just(i64::MAX as u64), Just(u32::MAX as u64), 1..1000u64],
        name in "[a-z_]{1,12}",
    ) {
        match (args::positive(&b, &name, max), plain_digits(&b)) {
            (Ok(v), Some(want)) => prop_assert!(v == want && (1..=max).contains(&v)),
            (Ok(v), None) => prop_assert!(false, "{:?} accepted as {}", b, v),
            (Err(e), digits) => {
                prop_assert!(digits.is_none_or(|v| v == 0 || v > max), "{:?} refused", b);
                let m = message(e);
                prop_assert!(m.starts_with(&format!("{name} must be")), "{}", m);
                if digits.is_some_and(|v| v > max) {
                    prop_assert_eq!(m, format!("{name} must be an integer between 1 and {max}"));
                }
            }
        }
    }

    #[test]
    fn every_canonical_integer_spelling_parses_to_its_value(v in any::<u64>()) {
        let s = v.to_string();
        prop_assert_eq!(args::positive(s.as_bytes(), "n", u64::MAX).ok(), (v > 0).then_some(v));
        prop_assert_eq!(
            args::non_negative(s.as_bytes(), "n").ok(),
            (v <= i64::MAX as u64).then_some(v)
        );
        // A sign, a space, a fraction or an exponent is never part of an integer.
        for bad in [format!("+{s}"), format!("-{s}"), format!(" {s}"), format!("{s} "),
                    format!("{s}.0"), format!("{s}e0"), format!("{s}\0")] {
            prop_assert!(args::positive(bad.as_bytes(), "n", u64::MAX).is_err(), "{}", bad);
            prop_assert!(args::non_negative(bad.as_bytes(), "n").is_err(), "{}", bad);
        }
    }

    #[test]
    fn non_negative_accepts_exactly_plain_digits_up_to_i64_max(b in numberish()) {
        let want = plain_digits(&b).filter(|&v| v <= i64::MAX as u64);
        match args::non_negative(&b, "TS") {
            Ok(v) => prop_assert_eq!(Some(v), want),
            Err(e) => {
                prop_assert_eq!(want, None, "{:?} refused", b);
                prop_assert_eq!(message(e), "TS must be a non-negative integer");
            }
        }
    }

    #[test]
    fn finite_accepts_only_finite_numbers_and_never_panics(b in numberish()) {
        match args::finite(&b, "value") {
            Ok(v) => {
                prop_assert!(v.is_finite());
                let text = std::str::from_utf8(&b).expect("accepted input is UTF-8");
                prop_assert!(!text.is_empty());
                prop_assert!(!text.contains(|c: char| c.is_whitespace()), "{:?}", text);
                prop_assert_eq!(text.parse::<f64>().ok(), Some(v));
            }
            Err(e) => prop_assert_eq!(message(e), "value must be a finite number"),
        }
    }

    #[test]
    fn every_finite_double_round_trips_through_its_usual_spellings(v in any::<f64>()) {
        let spellings = [format!("{v}"), format!("{v:?}"), format!("{v:e}"), format!("{v:E}")];
        for s in spellings {
            let got = args::finite(s.as_bytes(), "value");
            if v.is_finite() {
                // Bit for bit: -0.0 stays -0.0.
                prop_assert_eq!(got.map(f64::to_bits), Ok(v.to_bits()), "{}", s);
            } else {
                prop_assert!(got.is_err(), "{} accepted", s);
            }
        }
        // Integers as a client library sends them.
        let n = v as i64;
        prop_assert_eq!(args::finite(n.to_string().as_bytes(), "value"), Ok(n as f64));
    }
}

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
    let bytes = super::rdb::encode(log);
    let back = super::rdb::decode(&bytes).expect("a log's own encoding decodes");
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
    assert_eq!(
        super::rdb::encode(&back),
        bytes,
        "the encoding is canonical"
    );
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
// Decoders: arbitrary and corrupted payloads
// ---------------------------------------------------------------------------------------------

/// A corruption of a valid payload: overwrite, truncate, insert or delete bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        match *m {
            Mutation::Set(i, b) if n > 0 => bytes[i % n] = b,
            Mutation::Truncate(i) => bytes.truncate(i % (n + 1)),
            Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Mutation::Remove(i) if n > 0 => {
                bytes.remove(i % n);
            }
            _ => {}
        }
    }
    bytes
}

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
    let bytes = super::rdb::encode(log);
    let back = super::rdb::decode(&bytes).expect("re-encoded payload decodes");
    assert_eq!(
        back.entries().collect::<Vec<_>>(),
        log.entries().collect::<Vec<_>>()
    );
    let _ = log.check(now, &policies, 2);
    let _ = log.expires_at_ms();
}

fn exercise_series(series: &mut crate::metric::series::Series, now: u64) {
    use crate::metric::rdb;
    const HOUR: u64 = 3_600_000;
    let _ = series.summary();
    let _ = series.window(now, 60_000);
    let _ = series.window(now, HOUR);
    let _ = series.heap_bytes();
    if let Some((from, to)) = series.bounds(now, HOUR) {
        if from <= to && to / 60_000 - from / 60_000 < 10_000 {
            let _ = series.range(from, to, 60_000, now, HOUR);
        }
    }
    let bytes = rdb::encode(series);
    let back = rdb::decode(&bytes).expect("re-encoded payload decodes");
    assert_eq!(rdb::encode(&back), bytes);
    series.add(1.5, now, HOUR);
    let _ = series.summary();
}

/// A real series' payload to corrupt.
fn series_payload(samples: &[(i32, u32)], t0: u64) -> Vec<u8> {
    let mut s = crate::metric::series::Series::new();
    for &(v, dt) in samples {
        s.add(f64::from(v) / 4.0, t0 + u64::from(dt), 3_600_000);
    }
    crate::metric::rdb::encode(&s)
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
            let mut w = crate::codec::Writer::new(super::rdb::ENCODING_VERSION);
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

/// A double from the values decoders must survive: ordinary, extreme and non-finite.
fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-1000i32..1000).prop_map(f64::from),
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-0.0),
    ]
}

fn write_structured_aggregates(w: &mut crate::codec::Writer, ints: [u64; 3], floats: [f64; 6]) {
    for v in ints {
        w.uint(v);
    }
    for v in floats {
        w.f64(v);
    }
}

/// A well-formed v2 series payload with arbitrary field values (counts, timestamps, doubles,
/// sketch entries, buckets), so the decoder's consistency checks are what is tested. Counts
/// and timestamps stay within what the module can write (`TS <= i64::MAX`, far fewer than
/// 2^64 samples); see the report on larger ones.
fn structured_series_payload() -> impl Strategy<Value = Vec<u8>> {
    let ts = || {
        prop_oneof![
            4 => 1_700_000_000_000u64..1_700_000_600_000,
            1 => 0..=i64::MAX as u64,
            1 => Just(i64::MAX as u64),
            1 => Just(0u64),
        ]
    };
    let count = || prop_oneof![4 => 0..5u64, 1 => 0..(1u64 << 40)];
    let aggregates = move || {
        (
            (count(), ts(), ts()),
            proptest::array::uniform6(any_double()),
        )
    };
    let sketch = || {
        proptest::collection::vec(
            prop_oneof![
                3 => (-(2 * 16383 + 1)..=(2 * 16383 + 1i32), 1..=0xffffu32)
                    .prop_map(|(i, c)| (((i + 32768) as u32) << 16) | c),
                1 => any::<u32>(),
            ],
            0..5,
        )
        .prop_map(|mut words| {
            words.sort_unstable();
            words
        })
    };
    let bucket = move || (aggregates(), sketch());
    (
        aggregates(),
        sketch(),
        proptest::collection::vec(bucket(), 0..4),
        proptest::collection::vec(bucket(), 0..4),
    )
        .prop_map(|(all, sketch, fine, coarse)| {
            let mut w = crate::codec::Writer::new(crate::metric::rdb::ENCODING_VERSION);
            let ((c, f, l), floats) = all;
            write_structured_aggregates(&mut w, [c, f, l], floats);
            w.uint(sketch.len() as u64);
            for word in &sketch {
                w.uint(u64::from(*word));
            }
            for tier in [fine, coarse] {
                w.uint(tier.len() as u64);
                for (((c, f, l), floats), sketch) in tier {
                    write_structured_aggregates(&mut w, [c, f, l], floats);
                    w.uint(sketch.len() as u64);
                    for word in &sketch {
                        w.uint(u64::from(*word));
                    }
                }
            }
            w.finish()
        })
}

/// One field edit of a real series' payload: aggregates are numbered in encoding order (the
/// all-time ones, then fine buckets, then coarse buckets), modulo how many there are.
#[derive(Clone, Debug)]
enum Edit {
    /// Adds a small delta (wrapping) to count / first_ts / last_ts.
    Nudge(usize, usize, i64),
    /// Sets count / first_ts / last_ts.
    SetInt(usize, usize, u64),
    /// Sets sum / comp / mean / m2 / min / max.
    SetFloat(usize, usize, f64),
    /// Replaces a sketch's entries.
    Sketch(usize, Vec<u32>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0..3usize, -70_000..70_000i64)
            .prop_map(|(o, f, d)| Edit::Nudge(o, f, d)),
        1 => (any::<usize>(), 0..3usize, prop_oneof![Just(0u64), Just(i64::MAX as u64), 0..(1u64 << 40)])
            .prop_map(|(o, f, v)| Edit::SetInt(o, f, v)),
        2 => (any::<usize>(), 0..6usize, any_double()).prop_map(|(o, f, v)| Edit::SetFloat(o, f, v)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u32>(), 0..4)).prop_map(|(o, mut w)| {
            w.sort_unstable();
            Edit::Sketch(o, w)
        }),
    ]
}

/// A real series' payload (samples spread over two hours, so both tiers hold buckets) with a
/// few fields edited: mostly still well-framed and often still accepted, so what the decoder
/// lets through is exercised.
fn edited_series_payload() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((-1000i32..1000, 0..7_200_000u32), 1..60),
        1_600_000_000_000u64..1_800_000_000_000,
        proptest::collection::vec(edit(), 0..3),
    )
        .prop_map(|(samples, t0, edits)| {
            use crate::metric::aggregates::Aggregates;
            use crate::metric::sketch::Sketch;
            let mut series = crate::metric::series::Series::new();
            for (v, dt) in samples {
                series.add(f64::from(v) / 4.0, t0 + u64::from(dt), 3_600_000);
            }
            let (all, sketch, fine, coarse) = series.parts();
            let total = 1 + fine.buckets().len() + coarse.buckets().len();
            let mut w = crate::codec::Writer::new(crate::metric::rdb::ENCODING_VERSION);
            let mut ordinal = 0;
            let mut write = |w: &mut crate::codec::Writer, a: &Aggregates, s: &Sketch| {
                let (mut floats, mut ints) = a.to_parts();
                let mut words = s.to_words().to_vec();
                for e in &edits {
                    match e {
                        Edit::Nudge(o, f, d) if o % total == ordinal => {
                            ints[*f] = ints[*f].wrapping_add_signed(*d)
                        }
                        Edit::SetInt(o, f, v) if o % total == ordinal => ints[*f] = *v,
                        Edit::SetFloat(o, f, v) if o % total == ordinal => floats[*f] = *v,
                        Edit::Sketch(o, ws) if o % total == ordinal => words = ws.clone(),
                        _ => {}
                    }
                }
                write_structured_aggregates(w, ints, floats);
                w.uint(words.len() as u64);
                for word in words {
                    w.uint(u64::from(word));
                }
                ordinal += 1;
            };
            write(&mut w, all, sketch);
            for tier in [fine, coarse] {
                w.uint(tier.buckets().len() as u64);
                for b in tier.buckets() {
                    write(&mut w, &b.agg, &b.sketch);
                }
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
        if let Ok(mut decoded) = super::rdb::decode(&bytes) {
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
        let valid = super::rdb::encode(&log);
        for bytes in [raw, mutate(valid, &mutations)] {
            if let Ok(mut decoded) = super::rdb::decode(&bytes) {
                exercise_log(&mut decoded, now);
            }
        }
    }

    #[test]
    fn a_decoded_series_works_without_panicking_whatever_its_fields_hold(
        bytes in prop_oneof![structured_series_payload(), edited_series_payload()],
        now in prop_oneof![1_700_000_000_000u64..1_700_001_000_000, 0..=i64::MAX as u64],
    ) {
        if let Ok(mut decoded) = crate::metric::rdb::decode(&bytes) {
            exercise_series(&mut decoded, now);
        }
    }

    #[test]
    fn the_series_decoder_never_panics_on_arbitrary_or_corrupted_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..96),
        samples in proptest::collection::vec((any::<i32>(), 0..7_200_000u32), 0..40),
        mutations in proptest::collection::vec(mutation(), 1..4),
        t0 in 0..(1u64 << 45),
        now_offset in 0..10_000_000u64,
    ) {
        let valid = series_payload(&samples, t0);
        for bytes in [raw, mutate(valid, &mutations)] {
            if let Ok(mut decoded) = crate::metric::rdb::decode(&bytes) {
                exercise_series(&mut decoded, t0 + now_offset);
            }
        }
    }
}
