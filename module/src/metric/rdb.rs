//! The metric series' data type: versioned encoding and the Redis type callbacks
//! (the callbacks themselves are shared, in `datatype`).

use std::ffi::CStr;

use redis_module::native_types::RedisType;

use super::aggregates::Aggregates;
use super::series::Series;
use crate::codec::{Decoded, Reader, Writer};
use crate::datatype::{type_methods, ModuleValue};

/// Current encoding version (the type's encver and the payload's first byte).
pub const ENCODING_VERSION: u8 = 1;

pub static SERIES_TYPE: RedisType = RedisType::new(
    "tally-met",
    ENCODING_VERSION as i32,
    type_methods::<Series>(),
);

fn write_aggregates(w: &mut Writer, a: &Aggregates) {
    let (floats, ints) = a.to_parts();
    for v in ints {
        w.uint(v);
    }
    for v in floats {
        w.f64(v);
    }
}

fn read_aggregates(r: &mut Reader) -> Decoded<Aggregates> {
    let mut ints = [0u64; 3];
    for v in &mut ints {
        *v = r.uint()?;
    }
    let mut floats = [0f64; 6];
    for v in &mut floats {
        *v = r.f64()?;
    }
    Aggregates::from_parts(floats, ints)
}

/// v1: the all-time aggregates (count, first_ts, last_ts as varints; sum, compensation,
/// mean, m2, min, max as little-endian doubles).
pub fn encode(series: &Series) -> Vec<u8> {
    let mut w = Writer::new(ENCODING_VERSION);
    write_aggregates(&mut w, series.all_time());
    w.finish()
}

pub fn decode(payload: &[u8]) -> Decoded<Series> {
    let (version, mut r) = Reader::new(payload)?;
    let series = match version {
        1 => Series::from_all_time(read_aggregates(&mut r)?),
        _ => return Err("unknown encoding version"),
    };
    r.end()?;
    Ok(series)
}

impl ModuleValue for Series {
    const ENCODING_VERSION: u8 = ENCODING_VERSION;
    const RESTORE_COMMAND: &'static CStr = c"METRIC.RESTORE";

    fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    fn decode(payload: &[u8]) -> Decoded<Self> {
        decode(payload)
    }

    fn heap_bytes(&self) -> usize {
        Series::heap_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_empty_and_filled_series() {
        let mut s = Series::new();
        assert_eq!(decode(&encode(&s)), Ok(s.clone()));
        for (v, t) in [(75.0, 1000), (-2.5, 900), (1e300, 5000)] {
            s.add(v, t);
        }
        assert_eq!(decode(&encode(&s)), Ok(s));
    }

    #[test]
    fn corrupt_payloads_are_refused_without_panicking() {
        let mut s = Series::new();
        s.add(1.0, 1);
        let good = encode(&s);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(decode(&[9]).is_err());
        let mut trailing = good;
        trailing.push(1);
        assert!(decode(&trailing).is_err());
    }
}
