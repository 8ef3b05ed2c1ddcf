//! The rate-limit log: the algorithm and memory layout of an exact sliding-window log, and its
//! versioned encoding.

pub mod encoding;
pub mod log;
#[cfg(test)]
mod proptests;

pub use log::{Decision, Log, Policy, PolicyState, MAX_AMOUNT, MAX_WINDOW_MS};
