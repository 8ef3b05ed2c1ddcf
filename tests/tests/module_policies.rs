//! The `POLICIES` flag of RATELIMIT.CHECK / RATELIMIT.PEEK (SPEC section 8) against real
//! servers of every flavor: the sixth reply element in RESP2 and RESP3, each policy's state as
//! of after the call, PEEK agreeing with the CHECK it predicts, and no flag, no change.

use tally_tests::redis::{Connection, Value};
use tally_tests::{ints, pairs, Flavor, Server};

/// A RESP2 reply with POLICIES: the five integers and each policy's four.
fn split(v: &Value) -> (Vec<i64>, Vec<Vec<i64>>) {
    let Value::Array(items) = v else {
        panic!("not an array: {v:?}")
    };
    assert_eq!(items.len(), 6, "{v:?}");
    let head = ints(&Value::Array(items[..5].to_vec()));
    let Value::Array(states) = &items[5] else {
        panic!("policies is not an array: {v:?}")
    };
    (head, states.iter().map(ints).collect())
}

fn run(s: &Server, c: &mut Connection, words: &[&str]) -> Value {
    s.run(c, words).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// `reset_after_ms` of a policy just recorded into is its window (the clock may move a few
/// ms between calls, never forwards past it).
fn near(reset: i64, window: i64) -> bool {
    (window - 50..=window).contains(&reset)
}

#[test]
fn policies_gives_every_policys_state_after_the_call_in_argument_order_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        let three = [
            "RATELIMIT.CHECK",
            "k",
            "10",
            "1000",
            "1000",
            "3600000",
            "3",
            "60000",
        ];
        let first = run(
            &s,
            &mut c,
            &[&three[..], &["COST", "2", "POLICIES"]].concat(),
        );
        let (head, states) = split(&first);
        // The binding policy is the 3/min one with 1 left.
        assert_eq!(&head[..4], &[1, 3, 1, 0], "{flavor:?}");
        assert_eq!(states.len(), 3);
        assert_eq!(&states[0][..3], &[10, 1000, 8], "{flavor:?} {states:?}");
        assert_eq!(&states[1][..3], &[1000, 3_600_000, 998]);
        assert_eq!(&states[2][..3], &[3, 60_000, 1]);
        for (st, w) in states.iter().zip([1000, 3_600_000, 60_000]) {
            assert!(near(st[3], w), "{flavor:?} {st:?}");
        }

        // A denied request records nothing: the states are the windows as they are.
        let denied = run(
            &s,
            &mut c,
            &[&three[..], &["COST", "2", "POLICIES"]].concat(),
        );
        let (head, states) = split(&denied);
        assert_eq!(&head[..3], &[0, 3, 1], "{flavor:?}");
        assert_eq!(states.iter().map(|s| s[2]).collect::<Vec<_>>(), [8, 998, 1]);

        // PEEK with POLICIES reports what CHECK would leave, and records nothing.
        let peek = [&["RATELIMIT.PEEK"], &three[1..], &["POLICIES"]].concat();
        let (head, states) = split(&run(&s, &mut c, &peek));
        assert_eq!(&head[..3], &[1, 3, 0]);
        assert_eq!(states.iter().map(|s| s[2]).collect::<Vec<_>>(), [7, 997, 0]);
        let (_, again) = split(&run(&s, &mut c, &peek));
        assert_eq!(again.iter().map(|s| s[2]).collect::<Vec<_>>(), [7, 997, 0]);

        // Without the flag the reply is the five integers, unchanged.
        let plain = run(&s, &mut c, &three);
        assert_eq!(ints(&plain).len(), 5, "{flavor:?}");
        assert_eq!(&ints(&plain)[..3], &[1, 3, 0]);

        // A key never written: full budgets, reset 0 (PEEK) and the flag is case-blind.
        let (_, fresh) = split(&run(
            &s,
            &mut c,
            &[
                "RATELIMIT.PEEK",
                "new",
                "5",
                "1000",
                "COST",
                "0",
                "policies",
            ],
        ));
        assert_eq!(fresh, [vec![5, 1000, 5, 0]]);
    }
}

#[test]
fn resp3_policies_is_a_sixth_field_holding_maps_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn_resp3();
        let v = run(
            &s,
            &mut c,
            &[
                "RATELIMIT.CHECK",
                "r3",
                "10",
                "1000",
                "5",
                "60000",
                "POLICIES",
            ],
        );
        let fields = pairs(&v);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "allowed",
                "limit",
                "remaining",
                "retry_after_ms",
                "reset_after_ms",
                "policies"
            ],
            "{flavor:?}"
        );
        let Value::Array(states) = &fields[5].1 else {
            panic!("{flavor:?}: policies {v:?}")
        };
        let want = [(10, 1000, 9), (5, 60_000, 4)];
        for (st, (limit, window, remaining)) in states.iter().zip(want) {
            assert!(matches!(st, Value::Map(_)), "{flavor:?}: {st:?}");
            let st = pairs(st);
            let names: Vec<&str> = st.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                names,
                ["limit", "window_ms", "remaining", "reset_after_ms"],
                "{flavor:?}"
            );
            assert_eq!(st[0].1, Value::Int(limit));
            assert_eq!(st[1].1, Value::Int(window));
            assert_eq!(st[2].1, Value::Int(remaining));
            let Value::Int(reset) = st[3].1 else {
                panic!("{st:?}")
            };
            assert!(near(reset, window), "{flavor:?} {reset}");
        }
        // Without the flag: five fields, as before.
        let v = run(&s, &mut c, &["RATELIMIT.PEEK", "r3", "10", "1000"]);
        assert_eq!(pairs(&v).len(), 5, "{flavor:?}");
    }
}

#[test]
fn a_misplaced_policies_flag_is_a_clear_error_and_writes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    for words in [
        &[
            "RATELIMIT.CHECK",
            "bad",
            "5",
            "1000",
            "POLICIES",
            "COST",
            "1",
        ][..],
        &[
            "RATELIMIT.CHECK",
            "bad",
            "5",
            "1000",
            "POLICIES",
            "6",
            "1000",
        ],
    ] {
        let err = s.run(&mut c, words).unwrap_err().to_string();
        assert!(
            err.contains("POLICIES takes no value and must come last"),
            "{words:?}: {err}"
        );
    }
    let exists: i64 = tally_tests::redis::cmd("EXISTS")
        .arg("bad")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0);
}
