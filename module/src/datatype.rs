//! Persistence of the module's data types, on the Redis side: the two registered types, their
//! callbacks (RDB, AOF rewrite, digest, memory usage, copy, free) and the RESTORE command that
//! AOF rewrite emits, each written once, generically, over each type's versioned encoding in
//! `tally_core` (`ratelimit::encoding`, `metric::encoding`).

use std::ffi::{c_void, CStr};

use redis_module::native_types::RedisType;
use redis_module::raw;
use tally_core::codec::Decoded;
use tally_core::metric::{encoding as series_encoding, Series};
use tally_core::ratelimit::{encoding as log_encoding, Log};

use crate::args::Args;
use crate::command::{key, Command, DocArg, Docs, Env};
use crate::error::{Error, Result};
use crate::server::{Call, RStr};

/// The rate-limit log type (encver: its encoding's current version).
pub static LOG_TYPE: RedisType = RedisType::new(
    "tally-log",
    log_encoding::ENCODING_VERSION as i32,
    type_methods::<Log>(),
);

/// The metric series type (encver: its encoding's current version).
pub static SERIES_TYPE: RedisType = RedisType::new(
    "tally-met",
    series_encoding::ENCODING_VERSION as i32,
    type_methods::<Series>(),
);

pub(crate) trait ModuleValue: Clone + Sized + 'static {
    /// The version written first in every payload; `decode` reads this and every older one.
    const ENCODING_VERSION: u8;
    /// The command that AOF rewrite emits to recreate a value from its payload.
    const RESTORE_COMMAND: &'static CStr;

    /// The registered type whose values are `Self`.
    fn redis_type() -> &'static RedisType;

    /// Canonical: equal states give equal bytes (digests are taken from it).
    fn encode(&self) -> Vec<u8>;
    fn decode(payload: &[u8]) -> Decoded<Self>;
    /// Bytes owned on the heap beyond `size_of::<Self>()`.
    fn heap_bytes(&self) -> usize;
}

impl ModuleValue for Log {
    const ENCODING_VERSION: u8 = log_encoding::ENCODING_VERSION;
    const RESTORE_COMMAND: &'static CStr = c"RATELIMIT.RESTORE";

    fn redis_type() -> &'static RedisType {
        &LOG_TYPE
    }

    fn encode(&self) -> Vec<u8> {
        log_encoding::encode(self)
    }

    fn decode(payload: &[u8]) -> Decoded<Self> {
        log_encoding::decode(payload)
    }

    fn heap_bytes(&self) -> usize {
        Log::heap_bytes(self)
    }
}

impl ModuleValue for Series {
    const ENCODING_VERSION: u8 = series_encoding::ENCODING_VERSION;
    const RESTORE_COMMAND: &'static CStr = c"METRIC.RESTORE";

    fn redis_type() -> &'static RedisType {
        &SERIES_TYPE
    }

    fn encode(&self) -> Vec<u8> {
        series_encoding::encode(self)
    }

    fn decode(payload: &[u8]) -> Decoded<Self> {
        series_encoding::decode(payload)
    }

    fn heap_bytes(&self) -> usize {
        Series::heap_bytes(self)
    }
}

/// `RATELIMIT.RESTORE key payload` and `METRIC.RESTORE key payload` (internal: what AOF
/// rewrite emits). Replaces the key's value with the decoded payload, and the key has no TTL
/// afterwards: the payload is the value, not its key's expiry. AOF rewrite emits the key's real
/// expiry itself (`PEXPIREAT`, right after the module's rewrite callback), so a key that was
/// `PERSIST`ed stays without a TTL after a reload, as on the primary, and one with a TTL gets
/// exactly that TTL back.
#[derive(Debug)]
pub(crate) struct Restore<T>(pub T);

impl<T: ModuleValue> Command for Restore<T> {
    const NAME: &'static CStr = T::RESTORE_COMMAND;
    const FLAGS: &'static str = "write deny-oom";
    const DOCS: Docs = Docs {
        summary: c"Internal: replaces the key's value with a payload written by AOF rewrite; the key has no TTL afterwards",
        complexity: c"O(N): N payload bytes",
        arity: 3,
        key: key::OW | key::UPDATE,
        args: &[DocArg::key(c"key"), DocArg::string(c"payload")],
        acl_categories: c"keyspace dangerous",
    };

    fn parse(mut args: Args, _: &Env) -> Result<Self> {
        match args.next_arg() {
            Some(payload) if args.argc() == 3 => {
                T::decode(payload).map(Restore).map_err(Error::Corrupt)
            }
            _ => Err(Error::WrongArity),
        }
    }

    fn execute(self, call: &Call, _: &Env) -> Result<()> {
        call.write_key(1).set_value(T::redis_type(), self.0)?;
        // Deterministic: the payload is the whole state.
        call.replicate_verbatim();
        call.reply.simple("OK");
        Ok(())
    }
}

const fn type_methods<T: ModuleValue>() -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load::<T>),
        rdb_save: Some(rdb_save::<T>),
        aof_rewrite: Some(aof_rewrite::<T>),
        mem_usage: Some(mem_usage::<T>),
        digest: Some(digest::<T>),
        free: Some(free::<T>),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: Some(copy::<T>),
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
    }
}

// SAFETY (all callbacks): Redis passes back the pointer this module created from a `Box<T>`
// for this type, and the IO / digest handles are valid for the duration of the callback.

unsafe extern "C" fn rdb_load<T: ModuleValue>(
    rdb: *mut raw::RedisModuleIO,
    encver: i32,
) -> *mut c_void {
    if encver > i32::from(T::ENCODING_VERSION) {
        return std::ptr::null_mut();
    }
    match io::load(rdb).as_deref().map(T::decode) {
        Some(Ok(value)) => Box::into_raw(Box::new(value)).cast(),
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn rdb_save<T: ModuleValue>(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    io::save(rdb, &(*value.cast::<T>()).encode());
}

unsafe extern "C" fn aof_rewrite<T: ModuleValue>(
    aof: *mut raw::RedisModuleIO,
    key: RStr,
    value: *mut c_void,
) {
    io::emit_restore(aof, T::RESTORE_COMMAND, key, &(*value.cast::<T>()).encode());
}

unsafe extern "C" fn mem_usage<T: ModuleValue>(value: *const c_void) -> usize {
    std::mem::size_of::<T>() + (*value.cast::<T>()).heap_bytes()
}

unsafe extern "C" fn digest<T: ModuleValue>(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    for chunk in (*value.cast::<T>()).encode().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        io::digest_int(md, i64::from_le_bytes(word));
    }
    io::digest_end(md);
}

unsafe extern "C" fn free<T: ModuleValue>(value: *mut c_void) {
    drop(Box::from_raw(value.cast::<T>()));
}

unsafe extern "C" fn copy<T: ModuleValue>(
    _from: RStr,
    _to: RStr,
    value: *const c_void,
) -> *mut c_void {
    Box::into_raw(Box::new((*value.cast::<T>()).clone())).cast()
}

/// The raw calls of the callbacks above.
///
/// # Safety
/// Each takes a handle (RDB / AOF IO, digest) and key that Redis passed to the running
/// callback, valid until it returns.
mod io {
    use super::*;

    /// Saves a serialized value as one RDB string.
    pub(super) unsafe fn save(rdb: *mut raw::RedisModuleIO, payload: &[u8]) {
        // SAFETY: valid RDB handle during the save callback.
        unsafe {
            raw::RedisModule_SaveStringBuffer.unwrap()(rdb, payload.as_ptr().cast(), payload.len())
        };
    }

    /// Loads the RDB string saved by `save`; `None` on an I/O error.
    pub(super) unsafe fn load(rdb: *mut raw::RedisModuleIO) -> Option<Vec<u8>> {
        let buf = raw::load_string_buffer(rdb).ok()?;
        Some(buf.as_ref().to_vec())
    }

    /// Emits `command key payload` into a rewritten AOF.
    pub(super) unsafe fn emit_restore(
        aof: *mut raw::RedisModuleIO,
        command: &'static std::ffi::CStr,
        key: RStr,
        payload: &[u8],
    ) {
        // SAFETY: valid AOF handle and key during the rewrite callback; "sb" is a
        // RedisModuleString then a (pointer, length) buffer.
        unsafe {
            raw::RedisModule_EmitAOF.unwrap()(
                aof,
                command.as_ptr(),
                c"sb".as_ptr(),
                key,
                payload.as_ptr(),
                payload.len(),
            )
        };
    }

    pub(super) unsafe fn digest_int(md: *mut raw::RedisModuleDigest, v: i64) {
        // SAFETY: valid digest handle during the digest callback.
        unsafe { raw::RedisModule_DigestAddLongLong.unwrap()(md, v as _) };
    }

    pub(super) unsafe fn digest_end(md: *mut raw::RedisModuleDigest) {
        // SAFETY: valid digest handle during the digest callback.
        unsafe { raw::RedisModule_DigestEndSequence.unwrap()(md) };
    }
}

#[cfg(test)]
mod tests;
