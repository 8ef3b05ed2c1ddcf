//! RATELIMIT.CHECK / RATELIMIT.PEEK against real servers: every reply field, RESP2 and RESP3,
//! expiry, key-type checks, and the sliding-window invariant under many requests.

use std::time::Duration;

use tally_tests::redis::Value;
use tally_tests::{ints, pairs, Flavor, Server};

fn check(s: &Server, c: &mut tally_tests::redis::Connection, words: &[&str]) -> Vec<i64> {
    ints(&s.run(c, words).unwrap_or_else(|e| panic!("{words:?}: {e}")))
}

#[test]
fn check_allows_up_to_the_limit_then_denies_with_exact_retry_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        for i in 0..5 {
            let r = check(&s, &mut c, &["RATELIMIT.CHECK", "rl", "5", "60000"]);
            assert_eq!(&r[..4], &[1, 5, 4 - i, 0], "{flavor:?} request {i}");
            assert!((59_000..=60_000).contains(&r[4]), "{flavor:?} reset {r:?}");
        }
        let r = check(&s, &mut c, &["RATELIMIT.CHECK", "rl", "5", "60000"]);
        assert_eq!(&r[..3], &[0, 5, 0], "{flavor:?}");
        // The first entry leaves the window within the minute; the newest resets the window.
        assert!(
            (1..=60_000).contains(&r[3]) && r[3] <= r[4],
            "{flavor:?} {r:?}"
        );
        // A denied request records nothing: PEEK sees the same state.
        let p = check(&s, &mut c, &["RATELIMIT.PEEK", "rl", "5", "60000"]);
        assert_eq!(&p[..3], &[0, 5, 0]);
        // The key expires by itself about one window after the newest entry.
        let ttl: i64 = tally_tests::redis::cmd("PTTL")
            .arg("rl")
            .query(&mut c)
            .unwrap();
        assert!((58_000..=60_000).contains(&ttl), "{flavor:?} ttl {ttl}");
        let ty: String = tally_tests::redis::cmd("TYPE")
            .arg("rl")
            .query(&mut c)
            .unwrap();
        assert_eq!(ty, "tally-log");
    }
}

#[test]
fn resp3_replies_are_maps_with_the_field_names() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn_resp3();
        let v = s
            .run(&mut c, &["RATELIMIT.CHECK", "rl", "3", "1000", "COST", "2"])
            .unwrap();
        assert!(matches!(v, Value::Map(_)), "{flavor:?}: {v:?}");
        let fields: Vec<(String, Value)> = pairs(&v);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "allowed",
                "limit",
                "remaining",
                "retry_after_ms",
                "reset_after_ms"
            ]
        );
        assert_eq!(fields[0].1, Value::Int(1));
        assert_eq!(fields[2].1, Value::Int(1));
    }
}

#[test]
fn cost_above_the_limit_is_never_allowed_and_records_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let r = check(
        &s,
        &mut c,
        &["RATELIMIT.CHECK", "k", "10", "1000", "COST", "11"],
    );
    assert_eq!(r, vec![0, 10, 10, -1, 0]);
    let exists: i64 = tally_tests::redis::cmd("EXISTS")
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "a denied request creates no key");
}

#[test]
fn several_policies_are_checked_and_recorded_together() {
    let s = Server::start();
    let mut c = s.conn();
    let words = ["RATELIMIT.CHECK", "k", "2", "1000", "3", "60000"];
    assert_eq!(check(&s, &mut c, &words)[..3], [1, 2, 1]);
    assert_eq!(check(&s, &mut c, &words)[..3], [1, 2, 0]);
    // Per-second policy is full now.
    assert_eq!(check(&s, &mut c, &words)[..3], [0, 2, 0]);
    // Until the second has passed, every check is denied by it (and records nothing); the
    // first one admitted is the one the minute still has room for, and then the minute binds.
    let mut last = Vec::new();
    assert!(
        tally_tests::wait_until(Duration::from_secs(10), || {
            last = check(&s, &mut c, &words);
            if last[0] == 0 {
                assert_eq!(last[..3], [0, 2, 0], "denied by the second, not the minute");
            }
            last[0] == 1
        }),
        "the per-second policy never freed up: {last:?}"
    );
    assert_eq!(last[..3], [1, 3, 0]);
    let r = check(&s, &mut c, &words);
    assert_eq!(&r[..3], &[0, 3, 0]);
    assert!(r[3] > 55_000, "the minute frees up last: {r:?}");
    // The key lives as long as the longest window.
    let ttl: i64 = tally_tests::redis::cmd("PTTL")
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert!(ttl > 55_000, "{ttl}");
}

#[test]
fn peek_reports_what_check_would_without_recording() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        check(&s, &mut c, &["RATELIMIT.PEEK", "k", "5", "1000"])[..4],
        [1, 5, 4, 0]
    );
    check(
        &s,
        &mut c,
        &["RATELIMIT.CHECK", "k", "5", "1000", "COST", "3"],
    );
    assert_eq!(
        check(
            &s,
            &mut c,
            &["RATELIMIT.PEEK", "k", "5", "1000", "COST", "2"]
        )[..4],
        [1, 5, 0, 0]
    );
    assert_eq!(
        check(
            &s,
            &mut c,
            &["RATELIMIT.PEEK", "k", "5", "1000", "COST", "3"]
        )[..3],
        [0, 5, 2]
    );
    assert_eq!(
        check(&s, &mut c, &["RATELIMIT.PEEK", "k", "5", "1000"])[..3],
        [1, 5, 1]
    );
}

#[test]
fn the_key_expires_once_nothing_recorded_matters() {
    let s = Server::start();
    let mut c = s.conn();
    check(&s, &mut c, &["RATELIMIT.CHECK", "k", "1", "200"]);
    assert!(tally_tests::wait_until(Duration::from_secs(3), || {
        let n: i64 = tally_tests::redis::cmd("EXISTS")
            .arg("k")
            .query(&mut c)
            .unwrap();
        n == 0
    }));
}

#[test]
fn in_any_window_the_admitted_count_never_exceeds_the_limit() {
    // Many requests from several connections against a short window; afterwards the admitted
    // timestamps (as seen by the clients) must satisfy the limit in every window.
    let s = Server::start();
    let limit = 20;
    let window_ms = 300;
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let client = tally_tests::redis::Client::open(url).unwrap();
                let mut c = client.get_connection().unwrap();
                let mut admitted = 0u64;
                let mut denied = 0u64;
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_millis(1500) {
                    let v: Vec<i64> = tally_tests::redis::cmd("RATELIMIT.CHECK")
                        .arg("hot")
                        .arg(limit)
                        .arg(window_ms)
                        .query(&mut c)
                        .unwrap();
                    if v[0] == 1 {
                        admitted += 1;
                    } else {
                        denied += 1;
                    }
                }
                (admitted, denied)
            })
        })
        .collect();
    let (admitted, denied) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // At most `limit` per window, and the limiter is not too strict either: every window that
    // opened during the run admitted work.
    let windows = elapsed_ms.div_ceil(window_ms) + 1;
    assert!(
        admitted <= limit * windows,
        "{admitted} admitted in {windows} windows"
    );
    assert!(
        admitted >= limit * (1500 / window_ms - 1),
        "only {admitted} admitted"
    );
    assert!(denied > 0);
}

/// CHECK until it is allowed: a 1 ms window admits the request once the clock has moved past
/// the previous entry's millisecond.
fn check_until_allowed(s: &Server, c: &mut tally_tests::redis::Connection, words: &[&str]) {
    assert!(
        tally_tests::wait_until(Duration::from_secs(5), || check(s, c, words)[0] == 1),
        "{words:?} never allowed"
    );
}

/// The review's reproduction: entries of 1, 2^63-1, 2^63-1 and 1 live together (admitted under
/// different policies), 2^64 in all. The sum wrapped to 0 and PEEK reported a full budget; it
/// must saturate and deny, through a reload too.
#[test]
fn window_sums_past_2_pow_64_deny_instead_of_wrapping_on_every_flavor() {
    let max = "9223372036854775807";
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        check_until_allowed(&s, &mut c, &["RATELIMIT.CHECK", "k", "1", "4294967295"]);
        for _ in 0..2 {
            check_until_allowed(&s, &mut c, &["RATELIMIT.CHECK", "k", max, "1", "COST", max]);
        }
        check_until_allowed(&s, &mut c, &["RATELIMIT.CHECK", "k", "1", "1"]);
        for reload in [false, true] {
            if reload {
                let _: Value = tally_tests::redis::cmd("DEBUG")
                    .arg("RELOAD")
                    .query(&mut c)
                    .unwrap();
            }
            let r = check(&s, &mut c, &["RATELIMIT.PEEK", "k", "5", "60000"]);
            assert_eq!(&r[..3], &[0, 5, 0], "{flavor:?} reload {reload}: {r:?}");
            // Freed once the second 2^63-1 entry leaves: within the minute.
            assert!((1..=60_000).contains(&r[3]), "{flavor:?}: {r:?}");
            for _ in 0..5 {
                let r = check(&s, &mut c, &["RATELIMIT.CHECK", "k", "5", "60000"]);
                assert_eq!(&r[..3], &[0, 5, 0], "{flavor:?} reload {reload}: {r:?}");
            }
            // A huge limit still sees the exact total: 2^64 > 2^63-1.
            let r = check(
                &s,
                &mut c,
                &["RATELIMIT.PEEK", "k", max, "4294967295", "COST", "0"],
            );
            assert_eq!(&r[..3], &[0, i64::MAX, 0], "{flavor:?}: {r:?}");
        }
    }
}
