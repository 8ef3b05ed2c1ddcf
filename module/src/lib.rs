//! tally: a Redis module for exact sliding-window rate limiting and realtime metric
//! aggregates. This file only registers the data types and commands.

#![cfg_attr(test, allow(dead_code))]

pub mod args;
pub mod config;
pub mod datatype;
pub mod effects;
pub mod error;
pub mod metric;
pub mod ratelimit;
pub mod server;

#[cfg(not(test))]
mod registration {
    use std::ffi::{c_int, CString};

    use redis_module::configuration::{register_i64_configuration, ConfigurationFlags};
    use redis_module::{raw, redis_module, Context, RedisString, Status};

    use crate::datatype::{LOG_TYPE, SERIES_TYPE};
    use crate::server::{Ctx, RStr};
    use crate::{metric, ratelimit};

    type Handler = extern "C" fn(Ctx, *mut RStr, c_int) -> c_int;

    /// (name, handler, flags). Every command takes exactly one key, at position 1.
    const COMMANDS: &[(&str, Handler, &str)] = &[
        (
            "RATELIMIT.CHECK",
            ratelimit::command::check,
            "write deny-oom fast",
        ),
        ("RATELIMIT.PEEK", ratelimit::command::peek, "readonly fast"),
        (
            "RATELIMIT.RECORD",
            ratelimit::command::record,
            "write deny-oom fast",
        ),
        (
            "RATELIMIT.RESTORE",
            ratelimit::command::restore,
            "write deny-oom",
        ),
        ("METRIC.ADD", metric::command::add, "write deny-oom fast"),
        ("METRIC.SUMMARY", metric::command::summary, "readonly fast"),
        ("METRIC.RANGE", metric::command::range, "readonly"),
        ("METRIC.RESTORE", metric::command::restore, "write deny-oom"),
    ];

    /// Registers the module configuration; module arguments give the defaults, and
    /// redis.conf / command-line `tally.*` values then override them (LoadConfigs).
    fn register_config(ctx: &Context, args: &[RedisString]) -> Status {
        let words: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let defaults = match crate::config::defaults_from_args(&words) {
            Ok(d) => d,
            Err(e) => {
                ctx.log_warning(&format!("tally: {e}"));
                return Status::Err;
            }
        };
        for ((name, var, _, min, max), default) in crate::config::SETTINGS.into_iter().zip(defaults)
        {
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

    fn init(ctx: &Context, args: &[RedisString]) -> Status {
        if register_config(ctx, args) == Status::Err {
            return Status::Err;
        }
        for &(name, handler, flags) in COMMANDS {
            let (name_c, flags_c) = (CString::new(name).unwrap(), CString::new(flags).unwrap());
            // SAFETY: called from OnLoad with its context; the strings outlive the call
            // (Redis copies them).
            let status = unsafe {
                raw::RedisModule_CreateCommand.unwrap()(
                    ctx.ctx,
                    name_c.as_ptr(),
                    Some(handler),
                    flags_c.as_ptr(),
                    1,
                    1,
                    1,
                )
            };
            if status != raw::Status::Ok as c_int {
                ctx.log_warning(&format!("tally: could not register {name}"));
                return Status::Err;
            }
        }
        if !crate::effects::subscribe(ctx.ctx) {
            ctx.log_warning("tally: could not subscribe to replication events");
            return Status::Err;
        }
        Status::Ok
    }

    redis_module! {
        name: "tally",
        version: 1,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [LOG_TYPE, SERIES_TYPE],
        init: init,
    }
}
