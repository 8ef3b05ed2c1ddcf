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

use std::ffi::{c_int, CString};

use redis_module::configuration::{register_i64_configuration, ConfigurationFlags};
use redis_module::{raw, Context, RedisString, Status};

use tally_core::{metric::Series, ratelimit::Log};

use crate::command::{spec, Spec};
use crate::datatype::Restore;
use crate::{metric::command as met, ratelimit::command as rl};

/// Every command of the module; each declares its name, flags and keys beside its handler.
const COMMANDS: [Spec; 8] = [
    spec::<rl::Check>(),
    spec::<rl::Peek>(),
    spec::<rl::Record>(),
    spec::<Restore<Log>>(),
    spec::<met::Add>(),
    spec::<met::Summary>(),
    spec::<met::Range>(),
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
