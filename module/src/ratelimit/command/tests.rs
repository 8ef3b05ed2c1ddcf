//! The RATELIMIT.* grammar as tables of `argv -> Ok(command) / Err(message)`: the messages are
//! the exact error replies (before Redis adds the command name to the arity error).

use tally_core::ratelimit::Policy;

use super::{Check, Peek, Record};
use crate::command::testing::{error, parse, CLIENT};
use crate::command::Command;

const ARITY: &str = "ERR wrong number of arguments";

fn pol(limit: u64, window_ms: u64) -> Policy {
    Policy { limit, window_ms }
}

/// The policies and cost of a parsed request.
type Parsed = (Vec<Policy>, u64);

/// CHECK and PEEK share their grammar: every case holds for both.
fn request(words: &[&str]) -> Parsed {
    let check = parse::<Check>(&[&["RATELIMIT.CHECK"], words].concat(), &CLIENT).unwrap();
    let peek = parse::<Peek>(&[&["RATELIMIT.PEEK"], words].concat(), &CLIENT).unwrap();
    assert_eq!(check.0.policies.as_slice(), peek.0.policies.as_slice());
    assert_eq!(check.0.cost, peek.0.cost);
    (check.0.policies.as_slice().to_vec(), check.0.cost)
}

fn request_error(words: &[&str]) -> String {
    let check = error::<Check>(&[&["RATELIMIT.CHECK"], words].concat(), &CLIENT);
    let peek = error::<Peek>(&[&["RATELIMIT.PEEK"], words].concat(), &CLIENT);
    assert_eq!(check, peek, "{words:?}");
    check
}

#[test]
fn check_and_peek_parse_policies_and_an_optional_last_cost() {
    let many: Vec<String> = (1..=6)
        .flat_map(|i| [i.to_string(), "1000".into()])
        .collect();
    let many: Vec<&str> = ["k"]
        .into_iter()
        .chain(many.iter().map(String::as_str))
        .collect();
    let cases: &[(&[&str], Parsed)] = &[
        (&["k", "5", "1000"], (vec![pol(5, 1000)], 1)),
        (&["k", "007", "1000"], (vec![pol(7, 1000)], 1)),
        (
            &["k", "10", "1000", "100", "60000"],
            (vec![pol(10, 1000), pol(100, 60_000)], 1),
        ),
        (&["k", "5", "1000", "COST", "3"], (vec![pol(5, 1000)], 3)),
        (&["k", "5", "1000", "cost", "0"], (vec![pol(5, 1000)], 0)),
        (
            &["k", "9223372036854775807", "4294967295"],
            (vec![pol(i64::MAX as u64, u32::MAX as u64)], 1),
        ),
        (
            &many,
            ((1..=6).map(|i| pol(i, 1000)).collect(), 1), // past the four inline policies
        ),
    ];
    for (words, want) in cases {
        assert_eq!(&request(words), want, "{words:?}");
    }
}

#[test]
fn check_and_peek_refuse_bad_arguments_with_the_exact_message() {
    let cases: &[(&[&str], &str)] = &[
        (&[], ARITY),
        (&["k"], ARITY),
        (&["k", "5"], ARITY),
        (&["k", "COST", "1"], ARITY),
        (&["k", "0", "1000"], "ERR limit must be a positive integer"),
        (&["k", "-1", "1000"], "ERR limit must be a positive integer"),
        (&["k", "5x", "1000"], "ERR limit must be a positive integer"),
        (
            &["k", "1.5", "1000"],
            "ERR limit must be a positive integer",
        ),
        (
            &["k", "99999999999999999999", "1000"],
            "ERR limit must be a positive integer",
        ),
        (
            &["k", "9223372036854775808", "1000"],
            "ERR limit must be an integer between 1 and 9223372036854775807",
        ),
        (&["k", "5", "0"], "ERR window_ms must be a positive integer"),
        (
            &["k", "5", "abc"],
            "ERR window_ms must be a positive integer",
        ),
        (
            &["k", "5", " 1000"],
            "ERR window_ms must be a positive integer",
        ),
        (
            &["k", "5", "4294967296"],
            "ERR window_ms must be an integer between 1 and 4294967295",
        ),
        (
            &["k", "5", "1000", "7"],
            "ERR every limit needs a window_ms",
        ),
        // The missing window is reported before the bad limit.
        (
            &["k", "5", "1000", "x"],
            "ERR every limit needs a window_ms",
        ),
        (
            &["k", "5", "1000", "COST"],
            "ERR COST takes one value and must come last",
        ),
        (
            &["k", "5", "1000", "COST", "1", "2"],
            "ERR COST takes one value and must come last",
        ),
        (
            &["k", "5", "1000", "COST", "1", "10", "1000"],
            "ERR COST takes one value and must come last",
        ),
        (
            &["k", "5", "1000", "COST", "-1"],
            "ERR cost must be a non-negative integer",
        ),
        (
            &["k", "5", "1000", "COST", "9223372036854775808"],
            "ERR cost must be a non-negative integer",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(request_error(words), *want, "{words:?}");
    }
}

/// Whether CHECK and PEEK both read the `POLICIES` flag from `words`, and what else.
fn flagged(words: &[&str]) -> (Parsed, bool) {
    let check = parse::<Check>(&[&["RATELIMIT.CHECK"], words].concat(), &CLIENT).unwrap();
    let peek = parse::<Peek>(&[&["RATELIMIT.PEEK"], words].concat(), &CLIENT).unwrap();
    assert_eq!(check.0.states, peek.0.states, "{words:?}");
    (request(words), check.0.states)
}

#[test]
fn policies_is_an_optional_trailing_flag_after_cost() {
    let cases: &[(&[&str], (Parsed, bool))] = &[
        (&["k", "5", "1000"], ((vec![pol(5, 1000)], 1), false)),
        (
            &["k", "5", "1000", "POLICIES"],
            ((vec![pol(5, 1000)], 1), true),
        ),
        (
            &["k", "5", "1000", "policies"],
            ((vec![pol(5, 1000)], 1), true),
        ),
        (
            &["k", "5", "1000", "60", "60000", "COST", "2", "POLICIES"],
            ((vec![pol(5, 1000), pol(60, 60_000)], 2), true),
        ),
    ];
    for (words, want) in cases {
        assert_eq!(&flagged(words), want, "{words:?}");
    }
    let errors: &[(&[&str], &str)] = &[
        (&["k", "POLICIES"], ARITY),
        (&["k", "5", "POLICIES"], "ERR every limit needs a window_ms"),
        (
            &["k", "5", "1000", "POLICIES", "COST", "1"],
            "ERR POLICIES takes no value and must come last",
        ),
        (
            &["k", "5", "1000", "COST", "POLICIES"],
            "ERR COST takes one value and must come last",
        ),
        (
            &["k", "5", "1000", "POLICIES", "POLICIES"],
            "ERR POLICIES takes no value and must come last",
        ),
        (
            &["k", "5", "1000", "POLICIES", "6", "1000"],
            "ERR POLICIES takes no value and must come last",
        ),
    ];
    for (words, want) in errors {
        assert_eq!(request_error(words), *want, "{words:?}");
    }
}

#[test]
fn record_takes_exactly_now_cost_and_horizon() {
    assert_eq!(
        parse::<Record>(&["RATELIMIT.RECORD", "k", "0", "1", "4294967295"], &CLIENT).unwrap(),
        Record {
            now_ms: 0,
            cost: 1,
            horizon_ms: u32::MAX as u64
        }
    );
    let cases: &[(&[&str], &str)] = &[
        (&["RATELIMIT.RECORD", "k", "1", "1"], ARITY),
        (&["RATELIMIT.RECORD", "k", "1", "1", "1000", "x"], ARITY),
        (
            &["RATELIMIT.RECORD", "k", "x", "1", "1000"],
            "ERR now_ms must be a non-negative integer",
        ),
        (
            &["RATELIMIT.RECORD", "k", "1", "0", "1000"],
            "ERR cost must be a positive integer",
        ),
        (
            &["RATELIMIT.RECORD", "k", "1", "9223372036854775808", "1000"],
            "ERR cost must be an integer between 1 and 9223372036854775807",
        ),
        (
            &["RATELIMIT.RECORD", "k", "1", "1", "0"],
            "ERR horizon_ms must be a positive integer",
        ),
        (
            &["RATELIMIT.RECORD", "k", "1", "1", "4294967296"],
            "ERR horizon_ms must be an integer between 1 and 4294967295",
        ),
    ];
    for (words, want) in cases {
        assert_eq!(error::<Record>(words, &CLIENT), *want, "{words:?}");
    }
}

#[test]
fn the_registration_entries_match_the_documented_commands() {
    assert_eq!(
        (Check::NAME, Check::FLAGS),
        (c"RATELIMIT.CHECK", "write deny-oom fast")
    );
    assert_eq!(
        (Peek::NAME, Peek::FLAGS),
        (c"RATELIMIT.PEEK", "readonly fast")
    );
    assert_eq!(Record::FLAGS, "write deny-oom fast");
}
