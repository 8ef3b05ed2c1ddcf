//! Module configuration (Redis 7.0 module config API): `tally.retention-ms` and
//! `tally.series-ttl-ms`, readable and settable with CONFIG GET/SET, given in redis.conf or on
//! the command line (`--tally.retention-ms 600000`), or as module arguments after the path
//! (`--loadmodule libtally.so retention-ms 600000`).

use std::sync::atomic::{AtomicI64, Ordering};

/// How long samples stay visible to windows and ranges.
pub static RETENTION_MS: AtomicI64 = AtomicI64::new(RETENTION_DEFAULT);
/// Idle series expiry; 0 = off.
pub static SERIES_TTL_MS: AtomicI64 = AtomicI64::new(0);

pub const RETENTION_DEFAULT: i64 = 3_600_000;
pub const RETENTION_MIN: i64 = 1000;
/// Seven days: 10,080 minute buckets per series at most.
pub const RETENTION_MAX: i64 = 7 * 24 * 3_600_000;
pub const TTL_MAX: i64 = i64::MAX / 2;

pub fn retention_ms() -> u64 {
    RETENTION_MS.load(Ordering::Relaxed) as u64
}

pub fn series_ttl_ms() -> u64 {
    SERIES_TTL_MS.load(Ordering::Relaxed) as u64
}

/// (name, variable, default, min, max) of every setting.
pub const SETTINGS: [(&str, &AtomicI64, i64, i64, i64); 2] = [
    (
        "retention-ms",
        &RETENTION_MS,
        RETENTION_DEFAULT,
        RETENTION_MIN,
        RETENTION_MAX,
    ),
    ("series-ttl-ms", &SERIES_TTL_MS, 0, 0, TTL_MAX),
];

/// Defaults from module arguments (`name value` pairs, `tally.` prefix optional), strictly
/// parsed and range-checked; an unknown name or bad value is an error naming it.
pub fn defaults_from_args(args: &[&[u8]]) -> Result<[i64; 2], String> {
    let mut values = SETTINGS.map(|(_, _, default, _, _)| default);
    if !args.len().is_multiple_of(2) {
        return Err("module arguments must be name value pairs".into());
    }
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]);
        let short = name.strip_prefix("tally.").unwrap_or(&name);
        let Some(i) = SETTINGS.iter().position(|s| s.0 == short) else {
            return Err(format!("unknown module argument '{name}'"));
        };
        let (_, _, _, min, max) = SETTINGS[i];
        let value = std::str::from_utf8(pair[1])
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| format!("tally.{short} must be an integer between {min} and {max}"))?;
        values[i] = value;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_arguments_set_defaults_with_or_without_the_prefix() {
        assert_eq!(defaults_from_args(&[]), Ok([3_600_000, 0]));
        assert_eq!(
            defaults_from_args(&[b"retention-ms", b"600000", b"tally.series-ttl-ms", b"5000"]),
            Ok([600_000, 5000])
        );
    }

    #[test]
    fn bad_module_arguments_name_the_setting() {
        for (args, needle) in [
            (&[&b"retention-ms"[..], b"999"][..], "tally.retention-ms"),
            (&[b"retention-ms", b"1e6"], "tally.retention-ms"),
            (&[b"series-ttl-ms", b"-1"], "tally.series-ttl-ms"),
            (&[b"bogus", b"1"], "bogus"),
            (&[b"retention-ms"], "pairs"),
        ] {
            let err = defaults_from_args(args).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
