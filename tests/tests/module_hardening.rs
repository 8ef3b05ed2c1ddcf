//! Hostile payloads for the decoders (SPEC section 11): `RATELIMIT.RESTORE`, `METRIC.RESTORE`
//! and `RESTORE` of a `DUMP` (with its CRC64 recomputed, so the mutation reaches the module's
//! decoder), mutated and claiming huge counts, sent to a server whose address space is limited
//! (`FUZZ_ADDRESS_SPACE_LIMIT`): a decoder that reserved what a count claims would make it
//! abort. Every reply is an error or OK with a usable value, the server stays up, and its
//! memory stays bounded.

use tally_tests::redis::{self, Connection, Value};
use tally_tests::{Flavor, Rng, Server, ServerConfig, FUZZ_ADDRESS_SPACE_LIMIT};

/// Redis's CRC-64 (Jones polynomial, reflected, initial value 0), as DUMP payloads carry it.
fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9, bits reversed
    let table: Vec<u64> = (0..256u64)
        .map(|b| (0..8).fold(b, |c, _| if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 }))
        .collect();
    data.iter().fold(0u64, |crc, &b| {
        table[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[test]
fn the_crc64_is_redis_s() {
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

/// RDB length encoding (`rdbSaveLen`).
fn rdb_len(n: usize) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if n <= u32::MAX as usize {
        let mut v = vec![0x80];
        v.extend((n as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend((n as u64).to_be_bytes());
        v
    }
}

/// What a module value's DUMP holds around the module's payload: the object type and module
/// id before it, the RDB version after it (the CRC64 is recomputed for every payload).
struct Envelope {
    head: Vec<u8>,
    version: [u8; 2],
}

impl Envelope {
    /// Splits a real DUMP (taken with `rdbcompression no`, so the payload is stored raw) into
    /// its envelope and payload, checking that `wrap` rebuilds it byte for byte.
    fn parse(dump: &[u8]) -> (Envelope, Vec<u8>) {
        // type (RDB_TYPE_MODULE_2), 0x81 + 8-byte module id, opcode STRING, length, payload,
        // opcode EOF, RDB version (2 bytes), CRC64 (8 bytes).
        assert_eq!((dump[0], dump[1], dump[10]), (7, 0x81, 5), "{dump:?}");
        let (len, at) = match dump[11] >> 6 {
            0 => (usize::from(dump[11] & 0x3f), 12),
            1 => (
                usize::from(dump[11] & 0x3f) << 8 | usize::from(dump[12]),
                13,
            ),
            2 => (
                u32::from_be_bytes(dump[12..16].try_into().unwrap()) as usize,
                16,
            ),
            _ => panic!("unexpected length encoding in {dump:?}"),
        };
        let payload = dump[at..at + len].to_vec();
        let n = dump.len();
        let env = Envelope {
            head: dump[..11].to_vec(),
            version: [dump[n - 10], dump[n - 9]],
        };
        assert_eq!(env.wrap(&payload), dump, "the envelope rebuilds the DUMP");
        (env, payload)
    }

    /// A DUMP of `payload` with a valid CRC64.
    fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = self.head.clone();
        out.extend(rdb_len(payload.len()));
        out.extend_from_slice(payload);
        out.push(0);
        out.extend(self.version);
        let crc = crc64(&out);
        out.extend(crc.to_le_bytes());
        out
    }
}

fn start() -> Server {
    start_flavor(Flavor::Redis)
}

fn start_flavor(flavor: Flavor) -> Server {
    let s = ServerConfig::new(flavor)
        .arg("--rdbcompression", "no")
        .address_space_limit(FUZZ_ADDRESS_SPACE_LIMIT)
        .start();
    let pid = s.pid().expect("running");
    assert_eq!(
        tally_tests::address_space_limit_of(pid),
        Some(FUZZ_ADDRESS_SPACE_LIMIT),
        "the limit is in force"
    );
    s
}

/// LEB128, as the module's payloads encode counts.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Real payloads of both types: (restore command, payload, DUMP envelope), several shapes each.
fn seeds(s: &Server, c: &mut Connection) -> Vec<(&'static str, Vec<u8>, Envelope)> {
    let max = "9223372036854775807";
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let w = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    cmds.push(w(&["RATELIMIT.CHECK", "rl:unit", "10", "60000"]));
    for _ in 0..40 {
        cmds.push(w(&["RATELIMIT.CHECK", "rl:large", "100", "60000"]));
    }
    for cost in ["3", "1", "7"] {
        cmds.push(w(&[
            "RATELIMIT.CHECK",
            "rl:weighted",
            "100",
            "60000",
            "COST",
            cost,
        ]));
    }
    cmds.push(w(&[
        "RATELIMIT.CHECK",
        "rl:huge",
        max,
        "4294967295",
        "COST",
        max,
    ]));
    for i in 0..50u64 {
        let ts = (1_700_000_000_000 + i * 7_000).to_string();
        cmds.push(w(&["METRIC.ADD", "m:old", &(i * 3).to_string(), "TS", &ts]));
        cmds.push(w(&["METRIC.ADD", "m:now", &format!("-{i}.25")]));
    }
    for words in &cmds {
        s.run(c, &words.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
    }
    let mut out = Vec::new();
    for (key, command) in [
        ("rl:unit", "RATELIMIT.RESTORE"),
        ("rl:large", "RATELIMIT.RESTORE"),
        ("rl:weighted", "RATELIMIT.RESTORE"),
        ("rl:huge", "RATELIMIT.RESTORE"),
        ("m:old", "METRIC.RESTORE"),
        ("m:now", "METRIC.RESTORE"),
    ] {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(c).unwrap();
        let (env, payload) = Envelope::parse(&dump);
        out.push((command, payload, env));
    }
    out
}

/// Corrupts a payload: overwritten, inserted or removed bytes, truncation, and varints
/// (counts, lengths, deltas) replaced by huge or boundary values.
fn mutate(r: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + r.below(3) {
        let n = p.len();
        let at = r.below(n + 1);
        match r.below(7) {
            0 | 1 if n > 0 => p[at.min(n - 1)] = r.next_u64() as u8,
            2 => p.insert(at, r.next_u64() as u8),
            3 if n > 0 => {
                p.remove(at.min(n - 1));
            }
            4 => p.truncate(at),
            _ => {
                // Replace the varint that starts at `at` (or insert one) with a hostile value.
                let end = (at..n).find(|&i| p[i] & 0x80 == 0).map_or(n, |i| i + 1);
                let value = match r.below(6) {
                    0 => u64::MAX,
                    1 => i64::MAX as u64 + 1,
                    2 => u32::MAX as u64 + 1,
                    3 => n as u64,
                    4 => (n / 2) as u64,
                    _ => r.next_u64() >> r.below(64),
                };
                p.splice(at..end, varint(value));
            }
        }
    }
    p
}

/// Reads a LEB128 varint at `*at`.
fn read_varint(p: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = p[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// Where a v2 series payload's all-time aggregates end, and where its all-time sketch ends
/// (the fine tier's bucket count comes next).
fn series_prefix(p: &[u8]) -> (usize, usize) {
    assert_eq!(p[0], 2, "a v2 series payload");
    let mut at = 1;
    for _ in 0..3 {
        read_varint(p, &mut at);
    }
    at += 48;
    let aggregates_end = at;
    for _ in 0..read_varint(p, &mut at) {
        read_varint(p, &mut at);
    }
    (aggregates_end, at)
}

/// The reply is an error, or OK and the restored key answers its read commands.
fn check_reply(s: &Server, c: &mut Connection, reply: &redis::RedisResult<Value>, key: &str) {
    match reply {
        Err(_) | Ok(Value::ServerError(_)) => {}
        Ok(Value::Okay) => {
            // A value that decoded must be usable: reads answer (an error is fine too, but not
            // a dropped connection).
            for words in [
                vec!["RATELIMIT.PEEK", key, "5", "60000"],
                vec!["RATELIMIT.PEEK", key, "9223372036854775807", "4294967295"],
                vec!["METRIC.SUMMARY", key],
                vec!["METRIC.SUMMARY", key, "WINDOW", "60000"],
                vec!["METRIC.RANGE", key, "-", "+", "60000"],
            ] {
                if let Err(e) = s.run(c, &words) {
                    assert!(
                        e.is_io_error() || e.code().is_some(),
                        "{words:?} on a restored key: {e}\n{}",
                        s.log()
                    );
                    assert!(!e.is_io_error(), "{words:?}: {e}\n{}", s.log());
                }
            }
            let _: Value = redis::cmd("DUMP").arg(key).query(c).unwrap();
        }
        Ok(other) => panic!("unexpected reply {other:?}"),
    }
}

fn used_memory_peak(c: &mut Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory_peak:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory_peak")
}

const MEMORY_BOUND: u64 = 400 << 20;

#[test]
fn mutated_restore_payloads_answer_an_error_or_a_usable_value_and_the_server_stays_up() {
    let s = start();
    let mut c = s.conn();
    let seeds = seeds(&s, &mut c);
    let mut r = Rng::new(0x5eed_1234_abcd);
    let mut outcomes = [0usize; 2];
    for round in 0..4000 {
        let (command, payload, env) = &seeds[round % seeds.len()];
        let bad = mutate(&mut r, payload.clone());
        let key = format!("fz:{round}");
        // Directly, as AOF replay sends it.
        let reply = redis::cmd(command)
            .arg(&key)
            .arg(&bad)
            .query::<Value>(&mut c);
        outcomes[usize::from(matches!(reply, Ok(Value::Okay)))] += 1;
        check_reply(&s, &mut c, &reply, &key);
        // Through RESTORE, as MIGRATE and a client's DUMP/RESTORE send it: a valid envelope
        // and CRC around the mutated payload, so the module's decoder gets it.
        let dumped = format!("fzd:{round}");
        let reply = redis::cmd("RESTORE")
            .arg(&dumped)
            .arg(0)
            .arg(env.wrap(&bad))
            .query::<Value>(&mut c);
        check_reply(&s, &mut c, &reply, &dumped);
        if round % 500 == 0 {
            let pong: String = redis::cmd("PING").query(&mut c).unwrap();
            assert_eq!(pong, "PONG");
        }
    }
    // The mutations reach both outcomes (they are not all caught by one trivial check).
    assert!(
        outcomes[0] > 100 && outcomes[1] > 100,
        "errors and successes: {outcomes:?}"
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let peak = used_memory_peak(&mut c);
    assert!(peak < MEMORY_BOUND, "used_memory_peak {peak}");
}

/// A large payload (25 MB) whose counts claim as many items as it has bytes, or far more:
/// before the fix a METRIC.RESTORE like this reserved 96 bytes per claimed bucket (2.4 GB)
/// and the server aborted.
#[test]
fn large_payloads_claiming_huge_counts_are_refused_without_allocating_for_the_claim() {
    const SIZE: usize = 25_000_000;
    for flavor in Flavor::all() {
        let s = start_flavor(flavor);
        let mut c = s.conn();
        let seeds = seeds(&s, &mut c);
        let envelope = |command: &str| {
            &seeds
                .iter()
                .find(|(cmd, _, _)| *cmd == command)
                .expect("a seed of each type")
                .2
        };
        // A real series payload's all-time aggregates and sketch, so the claims below are
        // what the decoder meets next.
        let series_seed = &seeds
            .iter()
            .find(|(cmd, _, _)| *cmd == "METRIC.RESTORE")
            .unwrap()
            .1;
        let (aggregates_end, sketch_end) = series_prefix(series_seed);
        for claim in [
            SIZE as u64 / 2,
            SIZE as u64 / 60,
            SIZE as u64,
            1 << 40,
            u64::MAX,
        ] {
            // A series whose fine tier claims `claim` buckets.
            let mut series = series_seed[..sketch_end].to_vec();
            series.extend(varint(claim));
            series.resize(SIZE, 0);
            // A series whose all-time sketch claims `claim` entries.
            let mut sketch = series_seed[..aggregates_end].to_vec();
            sketch.extend(varint(claim));
            sketch.resize(SIZE, 0);
            // A log of horizon 1000 claiming `claim` entries.
            let mut log = vec![1];
            log.extend(varint(1000));
            log.extend(varint(claim));
            log.resize(SIZE, 0);
            for (command, payload) in [
                ("METRIC.RESTORE", &series),
                ("METRIC.RESTORE", &sketch),
                ("RATELIMIT.RESTORE", &log),
            ] {
                let reply = redis::cmd(command)
                    .arg("big")
                    .arg(&payload[..])
                    .query::<Value>(&mut c);
                assert!(
                    reply.is_err(),
                    "{flavor:?} {command} claiming {claim}: {reply:?}\n{}",
                    s.log()
                );
                let reply = redis::cmd("RESTORE")
                    .arg("big")
                    .arg(0)
                    .arg(envelope(command).wrap(payload))
                    .query::<Value>(&mut c);
                assert!(
                    reply.is_err(),
                    "{flavor:?} RESTORE {command} {claim}: {reply:?}"
                );
                let exists: i64 = redis::cmd("EXISTS").arg("big").query(&mut c).unwrap();
                assert_eq!(exists, 0, "no side effect");
            }
        }
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG", "{flavor:?}");
        let peak = used_memory_peak(&mut c);
        assert!(peak < MEMORY_BOUND, "{flavor:?}: used_memory_peak {peak}");
    }
}
