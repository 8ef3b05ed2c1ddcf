//! RATELIMIT.* commands over the core's sliding-window log.

pub(crate) mod command;
