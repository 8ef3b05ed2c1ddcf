//! tally's pure core: the data structures behind the module's commands and their versioned
//! encodings, with no Redis, no FFI and no I/O. Every operation takes the time (`now_ms`) and
//! the settings it needs as arguments, so everything here is tested as plain Rust.
//!
//! - [`ratelimit`]: the exact sliding-window log ([`ratelimit::Log`]: check, peek, record)
//!   and its encoding;
//! - [`metric`]: aggregates ([`metric::Aggregates`], mergeable), the quantile sketch
//!   ([`metric::Sketch`], mergeable), the series of time buckets ([`metric::Series`]) and the
//!   series encoding ([`metric::encoding::decode`] reads every version the module wrote);
//! - [`codec`]: the byte writer and reader every encoding is built on.
//!
//! The module (`tally`, `libtally.so`) is a thin adapter over this crate: it parses commands,
//! opens keys, replicates and replies. Anything else that has to read the module's values or
//! merge them exactly as the module does (sketches across series) depends on this crate.

pub mod codec;
pub mod metric;
pub mod ratelimit;
#[cfg(test)]
mod test_support;
