//! The thin layer over the raw Redis module API that every command uses: arguments as byte
//! slices (no copies), keys with the module-type check, replies that follow the client's
//! protocol (RESP2 arrays, RESP3 maps and doubles), the clock, and a command wrapper that turns
//! errors and panics into error replies so nothing a client sends can take the server down.
//!
//! Every raw pointer taken here (context, arguments, keys, IO and digest handles) is one Redis
//! handed to the running command or type callback and keeps alive until it returns; that is
//! the contract the functions rely on, hence the pointer-argument lint is allowed here.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::error::{Error, Result};

pub type Ctx = *mut raw::RedisModuleCtx;
pub type RStr = *mut raw::RedisModuleString;

/// The bytes of a Redis string argument, borrowed without copying.
pub fn bytes<'a>(s: RStr) -> &'a [u8] {
    let mut len = 0usize;
    // SAFETY: `s` is a live argument of the running command; Redis keeps it alive until the
    // command returns, which outlives every use here.
    unsafe {
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(s, &mut len);
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    }
}

/// Server wall-clock time in ms: read once per command, then passed down as `now_ms`.
pub fn now_ms() -> u64 {
    // SAFETY: plain API call with no arguments.
    let ms = unsafe { raw::RedisModule_Milliseconds.unwrap()() };
    ms.max(0) as u64
}

/// Runs a command body: arity and argument errors become error replies, and a panic becomes
/// an error reply instead of aborting the server.
pub fn run(
    ctx: Ctx,
    argv: *mut RStr,
    argc: c_int,
    body: impl FnOnce(&Reply, &[RStr]) -> Result<()>,
) -> c_int {
    let args: &[RStr] = if argv.is_null() || argc <= 0 {
        &[]
    } else {
        // SAFETY: Redis passes `argc` valid argument pointers.
        unsafe { std::slice::from_raw_parts(argv, argc as usize) }
    };
    let reply = Reply::new(ctx);
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&reply, args)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(Error::WrongArity)) => {
            // SAFETY: valid context of the running command.
            unsafe { raw::RedisModule_WrongArity.unwrap()(ctx) };
        }
        Ok(Err(e)) => reply.error(&e),
        Err(_) => reply.error(&Error::custom(
            "internal error (the command was not applied)",
        )),
    }
    raw::Status::Ok as c_int
}

pub struct Reply {
    ctx: Ctx,
    flags: c_int,
}

impl Reply {
    fn new(ctx: Ctx) -> Self {
        // SAFETY: valid context of the running command.
        let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx) };
        Reply { ctx, flags }
    }

    pub fn resp3(&self) -> bool {
        self.flags & raw::REDISMODULE_CTX_FLAGS_RESP3 as c_int != 0
    }

    /// `RedisModule_GetContextFlags` of the running command.
    pub fn ctx_flags(&self) -> c_int {
        self.flags
    }

    pub fn int(&self, v: i64) {
        raw::reply_with_long_long(self.ctx, v);
    }

    pub fn uint(&self, v: u64) {
        self.int(v.min(i64::MAX as u64) as i64);
    }

    /// A double: native in RESP3; in RESP2 a bulk string with the shortest exact spelling.
    pub fn double(&self, v: f64) {
        if self.resp3() {
            raw::reply_with_double(self.ctx, v);
        } else {
            let mut buf = zmij::Buffer::new();
            self.bulk(format_double(&mut buf, v).as_bytes());
        }
    }

    pub fn null(&self) {
        raw::reply_with_null(self.ctx);
    }

    pub fn bulk(&self, s: &[u8]) {
        raw::reply_with_string_buffer(self.ctx, s.as_ptr().cast(), s.len());
    }

    pub fn simple(&self, s: &str) {
        let s = CString::new(s).unwrap_or_default();
        raw::reply_with_simple_string(self.ctx, s.as_ptr());
    }

    pub fn array(&self, len: usize) {
        raw::reply_with_array(self.ctx, len as _);
    }

    /// Opens a record of `fields` named fields: a RESP3 map, or a flat RESP2 array of
    /// name/value pairs. Follow with `field` + value `fields` times.
    pub fn record(&self, fields: usize) {
        if self.resp3() {
            raw::reply_with_map(self.ctx, fields as _);
        } else {
            self.array(fields * 2);
        }
    }

    pub fn field(&self, name: &str) {
        self.bulk(name.as_bytes());
    }

    pub fn error(&self, e: &Error) {
        let msg = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
        // SAFETY: valid context and NUL-terminated message.
        unsafe { raw::RedisModule_ReplyWithError.unwrap()(self.ctx, msg.as_ptr()) };
    }
}

/// Shortest text that parses back to exactly `v` (zmij: no allocation; "inf"/"-inf" for the
/// overflowed sums of huge values).
pub fn format_double(buf: &mut zmij::Buffer, v: f64) -> &str {
    if v.is_finite() {
        buf.format_finite(v)
    } else if v.is_nan() {
        "nan"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// An open key, closed on drop.
pub struct Key {
    ptr: *mut raw::RedisModuleKey,
}

impl Key {
    pub fn read(ctx: Ctx, name: RStr) -> Self {
        Self::open(ctx, name, raw::KeyMode::READ)
    }

    pub fn write(ctx: Ctx, name: RStr) -> Self {
        Self::open(ctx, name, raw::KeyMode::READ | raw::KeyMode::WRITE)
    }

    fn open(ctx: Ctx, name: RStr, mode: raw::KeyMode) -> Self {
        // SAFETY: valid context and key name of the running command.
        let ptr = unsafe { raw::RedisModule_OpenKey.unwrap()(ctx, name, mode.bits() as c_int) };
        Key { ptr: ptr.cast() }
    }

    fn is_empty(&self) -> bool {
        // SAFETY: `ptr` is an open key (or null, which KeyType reports as empty).
        self.ptr.is_null()
            || unsafe { raw::RedisModule_KeyType.unwrap()(self.ptr) }
                == raw::REDISMODULE_KEYTYPE_EMPTY as c_int
    }

    /// The module value of type `ty` held by the key: `None` if the key is empty,
    /// `WRONGTYPE` if it holds anything else.
    // The value belongs to Redis, not to this handle: one key is open per command, so the
    // returned borrow is the only access to it.
    #[allow(clippy::mut_from_ref)]
    pub fn value<T>(&self, ty: &RedisType) -> Result<Option<&mut T>> {
        if self.is_empty() {
            return Ok(None);
        }
        // SAFETY: the key is open and not empty; a module value of `ty` was created by this
        // module from a `Box<T>`, so the cast is to its real type.
        unsafe {
            if raw::RedisModule_ModuleTypeGetType.unwrap()(self.ptr) != *ty.raw_type.borrow() {
                return Err(Error::WrongType);
            }
            let v = raw::RedisModule_ModuleTypeGetValue.unwrap()(self.ptr).cast::<T>();
            Ok(v.as_mut())
        }
    }

    /// Stores `value` in the key (which must be empty or hold the same type), replacing and
    /// freeing any previous value.
    pub fn set_value<T>(&self, ty: &RedisType, value: T) -> Result<()> {
        if !self.is_empty() {
            self.value::<T>(ty)?;
        }
        let raw_value = Box::into_raw(Box::new(value)).cast::<c_void>();
        // SAFETY: the key is open for writing and empty or of type `ty`.
        let status = unsafe {
            raw::RedisModule_ModuleTypeSetValue.unwrap()(self.ptr, *ty.raw_type.borrow(), raw_value)
        };
        if status == raw::Status::Ok as c_int {
            Ok(())
        } else {
            // SAFETY: Redis did not take ownership; reclaim and drop it.
            drop(unsafe { Box::from_raw(raw_value.cast::<T>()) });
            Err(Error::custom("could not store the value"))
        }
    }

    /// Sets the key to expire at an absolute unix time in ms (deterministic on replicas).
    pub fn expire_at(&self, at_ms: u64) {
        // SAFETY: open key with a value.
        unsafe {
            raw::RedisModule_SetAbsExpire.unwrap()(self.ptr, at_ms.min(i64::MAX as u64) as i64)
        };
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by `open` and not closed before.
            unsafe { raw::RedisModule_CloseKey.unwrap()(self.ptr) };
        }
    }
}

/// Type-callback helpers shared by every data type of the module.
pub mod io {
    use super::*;

    /// Saves a serialized value as one RDB string.
    pub fn save(rdb: *mut raw::RedisModuleIO, payload: &[u8]) {
        // SAFETY: valid RDB handle during the save callback.
        unsafe {
            raw::RedisModule_SaveStringBuffer.unwrap()(rdb, payload.as_ptr().cast(), payload.len())
        };
    }

    /// Loads the RDB string saved by `save`; `None` on an I/O error.
    pub fn load(rdb: *mut raw::RedisModuleIO) -> Option<Vec<u8>> {
        let buf = raw::load_string_buffer(rdb).ok()?;
        Some(buf.as_ref().to_vec())
    }

    /// Emits `command key payload` into a rewritten AOF.
    pub fn emit_restore(
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

    pub fn digest_int(md: *mut raw::RedisModuleDigest, v: i64) {
        // SAFETY: valid digest handle during the digest callback.
        unsafe { raw::RedisModule_DigestAddLongLong.unwrap()(md, v as _) };
    }

    pub fn digest_end(md: *mut raw::RedisModuleDigest) {
        // SAFETY: valid digest handle during the digest callback.
        unsafe { raw::RedisModule_DigestEndSequence.unwrap()(md) };
    }
}

#[cfg(test)]
mod tests {
    use super::format_double;

    #[test]
    fn doubles_are_spelled_short_and_exact() {
        let mut buf = zmij::Buffer::new();
        for v in [
            0.0,
            75.0,
            0.1,
            -2.5,
            1e-7,
            1e300,
            123456.789,
            f64::MIN_POSITIVE,
        ] {
            let s = format_double(&mut buf, v).to_string();
            assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
            assert!(s.len() < 32, "{s}");
        }
        assert_eq!(format_double(&mut buf, 75.0), "75.0");
        assert_eq!(format_double(&mut buf, f64::INFINITY), "inf");
        assert_eq!(format_double(&mut buf, 1e300), "1e+300");
        assert_eq!(format_double(&mut buf, 1.5e-7), "1.5e-7");
    }
}
