//! METRIC.* commands over the core's metric series.

pub(crate) mod command;
