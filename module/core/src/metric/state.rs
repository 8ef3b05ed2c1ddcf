//! The mergeable state of a set of samples: exact aggregates and the sketch bins of the
//! samples, what `METRIC.EXPORT` replies (all-time, a window, or per range bucket) and what the
//! API merges across series (labels). Pure Rust, no Redis.
//!
//! Merging two states is exact for the aggregates (count, sum, min, max, mean, variance: see
//! [`Aggregates::merge`]) and lossless for the sketch: the bins are added up index by index,
//! never collapsed, so the merged bins are those of one sketch fed the union of the samples
//! (while no input sketch had collapsed) and every quantile keeps the 1% guarantee of one
//! series.
//!
//! Encoding (version 1): the aggregates as the series encoding writes them, then the number
//! of occupied bins and each bin as (index minus the previous index, zigzag varint; count,
//! varint), in increasing index order. A few bytes per occupied bin.

use super::aggregates::{Aggregates, Summary};
use super::encoding::{read_aggregates_with, write_aggregates};
use super::series::QUANTILES;
use super::sketch::{valid_index, walk, Sketch};
use crate::codec::{Decoded, Reader, Writer};

/// Version byte of an encoded state (or list of points).
pub const STATE_VERSION: u8 = 1;

/// The fewest bytes one bin takes in a payload (two one-byte varints).
const BIN_MIN_BYTES: usize = 2;
/// The fewest bytes one point takes: its start, three varints and six doubles of
/// aggregates, and an empty bin list.
const POINT_MIN_BYTES: usize = 1 + 3 + 6 * 8 + 1;

/// Aggregates and sketch bins of a set of samples, mergeable without loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub agg: Aggregates,
    /// (bin index, count): strictly increasing indexes, counts > 0.
    bins: Vec<(i32, u64)>,
}

impl State {
    /// The state of the samples `agg` aggregates and `sketches` hold (a series' all-time
    /// sketch, or the sketches of the buckets of a window or a range point).
    pub fn of(agg: &Aggregates, sketches: &[&Sketch]) -> State {
        let mut bins: Vec<(i32, u64)> = sketches.iter().flat_map(|s| s.entries()).collect();
        bins.sort_unstable_by_key(|&(i, _)| i);
        bins.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        State { agg: *agg, bins }
    }

    /// The occupied bins, (index, count) in increasing index order.
    pub fn bins(&self) -> &[(i32, u64)] {
        &self.bins
    }

    /// Samples the bins hold.
    pub fn total(&self) -> u64 {
        self.bins.iter().map(|&(_, c)| c).sum()
    }

    /// Folds `other` in, as if its samples had been added here: the aggregates exactly, the
    /// bins added up index by index (a linear merge; nothing is collapsed).
    pub fn merge(&mut self, other: &State) {
        self.agg.merge(&other.agg);
        if other.bins.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x.0 == y.0 => {
                    a.next();
                    b.next();
                    (x.0, x.1.saturating_add(y.1))
                }
                (Some(&&x), Some(&&y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            out.push(next);
        }
        self.bins = out;
    }

    /// The summary METRIC.SUMMARY would give of these samples (`None` if there are none):
    /// the aggregates' fields and the [`QUANTILES`] from the bins, the extreme ranks exact
    /// when the bins hold every sample.
    pub fn summary(&self) -> Option<Summary> {
        let mut s = self.agg.summary()?;
        let total = self.total();
        let bounds = (total == s.count).then_some((s.min, s.max));
        let fractions = QUANTILES.map(|(_, num, den)| (num, den));
        s.quantiles = walk(self.bins.iter().copied(), total, &fractions, bounds);
        Some(s)
    }

    fn write(&self, w: &mut Writer) {
        write_aggregates(w, &self.agg);
        w.uint(self.bins.len() as u64);
        let mut prev = 0i64;
        for &(i, c) in &self.bins {
            w.int(i64::from(i) - prev);
            w.uint(c);
            prev = i64::from(i);
        }
    }

    fn read(r: &mut Reader) -> Decoded<State> {
        let agg = read_aggregates_with(r, Aggregates::from_merged_parts)?;
        let n = r.count(BIN_MIN_BYTES)?;
        let mut bins = Vec::with_capacity(n);
        let mut prev = 0i64;
        let mut total = 0u64;
        for _ in 0..n {
            let i = prev
                .checked_add(r.int()?)
                .and_then(|i| i32::try_from(i).ok())
                .filter(|&i| valid_index(i))
                .ok_or("bin index out of range")?;
            let c = r.uint()?;
            if c == 0 || (!bins.is_empty() && i64::from(i) <= prev) {
                return Err("invalid bins");
            }
            total = total.checked_add(c).ok_or("invalid bins")?;
            bins.push((i, c));
            prev = i64::from(i);
        }
        // A sketch never holds more samples than the aggregates count.
        if total > agg.count {
            return Err("more binned samples than counted");
        }
        Ok(State { agg, bins })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(STATE_VERSION);
        self.write(&mut w);
        w.finish()
    }

    pub fn decode(payload: &[u8]) -> Decoded<State> {
        let mut r = versioned(payload)?;
        let state = State::read(&mut r)?;
        r.end()?;
        Ok(state)
    }
}

fn versioned(payload: &[u8]) -> Decoded<Reader<'_>> {
    match Reader::new(payload)? {
        (STATE_VERSION, r) => Ok(r),
        _ => Err("unknown encoding version"),
    }
}

/// Encodes the states of range points, `(start, state)` oldest first: the point count, then
/// each start (the first as is, the others as the gap to the previous one) and state.
pub fn encode_points(points: &[(u64, State)]) -> Vec<u8> {
    let mut w = Writer::new(STATE_VERSION);
    w.uint(points.len() as u64);
    let mut prev = 0;
    for (ts, state) in points {
        w.uint(ts - prev);
        state.write(&mut w);
        prev = *ts;
    }
    w.finish()
}

/// Decodes [`encode_points`]: starts strictly increasing, each state valid.
pub fn decode_points(payload: &[u8]) -> Decoded<Vec<(u64, State)>> {
    let mut r = versioned(payload)?;
    let n = r.count(POINT_MIN_BYTES)?;
    let mut points = Vec::with_capacity(n);
    let mut prev = 0u64;
    for i in 0..n {
        let gap = r.uint()?;
        if i > 0 && gap == 0 {
            return Err("point starts out of order");
        }
        let ts = prev.checked_add(gap).ok_or("point start out of range")?;
        points.push((ts, State::read(&mut r)?));
        prev = ts;
    }
    r.end()?;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::sketch::ALL_TIME_CAP;

    fn state_of(samples: &[f64]) -> State {
        let mut agg = Aggregates::default();
        let mut sketch = Sketch::new();
        for (i, &x) in samples.iter().enumerate() {
            agg.add(x, 1000 + i as u64);
            sketch.add(x, ALL_TIME_CAP);
        }
        State::of(&agg, &[&sketch])
    }

    #[test]
    fn a_state_round_trips_and_corrupt_payloads_are_refused() {
        for s in [
            State::default(),
            state_of(&[1.0, -2.5, 0.0, 1e300, 75.0, 75.0]),
        ] {
            let bytes = s.encode();
            assert_eq!(State::decode(&bytes), Ok(s.clone()));
            for cut in 0..bytes.len() {
                assert!(State::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert!(State::decode(&trailing).is_err());
        }
        // More binned samples than the aggregates count.
        let mut s = state_of(&[1.0]);
        s.bins[0].1 = 2;
        assert!(State::decode(&s.encode()).is_err());
        // Indexes out of order.
        let mut s = state_of(&[1.0, 2.0]);
        s.bins.swap(0, 1);
        assert!(State::decode(&s.encode()).is_err());
        assert!(State::decode(&[9]).is_err());
    }

    #[test]
    fn points_round_trip_and_a_count_is_bounded_by_the_payload() {
        let points = vec![(60_000, state_of(&[1.0, 2.0])), (180_000, state_of(&[3.0]))];
        assert_eq!(decode_points(&encode_points(&points)), Ok(points));
        assert_eq!(decode_points(&encode_points(&[])), Ok(vec![]));
        let mut w = Writer::new(STATE_VERSION);
        w.uint(1_000_000);
        assert_eq!(decode_points(&w.finish()), Err("count larger than payload"));
    }

    #[test]
    fn an_empty_state_has_no_summary_and_merging_it_changes_nothing() {
        assert_eq!(State::default().summary(), None);
        let mut s = state_of(&[4.0, 8.0]);
        let before = s.clone();
        s.merge(&State::default());
        assert_eq!(s, before);
        let mut e = State::default();
        e.merge(&before);
        assert_eq!(e, before);
    }
}
