//! A metric series: aggregates, the quantile sketch, the time-bucketed series, and the series'
//! versioned encoding.

pub mod aggregates;
pub mod encoding;
#[cfg(test)]
mod proptests;
pub mod series;
pub mod sketch;

pub use aggregates::{Aggregates, Summary};
pub use series::Series;
pub use sketch::Sketch;
