//! A metric series: everything METRIC.* knows about one metric, maintained on every add.
//! Pure Rust, no Redis.

use super::aggregates::{Aggregates, Summary};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// All-time aggregates: every sample ever added.
    all: Aggregates,
}

impl Series {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample; `value` is finite. O(1).
    pub fn add(&mut self, value: f64, ts: u64) {
        self.all.add(value, ts);
    }

    pub fn count(&self) -> u64 {
        self.all.count
    }

    /// The all-time summary, `None` with no samples. O(1): it is maintained, not computed.
    pub fn summary(&self) -> Option<Summary> {
        self.all.summary()
    }

    pub fn all_time(&self) -> &Aggregates {
        &self.all
    }

    pub fn from_all_time(all: Aggregates) -> Self {
        Series { all }
    }

    pub fn heap_bytes(&self) -> usize {
        0
    }
}
