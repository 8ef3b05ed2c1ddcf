//! Incrementally maintained aggregates of a set of samples: count, sum, min, max, mean and
//! variance. Pure Rust, no Redis.
//!
//! The sum is compensated (Neumaier) and the variance uses Welford's update, so long series
//! of similar values keep their precision; two aggregates merge exactly (Chan et al.), which
//! is what windowed summaries over time buckets build on.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregates {
    pub count: u64,
    sum: f64,
    /// Neumaier compensation: the low-order bits lost by `sum`.
    comp: f64,
    mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    pub min: f64,
    pub max: f64,
    pub first_ts: u64,
    pub last_ts: u64,
}

/// What METRIC.SUMMARY reports for a non-empty set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    /// Population standard deviation.
    pub stddev: f64,
    pub first_ts: u64,
    pub last_ts: u64,
    /// p50, p90, p95, p99 (`series::QUANTILES`), filled in from a sketch by the series; `None`
    /// where no sketch covers the samples (aggregates alone, or a series loaded from the v1
    /// encoding).
    pub quantiles: [Option<f64>; 4],
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates {
            count: 0,
            sum: 0.0,
            comp: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first_ts: u64::MAX,
            last_ts: 0,
        }
    }
}

impl Aggregates {
    pub fn add(&mut self, value: f64, ts: u64) {
        self.count += 1;
        self.add_to_sum(value);
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.first_ts = self.first_ts.min(ts);
        self.last_ts = self.last_ts.max(ts);
    }

    /// Folds `other` in, as if its samples had been added here.
    pub fn merge(&mut self, other: &Aggregates) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        let (na, nb) = (self.count as f64, other.count as f64);
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.add_to_sum(other.sum);
        self.add_to_sum(other.comp);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.first_ts = self.first_ts.min(other.first_ts);
        self.last_ts = self.last_ts.max(other.last_ts);
    }

    fn add_to_sum(&mut self, value: f64) {
        let t = self.sum + value;
        if self.sum.abs() >= value.abs() {
            self.comp += (self.sum - t) + value;
        } else {
            self.comp += (value - t) + self.sum;
        }
        self.sum = t;
    }

    pub fn summary(&self) -> Option<Summary> {
        (self.count > 0).then(|| {
            let sum = self.sum + self.comp;
            Summary {
                count: self.count,
                sum,
                min: self.min,
                max: self.max,
                avg: sum / self.count as f64,
                stddev: (self.m2 / self.count as f64).max(0.0).sqrt(),
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                quantiles: [None; 4],
            }
        })
    }

    /// The raw state, in a fixed order, for encoding and digests.
    pub fn to_parts(&self) -> ([f64; 6], [u64; 3]) {
        (
            [self.sum, self.comp, self.mean, self.m2, self.min, self.max],
            [self.count, self.first_ts, self.last_ts],
        )
    }

    /// [`Aggregates::from_parts`] for merged aggregates (a window, a range point): adding up
    /// values near the double range can overflow the sum and leave the mean and variance NaN,
    /// which a merged state must carry as the module computed it. Min, max, counts and
    /// timestamps are checked as usual.
    pub fn from_merged_parts(f: [f64; 6], u: [u64; 3]) -> Result<Self, &'static str> {
        let mut checked = f;
        checked[..4].fill(0.0);
        let base = Self::from_parts(checked, u)?;
        if base.count == 0 && f != checked {
            return Err("empty aggregates with data");
        }
        let [sum, comp, mean, m2, ..] = f;
        Ok(Aggregates {
            sum,
            comp,
            mean,
            m2,
            ..base
        })
    }

    /// Rebuilds aggregates from `to_parts`, refusing states no sequence of adds can produce.
    pub fn from_parts(f: [f64; 6], u: [u64; 3]) -> Result<Self, &'static str> {
        let [sum, comp, mean, m2, min, max] = f;
        let [count, first_ts, last_ts] = u;
        let a = Aggregates {
            count,
            sum,
            comp,
            mean,
            m2,
            min,
            max,
            first_ts,
            last_ts,
        };
        if count == 0 {
            return if a == Aggregates::default() {
                Ok(a)
            } else {
                Err("empty aggregates with data")
            };
        }
        // Counts and timestamps beyond i64::MAX are never written (replies are signed): such
        // a payload is corrupt, and adding to it could overflow.
        if count > i64::MAX as u64 || last_ts > i64::MAX as u64 {
            return Err("count or timestamp out of range");
        }
        if f.iter().any(|v| v.is_nan()) || min > max || first_ts > last_ts {
            return Err("inconsistent aggregates");
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(samples: &[(f64, u64)]) -> Aggregates {
        let mut a = Aggregates::default();
        for &(v, t) in samples {
            a.add(v, t);
        }
        a
    }

    #[test]
    fn an_empty_series_has_no_summary() {
        assert_eq!(Aggregates::default().summary(), None);
    }

    #[test]
    fn summary_fields_match_the_definitions() {
        let s = of(&[
            (2.0, 30),
            (4.0, 10),
            (4.0, 20),
            (4.0, 40),
            (5.0, 50),
            (5.0, 60),
            (7.0, 70),
            (9.0, 80),
        ])
        .summary()
        .unwrap();
        assert_eq!(s.count, 8);
        assert_eq!(s.sum, 40.0);
        assert_eq!(s.avg, 5.0);
        assert_eq!(s.stddev, 2.0);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert_eq!((s.first_ts, s.last_ts), (10, 80));
    }

    #[test]
    fn precision_holds_over_many_small_values_around_a_large_offset() {
        let mut a = Aggregates::default();
        for i in 0..1_000_000u64 {
            a.add(1e9 + (i % 2) as f64 * 0.1, i);
        }
        let s = a.summary().unwrap();
        assert!((s.avg - (1e9 + 0.05)).abs() < 1e-6, "{}", s.avg);
        assert!((s.stddev - 0.05).abs() < 1e-6, "{}", s.stddev);
        assert!((s.sum - (1e15 + 50_000.0)).abs() < 0.1, "{}", s.sum);
    }

    #[test]
    fn merging_equals_adding_everything_to_one() {
        let xs: Vec<(f64, u64)> = (0..100)
            .map(|i| ((i * 37 % 101) as f64 - 50.0, i))
            .collect();
        let mut left = of(&xs[..30]);
        left.merge(&of(&xs[30..]));
        let whole = of(&xs).summary().unwrap();
        let merged = left.summary().unwrap();
        assert_eq!(merged.count, whole.count);
        assert!((merged.sum - whole.sum).abs() < 1e-9);
        assert!((merged.stddev - whole.stddev).abs() < 1e-9);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        let mut empty = Aggregates::default();
        empty.merge(&Aggregates::default());
        assert_eq!(empty.summary(), None);
    }

    #[test]
    fn parts_round_trip_and_inconsistent_parts_are_refused() {
        let a = of(&[(1.5, 5), (-3.0, 9)]);
        let (f, u) = a.to_parts();
        assert_eq!(Aggregates::from_parts(f, u), Ok(a));
        let (f, u) = Aggregates::default().to_parts();
        assert!(Aggregates::from_parts(f, u).is_ok());
        assert!(Aggregates::from_parts([0.0, 0.0, 0.0, 0.0, 5.0, 1.0], [2, 1, 2]).is_err());
        assert!(Aggregates::from_parts([f64::NAN, 0.0, 0.0, 0.0, 1.0, 1.0], [1, 1, 1]).is_err());
        assert!(Aggregates::from_parts([1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [0, 1, 1]).is_err());
        assert!(Aggregates::from_parts([1.0, 0.0, 1.0, 0.0, 1.0, 1.0], [u64::MAX, 1, 1]).is_err());
    }
}
