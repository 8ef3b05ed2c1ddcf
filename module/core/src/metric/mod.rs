//! A metric series: aggregates, the quantile sketch, the time-bucketed series, and the series'
//! versioned encoding.
//!
//! Reading a series saved by the module: [`encoding::decode`] (every encoding version).
//! Summarizing several series as one: [`summarize`] over their merged all-time
//! [`Aggregates`] and their all-time sketches ([`Series::all_time`]).

pub mod aggregates;
pub mod encoding;
#[cfg(test)]
mod merge_proptests;
#[cfg(test)]
mod proptests;
pub mod series;
pub mod sketch;
pub mod state;

pub use aggregates::{Aggregates, Summary};
pub use series::{summarize, Series};
pub use sketch::Sketch;
pub use state::State;
