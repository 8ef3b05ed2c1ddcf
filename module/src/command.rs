//! What a command is: a typed struct parsed from its arguments by a pure parser, with its
//! name, flags and key positions declared beside its handler (`impl Command`). `lib.rs`
//! registers every command from one table of [`Spec`]s built from those impls.

use std::ffi::{c_int, CStr};

use redis_module::raw;

use crate::args::{Args, NAME_AND_KEY};
use crate::config;
use crate::error::Result;
use crate::server::{self, Call, Ctx, RStr};

/// Context flags of a command that replays an effect: sent by the primary, or read from the
/// AOF (at startup or `DEBUG LOADAOF`).
const REPLAY: c_int =
    (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) as c_int;

/// What a parser may depend on besides the arguments: plain values, so parsers stay pure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    /// The call replays an effect (from the primary or the AOF).
    pub replay: bool,
    /// `tally.retention-ms` now.
    pub retention_ms: u64,
}

impl Env {
    fn of(call: &Call) -> Self {
        Env {
            replay: call.flags() & REPLAY != 0,
            retention_ms: config::retention_ms(),
        }
    }
}

/// One command of the module.
pub(crate) trait Command: Sized {
    /// The command's name.
    const NAME: &'static CStr;
    /// Its `RedisModule_CreateCommand` flags.
    const FLAGS: &'static str;
    /// First key, last key and step: every command here takes one key, at position 1.
    const KEYS: (c_int, c_int, c_int) = (1, 1, 1);

    /// Parses the arguments (arity, numbers, keywords) into the command, or the error to
    /// reply. Pure: no Redis call.
    fn parse(args: Args, env: &Env) -> Result<Self>;

    /// Runs the parsed command: the key, the algorithm, replication and the reply.
    fn execute(self, call: &Call, env: &Env) -> Result<()>;
}

pub(crate) type Handler = extern "C" fn(Ctx, *mut RStr, c_int) -> c_int;

/// What registration needs of a command.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub name: &'static CStr,
    pub flags: &'static str,
    pub keys: (c_int, c_int, c_int),
    pub handler: Handler,
}

/// The registration entry of command `C`.
pub(crate) const fn spec<C: Command>() -> Spec {
    Spec {
        name: C::NAME,
        flags: C::FLAGS,
        keys: C::KEYS,
        handler: handler::<C>,
    }
}

/// The function Redis calls for command `C`: parse, then execute.
extern "C" fn handler<C: Command>(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    // SAFETY: Redis calls a command handler with the command's context and its `argc`
    // arguments, valid until the handler returns.
    unsafe {
        server::run(ctx, argv, argc, NAME_AND_KEY, |call, rest| {
            let env = Env::of(call);
            C::parse(Args::new(rest, argc as usize), &env)?.execute(call, &env)
        })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the parsers' tables of `argv -> Ok(command) / Err(message)`.

    use super::{Command, Env};
    use crate::args::Args;
    use crate::error::Error;

    /// A client's call: not a replay, the default retention.
    pub const CLIENT: Env = Env {
        replay: false,
        retention_ms: crate::config::RETENTION_DEFAULT as u64,
    };

    /// A replayed effect (from the primary or the AOF).
    pub const REPLAY: Env = Env {
        replay: true,
        ..CLIENT
    };

    pub fn parse<C: Command>(words: &[&str], env: &Env) -> Result<C, Error> {
        let argv: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        parse_argv(&argv, env)
    }

    /// As `parse`, for arguments that are not text (payloads).
    pub fn parse_argv<C: Command>(argv: &[&[u8]], env: &Env) -> Result<C, Error> {
        C::parse(Args::new(argv.get(2..).unwrap_or(&[]), argv.len()), env)
    }

    /// The error reply of a call the parser refuses (as `ERR ...`; the arity error as the
    /// module reports it before Redis adds the command name).
    pub fn error<C: Command + std::fmt::Debug>(words: &[&str], env: &Env) -> String {
        match parse::<C>(words, env) {
            Ok(c) => panic!("{words:?} parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }
}
