//! The thin layer over the raw Redis module API that every command uses: the running call
//! (its context and its arguments as byte slices, no copies, borrowed for the call only), keys
//! with the module-type check, replies that follow the client's protocol (RESP2 arrays, RESP3
//! maps and doubles), replication, the clock, and a command wrapper that turns errors and
//! panics into error replies so nothing a client sends can take the server down.
//!
//! Every raw pointer here is one Redis handed to the running command and keeps alive until it
//! returns. Only [`run`] takes them, as an `unsafe fn` whose caller (the command handler Redis
//! calls) vouches for them; everything it hands on is borrowed from its frame, so no argument,
//! key or value can outlive the call.

use std::ffi::{c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::error::{Error, Result};

pub(crate) type Ctx = *mut raw::RedisModuleCtx;
pub(crate) type RStr = *mut raw::RedisModuleString;

/// Arguments a command converts to byte slices without allocating (RATELIMIT.CHECK with three
/// policies and a cost has 8 after its key).
const STACK_ARGS: usize = 8;

/// Server wall-clock time in ms: read once per command, then passed down as `now_ms`.
pub(crate) fn now_ms() -> u64 {
    // SAFETY: plain API call with no arguments.
    let ms = unsafe { raw::RedisModule_Milliseconds.unwrap()() };
    ms.max(0) as u64
}

/// Runs a command body with the call and its arguments from `argv[skip]` on as byte slices
/// (the first `skip`, the command name and key, are only passed as Redis strings): errors
/// become error replies (the arity error as Redis formats it), and a panic becomes an error
/// reply instead of aborting the server.
///
/// The body gets the arguments for a lifetime of its own (`for<'a>`): they cannot escape it.
///
/// # Safety
/// `ctx` is the context of the running command and `argv` points to its `argc` arguments, as
/// Redis passes them to a command handler; all stay valid until the handler returns.
pub(crate) unsafe fn run(
    ctx: Ctx,
    argv: *mut RStr,
    argc: c_int,
    skip: usize,
    body: impl for<'a> FnOnce(&Call<'a>, &[&'a [u8]]) -> Result<()>,
) -> c_int {
    let raw_args: &[RStr] = if argv.is_null() || argc <= 0 {
        &[]
    } else {
        // SAFETY: Redis passes `argc` valid argument pointers (the caller's contract).
        unsafe { std::slice::from_raw_parts(argv, argc as usize) }
    };
    let call = Call::new(ctx, raw_args);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let raw_rest = raw_args.get(skip..).unwrap_or(&[]);
        let mut stack: [&[u8]; STACK_ARGS] = [&[]; STACK_ARGS];
        let heap: Vec<&[u8]>;
        let args: &[&[u8]] = if raw_rest.len() <= STACK_ARGS {
            for (slot, &s) in stack.iter_mut().zip(raw_rest) {
                *slot = call.bytes(s);
            }
            &stack[..raw_rest.len()]
        } else {
            heap = raw_rest.iter().map(|&s| call.bytes(s)).collect();
            &heap
        };
        body(&call, args)
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(Error::WrongArity)) => {
            // SAFETY: valid context of the running command.
            unsafe { raw::RedisModule_WrongArity.unwrap()(ctx) };
        }
        Ok(Err(e)) => call.reply.error(&e),
        Err(_) => call.reply.error(&Error::custom(
            "internal error (the command was not applied)",
        )),
    }
    raw::Status::Ok as c_int
}

/// The running command: its context and arguments, valid for `'a`, the call.
pub(crate) struct Call<'a> {
    ctx: Ctx,
    argv: &'a [RStr],
    pub reply: Reply,
}

impl<'a> Call<'a> {
    fn new(ctx: Ctx, argv: &'a [RStr]) -> Self {
        Call {
            ctx,
            argv,
            reply: Reply::new(ctx),
        }
    }

    /// The bytes of one of this call's arguments, borrowed for the call.
    fn bytes(&self, s: RStr) -> &'a [u8] {
        let mut len = 0usize;
        // SAFETY: `s` is an argument of the running command, alive for `'a` (see `run`).
        unsafe {
            let ptr = raw::RedisModule_StringPtrLen.unwrap()(s, &mut len);
            std::slice::from_raw_parts(ptr.cast::<u8>(), len)
        }
    }

    /// `RedisModule_GetContextFlags` of the running command.
    pub fn flags(&self) -> c_int {
        self.reply.flags
    }

    /// Opens the key named by argument `i` for reading.
    pub fn read_key(&self, i: usize) -> Key<'_> {
        self.open_key(i, raw::KeyMode::READ)
    }

    /// Opens the key named by argument `i` for reading and writing.
    pub fn write_key(&self, i: usize) -> Key<'_> {
        self.open_key(i, raw::KeyMode::READ | raw::KeyMode::WRITE)
    }

    fn open_key(&self, i: usize, mode: raw::KeyMode) -> Key<'_> {
        // SAFETY: valid context and key name (an argument) of the running command.
        let ptr = unsafe {
            raw::RedisModule_OpenKey.unwrap()(self.ctx, self.argv[i], mode.bits() as c_int)
        };
        Key {
            ptr: ptr.cast(),
            _call: PhantomData,
        }
    }

    /// Propagates the call itself to replicas and the AOF (a deterministic command), and
    /// counts it as a change for the `save` points.
    pub fn replicate_verbatim(&self) {
        raw::replicate_verbatim(self.ctx);
    }

    /// Propagates `command args...` to replicas and the AOF in place of the call (the
    /// deterministic effect of a command that read the clock or the configuration).
    pub fn replicate(&self, command: &CStr, args: &[Arg]) {
        // Strings this call creates (numbers, keywords) are released after Redis has taken its
        // own reference; the call's arguments are only lent.
        let strings: Vec<(RStr, bool)> = args
            .iter()
            .map(|arg| match *arg {
                Arg::Argv(i) => (self.argv[i], false),
                // SAFETY (both): valid context; the string is freed below.
                Arg::Int(v) => (
                    unsafe {
                        raw::RedisModule_CreateStringFromLongLong.unwrap()(
                            self.ctx,
                            i64::try_from(v).unwrap_or(i64::MAX),
                        )
                    },
                    true,
                ),
                Arg::Word(w) => (
                    unsafe {
                        raw::RedisModule_CreateString.unwrap()(self.ctx, w.as_ptr().cast(), w.len())
                    },
                    true,
                ),
            })
            .collect();
        let mut argv: Vec<RStr> = strings.iter().map(|&(s, _)| s).collect();
        // SAFETY: valid context; "v" is an array of live RedisModuleStrings and its length
        // (Redis takes its own reference to each).
        unsafe {
            raw::RedisModule_Replicate.unwrap()(
                self.ctx,
                command.as_ptr(),
                c"v".as_ptr(),
                argv.as_mut_ptr(),
                argv.len(),
            );
        }
        for (s, created) in strings {
            if created {
                // SAFETY: created above with this context and not freed before.
                unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, s) };
            }
        }
    }

    /// Runs `f` over `INFO <section>` of the server; `None` if the server gives no info.
    pub fn server_info<R>(&self, section: &CStr, f: impl FnOnce(&ServerInfo) -> R) -> Option<R> {
        // SAFETY: valid context and NUL-terminated section name; the info is freed below, after
        // its last use by `f`.
        unsafe {
            let info = raw::RedisModule_GetServerInfo.unwrap()(self.ctx, section.as_ptr());
            if info.is_null() {
                return None;
            }
            let result = f(&ServerInfo {
                info,
                _call: PhantomData,
            });
            raw::RedisModule_FreeServerInfo.unwrap()(self.ctx, info);
            Some(result)
        }
    }
}

/// `INFO` data of the server, borrowed by `Call::server_info`'s closure.
pub(crate) struct ServerInfo<'a> {
    info: *mut raw::RedisModuleServerInfoData,
    _call: PhantomData<&'a ()>,
}

impl ServerInfo<'_> {
    /// An unsigned field; `None` if it is missing or not a number.
    pub fn unsigned(&self, field: &CStr) -> Option<u64> {
        let mut err: c_int = 0;
        // SAFETY: live info data and NUL-terminated field name.
        let v = unsafe {
            raw::RedisModule_ServerInfoGetFieldUnsigned.unwrap()(
                self.info,
                field.as_ptr(),
                &mut err,
            )
        };
        (err == 0).then_some(v)
    }

    /// Whether a text field equals `value`.
    pub fn text_is(&self, field: &CStr, value: &[u8]) -> bool {
        // SAFETY: live info data and NUL-terminated field name; the returned C string belongs
        // to the info data, which outlives this read.
        unsafe {
            let v = raw::RedisModule_ServerInfoGetFieldC.unwrap()(self.info, field.as_ptr());
            !v.is_null() && CStr::from_ptr(v).to_bytes() == value
        }
    }
}

/// One argument of a replicated command.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// Argument `i` of the running call, as the client sent it.
    Argv(usize),
    Int(u64),
    Word(&'static str),
}

pub(crate) struct Reply {
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
pub(crate) fn format_double(buf: &mut zmij::Buffer, v: f64) -> &str {
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

/// An open key of the running call, closed on drop.
pub(crate) struct Key<'a> {
    ptr: *mut raw::RedisModuleKey,
    _call: PhantomData<&'a Call<'a>>,
}

impl Key<'_> {
    fn is_empty(&self) -> bool {
        // SAFETY: `ptr` is an open key (or null, which KeyType reports as empty).
        self.ptr.is_null()
            || unsafe { raw::RedisModule_KeyType.unwrap()(self.ptr) }
                == raw::REDISMODULE_KEYTYPE_EMPTY as c_int
    }

    /// Whether the key holds a module value of type `ty`: `Ok(false)` if it is empty,
    /// `WRONGTYPE` if it holds anything else.
    fn holds(&self, ty: &RedisType) -> Result<bool> {
        if self.is_empty() {
            return Ok(false);
        }
        // SAFETY: the key is open and not empty.
        let actual = unsafe { raw::RedisModule_ModuleTypeGetType.unwrap()(self.ptr) };
        if actual == *ty.raw_type.borrow() {
            Ok(true)
        } else {
            Err(Error::WrongType)
        }
    }

    /// The module value of type `ty` held by the key, `T` being the Rust type of `ty`'s values:
    /// `None` if the key is empty, `WRONGTYPE` if it holds anything else. Borrowed from the
    /// key handle, mutably, so there is one borrow at a time.
    pub fn value<T>(&mut self, ty: &RedisType) -> Result<Option<&mut T>> {
        if !self.holds(ty)? {
            return Ok(None);
        }
        // SAFETY: the key is open and holds a value of `ty`, which this module created from a
        // `Box<T>`; the borrow of `self` keeps the key open while the value is in use.
        unsafe {
            let v = raw::RedisModule_ModuleTypeGetValue.unwrap()(self.ptr).cast::<T>();
            Ok(v.as_mut())
        }
    }

    /// Stores `value` in the key (which must be empty or hold the same type), replacing and
    /// freeing any previous value.
    pub fn set_value<T>(&mut self, ty: &RedisType, value: T) -> Result<()> {
        self.holds(ty)?;
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
    pub fn expire_at(&mut self, at_ms: u64) {
        // SAFETY: open key with a value.
        unsafe {
            raw::RedisModule_SetAbsExpire.unwrap()(self.ptr, at_ms.min(i64::MAX as u64) as i64)
        };
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by `Call::open_key` and not closed before.
            unsafe { raw::RedisModule_CloseKey.unwrap()(self.ptr) };
        }
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
