//! The metric series data type and its commands.

pub mod aggregates;
pub mod command;
pub mod rdb;
pub mod series;
pub mod sketch;
