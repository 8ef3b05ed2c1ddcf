//! RATELIMIT.* commands: each one's grammar (a typed struct and its parser), its registration
//! (name, flags) and its handler (key, algorithm, replication, reply), over the core's log.

use std::ffi::CStr;

use tally_core::ratelimit::{Decision, Log, Policy, PolicyState, MAX_AMOUNT, MAX_WINDOW_MS};

use crate::args::{self, Args};
use crate::command::{key, Command, DocArg, Docs, Env};
use crate::datatype::LOG_TYPE;
use crate::effects;
use crate::error::{Error, Result};
use crate::server::{self, Arg, Call, Reply};

/// The arguments of CHECK and PEEK:
/// `key limit window_ms [limit window_ms ...] [COST cost] [POLICIES]`.
#[derive(Debug)]
pub(crate) struct Request {
    pub policies: Policies,
    pub cost: u64,
    /// `POLICIES`: the reply gains each policy's state.
    pub states: bool,
}

/// The documented grammar of CHECK and PEEK (what `Request::parse` reads).
const REQUEST_ARGS: &[DocArg] = &[
    DocArg::key(c"key"),
    DocArg::block(
        c"policy",
        &[DocArg::integer(c"limit"), DocArg::integer(c"window_ms")],
    )
    .multiple(),
    DocArg::integer(c"cost").token(c"COST").optional(),
    DocArg::pure_token(c"policies", c"POLICIES").optional(),
];

impl Request {
    #[inline]
    fn parse(mut args: Args) -> Result<Self> {
        if args.argc() < 4 {
            return Err(Error::WrongArity);
        }
        let states = args.strip_last_keyword("POLICIES");
        let mut policies = Policies::default();
        let mut cost = 1;
        while let Some(arg) = args.next_arg() {
            if args::is_keyword(arg, "COST") {
                if args.left() != 1 {
                    return Err(Error::custom("COST takes one value and must come last"));
                }
                cost = args.non_negative("cost")?;
                break;
            }
            if args::is_keyword(arg, "POLICIES") {
                return Err(Error::custom("POLICIES takes no value and must come last"));
            }
            let Some(window) = args.next_arg() else {
                return Err(Error::custom("every limit needs a window_ms"));
            };
            policies.push(Policy {
                limit: args::positive(arg, "limit", MAX_AMOUNT)?,
                window_ms: args::positive(window, "window_ms", MAX_WINDOW_MS)?,
            });
        }
        if policies.is_empty() {
            return Err(Error::WrongArity);
        }
        Ok(Request {
            policies,
            cost,
            states,
        })
    }
}

/// `RATELIMIT.CHECK key limit window_ms [limit window_ms ...] [COST cost] [POLICIES]`
///
/// Allowed iff every policy's window holds at most `limit - cost`; then `cost` is recorded at
/// the server's time. Reply: allowed, limit, remaining, retry_after_ms, reset_after_ms, and
/// with `POLICIES` each policy's limit, window_ms, remaining and reset_after_ms after the call.
#[derive(Debug)]
pub(crate) struct Check(pub Request);

impl Command for Check {
    const NAME: &'static CStr = c"RATELIMIT.CHECK";
    const FLAGS: &'static str = "write deny-oom fast";
    const DOCS: Docs = Docs {
        summary: c"Allows and records `cost` if every sliding-window policy has room for it; replies allowed, limit, remaining, retry_after_ms, reset_after_ms (and with POLICIES every policy's state)",
        complexity: c"O(P + E): P policies, E expired entries dropped",
        arity: -4,
        key: key::RW | key::ACCESS | key::UPDATE,
        args: REQUEST_ARGS,
        acl_categories: c"",
    };

    fn parse(args: Args, _: &Env) -> Result<Self> {
        Request::parse(args).map(Check)
    }

    #[inline]
    fn execute(self, call: &Call, _: &Env) -> Result<()> {
        let Request {
            policies,
            cost,
            states,
        } = self.0;
        let policies = policies.as_slice();
        let mut key = call.write_key(1);
        let now = server::now_ms();
        // With POLICIES, the states are read from the log after the call (nothing more to
        // record): what a client sees is what the next call starts from.
        let mut after = Vec::new();
        let (decision, recorded, expires_at) = match key.value::<Log>(&LOG_TYPE)? {
            Some(log) => {
                let (d, recorded) = log.check(now, policies, cost);
                if states {
                    after.extend(log.states(now, policies, 0));
                }
                (d, recorded, log.expires_at_ms())
            }
            None => {
                let mut log = Log::new();
                let (d, recorded) = log.check(now, policies, cost);
                if states {
                    after.extend(log.states(now, policies, 0));
                }
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
            if effects::consumed(call) {
                call.replicate(
                    c"RATELIMIT.RECORD",
                    &[
                        Arg::Argv(1),
                        Arg::Int(now),
                        Arg::Int(cost),
                        Arg::Int(horizon),
                    ],
                );
            } else {
                effects::skip(call);
            }
        }
        write_decision(&call.reply, &decision, states.then_some(&after[..]));
        Ok(())
    }
}

/// `RATELIMIT.PEEK key limit window_ms [limit window_ms ...] [COST cost] [POLICIES]`
///
/// The reply CHECK would give now (with `POLICIES`, the states it would leave); records
/// nothing.
#[derive(Debug)]
pub(crate) struct Peek(pub Request);

impl Command for Peek {
    const NAME: &'static CStr = c"RATELIMIT.PEEK";
    const FLAGS: &'static str = "readonly fast";
    const DOCS: Docs = Docs {
        summary: c"Replies what RATELIMIT.CHECK would reply now, recording nothing",
        complexity: c"O(P): P policies",
        arity: -4,
        key: key::RO | key::ACCESS,
        args: REQUEST_ARGS,
        acl_categories: c"",
    };

    fn parse(args: Args, _: &Env) -> Result<Self> {
        Request::parse(args).map(Peek)
    }

    #[inline]
    fn execute(self, call: &Call, _: &Env) -> Result<()> {
        let Request {
            policies,
            cost,
            states,
        } = self.0;
        let policies = policies.as_slice();
        let mut key = call.read_key(1);
        let now = server::now_ms();
        let empty = Log::new();
        let log = match key.value::<Log>(&LOG_TYPE)? {
            Some(log) => &*log,
            None => &empty,
        };
        let decision = log.peek(now, policies, cost);
        let after: Vec<PolicyState> = if states {
            let recorded = if decision.allowed { cost } else { 0 };
            log.states(now, policies, recorded).collect()
        } else {
            Vec::new()
        };
        write_decision(&call.reply, &decision, states.then_some(&after[..]));
        Ok(())
    }
}

/// `RATELIMIT.RECORD key now_ms cost horizon_ms` (internal: the replicated effect of an
/// allowed CHECK). Drops entries older than `horizon_ms` before `now_ms`, then records `cost`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub now_ms: u64,
    pub cost: u64,
    pub horizon_ms: u64,
}

impl Command for Record {
    const NAME: &'static CStr = c"RATELIMIT.RECORD";
    const FLAGS: &'static str = "write deny-oom fast";
    const DOCS: Docs = Docs {
        summary: c"Internal: the replicated effect of an allowed RATELIMIT.CHECK (records cost at now_ms, drops entries older than horizon_ms)",
        complexity: c"O(1) amortized",
        arity: 5,
        key: key::RW | key::UPDATE,
        args: &[
            DocArg::key(c"key"),
            DocArg::integer(c"now_ms"),
            DocArg::integer(c"cost"),
            DocArg::integer(c"horizon_ms"),
        ],
        acl_categories: c"dangerous",
    };

    fn parse(mut args: Args, _: &Env) -> Result<Self> {
        if args.argc() != 5 {
            return Err(Error::WrongArity);
        }
        Ok(Record {
            now_ms: args.non_negative("now_ms")?,
            cost: args.positive("cost", MAX_AMOUNT)?,
            horizon_ms: args.positive("horizon_ms", MAX_WINDOW_MS)?,
        })
    }

    #[inline]
    fn execute(self, call: &Call, _: &Env) -> Result<()> {
        let mut key = call.write_key(1);
        if key.value::<Log>(&LOG_TYPE)?.is_none() {
            key.set_value(&LOG_TYPE, Log::new())?;
        }
        let log = key.value::<Log>(&LOG_TYPE)?.ok_or(Error::WrongType)?;
        log.record(self.now_ms, self.cost, self.horizon_ms);
        if let Some(at) = log.expires_at_ms() {
            key.expire_at(at);
        }
        // Deterministic: every input, time included, is an explicit argument.
        call.replicate_verbatim();
        call.reply.simple("OK");
        Ok(())
    }
}

/// The policies of one request: up to four on the stack (no allocation on the hot path).
#[derive(Debug)]
pub(crate) struct Policies {
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

    pub fn as_slice(&self) -> &[Policy] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

/// The reply of CHECK and PEEK: five fields, and with `POLICIES` a sixth, `policies`.
fn write_decision(reply: &Reply, d: &Decision, states: Option<&[PolicyState]>) {
    let fields: [(&str, i64); 5] = [
        ("allowed", i64::from(d.allowed)),
        ("limit", d.limit as i64),
        ("remaining", d.remaining as i64),
        ("retry_after_ms", d.retry_after_ms),
        ("reset_after_ms", d.reset_after_ms.min(MAX_AMOUNT) as i64),
    ];
    let len = fields.len() + usize::from(states.is_some());
    if reply.resp3() {
        reply.record(len);
        for (name, v) in fields {
            reply.field(name);
            reply.int(v);
        }
    } else {
        reply.array(len);
        for (_, v) in fields {
            reply.int(v);
        }
    }
    if let Some(states) = states {
        if reply.resp3() {
            reply.field("policies");
        }
        write_states(reply, states);
    }
}

/// `policies`: per policy `[limit, window_ms, remaining, reset_after_ms]` (RESP3: a map).
fn write_states(reply: &Reply, states: &[PolicyState]) {
    reply.array(states.len());
    for s in states {
        let fields: [(&str, i64); 4] = [
            ("limit", s.limit as i64),
            ("window_ms", s.window_ms as i64),
            ("remaining", s.remaining.min(MAX_AMOUNT) as i64),
            ("reset_after_ms", s.reset_after_ms.min(MAX_AMOUNT) as i64),
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
}

#[cfg(test)]
mod tests;
