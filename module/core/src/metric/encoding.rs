//! The metric series' versioned encoding: what RDB saves, what AOF rewrite emits as
//! `METRIC.RESTORE key payload`, and what digests are taken from. [`decode`] reads every
//! version the module ever wrote.

use super::aggregates::Aggregates;
use super::series::{Bucket, Series, Tier};
use super::sketch::Sketch;
use crate::codec::{Decoded, Reader, Writer};

/// Current encoding version (the type's encver and the payload's first byte).
pub const ENCODING_VERSION: u8 = 2;

pub(crate) fn write_aggregates(w: &mut Writer, a: &Aggregates) {
    let (floats, ints) = a.to_parts();
    for v in ints {
        w.uint(v);
    }
    for v in floats {
        w.f64(v);
    }
}

pub(crate) fn read_aggregates(r: &mut Reader) -> Decoded<Aggregates> {
    read_aggregates_with(r, Aggregates::from_parts)
}

/// Reads aggregates, rebuilt by `build` (`Aggregates::from_parts` or `from_merged_parts`).
pub(crate) fn read_aggregates_with(
    r: &mut Reader,
    build: fn([f64; 6], [u64; 3]) -> Result<Aggregates, &'static str>,
) -> Decoded<Aggregates> {
    let mut ints = [0u64; 3];
    for v in &mut ints {
        *v = r.uint()?;
    }
    let mut floats = [0f64; 6];
    for v in &mut floats {
        *v = r.f64()?;
    }
    build(floats, ints)
}

fn write_sketch(w: &mut Writer, s: &Sketch) {
    let words = s.to_words();
    w.uint(words.len() as u64);
    for &word in words {
        w.uint(u64::from(word));
    }
}

/// The fewest bytes a sketch entry takes in a payload (a one-byte varint).
const SKETCH_ENTRY_MIN_BYTES: usize = 1;

/// The fewest bytes a bucket takes in a payload: three one-byte varints, six doubles and an
/// empty sketch's entry count. In memory a bucket takes `size_of::<Bucket>()` (96 bytes), so
/// a tier reserves less than twice its share of the payload whatever count it claims.
const BUCKET_MIN_BYTES: usize = 3 + 6 * 8 + 1;

fn read_sketch(r: &mut Reader) -> Decoded<Sketch> {
    let n = r.count(SKETCH_ENTRY_MIN_BYTES)?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        words.push(u32::try_from(r.uint()?).map_err(|_| "sketch entry out of range")?);
    }
    Sketch::from_words(words)
}

fn write_tier(w: &mut Writer, t: &Tier) {
    w.uint(t.buckets().len() as u64);
    for b in t.buckets() {
        write_aggregates(w, &b.agg);
        write_sketch(w, &b.sketch);
    }
}

fn read_tier(r: &mut Reader) -> Decoded<Vec<Bucket>> {
    let n = r.count(BUCKET_MIN_BYTES)?;
    let mut buckets = Vec::with_capacity(n);
    for _ in 0..n {
        let agg = read_aggregates(r)?;
        let sketch = read_sketch(r)?;
        buckets.push(Bucket { agg, sketch });
    }
    Ok(buckets)
}

/// v2: the all-time aggregates, the all-time sketch, then the 1 s and 60 s tiers (bucket
/// count, then each bucket's aggregates and sketch). Aggregates: count, first_ts, last_ts as
/// varints; sum, compensation, mean, m2, min, max as little-endian doubles. Sketch: entry
/// count, then each packed entry as a varint.
///
/// v1 (still read): the all-time aggregates only; such a series starts with empty buckets
/// and sketch, so its quantiles cover the samples added after the upgrade.
pub fn encode(series: &Series) -> Vec<u8> {
    let (all, sketch, fine, coarse) = series.parts();
    let mut w = Writer::new(ENCODING_VERSION);
    write_aggregates(&mut w, all);
    write_sketch(&mut w, sketch);
    write_tier(&mut w, fine);
    write_tier(&mut w, coarse);
    w.finish()
}

pub fn decode(payload: &[u8]) -> Decoded<Series> {
    let (version, mut r) = Reader::new(payload)?;
    let series = match version {
        1 => Series::from_parts(read_aggregates(&mut r)?, Sketch::new(), vec![], vec![])?,
        2 => {
            let all = read_aggregates(&mut r)?;
            let sketch = read_sketch(&mut r)?;
            let fine = read_tier(&mut r)?;
            let coarse = read_tier(&mut r)?;
            Series::from_parts(all, sketch, fine, coarse)?
        }
        _ => return Err("unknown encoding version"),
    };
    r.end()?;
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn sample_series() -> Series {
        let mut s = Series::new();
        for (i, v) in [75.0, -2.5, 1e300, 0.0, 42.0].into_iter().enumerate() {
            s.add(v, 1_700_000_000_000 + i as u64 * 30_000, HOUR);
        }
        s
    }

    #[test]
    fn encoding_round_trips_empty_and_filled_series() {
        let s = Series::new();
        assert_eq!(decode(&encode(&s)), Ok(s));
        let s = sample_series();
        assert_eq!(decode(&encode(&s)), Ok(s));
    }

    #[test]
    fn a_version_1_payload_still_loads_with_its_all_time_aggregates() {
        // Bytes as version 1 wrote them: count 2, first_ts 1000, last_ts 2000, then sum,
        // compensation, mean, m2, min, max.
        let mut w = Writer::new(1);
        for v in [2u64, 1000, 2000] {
            w.uint(v);
        }
        for v in [100.0, 0.0, 50.0, 1250.0, 25.0, 75.0] {
            w.f64(v);
        }
        let s = decode(&w.finish()).unwrap();
        let sum = s.summary().unwrap();
        assert_eq!(
            (sum.count, sum.sum, sum.avg, sum.stddev),
            (2, 100.0, 50.0, 25.0)
        );
        assert_eq!(sum.quantiles, [None; 4]);
        assert_eq!(
            encode(&s)[0],
            ENCODING_VERSION,
            "saved again in the current version"
        );
    }

    #[test]
    fn corrupt_payloads_are_refused_without_panicking() {
        let good = encode(&sample_series());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(decode(&[9]).is_err());
        let mut trailing = good;
        trailing.push(1);
        assert!(decode(&trailing).is_err());
    }

    /// A v2 payload whose fine tier claims `claimed` buckets and holds `held` bytes after the
    /// count (the all-time aggregates and sketch are empty and valid).
    fn payload_claiming(claimed: u64, held: usize) -> Vec<u8> {
        let mut w = Writer::new(ENCODING_VERSION);
        write_aggregates(&mut w, &Aggregates::default());
        w.uint(0);
        w.uint(claimed);
        let mut buf = w.finish();
        buf.resize(buf.len() + held, 0);
        buf
    }

    #[test]
    fn a_bucket_count_is_bounded_by_the_bytes_its_buckets_need() {
        // The smallest encoding of a bucket is what the bound assumes.
        let mut w = Writer::new(0);
        for _ in 0..3 {
            w.uint(0);
        }
        for _ in 0..6 {
            w.f64(0.0);
        }
        write_sketch(&mut w, &Sketch::new());
        assert_eq!(w.finish().len() - 1, BUCKET_MIN_BYTES);
        assert!(std::mem::size_of::<Bucket>() < 2 * BUCKET_MIN_BYTES);
        // 1,000 claimed buckets in 1,000 bytes: refused by the count, before any reservation
        // (the old bound, one byte per item, reserved 96 KB here: 96 times the payload).
        assert_eq!(
            decode(&payload_claiming(1000, 1000)),
            Err("count larger than payload")
        );
        assert_eq!(
            decode(&payload_claiming(u64::MAX, 64)),
            Err("count larger than payload")
        );
        // Enough bytes for the count: the buckets themselves are then checked.
        assert!(decode(&payload_claiming(2, 2 * BUCKET_MIN_BYTES)).is_err());
    }
}
