//! METRIC.* commands over the core's metric series.

pub mod command;
