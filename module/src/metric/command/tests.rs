//! The METRIC.* grammar as tables of `argv -> Ok(command) / Err(message)`: the messages are
//! the exact error replies (before Redis adds the command name to the arity error).

use super::{Add, Bound, Export, Part, Range, Summary};
use crate::command::testing::{error, parse, CLIENT, REPLAY};
use crate::command::{Command, Env};

const ARITY: &str = "ERR wrong number of arguments";

fn add(words: &[&str], env: &Env) -> Add {
    parse::<Add>(&[&["METRIC.ADD", "k"], words].concat(), env).unwrap()
}

fn add_error(words: &[&str], env: &Env) -> String {
    error::<Add>(&[&["METRIC.ADD", "k"], words].concat(), env)
}

#[test]
fn add_parses_a_value_and_an_optional_timestamp() {
    let cases: &[(&[&str], Add)] = &[
        (
            &["42.5"],
            Add {
                value: 42.5,
                ts: None,
                applied: None,
            },
        ),
        (
            &["-1e3", "TS", "0"],
            Add {
                value: -1000.0,
                ts: Some(0),
                applied: None,
            },
        ),
        (
            &["1", "ts", "9223372036854775807"],
            Add {
                value: 1.0,
                ts: Some(i64::MAX as u64),
                applied: None,
            },
        ),
    ];
    for env in [CLIENT, REPLAY] {
        for (words, want) in cases {
            assert_eq!(&add(words, &env), want, "{words:?}");
        }
    }
}

#[test]
fn add_refuses_bad_arguments_with_the_exact_message() {
    let cases: &[(&[&str], &str)] = &[
        (&[], ARITY),
        (&["1", "TS"], ARITY),
        (&["1", "TS", "5", "RETENTION"], ARITY),
        (&["1", "TS", "5", "RETENTION", "1000", "NOW"], ARITY),
        (&["nan"], "ERR value must be a finite number"),
        (&["inf"], "ERR value must be a finite number"),
        (&["-inf"], "ERR value must be a finite number"),
        (&["1e400"], "ERR value must be a finite number"),
        (&["12abc"], "ERR value must be a finite number"),
        (&[""], "ERR value must be a finite number"),
        (&["nan", "TS", "5"], "ERR value must be a finite number"),
        (&["1", "TS", "-5"], "ERR TS must be a non-negative integer"),
        (&["1", "TS", "1.5"], "ERR TS must be a non-negative integer"),
        (
            &["1", "TS", "9223372036854775808"],
            "ERR TS must be a non-negative integer",
        ),
        (&["1", "AT", "5"], "ERR syntax error near 'AT'"),
    ];
    for env in [CLIENT, REPLAY] {
        for (words, want) in cases {
            assert_eq!(add_error(words, &env), *want, "{words:?}");
        }
    }
}

#[test]
fn retention_and_now_are_accepted_only_from_a_replayed_effect() {
    let effect = ["1.5", "TS", "1000", "RETENTION", "60000", "NOW", "2000"];
    assert_eq!(
        add(&effect, &REPLAY),
        Add {
            value: 1.5,
            ts: Some(1000),
            applied: Some((60_000, 2000)),
        }
    );
    assert_eq!(
        add_error(&effect, &CLIENT),
        "ERR RETENTION and NOW are internal arguments (replication and AOF only)"
    );
    // Keywords come first (both, before either value), then who sent it, then the values.
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["1", "TS", "1", "KEEP", "60000", "NOW", "2000"],
            "ERR syntax error near 'KEEP'",
            "ERR syntax error near 'KEEP'",
        ),
        (
            &["1", "TS", "1", "RETENTION", "x", "THEN", "2000"],
            "ERR syntax error near 'THEN'",
            "ERR syntax error near 'THEN'",
        ),
        (
            &["1", "TS", "1", "RETENTION", "0", "NOW", "2000"],
            "ERR RETENTION and NOW are internal arguments (replication and AOF only)",
            "ERR RETENTION must be a positive integer",
        ),
        (
            &["1", "TS", "1", "RETENTION", "604800001", "NOW", "2000"],
            "ERR RETENTION and NOW are internal arguments (replication and AOF only)",
            "ERR RETENTION must be an integer between 1 and 604800000",
        ),
        (
            &["1", "TS", "1", "RETENTION", "1000", "NOW", "-1"],
            "ERR RETENTION and NOW are internal arguments (replication and AOF only)",
            "ERR NOW must be a non-negative integer",
        ),
    ];
    for (words, client, replay) in cases {
        assert_eq!(add_error(words, &CLIENT), *client, "{words:?}");
        assert_eq!(add_error(words, &REPLAY), *replay, "{words:?}");
    }
}

#[test]
fn summary_takes_an_optional_window_up_to_the_retention() {
    let ok: &[(&[&str], Option<u64>)] = &[
        (&["METRIC.SUMMARY", "k"], None),
        (&["METRIC.SUMMARY", "k", "window", "1"], Some(1)),
        (
            &["METRIC.SUMMARY", "k", "WINDOW", "3600000"],
            Some(3_600_000),
        ),
    ];
    for (words, window_ms) in ok {
        let s = parse::<Summary>(words, &CLIENT).unwrap();
        assert_eq!(s.window_ms, *window_ms, "{words:?}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["METRIC.SUMMARY"], ARITY),
        (&["METRIC.SUMMARY", "k", "WINDOW"], ARITY),
        (&["METRIC.SUMMARY", "k", "WINDOW", "1", "2"], ARITY),
        (
            &["METRIC.SUMMARY", "k", "WINDOW", "0"],
            "ERR window_ms must be a positive integer",
        ),
        (
            &["METRIC.SUMMARY", "k", "WINDOW", "3600001"],
            "ERR window_ms must be an integer between 1 and 3600000",
        ),
        (
            &["METRIC.SUMMARY", "k", "LAST", "5"],
            "ERR syntax error near 'LAST'",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(error::<Summary>(words, &CLIENT), *want, "{words:?}");
    }
    // The bound follows the retention in force.
    let short = Env {
        retention_ms: 60_000,
        ..CLIENT
    };
    assert_eq!(
        error::<Summary>(&["METRIC.SUMMARY", "k", "WINDOW", "60001"], &short),
        "ERR window_ms must be an integer between 1 and 60000"
    );
}

#[test]
fn range_takes_two_bounds_and_a_bucket_width() {
    let ok: &[(&[&str], Range)] = &[
        (
            &["METRIC.RANGE", "k", "-", "+", "60000"],
            Range {
                from: Bound::Oldest,
                to: Bound::Newest,
                bucket_ms: 60_000,
                quantiles: false,
            },
        ),
        (
            &["METRIC.RANGE", "k", "0", "1700000000000", "1000"],
            Range {
                from: Bound::At(0),
                to: Bound::At(1_700_000_000_000),
                bucket_ms: 1000,
                quantiles: false,
            },
        ),
        (
            &["METRIC.RANGE", "k", "+", "-", "1000"],
            Range {
                from: Bound::Newest,
                to: Bound::Oldest,
                bucket_ms: 1000,
                quantiles: false,
            },
        ),
        (
            &["METRIC.RANGE", "k", "-", "+", "1000", "quantiles"],
            Range {
                from: Bound::Oldest,
                to: Bound::Newest,
                bucket_ms: 1000,
                quantiles: true,
            },
        ),
    ];
    for (words, want) in ok {
        assert_eq!(&parse::<Range>(words, &CLIENT).unwrap(), want, "{words:?}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["METRIC.RANGE", "k", "-", "+"], ARITY),
        (
            &["METRIC.RANGE", "k", "-", "+", "1000", "x"],
            "ERR syntax error near 'x'",
        ),
        (
            &["METRIC.RANGE", "k", "-", "+", "1000", "QUANTILES", "x"],
            ARITY,
        ),
        (
            &["METRIC.RANGE", "k", "x", "+", "1000"],
            "ERR from_ms must be a non-negative integer, - or +",
        ),
        (
            &["METRIC.RANGE", "k", "--", "+", "1000"],
            "ERR from_ms must be a non-negative integer, - or +",
        ),
        (
            &["METRIC.RANGE", "k", "-", "y", "1000"],
            "ERR to_ms must be a non-negative integer, - or +",
        ),
        (
            &["METRIC.RANGE", "k", "-", "+", "1500"],
            "ERR bucket_ms must be a positive multiple of 1000",
        ),
        (
            &["METRIC.RANGE", "k", "-", "+", "0"],
            "ERR bucket_ms must be a positive integer",
        ),
        (
            &["METRIC.RANGE", "k", "-", "+", "9223372036854775808"],
            "ERR bucket_ms must be an integer between 1 and 9223372036854775807",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(error::<Range>(words, &CLIENT), *want, "{words:?}");
    }
}

#[test]
fn the_registration_entries_match_the_documented_commands() {
    assert_eq!(
        (Add::NAME, Add::FLAGS),
        (c"METRIC.ADD", "write deny-oom fast")
    );
    assert_eq!(
        (Summary::NAME, Summary::FLAGS),
        (c"METRIC.SUMMARY", "readonly fast")
    );
    assert_eq!((Range::NAME, Range::FLAGS), (c"METRIC.RANGE", "readonly"));
}

#[test]
fn export_takes_nothing_a_window_or_a_range() {
    let ok: &[(&[&str], Part)] = &[
        (&["METRIC.EXPORT", "k"], Part::AllTime),
        (
            &["METRIC.EXPORT", "k", "window", "60000"],
            Part::Window(60_000),
        ),
        (
            &["METRIC.EXPORT", "k", "RANGE", "-", "2000", "1000"],
            Part::Range((Bound::Oldest, Bound::At(2000), 1000)),
        ),
    ];
    for (words, want) in ok {
        assert_eq!(
            &parse::<Export>(words, &CLIENT).unwrap().part,
            want,
            "{words:?}"
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (&["METRIC.EXPORT"], ARITY),
        (&["METRIC.EXPORT", "k", "WINDOW"], ARITY),
        (&["METRIC.EXPORT", "k", "RANGE", "-", "+"], ARITY),
        (
            &["METRIC.EXPORT", "k", "LIMIT", "5"],
            "ERR syntax error near 'LIMIT'",
        ),
        (
            &["METRIC.EXPORT", "k", "WINDOW", "0"],
            "ERR window_ms must be a positive integer",
        ),
        (
            &["METRIC.EXPORT", "k", "RANGE", "-", "+", "1500"],
            "ERR bucket_ms must be a positive multiple of 1000",
        ),
        (
            &["METRIC.EXPORT", "k", "RANGE", "x", "+", "1000"],
            "ERR from_ms must be a non-negative integer, - or +",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(error::<Export>(words, &CLIENT), *want, "{words:?}");
    }
}
