//! A metric series: everything METRIC.* knows about one metric, maintained on every add.
//! Pure Rust, no Redis: server time and retention are parameters.
//!
//! Three views, all updated in O(1) per sample:
//! - all-time aggregates and an all-time quantile sketch (every sample ever added);
//! - a fine tier of 1 s buckets covering the last ~61 s of the series' data;
//! - a coarse tier of 60 s buckets covering the retention.
//!
//! Buckets start at multiples of their width since the epoch. Each holds aggregates and a
//! sketch, so a window or range merges buckets and never scans samples. Which buckets are
//! kept depends only on the samples (the newest timestamp), not on the clock, so replicas and
//! reloads end with the same state.

use std::collections::VecDeque;

use super::aggregates::{Aggregates, Summary};
use super::sketch::{index_of, Quantiles, Sketch, ALL_TIME_CAP, BUCKET_CAP};

pub const FINE_MS: u64 = 1000;
pub const COARSE_MS: u64 = 60_000;
/// Windows up to this long are served from the fine tier at 1 s resolution.
pub const FINE_WINDOW_MS: u64 = 60_000;
/// How far behind the newest sample the fine tier keeps buckets (one spare second).
const FINE_KEEP_MS: u64 = FINE_WINDOW_MS + FINE_MS;

/// The quantiles every summary reports, as exact fractions: p50, p90, p95, p99.
pub const QUANTILES: [(&str, u64, u64); 4] = [
    ("p50", 50, 100),
    ("p90", 90, 100),
    ("p95", 95, 100),
    ("p99", 99, 100),
];

/// One point of METRIC.RANGE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub ts: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub agg: Aggregates,
    pub sketch: Sketch,
}

/// Buckets of one width, sorted by start, no empty ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    width: u64,
    buckets: VecDeque<Bucket>,
}

fn floor_to(ts: u64, width: u64) -> u64 {
    ts / width * width
}

impl Tier {
    fn new(width: u64) -> Self {
        Tier {
            width,
            buckets: VecDeque::new(),
        }
    }

    pub fn start_of(&self, b: &Bucket) -> u64 {
        floor_to(b.agg.first_ts, self.width)
    }

    /// Adds a sample (its sketch bin already computed) unless it is older than `keep_from`,
    /// dropping buckets that start before.
    fn add(&mut self, value: f64, bin: i32, ts: u64, keep_from: u64) {
        let start = floor_to(ts, self.width);
        // The common case: the sample belongs to the newest bucket.
        if let Some(b) = self.buckets.back_mut() {
            if floor_to(b.agg.first_ts, self.width) == start {
                b.agg.add(value, ts);
                b.sketch.add_index(bin, BUCKET_CAP);
                return;
            }
        }
        let keep_from = floor_to(keep_from, self.width);
        while self
            .buckets
            .front()
            .is_some_and(|b| self.start_of(b) < keep_from)
        {
            self.buckets.pop_front();
        }
        if ts < keep_from {
            return;
        }
        let at = self.buckets.partition_point(|b| self.start_of(b) < start);
        if self
            .buckets
            .get(at)
            .is_none_or(|b| self.start_of(b) != start)
        {
            self.buckets.insert(at, Bucket::default());
        }
        let b = &mut self.buckets[at];
        b.agg.add(value, ts);
        b.sketch.add_index(bin, BUCKET_CAP);
    }

    /// Buckets whose start is in `from..=to`.
    fn between(&self, from: u64, to: u64) -> impl Iterator<Item = &Bucket> + '_ {
        let at = self.buckets.partition_point(|b| self.start_of(b) < from);
        self.buckets
            .range(at..)
            .take_while(move |b| self.start_of(b) <= to)
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| b.sketch.heap_bytes())
                .sum::<usize>()
    }

    pub fn buckets(&self) -> &VecDeque<Bucket> {
        &self.buckets
    }

    fn from_buckets(width: u64, buckets: Vec<Bucket>) -> Result<Self, &'static str> {
        let tier = Tier {
            width,
            buckets: buckets.into(),
        };
        let starts: Vec<u64> = tier.buckets.iter().map(|b| tier.start_of(b)).collect();
        let ok = starts.windows(2).all(|w| w[0] < w[1])
            && tier
                .buckets
                .iter()
                .all(|b| b.agg.count > 0 && floor_to(b.agg.last_ts, width) == tier.start_of(b));
        if ok {
            Ok(tier)
        } else {
            Err("invalid buckets")
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    all: Aggregates,
    sketch: Sketch,
    fine: Tier,
    coarse: Tier,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            all: Aggregates::default(),
            sketch: Sketch::new(),
            fine: Tier::new(FINE_MS),
            coarse: Tier::new(COARSE_MS),
        }
    }
}

/// Aggregates and quantiles of a set of buckets (or of the whole series).
fn summarize(agg: &Aggregates, sketches: &[&Sketch]) -> Option<Summary> {
    let mut s = agg.summary()?;
    let fractions = QUANTILES.map(|(_, num, den)| (num, den));
    // The aggregates' min and max bound the sketch's samples only if it holds all of them
    // (a series loaded from the v1 encoding has a sketch of the newer samples only).
    let bounds = |total: u64| (total == s.count).then_some((s.min, s.max));
    s.quantiles = match sketches {
        // One sketch (the all-time summary, a one-bucket window): walked in place.
        [one] => one.quantiles(&fractions, bounds),
        _ => {
            let q = Quantiles::of(sketches);
            q.quantiles(&fractions, bounds(q.total()))
        }
    };
    Some(s)
}

impl Series {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample (`value` finite). O(1): two bucket updates and two sketch updates,
    /// each bounded by the sketch caps. Samples older than `retention_ms` before the newest
    /// one only count in the all-time views.
    pub fn add(&mut self, value: f64, ts: u64, retention_ms: u64) {
        let newest = if self.all.count == 0 {
            ts
        } else {
            self.all.last_ts.max(ts)
        };
        // The sketch bin (a logarithm) is computed once for the three sketches.
        let bin = index_of(value);
        self.all.add(value, ts);
        self.sketch.add_index(bin, ALL_TIME_CAP);
        self.coarse
            .add(value, bin, ts, newest.saturating_sub(retention_ms));
        self.fine
            .add(value, bin, ts, newest.saturating_sub(FINE_KEEP_MS));
    }

    pub fn count(&self) -> u64 {
        self.all.count
    }

    /// All-time summary, `None` with no samples. O(1) but for the sketch walk (bounded).
    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.all, &[&self.sketch])
    }

    /// Summary of the samples in the last `window_ms` of server time `now_ms`, the window's
    /// start rounded down to the stored resolution (1 s up to a minute, else 60 s).
    /// O(buckets).
    pub fn window(&self, now_ms: u64, window_ms: u64) -> Option<Summary> {
        let tier = if window_ms <= FINE_WINDOW_MS {
            &self.fine
        } else {
            &self.coarse
        };
        let from = floor_to(now_ms.saturating_sub(window_ms), tier.width);
        let mut agg = Aggregates::default();
        let mut sketches = Vec::new();
        for b in tier.between(from, now_ms) {
            agg.merge(&b.agg);
            sketches.push(&b.sketch);
        }
        summarize(&agg, &sketches)
    }

    /// The stored buckets visible at `now_ms` under `retention_ms`, oldest first, each with its
    /// start: 1 s buckets where the fine tier has them (from the first whole minute it
    /// covers), 60 s buckets before that.
    fn stored(&self, now_ms: u64, retention_ms: u64) -> Vec<(u64, &Bucket)> {
        let visible_from = floor_to(now_ms.saturating_sub(retention_ms), COARSE_MS);
        let fine_from = self.fine.buckets.front().map_or(u64::MAX, |b| {
            self.fine.start_of(b).div_ceil(COARSE_MS) * COARSE_MS
        });
        let coarse = self
            .coarse
            .between(visible_from, fine_from.saturating_sub(1))
            .map(|b| (self.coarse.start_of(b), b));
        let fine = self
            .fine
            .between(fine_from.max(visible_from), u64::MAX)
            .map(|b| (self.fine.start_of(b), b));
        coarse.chain(fine).collect()
    }

    /// The oldest and newest timestamps of the data visible at `now_ms` (for `-` and `+`).
    pub fn bounds(&self, now_ms: u64, retention_ms: u64) -> Option<(u64, u64)> {
        let stored = self.stored(now_ms, retention_ms);
        let first = stored.first()?.0;
        let last = stored.iter().map(|(_, b)| b.agg.last_ts).max()?;
        Some((first, last))
    }

    /// Per-bucket aggregates over `from_ms..=to_ms` in buckets of `bucket_ms`, non-empty only,
    /// oldest first. A stored bucket counts in the range bucket that holds its start.
    pub fn range(
        &self,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
        now_ms: u64,
        retention_ms: u64,
    ) -> Vec<Point> {
        let from = floor_to(from_ms, bucket_ms);
        let mut points: Vec<(u64, Aggregates)> = Vec::new();
        for (start, b) in self.stored(now_ms, retention_ms) {
            if start < from || start > to_ms {
                continue;
            }
            let ts = floor_to(start, bucket_ms);
            match points.last_mut() {
                Some((t, agg)) if *t == ts => agg.merge(&b.agg),
                _ => points.push((ts, b.agg)),
            }
        }
        points
            .into_iter()
            .filter_map(|(ts, agg)| {
                let s = agg.summary()?;
                Some(Point {
                    ts,
                    count: s.count,
                    sum: s.sum,
                    min: s.min,
                    max: s.max,
                    avg: s.avg,
                })
            })
            .collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.sketch.heap_bytes() + self.fine.heap_bytes() + self.coarse.heap_bytes()
    }

    /// The parts, for encoding: all-time aggregates, all-time sketch, fine and coarse tiers.
    pub fn parts(&self) -> (&Aggregates, &Sketch, &Tier, &Tier) {
        (&self.all, &self.sketch, &self.fine, &self.coarse)
    }

    pub fn from_parts(
        all: Aggregates,
        sketch: Sketch,
        fine: Vec<Bucket>,
        coarse: Vec<Bucket>,
    ) -> Result<Self, &'static str> {
        Ok(Series {
            all,
            sketch,
            fine: Tier::from_buckets(FINE_MS, fine)?,
            coarse: Tier::from_buckets(COARSE_MS, coarse)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
