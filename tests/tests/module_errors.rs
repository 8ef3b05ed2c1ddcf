//! Malformed input of every kind answers an error naming the problem, writes nothing, and the
//! server stays up; plus a seeded fuzz of 100k malformed commands.

use tally_tests::redis::{self, Value};
use tally_tests::{Flavor, Rng, Server, ServerConfig, FUZZ_ADDRESS_SPACE_LIMIT};

/// (command words, expected error fragment).
const CASES: &[(&[&str], &str)] = &[
    (&["RATELIMIT.CHECK"], "wrong number of arguments"),
    (&["RATELIMIT.CHECK", "k"], "wrong number of arguments"),
    (&["RATELIMIT.CHECK", "k", "5"], "wrong number of arguments"),
    (
        &["RATELIMIT.CHECK", "k", "0", "1000"],
        "limit must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "-1", "1000"],
        "limit must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5x", "1000"],
        "limit must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "1.5", "1000"],
        "limit must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "99999999999999999999", "1000"],
        "limit must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "9223372036854775808", "1000"],
        "limit must be an integer between 1 and 9223372036854775807",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "0"],
        "window_ms must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "4294967296"],
        "window_ms must be an integer between 1 and 4294967295",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", " 1000"],
        "window_ms must be a positive integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "1000", "7"],
        "every limit needs a window_ms",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "1000", "COST"],
        "COST takes one value",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "1000", "COST", "1", "2"],
        "COST takes one value",
    ),
    (
        &["RATELIMIT.CHECK", "k", "5", "1000", "COST", "-1"],
        "cost must be a non-negative integer",
    ),
    (
        &["RATELIMIT.CHECK", "k", "COST", "1"],
        "wrong number of arguments",
    ),
    (
        &["RATELIMIT.PEEK", "k", "5", "abc"],
        "window_ms must be a positive integer",
    ),
    (
        &["RATELIMIT.RECORD", "k", "1", "1"],
        "wrong number of arguments",
    ),
    (
        &["RATELIMIT.RECORD", "k", "x", "1", "1000"],
        "now_ms must be a non-negative integer",
    ),
    (
        &["RATELIMIT.RECORD", "k", "1", "0", "1000"],
        "cost must be a positive integer",
    ),
    (
        &["RATELIMIT.RESTORE", "k", "garbage"],
        "invalid serialized value",
    ),
    (&["RATELIMIT.RESTORE", "k", ""], "invalid serialized value"),
    (&["METRIC.ADD", "k"], "wrong number of arguments"),
    (&["METRIC.ADD", "k", "nan"], "value must be a finite number"),
    (&["METRIC.ADD", "k", "inf"], "value must be a finite number"),
    (
        &["METRIC.ADD", "k", "-inf"],
        "value must be a finite number",
    ),
    (
        &["METRIC.ADD", "k", "1e400"],
        "value must be a finite number",
    ),
    (
        &["METRIC.ADD", "k", "12abc"],
        "value must be a finite number",
    ),
    (&["METRIC.ADD", "k", ""], "value must be a finite number"),
    (&["METRIC.ADD", "k", "1", "TS"], "wrong number of arguments"),
    (
        &["METRIC.ADD", "k", "1", "TS", "-5"],
        "TS must be a non-negative integer",
    ),
    (
        &["METRIC.ADD", "k", "1", "TS", "1.5"],
        "TS must be a non-negative integer",
    ),
    (&["METRIC.ADD", "k", "1", "AT", "5"], "syntax error"),
    (
        &["METRIC.ADD", "k", "nan", "TS", "5"],
        "value must be a finite number",
    ),
    (&["METRIC.SUMMARY"], "wrong number of arguments"),
    (
        &["METRIC.SUMMARY", "k", "WINDOW"],
        "wrong number of arguments",
    ),
    (
        &["METRIC.SUMMARY", "k", "WINDOW", "0"],
        "window_ms must be a positive integer",
    ),
    (
        &["METRIC.SUMMARY", "k", "WINDOW", "3600001"],
        "window_ms must be an integer between 1 and 3600000",
    ),
    (&["METRIC.SUMMARY", "k", "LAST", "5"], "syntax error"),
    (
        &["METRIC.RANGE", "k", "-", "+"],
        "wrong number of arguments",
    ),
    (
        &["METRIC.RANGE", "k", "x", "+", "1000"],
        "from_ms must be a non-negative integer, - or +",
    ),
    (
        &["METRIC.RANGE", "k", "-", "y", "1000"],
        "to_ms must be a non-negative integer, - or +",
    ),
    (
        &["METRIC.RANGE", "k", "-", "+", "1500"],
        "bucket_ms must be a positive multiple of 1000",
    ),
    (
        &["METRIC.RANGE", "k", "-", "+", "0"],
        "bucket_ms must be a positive integer",
    ),
    (
        &["METRIC.RESTORE", "k", "\u{2}\u{0}"],
        "invalid serialized value",
    ),
];

fn error_of(v: redis::RedisResult<Value>) -> String {
    match v {
        Err(e) => e.to_string(),
        Ok(Value::ServerError(e)) => format!("{e:?}"),
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn every_malformed_command_gets_a_named_error_and_writes_nothing_on_every_flavor() {
    for flavor in Flavor::all() {
        let s = Server::start_flavor(flavor);
        let mut c = s.conn();
        for (words, want) in CASES {
            let err = error_of(s.run(&mut c, words));
            assert!(err.contains(want), "{flavor:?} {words:?}: {err}");
            let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            assert_eq!(n, 0, "{flavor:?} {words:?} wrote something");
        }
    }
}

#[test]
fn a_key_of_another_type_answers_wrongtype_and_is_left_alone() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    s.run(&mut c, &["METRIC.ADD", "series", "1"]).unwrap();
    s.run(&mut c, &["RATELIMIT.CHECK", "log", "5", "1000"])
        .unwrap();
    for words in [
        &["RATELIMIT.CHECK", "str", "5", "1000"][..],
        &["RATELIMIT.PEEK", "series", "5", "1000"],
        &["RATELIMIT.RECORD", "series", "1", "1", "1000"],
        &["METRIC.ADD", "str", "1"],
        &["METRIC.ADD", "log", "1"],
        &["METRIC.SUMMARY", "log"],
        &["METRIC.RANGE", "str", "-", "+", "1000"],
    ] {
        let err = error_of(s.run(&mut c, words));
        assert!(err.contains("WRONGTYPE"), "{words:?}: {err}");
    }
    let v: String = redis::cmd("GET").arg("str").query(&mut c).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn copy_rename_del_expire_and_type_behave_normally() {
    let s = Server::start();
    let mut c = s.conn();
    s.run(&mut c, &["METRIC.ADD", "a", "5"]).unwrap();
    s.run(&mut c, &["RATELIMIT.CHECK", "l", "5", "60000"])
        .unwrap();
    let copied: i64 = redis::cmd("COPY").arg("a").arg("b").query(&mut c).unwrap();
    assert_eq!(copied, 1);
    s.run(&mut c, &["METRIC.ADD", "b", "7"]).unwrap();
    let a = s.run(&mut c, &["METRIC.SUMMARY", "a"]).unwrap();
    assert_eq!(
        tally_tests::field_f64(&a, "count"),
        Some(1.0),
        "the copy is independent"
    );
    let _: () = redis::cmd("RENAME")
        .arg("l")
        .arg("l2")
        .query(&mut c)
        .unwrap();
    let r = tally_tests::ints(
        &s.run(&mut c, &["RATELIMIT.PEEK", "l2", "5", "60000"])
            .unwrap(),
    );
    assert_eq!(r[2], 3);
    let ty: String = redis::cmd("TYPE").arg("l2").query(&mut c).unwrap();
    assert_eq!(ty, "tally-log");
    let _: i64 = redis::cmd("EXPIRE")
        .arg("a")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL").arg("a").query(&mut c).unwrap();
    assert!(ttl > 90);
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert!(usage > 100, "MEMORY USAGE counts the series: {usage}");
    let deleted: i64 = redis::cmd("DEL")
        .arg("a")
        .arg("b")
        .arg("l2")
        .query(&mut c)
        .unwrap();
    assert_eq!(deleted, 3);
}

/// Invalid as a limit, a window_ms or a cost (0 is a valid cost, so it is kept apart).
const BAD_NUMBERS: &[&[u8]] = &[
    b"",
    b"-1",
    b"+1",
    b"1.5",
    b"1e3",
    b"nan",
    b"inf",
    b"-inf",
    b"0x10",
    b" 1",
    b"1 ",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"-9223372036854775809",
    b"\xff\xfe",
    b"\x00",
    b"9223372036854775808",
];
/// Invalid as a finite value.
const BAD_VALUES: &[&[u8]] = &[
    b"", b"nan", b"inf", b"-inf", b"0x10", b" 1", b"1 ", b"1e999", b"\xff", b"1,5",
];

/// A command that must fail: every generator below breaks at least one rule.
fn malformed(r: &mut Rng) -> Vec<Vec<u8>> {
    let key = format!("fuzz:{}", r.below_u64(8)).into_bytes();
    let n = || -> Vec<u8> { b"5".to_vec() };
    match r.below_u64(8) {
        0 => vec![
            b"RATELIMIT.CHECK".to_vec(),
            key,
            r.pick(&[BAD_NUMBERS, &[b"0"]].concat()).to_vec(),
            n(),
        ],
        1 => vec![
            b"RATELIMIT.CHECK".to_vec(),
            key,
            n(),
            r.pick(&[BAD_NUMBERS, &[b"0", b"4294967296"]].concat())
                .to_vec(),
        ],
        2 => {
            // Many policies with one bad number somewhere, or a dangling limit.
            let mut cmd = vec![b"RATELIMIT.PEEK".to_vec(), key];
            let policies = 1 + r.below_u64(200);
            let bad = r.below_u64(policies);
            for i in 0..policies {
                cmd.push(if i == bad {
                    r.pick(BAD_NUMBERS).to_vec()
                } else {
                    b"10".to_vec()
                });
                cmd.push(b"1000".to_vec());
            }
            if r.below_u64(2) == 0 {
                cmd.pop();
                cmd.pop();
                cmd.push(b"7".to_vec()); // limit without window
            }
            cmd
        }
        3 => vec![
            b"RATELIMIT.CHECK".to_vec(),
            key,
            n(),
            n(),
            b"COST".to_vec(),
            r.pick(BAD_NUMBERS).to_vec(),
        ],
        4 => vec![b"METRIC.ADD".to_vec(), key, r.pick(BAD_VALUES).to_vec()],
        5 => vec![
            b"METRIC.ADD".to_vec(),
            key,
            b"1".to_vec(),
            b"TS".to_vec(),
            r.pick::<[u8]>(&[b"-1", b"x", b"1.5", b"9223372036854775808"])
                .to_vec(),
        ],
        6 => vec![
            b"METRIC.RANGE".to_vec(),
            key,
            b"-".to_vec(),
            b"+".to_vec(),
            r.pick::<[u8]>(&[b"0", b"999", b"1500", b"-1000", b"x"])
                .to_vec(),
        ],
        _ => {
            // Wrong arity, or binary garbage payloads for the restore commands.
            let mut cmd = vec![
                r.pick::<[u8]>(&[
                    b"RATELIMIT.CHECK",
                    b"METRIC.SUMMARY",
                    b"METRIC.ADD",
                    b"RATELIMIT.RESTORE",
                    b"METRIC.RESTORE",
                ])
                .to_vec(),
                key,
            ];
            if cmd[0].ends_with(b"RESTORE") {
                let len = r.below_u64(64);
                cmd.push(
                    (0..len)
                        .map(|_| r.below_u64(7) as u8)
                        .chain([0xff])
                        .collect(),
                );
            } else if cmd[0] == b"METRIC.SUMMARY" {
                cmd.push(b"WINDOW".to_vec());
            }
            cmd
        }
    }
}

#[test]
fn a_hundred_thousand_malformed_commands_change_nothing_and_crash_nothing() {
    // Under a virtual-memory limit: an allocation sized by hostile input aborts the server.
    let s = ServerConfig::new(Flavor::Redis)
        .address_space_limit(FUZZ_ADDRESS_SPACE_LIMIT)
        .start();
    assert_eq!(
        tally_tests::address_space_limit_of(s.pid().expect("running")),
        Some(FUZZ_ADDRESS_SPACE_LIMIT)
    );
    let mut c = s.conn();
    // Some real state the fuzz must leave alone.
    for i in 0..8 {
        let k = format!("fuzz:{i}");
        s.run(
            &mut c,
            &["RATELIMIT.CHECK", &k, "100", "3600000", "COST", "3"],
        )
        .unwrap();
        s.run(&mut c, &["METRIC.ADD", &format!("m:{i}"), "1.5"])
            .unwrap();
    }
    let before: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut c).unwrap();
    let mut r = Rng::new(0xDEADBEEF);
    let total = 100_000;
    let mut errors = 0;
    for _ in 0..total / 1000 {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            let words = malformed(&mut r);
            let mut cmd = redis::cmd(std::str::from_utf8(&words[0]).unwrap());
            for w in &words[1..] {
                cmd.arg(&w[..]);
            }
            pipe.add_command(cmd);
        }
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.ignore_errors().query(&mut c).expect("server answered");
        for (i, v) in replies.into_iter().enumerate() {
            match v {
                Err(_) | Ok(Value::ServerError(_)) => errors += 1,
                Ok(other) => panic!("malformed command {i} succeeded: {other:?}"),
            }
        }
    }
    assert_eq!(errors, total);
    let after: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut c).unwrap();
    assert_eq!(before, after, "a failed command changed the dataset");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn edge_cases_that_are_valid_stay_well_formed() {
    let s = Server::start();
    let mut c = s.conn();
    let max = "9223372036854775807";
    let r = tally_tests::ints(
        &s.run(
            &mut c,
            &["RATELIMIT.CHECK", "e", max, "4294967295", "COST", max],
        )
        .unwrap(),
    );
    assert_eq!(&r[..3], &[1, i64::MAX, 0]);
    let r = tally_tests::ints(
        &s.run(
            &mut c,
            &["RATELIMIT.CHECK", "e", max, "4294967295", "COST", "1"],
        )
        .unwrap(),
    );
    assert_eq!(&r[..3], &[0, i64::MAX, 0], "no overflow past the limit");
    let mut many = vec!["RATELIMIT.CHECK", "many"];
    for _ in 0..5000 {
        many.extend(["1000", "60000"]);
    }
    let r = tally_tests::ints(&s.run(&mut c, &many).unwrap());
    assert_eq!(&r[..3], &[1, 1000, 999]);
    for v in ["1e308", "-1e308", "5e-324", "0", "-0"] {
        s.run(&mut c, &["METRIC.ADD", "x", v]).unwrap();
    }
    let sum = s.run(&mut c, &["METRIC.SUMMARY", "x"]).unwrap();
    assert_eq!(tally_tests::field_f64(&sum, "count"), Some(5.0));
    assert_eq!(tally_tests::field_f64(&sum, "max"), Some(1e308));
    let err = s
        .run(&mut c, &["METRIC.ADD", "x", "1", "TS", max])
        .unwrap_err();
    assert!(
        err.to_string().contains("TS must not be more than"),
        "{err}"
    );
    s.run(&mut c, &["METRIC.ADD", "x", "1", "TS", "0"]).unwrap();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}
