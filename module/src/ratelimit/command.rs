//! RATELIMIT.* commands: argument parsing, the key, replication and the reply.

use std::ffi::c_int;

use redis_module::raw;

use tally_core::ratelimit::encoding::decode;
use tally_core::ratelimit::{Decision, Log, Policy, MAX_AMOUNT, MAX_WINDOW_MS};

use crate::args;
use crate::datatype::LOG_TYPE;
use crate::effects;
use crate::error::{Error, Result};
use crate::server::{self, bytes, Ctx, Key, RStr, Reply};

/// `RATELIMIT.CHECK key limit window_ms [limit window_ms ...] [COST cost]`
///
/// Allowed iff every policy's window holds at most `limit - cost`; then `cost` is recorded at
/// the server's time. Reply: allowed, limit, remaining, retry_after_ms, reset_after_ms.
pub extern "C" fn check(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        let (policies, cost) = parse_request(args)?;
        let policies = policies.as_slice();
        let key = Key::write(ctx, args[1]);
        let now = server::now_ms();
        let (decision, recorded, expires_at) = match key.value::<Log>(&LOG_TYPE)? {
            Some(log) => {
                let (d, recorded) = log.check(now, policies, cost);
                (d, recorded, log.expires_at_ms())
            }
            None => {
                let mut log = Log::new();
                let (d, recorded) = log.check(now, policies, cost);
                let expires_at = log.expires_at_ms();
                if recorded {
                    key.set_value(&LOG_TYPE, log)?;
                }
                (d, recorded, expires_at)
            }
        };
        if recorded {
            if let Some(at) = expires_at {
                key.expire_at(at);
            }
            let horizon = policies.iter().map(|p| p.window_ms).max().unwrap_or(1);
            // Replicas and the AOF get the effect with the primary's clock reading, not the
            // command: RATELIMIT.RECORD is deterministic given the log, time, cost and horizon.
            if effects::consumed(ctx, reply.ctx_flags()) {
                replicate_record(ctx, args[1], now, cost, horizon);
            } else {
                effects::skip(ctx);
            }
        }
        write_decision(reply, &decision);
        Ok(())
    })
}

/// `RATELIMIT.PEEK key limit window_ms [limit window_ms ...] [COST cost]`
///
/// The reply CHECK would give now; records nothing.
pub extern "C" fn peek(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        let (policies, cost) = parse_request(args)?;
        let policies = policies.as_slice();
        let key = Key::read(ctx, args[1]);
        let now = server::now_ms();
        let decision = match key.value::<Log>(&LOG_TYPE)? {
            Some(log) => log.peek(now, policies, cost),
            None => Log::new().peek(now, policies, cost),
        };
        write_decision(reply, &decision);
        Ok(())
    })
}

/// `RATELIMIT.RECORD key now_ms cost horizon_ms` (internal: the replicated effect of an
/// allowed CHECK). Drops entries older than `horizon_ms` before `now_ms`, then records `cost`.
pub extern "C" fn record(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 5 {
            return Err(Error::WrongArity);
        }
        let now = args::non_negative(bytes(args[2]), "now_ms")?;
        let cost = args::positive(bytes(args[3]), "cost", MAX_AMOUNT)?;
        let horizon = args::positive(bytes(args[4]), "horizon_ms", MAX_WINDOW_MS)?;
        let key = Key::write(ctx, args[1]);
        if key.value::<Log>(&LOG_TYPE)?.is_none() {
            key.set_value(&LOG_TYPE, Log::new())?;
        }
        let log = key.value::<Log>(&LOG_TYPE)?.ok_or(Error::WrongType)?;
        log.record(now, cost, horizon);
        if let Some(at) = log.expires_at_ms() {
            key.expire_at(at);
        }
        // Deterministic: every input, time included, is an explicit argument.
        raw::replicate_verbatim(ctx);
        reply.simple("OK");
        Ok(())
    })
}

/// `RATELIMIT.RESTORE key payload` (internal: what AOF rewrite emits). Replaces the key's log
/// with the decoded payload, and the key has no TTL afterwards: the payload is the value, not
/// its key's expiry. AOF rewrite emits the key's real expiry itself (`PEXPIREAT`, right after
/// the module's rewrite callback), so a key that was `PERSIST`ed stays without a TTL after a
/// reload, as on the primary, and one with a TTL gets exactly that TTL back.
pub extern "C" fn restore(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    server::run(ctx, argv, argc, |reply, args| {
        if args.len() != 3 {
            return Err(Error::WrongArity);
        }
        let log = decode(bytes(args[2])).map_err(Error::Corrupt)?;
        Key::write(ctx, args[1]).set_value(&LOG_TYPE, log)?;
        // Deterministic: the payload is the whole state.
        raw::replicate_verbatim(ctx);
        reply.simple("OK");
        Ok(())
    })
}

/// The policies of one request: up to four on the stack (no allocation on the hot path).
struct Policies {
    inline: [Policy; 4],
    more: Vec<Policy>,
    len: usize,
}

impl Default for Policies {
    fn default() -> Self {
        let unused = Policy {
            limit: 0,
            window_ms: 0,
        };
        Policies {
            inline: [unused; 4],
            more: Vec::new(),
            len: 0,
        }
    }
}

impl Policies {
    fn push(&mut self, p: Policy) {
        if self.len < self.inline.len() {
            self.inline[self.len] = p;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push(p);
        }
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_slice(&self) -> &[Policy] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

/// Parses `key limit window_ms [limit window_ms ...] [COST cost]` (args[0] is the command).
fn parse_request(args: &[RStr]) -> Result<(Policies, u64)> {
    if args.len() < 4 {
        return Err(Error::WrongArity);
    }
    let mut policies = Policies::default();
    let mut cost = 1;
    let mut i = 2;
    while i < args.len() {
        let arg = bytes(args[i]);
        if args::is_keyword(arg, "COST") {
            if i + 2 != args.len() {
                return Err(Error::custom("COST takes one value and must come last"));
            }
            cost = args::non_negative(bytes(args[i + 1]), "cost")?;
            break;
        }
        let Some(&window) = args.get(i + 1) else {
            return Err(Error::custom("every limit needs a window_ms"));
        };
        policies.push(Policy {
            limit: args::positive(arg, "limit", MAX_AMOUNT)?,
            window_ms: args::positive(bytes(window), "window_ms", MAX_WINDOW_MS)?,
        });
        i += 2;
    }
    if policies.is_empty() {
        return Err(Error::WrongArity);
    }
    Ok((policies, cost))
}

fn write_decision(reply: &Reply, d: &Decision) {
    let fields: [(&str, i64); 5] = [
        ("allowed", i64::from(d.allowed)),
        ("limit", d.limit as i64),
        ("remaining", d.remaining as i64),
        ("retry_after_ms", d.retry_after_ms),
        ("reset_after_ms", d.reset_after_ms.min(MAX_AMOUNT) as i64),
    ];
    if reply.resp3() {
        reply.record(fields.len());
        for (name, v) in fields {
            reply.field(name);
            reply.int(v);
        }
    } else {
        reply.array(fields.len());
        for (_, v) in fields {
            reply.int(v);
        }
    }
}

fn replicate_record(ctx: Ctx, key: RStr, now: u64, cost: u64, horizon: u64) {
    // SAFETY: valid context and key of the running command; "slll" is a RedisModuleString
    // and three long longs, matching the arguments.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx,
            c"RATELIMIT.RECORD".as_ptr(),
            c"slll".as_ptr(),
            key,
            now as std::ffi::c_longlong,
            cost as std::ffi::c_longlong,
            horizon as std::ffi::c_longlong,
        );
    }
}
