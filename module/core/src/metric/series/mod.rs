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
use super::state::State;

pub const FINE_MS: u64 = 1000;
pub const COARSE_MS: u64 = 60_000;
/// Windows up to this long are served from the fine tier at 1 s resolution.
pub const FINE_WINDOW_MS: u64 = 60_000;
/// How far behind the reference time the fine tier keeps 1 s buckets (one spare second).
const FINE_KEEP_MS: u64 = FINE_WINDOW_MS + FINE_MS;
/// How far after the server's time a client may date a sample (METRIC.ADD refuses later).
pub const FUTURE_MS: u64 = 300_000;

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
    /// dropping buckets that start before. With `head` (the 1 s tier), the buckets and
    /// samples between the start of `keep_from`'s minute and `keep_from` are not dropped but
    /// merged into one front bucket (the head), so the tier keeps whole minutes: every
    /// sample from the start of its front bucket's minute on is in it.
    fn add(&mut self, value: f64, bin: i32, ts: u64, keep_from: u64, head: bool) {
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
        let drop_before = if head {
            floor_to(keep_from, COARSE_MS)
        } else {
            keep_from
        };
        while self
            .buckets
            .front()
            .is_some_and(|b| self.start_of(b) < drop_before)
        {
            self.buckets.pop_front();
        }
        if ts < drop_before {
            return;
        }
        if head {
            // Fold the seconds that fell behind `keep_from` into the head.
            while self.buckets.len() >= 2 && self.start_of(&self.buckets[1]) < keep_from {
                let b = self.buckets.remove(1).unwrap_or_default();
                let front = &mut self.buckets[0];
                front.agg.merge(&b.agg);
                front.sketch.merge(&b.sketch, BUCKET_CAP);
            }
            if ts < keep_from {
                match self.buckets.front_mut() {
                    Some(front) if floor_to(front.agg.first_ts, self.width) < keep_from => {
                        front.agg.add(value, ts);
                        front.sketch.add_index(bin, BUCKET_CAP);
                    }
                    _ => {
                        let mut b = Bucket::default();
                        b.agg.add(value, ts);
                        b.sketch.add_index(bin, BUCKET_CAP);
                        self.buckets.push_front(b);
                    }
                }
                return;
            }
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
        // Each bucket lies within its width; the 1 s tier's front bucket (its head) may span
        // the rest of its minute.
        let ok = starts.windows(2).all(|w| w[0] < w[1])
            && tier.buckets.iter().enumerate().all(|(i, b)| {
                let span = if i == 0 && width == FINE_MS {
                    COARSE_MS
                } else {
                    width
                };
                b.agg.count > 0 && floor_to(b.agg.last_ts, span) == floor_to(b.agg.first_ts, span)
            });
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

/// The summary (aggregates and [`QUANTILES`]) of the samples that `agg` aggregates and
/// `sketches` hold, together: `None` if there are none. This is what METRIC.SUMMARY replies,
/// computed exactly as the module computes it, so it is also how to summarize several series
/// as one: merge their all-time aggregates ([`Aggregates::merge`]) and pass every series'
/// all-time sketch ([`Series::all_time`]); the quantiles then come from the sketches' entries
/// merged in value order (no entry is collapsed, so no sketch's accuracy is lost).
pub fn summarize(agg: &Aggregates, sketches: &[&Sketch]) -> Option<Summary> {
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

    /// Records one sample (`value` finite) as a replay of an old effect would: buckets are
    /// kept relative to the newest timestamp. See [`Series::add_at`].
    pub fn add(&mut self, value: f64, ts: u64, retention_ms: u64) {
        self.add_at(value, ts, u64::MAX, retention_ms);
    }

    /// Records one sample (`value` finite) at `ts`, added at server time `now_ms`. O(1): two
    /// bucket updates and two sketch updates, each bounded by the sketch caps.
    ///
    /// Buckets are kept relative to a reference time: the newest timestamp, but never later
    /// than `now_ms` (a sample from the future does not push the present out) nor more than
    /// [`FUTURE_MS`] before the newest timestamp (memory stays bounded whatever `now_ms`
    /// says). The 60 s tier keeps `retention_ms` before the reference, the 1 s tier 61 s (in
    /// whole minutes, see `Tier::add`). Samples older only count in the all-time views. The
    /// reference depends only on the arguments and the stored samples, so a replica or an AOF
    /// replay given the same `now_ms` ends with the same state.
    pub fn add_at(&mut self, value: f64, ts: u64, now_ms: u64, retention_ms: u64) {
        let newest = if self.all.count == 0 {
            ts
        } else {
            self.all.last_ts.max(ts)
        };
        let reference = newest.min(now_ms).max(newest.saturating_sub(FUTURE_MS));
        // The sketch bin (a logarithm) is computed once for the three sketches.
        let bin = index_of(value);
        self.all.add(value, ts);
        self.sketch.add_index(bin, ALL_TIME_CAP);
        self.coarse.add(
            value,
            bin,
            ts,
            reference.saturating_sub(retention_ms),
            false,
        );
        self.fine
            .add(value, bin, ts, reference.saturating_sub(FINE_KEEP_MS), true);
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
        let (agg, sketches) = self.window_parts(now_ms, window_ms);
        summarize(&agg, &sketches)
    }

    /// The mergeable state of [`Series::window`]'s samples (for merging across series).
    pub fn window_state(&self, now_ms: u64, window_ms: u64) -> State {
        let (agg, sketches) = self.window_parts(now_ms, window_ms);
        State::of(&agg, &sketches)
    }

    /// The mergeable state of every sample ever added.
    pub fn all_time_state(&self) -> State {
        State::of(&self.all, &[&self.sketch])
    }

    /// The merged aggregates and the sketches of the buckets of the window.
    fn window_parts(&self, now_ms: u64, window_ms: u64) -> (Aggregates, Vec<&Sketch>) {
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
        (agg, sketches)
    }

    /// The stored buckets visible at `now_ms` under `retention_ms` (from the retention's
    /// start, rounded down to the minute, to the buckets starting at `now_ms` at the latest),
    /// oldest first, each with its start. Every sample of a visible 60 s bucket is in exactly
    /// one of them: a minute is given as its 1 s buckets when they hold all of its samples
    /// (their counts add up to the 60 s bucket's), else as its 60 s bucket. The 1 s tier
    /// keeps whole minutes (`Tier::add`), so that is every minute it covers. O(buckets).
    fn stored(&self, now_ms: u64, retention_ms: u64) -> Vec<(u64, &Bucket)> {
        let visible_from = floor_to(now_ms.saturating_sub(retention_ms), COARSE_MS);
        let mut out = Vec::new();
        let mut fine = self.fine.between(visible_from, u64::MAX).peekable();
        for minute in self.coarse.between(visible_from, now_ms) {
            let start = self.coarse.start_of(minute);
            let end = start + COARSE_MS;
            while fine.next_if(|b| self.fine.start_of(b) < start).is_some() {}
            let at = out.len();
            let mut count = 0;
            while let Some(b) = fine.next_if(|b| self.fine.start_of(b) < end) {
                count += b.agg.count;
                // The minute's seconds after `now_ms` count to check it is whole, but are
                // not visible yet.
                if self.fine.start_of(b) <= now_ms {
                    out.push((self.fine.start_of(b), b));
                }
            }
            if count != minute.agg.count {
                out.truncate(at);
                out.push((start, minute));
            }
        }
        out
    }

    /// The oldest and newest timestamps of the data visible at `now_ms` (for `-` and `+`);
    /// the newest is at most `now_ms`.
    pub fn bounds(&self, now_ms: u64, retention_ms: u64) -> Option<(u64, u64)> {
        let stored = self.stored(now_ms, retention_ms);
        let first = stored.first()?.0;
        let last = stored.iter().map(|(_, b)| b.agg.last_ts).max()?;
        Some((first, last.min(now_ms)))
    }

    /// Per-bucket aggregates over `from_ms..=to_ms` in buckets of `bucket_ms`, non-empty only,
    /// oldest first, of the data visible at `now_ms`. A stored bucket counts in the range
    /// bucket that holds its start, or, when it starts before `from_ms` and has samples from
    /// `from_ms` on, in the range bucket that holds `from_ms`.
    pub fn range(
        &self,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
        now_ms: u64,
        retention_ms: u64,
    ) -> Vec<Point> {
        let span = (from_ms, to_ms, bucket_ms);
        self.range_fold(
            span,
            now_ms,
            retention_ms,
            |b| b.agg,
            |a, b| a.merge(&b.agg),
        )
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

    /// The mergeable state of each point of [`Series::range`] (same starts, same samples),
    /// its bins from the stored buckets' sketches: per-bucket quantiles, and merging a point
    /// across series.
    pub fn range_states<'a>(
        &'a self,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
        now_ms: u64,
        retention_ms: u64,
    ) -> Vec<(u64, State)> {
        let span = (from_ms, to_ms, bucket_ms);
        let open = |b: &'a Bucket| (b.agg, vec![&b.sketch]);
        self.range_fold(span, now_ms, retention_ms, open, |(agg, sketches), b| {
            agg.merge(&b.agg);
            sketches.push(&b.sketch);
        })
        .into_iter()
        .filter(|(_, (agg, _))| agg.count > 0)
        .map(|(ts, (agg, sketches))| (ts, State::of(&agg, &sketches)))
        .collect()
    }

    /// The stored buckets of `(from_ms, to_ms, bucket_ms)` folded into range points: `open`
    /// starts a point with a bucket, `add` adds the next bucket of the same point.
    fn range_fold<'a, T>(
        &'a self,
        (from_ms, to_ms, bucket_ms): (u64, u64, u64),
        now_ms: u64,
        retention_ms: u64,
        open: impl Fn(&'a Bucket) -> T,
        add: impl Fn(&mut T, &'a Bucket),
    ) -> Vec<(u64, T)> {
        let mut points: Vec<(u64, T)> = Vec::new();
        for (start, b) in self.stored(now_ms, retention_ms) {
            if start > to_ms || b.agg.last_ts < from_ms {
                continue;
            }
            let ts = floor_to(start.max(from_ms), bucket_ms);
            match points.last_mut() {
                Some((t, acc)) if *t == ts => add(acc, b),
                _ => points.push((ts, open(b))),
            }
        }
        points
    }

    pub fn heap_bytes(&self) -> usize {
        self.sketch.heap_bytes() + self.fine.heap_bytes() + self.coarse.heap_bytes()
    }

    /// The all-time aggregates and sketch: every sample ever added (see [`summarize`] to
    /// summarize several series as one).
    pub fn all_time(&self) -> (&Aggregates, &Sketch) {
        (&self.all, &self.sketch)
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
mod tests;
