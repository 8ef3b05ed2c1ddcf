//! METRIC.* commands: argument parsing, the key, replication and the reply.

use std::ffi::c_int;

use redis_module::raw;

use super::aggregates::Summary;
use super::rdb::SERIES_TYPE;
use super::series::Series;
use crate::args;
use crate::datatype::ModuleValue;
use crate::error::Error;
use crate::server::{self, bytes, Ctx, Key, RStr, Reply};

/// `METRIC.ADD key value [TS unix_ms]`
///
/// Records one finite sample at `TS` (default: the server's time) and updates every aggregate
/// in O(1). Reply: the series' total sample count.
pub extern "C" fn add(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        let (value, ts) = match args.len() {
            3 => (args::finite(bytes(args[2]), "value")?, None),
            5 if args::is_keyword(bytes(args[3]), "TS") => (
                args::finite(bytes(args[2]), "value")?,
                Some(args::non_negative(bytes(args[4]), "TS")?),
            ),
            5 => return Err(Error::syntax(&String::from_utf8_lossy(bytes(args[3])))),
            _ => return Err(Error::WrongArity),
        };
        let key = Key::write(ctx, args[1]);
        let ts = ts.unwrap_or_else(server::now_ms);
        let count = match key.value::<Series>(&SERIES_TYPE)? {
            Some(series) => {
                series.add(value, ts);
                series.count()
            }
            None => {
                let mut series = Series::new();
                series.add(value, ts);
                key.set_value(&SERIES_TYPE, series)?;
                1
            }
        };
        // Replicas and the AOF get the sample with its timestamp made explicit, so they apply
        // exactly what the primary applied.
        replicate_add(ctx, args[1], args[2], ts);
        reply.uint(count);
        Ok(())
    })
}

/// `METRIC.SUMMARY key`
///
/// The maintained aggregates, O(1): count, sum, min, max, avg, stddev, first_ts, last_ts
/// (count 0 and the rest nil for an empty or missing series).
pub extern "C" fn summary(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 2 {
            return Err(Error::WrongArity);
        }
        let key = Key::read(ctx, args[1]);
        let summary = key.value::<Series>(&SERIES_TYPE)?.and_then(|s| s.summary());
        write_summary(reply, summary.as_ref());
        Ok(())
    })
}

/// `METRIC.RESTORE key payload` (internal: what AOF rewrite emits). Replaces the key's series
/// with the decoded payload.
pub extern "C" fn restore(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 3 {
            return Err(Error::WrongArity);
        }
        let series = Series::decode(bytes(args[2])).map_err(Error::Corrupt)?;
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
    reply.record(FIELDS.len());
    let Some(s) = s else {
        reply.field("count");
        reply.int(0);
        for name in &FIELDS[1..] {
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
}

fn replicate_add(ctx: Ctx, key: RStr, value: RStr, ts: u64) {
    // SAFETY: valid context and arguments of the running command; "sscl" is two
    // RedisModuleStrings, a C string and a long long, matching the arguments.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx,
            c"METRIC.ADD".as_ptr(),
            c"sscl".as_ptr(),
            key,
            value,
            c"TS".as_ptr(),
            ts as std::ffi::c_longlong,
        );
    }
}
