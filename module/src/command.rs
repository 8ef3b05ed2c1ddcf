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
    /// What `COMMAND DOCS` and `COMMAND INFO` show of it (its grammar, declared once, here).
    const DOCS: Docs;

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
    pub docs: Docs,
    pub handler: Handler,
}

/// The registration entry of command `C`.
pub(crate) const fn spec<C: Command>() -> Spec {
    Spec {
        name: C::NAME,
        flags: C::FLAGS,
        keys: C::KEYS,
        docs: C::DOCS,
        handler: handler::<C>,
    }
}

/// The version of the module in which every command here first appeared (`since`).
pub(crate) const SINCE: &CStr = c"1.0.0";

/// A command's documentation (`RedisModule_SetCommandInfo`): what `COMMAND DOCS` answers and
/// `redis-cli` turns into argument hints, plus the arity and the key's flags (`COMMAND INFO`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Docs {
    /// One line; an internal command's starts with "Internal: ".
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    /// Argument count including the name; `-n` means at least `n`.
    pub arity: c_int,
    /// The key spec of the one key at position 1: `KEY_*` flags.
    pub key: u64,
    /// The arguments after the name, the key first.
    pub args: &'static [DocArg],
    /// ACL categories besides `write` / `read` and `fast` / `slow` (which registration
    /// derives from the flags), space-separated; set where the server can (Redis 7.2+, Valkey).
    pub acl_categories: &'static CStr,
}

/// Key spec flags (as Redis's `REDISMODULE_CMD_KEY_*`).
pub(crate) mod key {
    use redis_module::raw;

    pub const RO: u64 = raw::REDISMODULE_CMD_KEY_RO as u64;
    pub const RW: u64 = raw::REDISMODULE_CMD_KEY_RW as u64;
    pub const OW: u64 = raw::REDISMODULE_CMD_KEY_OW as u64;
    pub const ACCESS: u64 = raw::REDISMODULE_CMD_KEY_ACCESS as u64;
    pub const UPDATE: u64 = raw::REDISMODULE_CMD_KEY_UPDATE as u64;
}

/// The type of a documented argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArgType {
    Key,
    Integer,
    Double,
    String,
    /// A keyword alone (its `token`).
    PureToken,
    /// A sequence of `subargs`.
    Block,
    /// One of `subargs`.
    OneOf,
}

/// One documented argument (a node of the grammar tree).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DocArg {
    pub name: &'static CStr,
    pub kind: ArgType,
    /// The keyword written before the value (`COST cost`), or the keyword of a pure token.
    pub token: Option<&'static CStr>,
    pub summary: Option<&'static CStr>,
    pub optional: bool,
    pub multiple: bool,
    pub subargs: &'static [DocArg],
}

impl DocArg {
    const fn new(name: &'static CStr, kind: ArgType) -> Self {
        DocArg {
            name,
            kind,
            token: None,
            summary: None,
            optional: false,
            multiple: false,
            subargs: &[],
        }
    }

    /// The key (key spec 0).
    pub const fn key(name: &'static CStr) -> Self {
        DocArg::new(name, ArgType::Key)
    }

    pub const fn integer(name: &'static CStr) -> Self {
        DocArg::new(name, ArgType::Integer)
    }

    pub const fn double(name: &'static CStr) -> Self {
        DocArg::new(name, ArgType::Double)
    }

    pub const fn string(name: &'static CStr) -> Self {
        DocArg::new(name, ArgType::String)
    }

    pub const fn pure_token(name: &'static CStr, token: &'static CStr) -> Self {
        DocArg::new(name, ArgType::PureToken).token(token)
    }

    pub const fn block(name: &'static CStr, subargs: &'static [DocArg]) -> Self {
        DocArg {
            subargs,
            ..DocArg::new(name, ArgType::Block)
        }
    }

    pub const fn one_of(name: &'static CStr, subargs: &'static [DocArg]) -> Self {
        DocArg {
            subargs,
            ..DocArg::new(name, ArgType::OneOf)
        }
    }

    pub const fn token(self, token: &'static CStr) -> Self {
        DocArg {
            token: Some(token),
            ..self
        }
    }

    pub const fn summary(self, summary: &'static CStr) -> Self {
        DocArg {
            summary: Some(summary),
            ..self
        }
    }

    pub const fn optional(self) -> Self {
        DocArg {
            optional: true,
            ..self
        }
    }

    pub const fn multiple(self) -> Self {
        DocArg {
            multiple: true,
            ..self
        }
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
