use super::*;
use crate::test_support::Rng;

const HOUR: u64 = 3_600_000;
const T0: u64 = 28_333_334 * 60_000; // a minute boundary

fn feed(samples: impl IntoIterator<Item = (f64, u64)>) -> Series {
    let mut s = Series::new();
    for (v, t) in samples {
        s.add(v, t, HOUR);
    }
    s
}

#[test]
fn all_time_summary_has_quantiles() {
    let s = feed((1..=100).map(|i| (i as f64, T0 + i)));
    let sum = s.summary().unwrap();
    assert_eq!(sum.count, 100);
    let [p50, p90, p95, p99] = sum.quantiles.map(Option::unwrap);
    for (got, want) in [(p50, 50.0), (p90, 90.0), (p95, 95.0), (p99, 99.0)] {
        assert!((got - want).abs() <= want * 0.01, "{got} vs {want}");
    }
    assert_eq!(Series::new().summary(), None);
}

#[test]
fn short_windows_use_one_second_buckets_and_round_the_start_down() {
    // One sample per second for two minutes, value = seconds since T0.
    let s = feed((0..120).map(|i| (i as f64, T0 + i * 1000)));
    let now = T0 + 119_500;
    // Last 10 s of server time: from 109.5 s, rounded down to 109 s: samples 109..=119.
    let w = s.window(now, 10_000).unwrap();
    assert_eq!(w.count, 11);
    assert_eq!((w.min, w.max), (109.0, 119.0));
    assert_eq!(w.first_ts, T0 + 109_000);
    // Exactly on a boundary: now - window = 110 s -> samples 110..=119.
    let w = s.window(T0 + 120_000, 10_000).unwrap();
    assert_eq!(w.count, 10);
    // A window with nothing in it is empty.
    assert_eq!(s.window(T0 + 500_000, 1000), None);
}

#[test]
fn long_windows_use_minute_buckets() {
    let s = feed((0..600).map(|i| (1.0, T0 + i * 1000))); // 10 minutes
    let now = T0 + 599_999;
    // 5 minutes back is 299.999 s, rounded down to the minute: 240 s .. now.
    assert_eq!(s.window(now, 300_000).unwrap().count, 360);
    assert_eq!(s.window(now, HOUR).unwrap().count, 600);
}

#[test]
fn windowed_quantiles_merge_the_buckets_in_the_window() {
    // Minute 0: values 1000..1999; minute 1: values 0..999.
    let s = feed((0..2000).map(|i| {
        let v = if i < 1000 { 1000 + i } else { i - 1000 };
        (v as f64, T0 + i * 60)
    }));
    let last_minute = s.window(T0 + 120_000, 60_000).unwrap();
    assert_eq!(last_minute.count, 1000);
    let p99 = last_minute.quantiles[3].unwrap();
    assert!((p99 - 989.0).abs() <= 9.9, "{p99}");
    let both = s.window(T0 + 120_000, 120_000).unwrap();
    let p50 = both.quantiles[0].unwrap();
    assert!((p50 - 999.0).abs() <= 9.99, "{p50}");
}

#[test]
fn late_samples_within_retention_land_in_their_bucket() {
    let mut s = feed([(1.0, T0 + 600_000)]);
    s.add(5.0, T0 + 120_500, HOUR); // 8 minutes late
    let points = s.range(T0, T0 + HOUR, 60_000, T0 + 600_000, HOUR);
    assert_eq!(
        points.iter().map(|p| (p.ts, p.count)).collect::<Vec<_>>(),
        vec![(T0 + 120_000, 1), (T0 + 600_000, 1)]
    );
}

#[test]
fn samples_older_than_the_retention_only_count_all_time() {
    let mut s = Series::new();
    s.add(1.0, T0 + 2 * HOUR, HOUR);
    s.add(7.0, T0, HOUR); // two hours older than the newest
    assert_eq!(s.summary().unwrap().count, 2);
    assert_eq!(s.window(T0 + 2 * HOUR, HOUR).unwrap().count, 1);
    // Buckets fall out as newer data arrives.
    let mut s = feed((0..180).map(|m| (1.0, T0 + m * 60_000))); // 3 hours
    assert!(s.parts().3.buckets().len() <= 61);
    s.add(1.0, T0 + 180 * 60_000, HOUR);
    assert_eq!(s.summary().unwrap().count, 181);
    // The window's start (exactly an hour back) is inclusive: minutes 120..=180.
    assert_eq!(s.window(T0 + 180 * 60_000, HOUR).unwrap().count, 61);
}

#[test]
fn range_groups_stored_buckets_and_prefers_seconds_in_the_last_minute() {
    // 3 minutes at 1 sample per 100 ms, value 2.
    let s = feed((0..1800).map(|i| (2.0, T0 + i * 100)));
    let now = T0 + 180_000;
    let per_min = s.range(T0, now, 60_000, now, HOUR);
    assert_eq!(
        per_min
            .iter()
            .map(|p| (p.ts - T0, p.count))
            .collect::<Vec<_>>(),
        vec![(0, 600), (60_000, 600), (120_000, 600)]
    );
    assert_eq!(per_min[0].avg, 2.0);
    assert_eq!(per_min[0].sum, 1200.0);
    // 10 s buckets: the last (covered by 1 s buckets) minute is split, earlier ones are not.
    let per_10s = s.range(T0, now, 10_000, now, HOUR);
    assert_eq!(per_10s[0].count, 600);
    assert_eq!(per_10s[1].ts, T0 + 60_000);
    assert_eq!(per_10s.last().unwrap().count, 100);
    assert_eq!(per_10s.iter().map(|p| p.count).sum::<u64>(), 1800);
    // Bounds: the oldest stored bucket to the newest sample.
    assert_eq!(s.bounds(now, HOUR), Some((T0, T0 + 179_900)));
    assert_eq!(Series::new().bounds(now, HOUR), None);
}

#[test]
fn memory_per_series_is_bounded_at_1_and_1000_samples_per_second() {
    let mut r = 0x2545F4914F6CDD1Du64;
    let mut unit = move || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        (r >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut slow = Series::new();
    for i in 0..HOUR / 1000 {
        slow.add(unit() * 100.0, T0 + i * 1000, HOUR);
    }
    let bytes = std::mem::size_of::<Series>() + slow.heap_bytes();
    assert!(bytes <= 32 * 1024, "1/s for an hour: {bytes} B");
    let mut fast = Series::new();
    for i in 0..(10 * 60 * 1000) {
        fast.add(unit() * 100.0, T0 + i, HOUR);
    }
    let bytes = std::mem::size_of::<Series>() + fast.heap_bytes();
    assert!(bytes <= 256 * 1024, "1000/s for 10 minutes: {bytes} B");
}

fn counts(points: &[Point]) -> Vec<(u64, u64)> {
    points.iter().map(|p| (p.ts, p.count)).collect()
}

/// Samples with `lo <= ts <= hi`, grouped by `floor(ts, bucket)`: the brute-force reply.
fn brute(samples: &[(f64, u64)], lo: u64, hi: u64, bucket: u64) -> Vec<(u64, u64)> {
    let mut by: std::collections::BTreeMap<u64, u64> = Default::default();
    for &(_, t) in samples.iter().filter(|&&(_, t)| lo <= t && t <= hi) {
        *by.entry(floor_to(t, bucket)).or_default() += 1;
    }
    by.into_iter().collect()
}

#[test]
fn a_series_younger_than_a_minute_has_its_last_seconds_at_one_second_resolution() {
    // Created 25 s past a minute boundary, 10 samples 1 s apart.
    let start = T0 + 25_000;
    let mut s = Series::new();
    for i in 0..10 {
        s.add_at(i as f64, start + i * 1000, start + i * 1000, HOUR);
    }
    let now = start + 9_500;
    let points = s.range(now - 10_000, now, 1000, now, HOUR);
    assert_eq!(
        counts(&points),
        (0..10).map(|i| (start + i * 1000, 1)).collect::<Vec<_>>()
    );
    // A window of the last 5 s: from 4.5 s rounded down to 4 s, samples 4..=9.
    assert_eq!(s.window(now, 5_000).unwrap().count, 6);
}

#[test]
fn a_range_starting_inside_a_stored_minute_shows_its_samples_at_from() {
    // Minutes 0..5 at one sample per 10 s; the 1 s tier covers only the last ones.
    let samples: Vec<(f64, u64)> = (0..36).map(|i| (1.0, T0 + i * 10_000)).collect();
    let s = feed(samples.iter().copied());
    let now = T0 + 360_000;
    // From 90 s: inside minute 1 (stored as one 60 s bucket).
    let points = s.range(T0 + 90_000, now, 60_000, now, HOUR);
    assert_eq!(points[0].ts, T0 + 60_000);
    assert_eq!(
        points[0].count, 6,
        "all of minute 1, shown at from's bucket"
    );
    let points = s.range(T0 + 90_000, now, 10_000, now, HOUR);
    assert_eq!(
        points[0].ts,
        T0 + 90_000,
        "the reply bucket holding from_ms"
    );
    assert_eq!(points[0].count, 6);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 36 - 6);
}

#[test]
fn a_sample_from_the_future_counts_all_time_and_shows_once_its_time_comes() {
    let mut s = Series::new();
    for i in 0..30 {
        s.add_at(1.0, T0 + i * 1000, T0 + i * 1000, HOUR);
    }
    let now = T0 + 29_000;
    s.add_at(100.0, now + 120_000, now, HOUR); // two minutes ahead
    for i in 30..60 {
        s.add_at(1.0, T0 + i * 1000, T0 + i * 1000, HOUR);
    }
    let now = T0 + 59_500;
    assert_eq!(s.summary().unwrap().count, 61);
    // The present keeps its 1 s buckets and the future sample is not counted yet.
    let w = s.window(now, 60_000).unwrap();
    assert_eq!((w.count, w.max), (60, 1.0));
    assert_eq!(s.window(now, HOUR).unwrap().count, 60);
    assert_eq!(
        s.range(now - 10_000, now + HOUR, 1000, now, HOUR).len(),
        10,
        "seconds 50..=59 (49 is before from), nothing later"
    );
    assert_eq!(s.bounds(now, HOUR).unwrap().1, T0 + 59_000);
    // Once server time reaches it, it is in windows and ranges.
    let later = T0 + 29_000 + 120_500;
    assert_eq!(s.window(later, 10_000).unwrap().max, 100.0);
    let points = s.range(later - 60_000, later, 1000, later, HOUR);
    assert_eq!(counts(&points), vec![(T0 + 149_000, 1)]);
    // A timestamp far ahead (only replication can bring one) keeps at most FUTURE_MS of
    // the present.
    let mut s = feed((0..600).map(|i| (1.0, T0 + i * 1000)));
    s.add_at(1.0, T0 + 100 * HOUR, T0 + 600_000, HOUR);
    assert!(s.parts().2.buckets().len() <= 2);
}

#[test]
fn every_retained_sample_is_in_exactly_one_reply_bucket_of_a_range_covering_it() {
    let mut r = Rng(0x9E3779B97F4A7C15);
    for case in 0..300 {
        // A series of up to 40 minutes, samples mostly in order, some late, some ahead.
        let base = T0 + r.below(60_000);
        let mut now = base;
        let mut s = Series::new();
        let mut samples = Vec::new();
        let n = 1 + r.below(400);
        let step = 1 + r.below(6_000);
        for _ in 0..n {
            now += r.below(2 * step);
            let ts = match r.below(10) {
                0 => now.saturating_sub(r.below(300_000)).max(base),
                1 => now + r.below(FUTURE_MS + 1),
                _ => now,
            };
            let v = r.below(1000) as f64;
            s.add_at(v, ts, now, HOUR);
            samples.push((v, ts));
        }
        let now_q = floor_to(now + r.below(90_000), 1000);
        let label = format!("case {case}: {n} samples, now {}", now_q - T0);
        // Everything up to now: every sample up to now_q, none after its minute.
        let all: u64 = s
            .range(0, now_q, 60_000, now_q, HOUR)
            .iter()
            .map(|p| p.count)
            .sum();
        let total = |lo, hi| {
            brute(&samples, lo, hi, HOUR)
                .iter()
                .map(|c| c.1)
                .sum::<u64>()
        };
        let (least, most) = (total(0, now_q), total(0, floor_to(now_q, 60_000) + 59_999));
        assert!(
            least <= all && all <= most,
            "{label}: {least} <= {all} <= {most}"
        );
        // Whole minutes: exact, per minute.
        let from = floor_to(base + r.below(now_q - base + 1), 60_000);
        let to = (from + (1 + r.below(40)) * 60_000 - 1).min(floor_to(now_q, 60_000) - 1);
        if from < to {
            assert_eq!(
                counts(&s.range(from, to, 60_000, now_q, HOUR)),
                brute(&samples, from, to, 60_000),
                "{label}: minutes {from}..={to}"
            );
        }
        // The last 60 s of server time: exact at any sub-minute resolution.
        for bucket in [1000, 2000, 5000, 10_000, 30_000] {
            let from = now_q - 60_000;
            assert_eq!(
                counts(&s.range(from, now_q, bucket, now_q, HOUR)),
                brute(&samples, from, now_q + 999, bucket),
                "{label}: last minute by {bucket}"
            );
        }
        // Windows up to a minute: the same samples.
        let w = 1 + r.below(60_000);
        let want = brute(&samples, floor_to(now_q - w, 1000), now_q + 999, HOUR);
        assert_eq!(
            s.window(now_q, w).map_or(0, |x| x.count),
            want.iter().map(|c| c.1).sum::<u64>(),
            "{label}: window {w}"
        );
        // Any range: every covered sample counted once, nothing beyond the stored
        // buckets the range touches.
        let from = base + r.below(now_q - base + 1);
        let to = from + r.below(now_q - from + 1);
        let bucket = 1000 * (1 + r.below(120));
        let got: u64 = s
            .range(from, to, bucket, now_q, HOUR)
            .iter()
            .map(|p| p.count)
            .sum();
        let covered = total(from, to);
        let loose = total(floor_to(from, 60_000), floor_to(to, 60_000) + 59_999);
        assert!(
            covered <= got && got <= loose,
            "{label}: {from}..={to} by {bucket}: {covered} <= {got} <= {loose}"
        );
    }
}

#[test]
fn several_series_summarize_as_one_series_of_all_their_samples() {
    let samples: Vec<(f64, u64)> = (0..300u64)
        .map(|i| {
            (
                ((i * 7919) % 1000) as f64 / 8.0 - 20.0,
                1_700_000_000_000 + i * 1000,
            )
        })
        .collect();
    let whole = feed(samples.iter().copied());
    let parts: Vec<Series> = samples
        .chunks(70)
        .map(|c| feed(c.iter().copied()))
        .collect();
    let mut agg = Aggregates::default();
    let mut sketches = Vec::new();
    for part in &parts {
        let (a, s) = part.all_time();
        agg.merge(a);
        sketches.push(s);
    }
    let merged = summarize(&agg, &sketches).unwrap();
    let want = whole.summary().unwrap();
    assert_eq!(
        (
            merged.count,
            merged.min,
            merged.max,
            merged.first_ts,
            merged.last_ts
        ),
        (want.count, want.min, want.max, want.first_ts, want.last_ts)
    );
    assert!((merged.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0));
    assert!((merged.avg - want.avg).abs() <= 1e-9 * want.avg.abs().max(1.0));
    assert_eq!(merged.quantiles, want.quantiles);
    assert_eq!(summarize(&Aggregates::default(), &[]), None);
}
