//! The rate-limit log data type and its commands.

pub mod command;
pub mod log;
#[cfg(test)]
mod proptests;
pub mod rdb;
