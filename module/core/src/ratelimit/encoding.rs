//! The rate-limit log's versioned encoding: what RDB saves, what AOF rewrite emits as
//! `RATELIMIT.RESTORE key payload`, and what digests are taken from.

use super::log::{Builder, Log};
use crate::codec::{Decoded, Reader, Writer};

/// Current encoding version (the type's encver and the payload's first byte).
pub const ENCODING_VERSION: u8 = 1;

/// The fewest bytes an entry takes in a payload: two one-byte varints.
const ENTRY_MIN_BYTES: usize = 2;

/// v1: horizon, entry count, then per entry the timestamp (first absolute, then the delta
/// from the previous one) and the cost, all varints.
///
/// Decoding reserves nothing from the count: entries go one by one into the log, which holds
/// at most 12 bytes (times its growth slack of 2) for each entry of at least 2 payload bytes.
/// Costs above what CHECK accepts (`MAX_AMOUNT`) are refused.
pub fn encode(log: &Log) -> Vec<u8> {
    let mut w = Writer::new(ENCODING_VERSION);
    w.uint(log.horizon_ms());
    w.uint(log.len() as u64);
    let mut prev = 0;
    for (ts, cost) in log.entries() {
        w.uint(ts - prev);
        w.uint(cost);
        prev = ts;
    }
    w.finish()
}

pub fn decode(payload: &[u8]) -> Decoded<Log> {
    let (version, mut r) = Reader::new(payload)?;
    let log = match version {
        1 => {
            let mut log = Builder::new(r.uint()?)?;
            let n = r.count(ENTRY_MIN_BYTES)?;
            let mut ts: u64 = 0;
            for _ in 0..n {
                ts = ts.checked_add(r.uint()?).ok_or("timestamp overflow")?;
                log.push(ts, r.uint()?)?;
            }
            log.finish()
        }
        _ => return Err("unknown encoding version"),
    };
    r.end()?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::log::Policy;

    #[test]
    fn encoding_round_trips_weighted_and_unit_logs() {
        let mut log = Log::new();
        let p = [Policy {
            limit: 100,
            window_ms: 60_000,
        }];
        for (t, c) in [
            (1_700_000_000_000, 1),
            (1_700_000_000_005, 3),
            (1_700_000_000_005, 1),
        ] {
            log.check(t, &p, c);
        }
        let back = decode(&encode(&log)).unwrap();
        assert_eq!(
            back.entries().collect::<Vec<_>>(),
            log.entries().collect::<Vec<_>>()
        );
        assert_eq!(back.horizon_ms(), 60_000);
        assert_eq!(
            decode(&encode(&Log::from_entries(5, []).unwrap()))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn corrupt_payloads_are_refused_without_panicking() {
        let good = {
            let mut log = Log::new();
            log.check(
                10,
                &[Policy {
                    limit: 5,
                    window_ms: 100,
                }],
                2,
            );
            encode(&log)
        };
        assert!(decode(&[]).is_err());
        assert!(decode(&[2]).is_err(), "unknown version");
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        // A timestamp past i64::MAX (found by the property tests): refused, not wrapped.
        assert!(decode(&[1, 1, 1, 129, 128, 128, 128, 240, 255, 255, 255, 255, 1, 1]).is_err());
        // A huge entry count with no entries behind it must not allocate or loop.
        assert!(decode(&[1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    /// A payload of horizon 1000 and the given `(delta, cost)` entries, claiming `count`.
    fn payload(count: u64, entries: &[(u64, u64)]) -> Vec<u8> {
        let mut w = Writer::new(ENCODING_VERSION);
        w.uint(1000);
        w.uint(count);
        for &(dt, cost) in entries {
            w.uint(dt);
            w.uint(cost);
        }
        w.finish()
    }

    #[test]
    fn an_entry_count_is_bounded_by_two_bytes_per_entry() {
        let entries = [(1_700_000_000_000, 1), (0, 1), (0, 1)];
        assert_eq!(decode(&payload(3, &entries)).unwrap().len(), 3);
        // Each entry takes at least 2 bytes: a count past what the bytes left hold is
        // refused before any entry is read.
        assert_eq!(
            decode(&payload(20, &entries)).err(),
            Some("count larger than payload")
        );
        assert_eq!(
            decode(&payload(u64::MAX, &entries)).err(),
            Some("count larger than payload")
        );
    }

    #[test]
    fn a_cost_check_would_refuse_is_refused() {
        let max = crate::ratelimit::log::MAX_AMOUNT;
        let ok = decode(&payload(2, &[(5, max), (1, max)])).unwrap();
        assert_eq!(ok.entries().collect::<Vec<_>>(), vec![(5, max), (6, max)]);
        for cost in [max + 1, u64::MAX] {
            assert_eq!(
                decode(&payload(2, &[(5, 1), (1, cost)])).err(),
                Some("entry cost out of range")
            );
        }
    }
}
