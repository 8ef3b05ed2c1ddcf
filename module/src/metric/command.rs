//! METRIC.* commands: argument parsing, the key, replication and the reply.

use std::ffi::c_int;

use redis_module::raw;

use tally_core::metric::series::{Point, Series, FUTURE_MS, QUANTILES};
use tally_core::metric::{encoding, Summary};

use crate::args;
use crate::config;
use crate::datatype::SERIES_TYPE;
use crate::effects;
use crate::error::Error;
use crate::server::{self, bytes, Ctx, Key, RStr, Reply};

/// Context flags of a command that replays an effect: sent by the primary, or read from the
/// AOF (at startup or `DEBUG LOADAOF`).
const REPLAY: c_int =
    (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) as c_int;

/// The arguments of METRIC.ADD.
struct AddArgs {
    value: f64,
    ts: Option<u64>,
    /// The internal `RETENTION ms NOW ms` of a replicated effect: the retention and the
    /// server time the primary applied the sample with.
    applied: Option<(u64, u64)>,
}

fn parse_add(args: &[RStr], replay: bool) -> Result<AddArgs, Error> {
    let arg = |i: usize| bytes(args[i]);
    let keyword = |i: usize, k: &str| -> Result<(), Error> {
        if args::is_keyword(arg(i), k) {
            Ok(())
        } else {
            Err(Error::syntax(&String::from_utf8_lossy(arg(i))))
        }
    };
    if !matches!(args.len(), 3 | 5 | 9) {
        return Err(Error::WrongArity);
    }
    let value = args::finite(arg(2), "value")?;
    let ts = if args.len() >= 5 {
        keyword(3, "TS")?;
        Some(args::non_negative(arg(4), "TS")?)
    } else {
        None
    };
    let applied = if args.len() == 9 {
        keyword(5, "RETENTION")?;
        keyword(7, "NOW")?;
        if !replay {
            return Err(Error::custom(
                "RETENTION and NOW are internal arguments (replication and AOF only)",
            ));
        }
        let retention = args::positive(arg(6), "RETENTION", config::RETENTION_MAX as u64)?;
        Some((retention, args::non_negative(arg(8), "NOW")?))
    } else {
        None
    };
    Ok(AddArgs { value, ts, applied })
}

/// `METRIC.ADD key value [TS unix_ms]`
///
/// Records one finite sample at `TS` (default: the server's time; at most [`FUTURE_MS`] after
/// it) and updates every aggregate, bucket and sketch in O(1). Sets the key's TTL to
/// `tally.series-ttl-ms` when that is on. Reply: the series' total sample count.
///
/// Internal form, the effect replicas and the AOF get:
/// `METRIC.ADD key value TS unix_ms RETENTION ms NOW ms`, the retention and server time the
/// primary applied the sample with, so a replay keeps the same buckets whatever its own clock
/// and `tally.retention-ms` say. Only accepted from the primary or the AOF; an effect written
/// without them (an older AOF) replays as before, relative to the newest timestamp.
pub extern "C" fn add(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        let replay = reply.ctx_flags() & REPLAY != 0;
        let AddArgs { value, ts, applied } = parse_add(args, replay)?;
        let now = server::now_ms();
        let explicit_ts = ts.is_some();
        let ts = ts.unwrap_or(now);
        // A replica or an AOF replay applies what the primary accepted, whenever it runs.
        if !replay && ts > now.saturating_add(FUTURE_MS) {
            return Err(Error::custom(format!(
                "TS must not be more than {FUTURE_MS} ms after the server's time"
            )));
        }
        let (retention, applied_at) = match applied {
            Some(applied) => applied,
            // An effect without them: pruned relative to the newest timestamp, as when it
            // was written.
            None if replay && explicit_ts => (config::retention_ms(), u64::MAX),
            None => (config::retention_ms(), now),
        };
        let key = Key::write(ctx, args[1]);
        let count = match key.value::<Series>(&SERIES_TYPE)? {
            Some(series) => {
                series.add_at(value, ts, applied_at, retention);
                series.count()
            }
            None => {
                let mut series = Series::new();
                series.add_at(value, ts, applied_at, retention);
                key.set_value(&SERIES_TYPE, series)?;
                1
            }
        };
        // Replicas and the AOF get the sample with its timestamp, the retention and the time
        // it was applied with made explicit, and the expiry as an absolute time, so they apply
        // exactly what the primary applied.
        let ttl = config::series_ttl_ms();
        let expire_at = (ttl > 0).then(|| now.saturating_add(ttl));
        if let Some(at) = expire_at {
            key.expire_at(at);
        }
        if effects::consumed(ctx, reply.ctx_flags()) {
            if applied_at == u64::MAX {
                // An old effect passes on as it came.
                raw::replicate_verbatim(ctx);
            } else {
                replicate_add(ctx, args[1], args[2], ts, retention, applied_at);
            }
            if let Some(at) = expire_at {
                replicate_pexpireat(ctx, args[1], at);
            }
        } else {
            effects::skip(ctx);
        }
        reply.uint(count);
        Ok(())
    })
}

/// `METRIC.SUMMARY key [WINDOW window_ms]`
///
/// The maintained aggregates and quantiles: count, sum, min, max, avg, stddev, first_ts,
/// last_ts, p50, p90, p95, p99 (count 0 and the rest nil for an empty or missing series).
/// O(1) all-time; with WINDOW (1 ..= tally.retention-ms) the samples of the last `window_ms`
/// of server time, merged from time buckets in O(buckets).
pub extern "C" fn summary(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        let window = match args.len() {
            2 => None,
            4 if args::is_keyword(bytes(args[2]), "WINDOW") => Some(args::positive(
                bytes(args[3]),
                "window_ms",
                config::retention_ms(),
            )?),
            4 => return Err(Error::syntax(&String::from_utf8_lossy(bytes(args[2])))),
            _ => return Err(Error::WrongArity),
        };
        let key = Key::read(ctx, args[1]);
        let summary = key
            .value::<Series>(&SERIES_TYPE)?
            .and_then(|s| match window {
                Some(w) => s.window(server::now_ms(), w),
                None => s.summary(),
            });
        write_summary(reply, summary.as_ref());
        Ok(())
    })
}

/// Most buckets one METRIC.RANGE may span.
const MAX_RANGE_BUCKETS: u64 = 10_000;

/// `METRIC.RANGE key from_ms to_ms bucket_ms`
///
/// Per-bucket count, sum, min, max and avg of the retained data from `from_ms` to `to_ms`
/// (inclusive; `-` and `+` are the oldest and newest retained data), in buckets of `bucket_ms`
/// (a positive multiple of 1000) starting at multiples of it; non-empty buckets only, oldest
/// first. O(stored buckets).
pub extern "C" fn range(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 5 {
            return Err(Error::WrongArity);
        }
        let from = parse_bound(bytes(args[2]), "from_ms")?;
        let to = parse_bound(bytes(args[3]), "to_ms")?;
        let bucket = args::positive(bytes(args[4]), "bucket_ms", i64::MAX as u64)?;
        if bucket % 1000 != 0 {
            return Err(Error::custom(
                "bucket_ms must be a positive multiple of 1000",
            ));
        }
        let key = Key::read(ctx, args[1]);
        let Some(series) = key.value::<Series>(&SERIES_TYPE)? else {
            reply.array(0);
            return Ok(());
        };
        let now = server::now_ms();
        let retention = config::retention_ms();
        let Some((oldest, newest)) = series.bounds(now, retention) else {
            reply.array(0);
            return Ok(());
        };
        let resolve = |b: Bound| match b {
            Bound::Oldest => oldest,
            Bound::Newest => newest,
            Bound::At(ms) => ms,
        };
        let (from, to) = (resolve(from), resolve(to));
        if from <= to && to / bucket - from / bucket >= MAX_RANGE_BUCKETS {
            return Err(Error::custom(format!(
                "the range spans more than {MAX_RANGE_BUCKETS} buckets of bucket_ms"
            )));
        }
        let points = if from <= to {
            series.range(from, to, bucket, now, retention)
        } else {
            Vec::new()
        };
        write_points(reply, &points);
        Ok(())
    })
}

#[derive(Clone, Copy)]
enum Bound {
    Oldest,
    Newest,
    At(u64),
}

fn parse_bound(arg: &[u8], name: &str) -> Result<Bound, Error> {
    match arg {
        b"-" => Ok(Bound::Oldest),
        b"+" => Ok(Bound::Newest),
        _ => args::non_negative(arg, name)
            .map(Bound::At)
            .map_err(|_| Error::custom(format!("{name} must be a non-negative integer, - or +"))),
    }
}

/// `METRIC.RESTORE key payload` (internal: what AOF rewrite emits). Replaces the key's series
/// with the decoded payload.
pub extern "C" fn restore(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 3 {
            return Err(Error::WrongArity);
        }
        let series = encoding::decode(bytes(args[2])).map_err(Error::Corrupt)?;
        Key::write(ctx, args[1]).set_value(&SERIES_TYPE, series)?;
        // Deterministic: the payload is the whole state.
        raw::replicate_verbatim(ctx);
        reply.simple("OK");
        Ok(())
    })
}

fn write_summary(reply: &Reply, s: Option<&Summary>) {
    const FIELDS: [&str; 8] = [
        "count", "sum", "min", "max", "avg", "stddev", "first_ts", "last_ts",
    ];
    reply.record(FIELDS.len() + QUANTILES.len());
    let Some(s) = s else {
        reply.field("count");
        reply.int(0);
        for name in FIELDS[1..]
            .iter()
            .chain(QUANTILES.iter().map(|(n, _, _)| n))
        {
            reply.field(name);
            reply.null();
        }
        return;
    };
    reply.field("count");
    reply.uint(s.count);
    for (name, v) in [
        ("sum", s.sum),
        ("min", s.min),
        ("max", s.max),
        ("avg", s.avg),
        ("stddev", s.stddev),
    ] {
        reply.field(name);
        reply.double(v);
    }
    reply.field("first_ts");
    reply.uint(s.first_ts);
    reply.field("last_ts");
    reply.uint(s.last_ts);
    for ((name, _, _), q) in QUANTILES.iter().zip(s.quantiles) {
        reply.field(name);
        match q {
            Some(v) => reply.double(v),
            None => reply.null(),
        }
    }
}

fn write_points(reply: &Reply, points: &[Point]) {
    reply.array(points.len());
    for p in points {
        reply.record(6);
        reply.field("ts");
        reply.uint(p.ts);
        reply.field("count");
        reply.uint(p.count);
        for (name, v) in [
            ("sum", p.sum),
            ("min", p.min),
            ("max", p.max),
            ("avg", p.avg),
        ] {
            reply.field(name);
            reply.double(v);
        }
    }
}

fn replicate_add(ctx: Ctx, key: RStr, value: RStr, ts: u64, retention: u64, now: u64) {
    // SAFETY: valid context and arguments of the running command; "ssclclcl" is two
    // RedisModuleStrings, then three (C string, long long) pairs, matching the arguments.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx,
            c"METRIC.ADD".as_ptr(),
            c"ssclclcl".as_ptr(),
            key,
            value,
            c"TS".as_ptr(),
            ts as std::ffi::c_longlong,
            c"RETENTION".as_ptr(),
            retention as std::ffi::c_longlong,
            c"NOW".as_ptr(),
            now as std::ffi::c_longlong,
        );
    }
}

fn replicate_pexpireat(ctx: Ctx, key: RStr, at_ms: u64) {
    // SAFETY: valid context and key of the running command; "sl" is a RedisModuleString and
    // a long long, matching the arguments.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx,
            c"PEXPIREAT".as_ptr(),
            c"sl".as_ptr(),
            key,
            at_ms as std::ffi::c_longlong,
        );
    }
}
