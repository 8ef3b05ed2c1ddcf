//! METRIC.* commands: each one's grammar (a typed struct and its parser), its registration
//! (name, flags) and its handler (key, algorithm, replication, reply), over the core's series.

use std::ffi::CStr;

use tally_core::metric::aggregates;
use tally_core::metric::series::{Point, Series, FUTURE_MS, QUANTILES};
use tally_core::metric::state::{self, State};

use crate::args::{self, Args};
use crate::command::{key, Command, DocArg, Docs, Env};
use crate::config;
use crate::datatype::SERIES_TYPE;
use crate::effects;
use crate::error::{Error, Result};
use crate::server::{self, Arg, Call, Reply};

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
#[derive(Debug, PartialEq)]
pub(crate) struct Add {
    pub value: f64,
    pub ts: Option<u64>,
    /// The internal `RETENTION ms NOW ms` of a replicated effect: the retention and the
    /// server time the primary applied the sample with.
    pub applied: Option<(u64, u64)>,
}

impl Command for Add {
    const NAME: &'static CStr = c"METRIC.ADD";
    const FLAGS: &'static str = "write deny-oom fast";
    const DOCS: Docs = Docs {
        summary: c"Records one sample at TS (default: the server's time) and updates every aggregate; replies the series' sample count",
        complexity: c"O(1)",
        arity: -3,
        key: key::RW | key::ACCESS | key::UPDATE,
        args: &[
            DocArg::key(c"key"),
            DocArg::double(c"value"),
            DocArg::block(
                c"timestamp",
                &[
                    DocArg::integer(c"unix_ms").token(c"TS"),
                    DocArg::block(
                        c"applied",
                        &[
                            DocArg::integer(c"retention_ms").token(c"RETENTION"),
                            DocArg::integer(c"now_ms").token(c"NOW"),
                        ],
                    )
                    .summary(c"Internal: the retention and server time the primary applied the sample with (replication and AOF only)")
                    .optional(),
                ],
            )
            .optional(),
        ],
        acl_categories: c"",
    };

    fn parse(mut args: Args, env: &Env) -> Result<Self> {
        let argc = args.argc();
        if !matches!(argc, 3 | 5 | 9) {
            return Err(Error::WrongArity);
        }
        let value = args.finite("value")?;
        let ts = if argc >= 5 {
            args.keyword("TS")?;
            Some(args.non_negative("TS")?)
        } else {
            None
        };
        let applied = if argc == 9 {
            args.keyword("RETENTION")?;
            // Both keywords are checked before either value.
            let mut now = args;
            now.next_arg();
            now.keyword("NOW")?;
            if !env.replay {
                return Err(Error::custom(
                    "RETENTION and NOW are internal arguments (replication and AOF only)",
                ));
            }
            let retention = args.positive("RETENTION", config::RETENTION_MAX as u64)?;
            Some((retention, now.non_negative("NOW")?))
        } else {
            None
        };
        Ok(Add { value, ts, applied })
    }

    #[inline]
    fn execute(self, call: &Call, env: &Env) -> Result<()> {
        let Add { value, ts, applied } = self;
        let replay = env.replay;
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
            None if replay && explicit_ts => (env.retention_ms, u64::MAX),
            None => (env.retention_ms, now),
        };
        let mut key = call.write_key(1);
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
        if effects::consumed(call) {
            if applied_at == u64::MAX {
                // An old effect passes on as it came.
                call.replicate_verbatim();
            } else {
                call.replicate(
                    c"METRIC.ADD",
                    &[
                        Arg::Argv(1),
                        Arg::Argv(2),
                        Arg::Word("TS"),
                        Arg::Int(ts),
                        Arg::Word("RETENTION"),
                        Arg::Int(retention),
                        Arg::Word("NOW"),
                        Arg::Int(applied_at),
                    ],
                );
            }
            if let Some(at) = expire_at {
                call.replicate(c"PEXPIREAT", &[Arg::Argv(1), Arg::Int(at)]);
            }
        } else {
            effects::skip(call);
        }
        call.reply.uint(count);
        Ok(())
    }
}

/// `METRIC.SUMMARY key [WINDOW window_ms]`
///
/// The maintained aggregates and quantiles: count, sum, min, max, avg, stddev, first_ts,
/// last_ts, p50, p90, p95, p99 (count 0 and the rest nil for an empty or missing series).
/// O(1) all-time; with WINDOW (1 ..= tally.retention-ms) the samples of the last `window_ms`
/// of server time, merged from time buckets in O(buckets).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub window_ms: Option<u64>,
}

impl Command for Summary {
    const NAME: &'static CStr = c"METRIC.SUMMARY";
    const FLAGS: &'static str = "readonly fast";
    const DOCS: Docs = Docs {
        summary: c"Replies count, sum, min, max, avg, stddev, first_ts, last_ts, p50, p90, p95, p99 of all samples or of the last window_ms",
        complexity: c"O(1) all-time; O(B) with WINDOW: B time buckets in the window",
        arity: -2,
        key: key::RO | key::ACCESS,
        args: &[
            DocArg::key(c"key"),
            DocArg::integer(c"window_ms").token(c"WINDOW").optional(),
        ],
        acl_categories: c"",
    };

    fn parse(mut args: Args, env: &Env) -> Result<Self> {
        let window_ms = match args.argc() {
            2 => None,
            4 => {
                args.keyword("WINDOW")?;
                Some(args.positive("window_ms", env.retention_ms)?)
            }
            _ => return Err(Error::WrongArity),
        };
        Ok(Summary { window_ms })
    }

    #[inline]
    fn execute(self, call: &Call, _: &Env) -> Result<()> {
        let mut key = call.read_key(1);
        let summary = key
            .value::<Series>(&SERIES_TYPE)?
            .and_then(|s| match self.window_ms {
                Some(w) => s.window(server::now_ms(), w),
                None => s.summary(),
            });
        write_summary(&call.reply, summary.as_ref());
        Ok(())
    }
}

/// Most buckets one METRIC.RANGE may span.
const MAX_RANGE_BUCKETS: u64 = 10_000;

/// `METRIC.RANGE key from_ms to_ms bucket_ms [QUANTILES]`
///
/// Per-bucket count, sum, min, max and avg of the retained data from `from_ms` to `to_ms`
/// (inclusive; `-` and `+` are the oldest and newest retained data), in buckets of `bucket_ms`
/// (a positive multiple of 1000) starting at multiples of it; non-empty buckets only, oldest
/// first. With `QUANTILES`, each bucket also has p50, p90, p95 and p99 from its stored
/// buckets' sketches. O(stored buckets).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub from: Bound,
    pub to: Bound,
    pub bucket_ms: u64,
    pub quantiles: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    /// `-`: the oldest retained data.
    Oldest,
    /// `+`: the newest retained data.
    Newest,
    At(u64),
}

impl Bound {
    fn parse(arg: &[u8], name: &str) -> Result<Bound> {
        match arg {
            b"-" => Ok(Bound::Oldest),
            b"+" => Ok(Bound::Newest),
            _ => args::non_negative(arg, name).map(Bound::At).map_err(|_| {
                Error::custom(format!("{name} must be a non-negative integer, - or +"))
            }),
        }
    }
}

impl Command for Range {
    const NAME: &'static CStr = c"METRIC.RANGE";
    const FLAGS: &'static str = "readonly";
    const DOCS: Docs = Docs {
        summary: c"Replies per-bucket count, sum, min, max and avg (and p50, p90, p95, p99 with QUANTILES) from from_ms to to_ms, in buckets of bucket_ms",
        complexity: c"O(B): B stored time buckets",
        arity: -5,
        key: key::RO | key::ACCESS,
        args: &[
            DocArg::key(c"key"),
            DocArg::one_of(
                c"from",
                &[DocArg::integer(c"from_ms"), DocArg::pure_token(c"oldest", c"-")],
            ),
            DocArg::one_of(
                c"to",
                &[DocArg::integer(c"to_ms"), DocArg::pure_token(c"newest", c"+")],
            ),
            DocArg::integer(c"bucket_ms"),
            DocArg::pure_token(c"quantiles", c"QUANTILES").optional(),
        ],
        acl_categories: c"",
    };

    fn parse(mut args: Args, _: &Env) -> Result<Self> {
        let argc = args.argc();
        if !matches!(argc, 5 | 6) {
            return Err(Error::WrongArity);
        }
        let (from, to, bucket_ms) = parse_range(&mut args)?;
        if argc == 6 {
            args.keyword("QUANTILES")?;
        }
        Ok(Range {
            from,
            to,
            bucket_ms,
            quantiles: argc == 6,
        })
    }

    #[inline]
    fn execute(self, call: &Call, env: &Env) -> Result<()> {
        let mut key = call.read_key(1);
        let Some(series) = key.value::<Series>(&SERIES_TYPE)? else {
            call.reply.array(0);
            return Ok(());
        };
        let now = server::now_ms();
        let retention = env.retention_ms;
        let span = (self.from, self.to, self.bucket_ms);
        let Some((from, to)) = resolve_span(series, span, now, retention)? else {
            call.reply.array(0);
            return Ok(());
        };
        if self.quantiles {
            let states = series.range_states(from, to, self.bucket_ms, now, retention);
            write_point_states(&call.reply, &states);
        } else {
            let points = series.range(from, to, self.bucket_ms, now, retention);
            write_points(&call.reply, &points);
        }
        Ok(())
    }
}

/// `from_ms to_ms bucket_ms` of METRIC.RANGE and METRIC.EXPORT's `RANGE`.
type RangeArgs = (Bound, Bound, u64);

fn parse_range(args: &mut Args) -> Result<RangeArgs> {
    let (Some(from), Some(to)) = (args.next_arg(), args.next_arg()) else {
        return Err(Error::WrongArity);
    };
    let from = Bound::parse(from, "from_ms")?;
    let to = Bound::parse(to, "to_ms")?;
    let bucket_ms = args.positive("bucket_ms", i64::MAX as u64)?;
    if bucket_ms % 1000 != 0 {
        return Err(Error::custom(
            "bucket_ms must be a positive multiple of 1000",
        ));
    }
    Ok((from, to, bucket_ms))
}

/// The span `(from, to)` of a range over `series` (`-` and `+` resolved), `None` when the
/// series shows no data or `from > to`; an error past [`MAX_RANGE_BUCKETS`].
fn resolve_span(
    series: &Series,
    (from, to, bucket): RangeArgs,
    now: u64,
    retention: u64,
) -> Result<Option<(u64, u64)>> {
    let Some((oldest, newest)) = series.bounds(now, retention) else {
        return Ok(None);
    };
    let resolve = |b: Bound| match b {
        Bound::Oldest => oldest,
        Bound::Newest => newest,
        Bound::At(ms) => ms,
    };
    let (from, to) = (resolve(from), resolve(to));
    if from > to {
        return Ok(None);
    }
    if to / bucket - from / bucket >= MAX_RANGE_BUCKETS {
        return Err(Error::custom(format!(
            "the range spans more than {MAX_RANGE_BUCKETS} buckets of bucket_ms"
        )));
    }
    Ok(Some((from, to)))
}

/// `METRIC.EXPORT key [WINDOW window_ms | RANGE from_ms to_ms bucket_ms]`
///
/// The mergeable state of the series, for merging several series exactly (the API's
/// labels): the aggregates and the sketch bins of every sample (all-time), of the last
/// `window_ms` (as METRIC.SUMMARY WINDOW), or of each point of a range (as METRIC.RANGE),
/// as one bulk string in `tally_core::metric::state`'s encoding; nil for a missing key.
/// O(bins) all-time, O(B) with WINDOW or RANGE.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Export {
    pub part: Part,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    AllTime,
    Window(u64),
    Range(RangeArgs),
}

impl Command for Export {
    const NAME: &'static CStr = c"METRIC.EXPORT";
    const FLAGS: &'static str = "readonly";
    const DOCS: Docs = Docs {
        summary: c"Replies the mergeable state (aggregates and sketch bins) of all samples, of the last window_ms, or of each range bucket, encoded, to merge several series",
        complexity: c"O(N) all-time: N sketch bins; O(B) with WINDOW or RANGE: B time buckets",
        arity: -2,
        key: key::RO | key::ACCESS,
        args: &[
            DocArg::key(c"key"),
            DocArg::one_of(
                c"part",
                &[
                    DocArg::integer(c"window_ms").token(c"WINDOW"),
                    DocArg::block(
                        c"range",
                        &[
                            DocArg::one_of(
                                c"from",
                                &[DocArg::integer(c"from_ms"), DocArg::pure_token(c"oldest", c"-")],
                            ),
                            DocArg::one_of(
                                c"to",
                                &[DocArg::integer(c"to_ms"), DocArg::pure_token(c"newest", c"+")],
                            ),
                            DocArg::integer(c"bucket_ms"),
                        ],
                    )
                    .token(c"RANGE"),
                ],
            )
            .optional(),
        ],
        acl_categories: c"",
    };

    fn parse(mut args: Args, env: &Env) -> Result<Self> {
        let part = match args.argc() {
            2 => Part::AllTime,
            4 => {
                args.keyword("WINDOW")?;
                Part::Window(args.positive("window_ms", env.retention_ms)?)
            }
            6 => {
                args.keyword("RANGE")?;
                Part::Range(parse_range(&mut args)?)
            }
            _ => return Err(Error::WrongArity),
        };
        Ok(Export { part })
    }

    #[inline]
    fn execute(self, call: &Call, env: &Env) -> Result<()> {
        let mut key = call.read_key(1);
        let Some(series) = key.value::<Series>(&SERIES_TYPE)? else {
            call.reply.null();
            return Ok(());
        };
        let now = server::now_ms();
        let bytes = match self.part {
            Part::AllTime => series.all_time_state().encode(),
            Part::Window(w) => series.window_state(now, w).encode(),
            Part::Range(span) => {
                let retention = env.retention_ms;
                let points = match resolve_span(series, span, now, retention)? {
                    Some((from, to)) => series.range_states(from, to, span.2, now, retention),
                    None => Vec::new(),
                };
                state::encode_points(&points)
            }
        };
        call.reply.bulk(&bytes);
        Ok(())
    }
}

fn write_summary(reply: &Reply, s: Option<&aggregates::Summary>) {
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
    write_quantiles(reply, s);
}

/// METRIC.RANGE ... QUANTILES: each point's fields, then its quantiles.
fn write_point_states(reply: &Reply, points: &[(u64, State)]) {
    let summaries: Vec<_> = points
        .iter()
        .filter_map(|(ts, state)| Some((ts, state.summary()?)))
        .collect();
    reply.array(summaries.len());
    for (ts, s) in summaries {
        reply.record(6 + QUANTILES.len());
        reply.field("ts");
        reply.uint(*ts);
        reply.field("count");
        reply.uint(s.count);
        for (name, v) in [
            ("sum", s.sum),
            ("min", s.min),
            ("max", s.max),
            ("avg", s.avg),
        ] {
            reply.field(name);
            reply.double(v);
        }
        write_quantiles(reply, &s);
    }
}

fn write_quantiles(reply: &Reply, s: &aggregates::Summary) {
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

#[cfg(test)]
mod tests;
