//! The RESTORE commands' grammar: a payload each type's decoder reads, or the corruption named.

use std::ffi::CStr;

use tally_core::metric::{encoding as series_encoding, Series};
use tally_core::ratelimit::{encoding as log_encoding, Log};

use super::{ModuleValue, Restore};
use crate::command::testing::{error, parse_argv, CLIENT};
use crate::command::Command;

const ARITY: &str = "ERR wrong number of arguments";

fn name<T: ModuleValue>() -> &'static str {
    <Restore<T> as Command>::NAME.to_str().unwrap()
}

/// Arity and framing errors, the same for every type.
fn refuses_bad_calls<T: ModuleValue + std::fmt::Debug>(version: &str, unknown: &str) {
    let n = name::<T>();
    let cases: &[(&[&str], &str)] = &[
        (&[n, "k"], ARITY),
        (&[n, "k", version, "x"], ARITY),
        (&[n, "k", ""], "ERR invalid serialized value: empty payload"),
        (
            &[n, "k", unknown],
            "ERR invalid serialized value: unknown encoding version",
        ),
        (
            &[n, "k", &format!("{version}\u{80}")],
            "ERR invalid serialized value: truncated varint",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(error::<Restore<T>>(words, &CLIENT), *want, "{words:?}");
    }
}

#[test]
fn ratelimit_restore_decodes_its_payload_or_names_the_corruption() {
    let mut log = Log::new();
    log.record(1_700_000_000_000, 2, 60_000);
    let payload = log_encoding::encode(&log);
    let back =
        parse_argv::<Restore<Log>>(&[b"RATELIMIT.RESTORE", b"k", &payload], &CLIENT).unwrap();
    assert_eq!(back.0, log);
    refuses_bad_calls::<Log>("\u{1}", "garbage");
}

#[test]
fn metric_restore_decodes_its_payload_or_names_the_corruption() {
    let mut series = Series::new();
    series.add(42.5, 1_700_000_000_000, 3_600_000);
    let payload = series_encoding::encode(&series);
    let back =
        parse_argv::<Restore<Series>>(&[b"METRIC.RESTORE", b"k", &payload], &CLIENT).unwrap();
    assert_eq!(back.0, series);
    refuses_bad_calls::<Series>("\u{2}", "\u{9}");
    assert_eq!(
        error::<Restore<Series>>(&["METRIC.RESTORE", "k", "\u{2}\u{0}"], &CLIENT),
        "ERR invalid serialized value: truncated varint"
    );
}

#[test]
fn each_type_restores_with_its_own_command() {
    let names: [&CStr; 2] = [
        <Restore<Log> as Command>::NAME,
        <Restore<Series> as Command>::NAME,
    ];
    assert_eq!(names, [c"RATELIMIT.RESTORE", c"METRIC.RESTORE"]);
    assert_eq!(<Restore<Log> as Command>::FLAGS, "write deny-oom");
}
