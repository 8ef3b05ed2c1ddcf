//! RATELIMIT.* commands over the core's sliding-window log.

pub mod command;
