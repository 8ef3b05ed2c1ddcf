//! Whether the explicit effect of a clock-reading write has to be built.
//!
//! RATELIMIT.CHECK and METRIC.ADD read the server clock (and METRIC.ADD the run-time
//! retention), so replicas and the AOF get their effect as a deterministic command
//! (RATELIMIT.RECORD, METRIC.ADD ... TS ts RETENTION ms NOW ms) built with
//! `RedisModule_Replicate`. Redis builds that command (a command lookup and one string
//! object per argument: about 4,700 instructions for CHECK, more than its whole algorithm)
//! before deciding, in `shouldPropagate`, whether anything consumes it: the AOF, a replica, or
//! a replication backlog. On a server with none of them the effect is thrown away.
//!
//! So a write builds its effect unless this module knows that nothing consumes it: the AOF is
//! off (a context flag, read on every command), the server is a standalone primary (not in a
//! cluster), and `INFO replication` says there is no replica and no backlog. That last check
//! is made once, at the first write after the module loads and after every server event that
//! can create a replica or a backlog, and its answer is kept until the next such event:
//! - a fork: a full sync creates the backlog, then forks for the snapshot that the replica
//!   loads, and every write after the fork must reach the replica; the event fires in the
//!   parent, synchronously, before it runs another command;
//! - a replication role change (REPLICAOF, FAILOVER, promotion);
//! - a replica going online or offline;
//! - loading a dataset (a restarted primary restores its backlog from the RDB).
//!
//! A write that skips its effect still calls `RedisModule_ReplicateVerbatim`. It costs a few
//! instructions, counts the write as a change for the `save` points, and is the safe
//! fallback: if Redis ever did propagate it, the replica would receive the command itself.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU8, Ordering};

use redis_module::{raw, Context};

use crate::server::Call;

const UNKNOWN: u8 = 0;
const UNCONSUMED: u8 = 1;
const CONSUMED: u8 = 2;

/// What the last check of `INFO replication` found. Redis runs commands and events on one
/// thread; the atomic only makes the static safe to share.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Context flags under which the effect is always built.
const ALWAYS: c_int = (raw::REDISMODULE_CTX_FLAGS_AOF
    | raw::REDISMODULE_CTX_FLAGS_CLUSTER
    | raw::REDISMODULE_CTX_FLAGS_SLAVE) as c_int;

/// True when something may consume the replicated effect of the running write command.
pub(crate) fn consumed(call: &Call) -> bool {
    if call.flags() & ALWAYS != 0 {
        return true;
    }
    match STATE.load(Ordering::Relaxed) {
        UNCONSUMED => false,
        CONSUMED => true,
        _ => {
            let consumed = replication_active(call);
            STATE.store(
                if consumed { CONSUMED } else { UNCONSUMED },
                Ordering::Relaxed,
            );
            consumed
        }
    }
}

/// Marks a write whose effect was not built as a change (see the module comment).
pub(crate) fn skip(call: &Call) {
    call.replicate_verbatim();
}

/// `INFO replication`: a replica, a backlog, or not a primary. Any field it cannot read
/// counts as active.
fn replication_active(call: &Call) -> bool {
    call.server_info(c"replication", |info| {
        !info.text_is(c"role", b"master")
            || info.unsigned(c"connected_slaves") != Some(0)
            || info.unsigned(c"repl_backlog_active") != Some(0)
    })
    .unwrap_or(true)
}

/// Server events after which `INFO replication` is read again.
const EVENTS: [u64; 4] = [
    raw::REDISMODULE_EVENT_FORK_CHILD,
    raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    raw::REDISMODULE_EVENT_REPLICA_CHANGE,
    raw::REDISMODULE_EVENT_LOADING,
];

unsafe extern "C" fn forget(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    STATE.store(UNKNOWN, Ordering::Relaxed);
}

/// Subscribes to the events above (from OnLoad). False if the server refused one.
pub(crate) fn subscribe(ctx: &Context) -> bool {
    EVENTS.iter().all(|&id| {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        raw::subscribe_to_server_event(ctx.ctx, event, Some(forget)) == raw::Status::Ok
    })
}
