//! tally: a Redis module for exact sliding-window rate limiting and realtime metric
//! aggregates. A thin adapter over `tally_core` (the algorithms and encodings): this file
//! registers the configuration, the data types and the commands.
//!
//! Layers, each importing only those below it:
//! - `ratelimit`, `metric`: the commands (grammar, registration, handler);
//! - `command` (what a command is), `datatype` (the types' persistence callbacks), `effects`
//!   (whether a write's effect is consumed), `config`;
//! - `server` (the FFI: call, keys, replies, replication), `args` (pure argument parsing),
//!   `error`.

mod args;
mod command;
mod config;
mod datatype;
mod effects;
mod error;
mod metric;
mod ratelimit;
mod server;

use std::ffi::{c_int, CStr, CString};

use redis_module::configuration::{register_i64_configuration, ConfigurationFlags};
use redis_module::{raw, Context, RedisString, Status};

use tally_core::{metric::Series, ratelimit::Log};

use crate::command::{spec, ArgType, DocArg, Spec, SINCE};
use crate::datatype::Restore;
use crate::{metric::command as met, ratelimit::command as rl};

/// Every command of the module; each declares its name, flags and keys beside its handler.
const COMMANDS: [Spec; 9] = [
    spec::<rl::Check>(),
    spec::<rl::Peek>(),
    spec::<rl::Record>(),
    spec::<Restore<Log>>(),
    spec::<met::Add>(),
    spec::<met::Summary>(),
    spec::<met::Range>(),
    spec::<met::Export>(),
    spec::<Restore<Series>>(),
];

/// Registers the module configuration; module arguments give the defaults, and
/// redis.conf / command-line `tally.*` values then override them (LoadConfigs).
fn register_config(ctx: &Context, args: &[RedisString]) -> Status {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let defaults = match config::defaults_from_args(&words) {
        Ok(d) => d,
        Err(e) => {
            ctx.log_warning(&format!("tally: {e}"));
            return Status::Err;
        }
    };
    for ((name, var, _, min, max), default) in config::SETTINGS.into_iter().zip(defaults) {
        register_i64_configuration(
            ctx,
            name,
            var,
            default,
            min,
            max,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    // SAFETY: called from OnLoad with its context, after registering every config.
    match unsafe { raw::RedisModule_LoadConfigs.map(|load| load(ctx.ctx)) } {
        Some(status) if status != raw::Status::Ok as c_int => {
            ctx.log_warning("tally: invalid tally.* configuration");
            Status::Err
        }
        _ => Status::Ok,
    }
}

fn register_command(ctx: &Context, c: &Spec) -> Status {
    let Ok(flags) = CString::new(c.flags) else {
        return Status::Err;
    };
    let (first, last, step) = c.keys;
    // SAFETY: called from OnLoad with its context; the strings outlive the call (Redis copies
    // them).
    let status = unsafe {
        raw::RedisModule_CreateCommand.unwrap()(
            ctx.ctx,
            c.name.as_ptr(),
            Some(c.handler),
            flags.as_ptr(),
            first,
            last,
            step,
        )
    };
    if status == raw::Status::Ok as c_int {
        Status::Ok
    } else {
        Status::Err
    }
}

/// The raw argument array of `args`, terminated by a zeroed entry; nested arrays are kept in
/// `store` (their heap buffers do not move) so every pointer stays valid while `store` lives.
fn raw_args(
    args: &[DocArg],
    store: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> *mut raw::RedisModuleCommandArg {
    let mut out = Vec::with_capacity(args.len() + 1);
    for a in args {
        let kind = match a.kind {
            ArgType::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgType::Double => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
            ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgType::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            ArgType::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
            ArgType::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
        };
        let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
        if a.optional {
            flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        }
        if a.multiple {
            flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        }
        // SAFETY: every field is a pointer or an integer; zero is null / none.
        let mut r: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
        r.name = a.name.as_ptr();
        r.type_ = kind;
        r.key_spec_index = if a.kind == ArgType::Key { 0 } else { -1 };
        r.token = a.token.map_or(std::ptr::null(), CStr::as_ptr);
        r.summary = a.summary.map_or(std::ptr::null(), CStr::as_ptr);
        r.flags = flags as c_int;
        if !a.subargs.is_empty() {
            r.subargs = raw_args(a.subargs, store);
        }
        out.push(r);
    }
    // SAFETY: as above; the zeroed entry ends the array.
    out.push(unsafe { std::mem::zeroed() });
    let ptr = out.as_mut_ptr();
    store.push(out);
    ptr
}

/// The ACL categories of a command with `flags`: those a core command with the same flags
/// is in (`write` / `read`, `fast` / `slow`: the server derives none for a module command),
/// then the command's own `extra` ones.
fn acl_categories(flags: &str, extra: &CStr) -> String {
    let has = |f: &str| flags.split(' ').any(|g| g == f);
    let mut out = vec![
        if has("write") { "write" } else { "read" },
        if has("fast") { "fast" } else { "slow" },
    ];
    out.extend(
        extra
            .to_str()
            .unwrap_or("")
            .split(' ')
            .filter(|c| !c.is_empty()),
    );
    out.join(" ")
}

/// Sets `COMMAND DOCS` / `COMMAND INFO` of registered command `name` from its `docs`.
/// `Err` says why not; the command works either way.
fn register_docs(ctx: &Context, c: &Spec) -> Result<(), &'static str> {
    let (name, flags, docs) = (c.name, c.flags, &c.docs);
    // SAFETY: reading the API pointers RedisModule_Init filled (None where the server lacks one).
    let (Some(get_command), Some(set_info)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandInfo
    }) else {
        return Err("this server has no RedisModule_SetCommandInfo");
    };
    // SAFETY: called from OnLoad with its context, after the command was created.
    let command = unsafe { get_command(ctx.ctx, name.as_ptr()) };
    if command.is_null() {
        return Err("RedisModule_GetCommand found no such command");
    }
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    // SAFETY: every field is a pointer, an integer or a union of integers; zero is none.
    let mut key_specs: [raw::RedisModuleCommandKeySpec; 2] = unsafe { std::mem::zeroed() };
    key_specs[0].flags = docs.key;
    key_specs[0].begin_search_type =
        raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
    key_specs[0].bs.index.pos = 1;
    key_specs[0].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
    key_specs[0].fk.range.lastkey = 0;
    key_specs[0].fk.range.keystep = 1;
    key_specs[0].fk.range.limit = 0;
    let mut store = Vec::new();
    let args = raw_args(docs.args, &mut store);
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: docs.summary.as_ptr(),
        complexity: docs.complexity.as_ptr(),
        since: SINCE.as_ptr(),
        history: std::ptr::null_mut(),
        tips: std::ptr::null(),
        arity: docs.arity,
        key_specs: key_specs.as_mut_ptr(),
        args,
    };
    // SAFETY: `command` is this module's; every pointer in `info` lives until the call returns
    // (Redis copies what it keeps).
    if unsafe { set_info(command, &info) } != raw::Status::Ok as c_int {
        return Err("RedisModule_SetCommandInfo refused the docs");
    }
    // SAFETY: as above; None on servers before Redis 7.2.
    let Some(set_acl) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else {
        return Ok(());
    };
    let Ok(categories) = CString::new(acl_categories(flags, docs.acl_categories)) else {
        return Err("ACL categories contain a NUL");
    };
    // SAFETY: `command` is this module's; the string outlives the call.
    if unsafe { set_acl(command, categories.as_ptr()) } != raw::Status::Ok as c_int {
        return Err("RedisModule_SetCommandACLCategories refused the categories");
    }
    Ok(())
}

// Called by the OnLoad that `redis_module!` generates, which unit tests leave out (its global
// allocator is Redis's).
#[cfg_attr(test, allow(dead_code, reason = "OnLoad is not built under cfg(test)"))]
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    if register_config(ctx, args) == Status::Err {
        return Status::Err;
    }
    for c in &COMMANDS {
        if register_command(ctx, c) == Status::Err {
            ctx.log_warning(&format!("tally: could not register {:?}", c.name));
            return Status::Err;
        }
        // Documentation is an extra: a server without the API, or one refusing it, still
        // gets every command.
        if let Err(why) = register_docs(ctx, c) {
            ctx.log_notice(&format!("tally: no COMMAND DOCS for {:?}: {why}", c.name));
        }
    }
    if !effects::subscribe(ctx) {
        ctx.log_warning("tally: could not subscribe to replication events");
        return Status::Err;
    }
    Status::Ok
}

#[cfg(not(test))]
use crate::datatype::{LOG_TYPE, SERIES_TYPE};

#[cfg(not(test))]
redis_module::redis_module! {
    name: "tally",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [LOG_TYPE, SERIES_TYPE],
    init: init,
}

#[cfg(test)]
mod tests {
    use super::COMMANDS;
    use crate::command::testing::{parse_argv, REPLAY};
    use crate::command::{key, ArgType, Command, DocArg};
    use crate::datatype::{ModuleValue, Restore};
    use crate::{met, rl};
    use tally_core::{metric::Series, ratelimit::Log};

    /// A call written from the docs alone: every optional argument (`full`) or none, a
    /// repeated one twice (`full`), a one-of's last choice (`full`) or first. The value leaf
    /// numbered `bad` (integers and doubles, in order) is written as `x`; the names that may
    /// name it in the error are returned.
    fn call_of(
        args: &[DocArg],
        full: bool,
        payload: &[u8],
        bad: usize,
        leaf: &mut usize,
        out: &mut Vec<Vec<u8>>,
        named: &mut Vec<String>,
    ) {
        for a in args {
            if a.optional && !full {
                continue;
            }
            for _ in 0..if a.multiple && full { 2 } else { 1 } {
                if let (Some(t), false) = (a.token, a.kind == ArgType::PureToken) {
                    out.push(t.to_bytes().to_vec());
                }
                let value: &[u8] = match a.kind {
                    ArgType::Key => b"k",
                    ArgType::Integer => b"1000",
                    ArgType::Double => b"1.5",
                    ArgType::String => payload,
                    ArgType::PureToken => a.token.expect("a pure token has a token").to_bytes(),
                    ArgType::Block => {
                        call_of(a.subargs, full, payload, bad, leaf, out, named);
                        continue;
                    }
                    ArgType::OneOf => {
                        let choice = if full { a.subargs.len() - 1 } else { 0 };
                        let one = &a.subargs[choice..=choice];
                        call_of(one, full, payload, bad, leaf, out, named);
                        continue;
                    }
                };
                if matches!(a.kind, ArgType::Integer | ArgType::Double) {
                    *leaf += 1;
                    if *leaf == bad {
                        named.push(a.name.to_str().unwrap().to_string());
                        named.extend(a.token.map(|t| t.to_str().unwrap().to_string()));
                        out.push(b"x".to_vec());
                        continue;
                    }
                }
                out.push(value.to_vec());
            }
        }
    }

    /// The docs of `C` describe its parser: the calls they describe (shortest and longest)
    /// parse, have the documented arity, and a bad value in any documented position is
    /// refused with an error naming that argument.
    fn docs_describe_the_grammar<C: Command>(payload: &[u8]) {
        let docs = C::DOCS;
        let name = C::NAME.to_str().unwrap();
        assert_eq!(
            docs.args[0].kind,
            ArgType::Key,
            "{name}: the key comes first"
        );
        assert!(docs.args[1..].iter().all(|a| a.kind != ArgType::Key));
        for full in [false, true] {
            let mut words = vec![C::NAME.to_bytes().to_vec()];
            call_of(
                docs.args,
                full,
                payload,
                0,
                &mut 0,
                &mut words,
                &mut Vec::new(),
            );
            let argv: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
            if let Err(e) = parse_argv::<C>(&argv, &REPLAY) {
                let call: Vec<_> = words.iter().map(|w| String::from_utf8_lossy(w)).collect();
                panic!("{name}: the documented call {call:?} is refused: {e}");
            }
            let argc = argv.len() as i32;
            if docs.arity > 0 {
                assert_eq!(argc, docs.arity, "{name} {full}");
            } else {
                assert!(argc >= -docs.arity, "{name} {full}");
                if !full {
                    assert_eq!(argc, -docs.arity, "{name}: the shortest call is the arity");
                }
            }
            for bad in 1.. {
                let (mut words, mut named) = (vec![C::NAME.to_bytes().to_vec()], Vec::new());
                call_of(
                    docs.args, full, payload, bad, &mut 0, &mut words, &mut named,
                );
                if named.is_empty() {
                    break;
                }
                let argv: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
                match parse_argv::<C>(&argv, &REPLAY) {
                    Ok(_) => panic!(
                        "{name}: {:?} parsed",
                        String::from_utf8_lossy(&words.concat())
                    ),
                    Err(e) => {
                        let e = e.to_string();
                        assert!(
                            named.iter().any(|n| e.contains(n.as_str())),
                            "{e} {named:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_command_documents_its_grammar() {
        docs_describe_the_grammar::<rl::Check>(b"");
        docs_describe_the_grammar::<rl::Peek>(b"");
        docs_describe_the_grammar::<rl::Record>(b"");
        let mut log = Log::new();
        log.record(1000, 1, 1000);
        docs_describe_the_grammar::<Restore<Log>>(&log.encode());
        docs_describe_the_grammar::<met::Add>(b"");
        docs_describe_the_grammar::<met::Summary>(b"");
        docs_describe_the_grammar::<met::Range>(b"");
        docs_describe_the_grammar::<met::Export>(b"");
        docs_describe_the_grammar::<Restore<Series>>(&Series::default().encode());
    }

    /// A documented argument and its subtree (names, types, tokens, summaries).
    fn walk(args: &[DocArg], f: &mut impl FnMut(&DocArg)) {
        for a in args {
            f(a);
            walk(a.subargs, f);
        }
    }

    #[test]
    fn acl_categories_follow_the_flags_then_the_extras() {
        use super::acl_categories;
        assert_eq!(acl_categories("write deny-oom fast", c""), "write fast");
        assert_eq!(acl_categories("readonly", c""), "read slow");
        assert_eq!(
            acl_categories("write deny-oom", c"keyspace dangerous"),
            "write slow keyspace dangerous"
        );
    }

    #[test]
    fn docs_are_well_formed_and_internal_commands_say_so() {
        for c in &COMMANDS {
            let name = c.name.to_str().unwrap();
            let d = c.docs;
            assert!(!d.summary.is_empty() && !d.complexity.is_empty(), "{name}");
            let internal = matches!(
                name,
                "RATELIMIT.RECORD" | "RATELIMIT.RESTORE" | "METRIC.RESTORE"
            );
            assert_eq!(
                d.summary.to_str().unwrap().starts_with("Internal: "),
                internal,
                "{name}"
            );
            // Exactly one of RO / RW / OW, and the write commands are the ones that write.
            let access = [key::RO, key::RW, key::OW];
            assert_eq!(access.iter().filter(|f| d.key & **f != 0).count(), 1);
            let write = c.flags.split(' ').any(|f| f == "write");
            assert_eq!(write, d.key & key::RO == 0, "{name}");
            walk(d.args, &mut |a| {
                let composite = matches!(a.kind, ArgType::Block | ArgType::OneOf);
                assert_eq!(composite, !a.subargs.is_empty(), "{name} {:?}", a.name);
                if a.kind == ArgType::PureToken {
                    assert!(a.token.is_some(), "{name} {:?}", a.name);
                }
            });
        }
        // METRIC.ADD's replicated arguments are documented as internal.
        let mut internal = Vec::new();
        walk(met::Add::DOCS.args, &mut |a| {
            if a.summary
                .is_some_and(|s| s.to_str().unwrap().starts_with("Internal: "))
            {
                walk(a.subargs, &mut |s| internal.extend(s.token));
            }
        });
        assert_eq!(internal, [c"RETENTION", c"NOW"]);
    }

    #[test]
    fn every_command_is_registered_once_with_valid_flags() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name.to_str().unwrap()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
        for c in &COMMANDS {
            let name = c.name.to_str().unwrap();
            assert!(name.starts_with("RATELIMIT.") || name.starts_with("METRIC."));
            let write = c.flags.split(' ').any(|f| f == "write");
            let readonly = c.flags.split(' ').any(|f| f == "readonly");
            assert!(write != readonly, "{name}: {}", c.flags);
            assert_eq!(write, c.flags.contains("deny-oom"), "{name}");
            assert_eq!(c.keys, (1, 1, 1));
        }
    }
}
