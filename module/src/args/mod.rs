//! Strict argument parsing shared by every command: a cursor over the arguments as byte
//! slices ([`Args`], no FFI), and number parsers with no leading or trailing garbage, no sign
//! where none is allowed, no overflow. Each parser names the argument in its error.

use crate::error::{Error, Result};

/// A command's arguments after its name and key (which the parser never reads: the key is
/// opened by the handler), read front to back by the command's parser.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Args<'a> {
    /// `argv[2..]`.
    rest: &'a [&'a [u8]],
    /// Every argument, the command name and key included.
    argc: usize,
    next: usize,
}

/// Arguments before the ones [`Args`] holds: the command name and the key.
pub(crate) const NAME_AND_KEY: usize = 2;

impl<'a> Args<'a> {
    /// The arguments after the name and key, of a call with `argc` arguments in all.
    pub fn new(rest: &'a [&'a [u8]], argc: usize) -> Self {
        debug_assert_eq!(rest.len(), argc.saturating_sub(NAME_AND_KEY));
        Args {
            rest,
            argc,
            next: 0,
        }
    }

    /// Every argument, the command name and key included.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// How many arguments are left to read.
    pub fn left(&self) -> usize {
        self.rest.len() - self.next
    }

    /// The next argument, without reading it.
    pub fn peek(&self) -> Option<&'a [u8]> {
        self.rest.get(self.next).copied()
    }

    /// Whether the last argument not yet read is `keyword` (any case); if so it is consumed,
    /// and the arguments before it are read as if it were not there (a trailing flag).
    pub fn strip_last_keyword(&mut self, keyword: &str) -> bool {
        match self.rest.split_last() {
            Some((last, before)) if self.left() > 0 && is_keyword(last, keyword) => {
                self.rest = before;
                true
            }
            _ => false,
        }
    }

    /// Reads the next argument.
    pub fn next_arg(&mut self) -> Option<&'a [u8]> {
        let arg = self.peek()?;
        self.next += 1;
        Some(arg)
    }

    /// Reads the next argument, which must exist (the caller checked the arity).
    fn take(&mut self) -> Result<&'a [u8]> {
        self.next_arg().ok_or(Error::WrongArity)
    }

    /// Reads `keyword` (any case); anything else is a syntax error naming it.
    pub fn keyword(&mut self, keyword: &str) -> Result<()> {
        let arg = self.take()?;
        if is_keyword(arg, keyword) {
            Ok(())
        } else {
            Err(Error::syntax(&String::from_utf8_lossy(arg)))
        }
    }

    /// Reads an integer in `1..=max` (see [`positive`]).
    pub fn positive(&mut self, name: &str, max: u64) -> Result<u64> {
        positive(self.take()?, name, max)
    }

    /// Reads an integer in `0..=i64::MAX` (see [`non_negative`]).
    pub fn non_negative(&mut self, name: &str) -> Result<u64> {
        non_negative(self.take()?, name)
    }

    /// Reads a finite double (see [`finite`]).
    pub fn finite(&mut self, name: &str) -> Result<f64> {
        finite(self.take()?, name)
    }
}

/// Parses a decimal integer in `1..=max`.
pub(crate) fn positive(bytes: &[u8], name: &str, max: u64) -> Result<u64> {
    match digits(bytes) {
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(v) if v > max => Err(Error::integer_at_most(name, max)),
        _ => Err(Error::positive_integer(name)),
    }
}

/// Parses a decimal integer in `0..=i64::MAX`.
pub(crate) fn non_negative(bytes: &[u8], name: &str) -> Result<u64> {
    match digits(bytes) {
        Some(v) if v <= i64::MAX as u64 => Ok(v),
        _ => Err(Error::non_negative_integer(name)),
    }
}

/// Parses a finite double (NaN and infinities, spelled or reached by overflow, are refused).
pub(crate) fn finite(bytes: &[u8], name: &str) -> Result<f64> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::finite_number(name))?;
    // Rust's parser accepts "inf", "nan" and "infinity": those are caught by is_finite below.
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && !text.is_empty() => Ok(v),
        _ => Err(Error::finite_number(name)),
    }
}

/// True if `arg` equals `keyword`, ignoring ASCII case (Redis keywords are case-insensitive).
pub(crate) fn is_keyword(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// Plain decimal digits only, at most u64::MAX; `None` for anything else.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_accepts_plain_digits_within_bounds() {
        assert_eq!(positive(b"5", "limit", u64::MAX), Ok(5));
        assert_eq!(positive(b"007", "limit", u64::MAX), Ok(7));
        assert_eq!(
            positive(b"18446744073709551615", "limit", u64::MAX),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn positive_refuses_garbage_signs_zero_and_overflow() {
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"1.0",
            b"1e3",
            b"18446744073709551616",
            b"\xff",
        ] {
            assert_eq!(
                positive(bad, "limit", u64::MAX),
                Err(Error::positive_integer("limit")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn positive_names_the_upper_bound_when_exceeded() {
        assert_eq!(
            positive(b"4294967296", "window_ms", u32::MAX as u64),
            Err(Error::integer_at_most("window_ms", u32::MAX as u64))
        );
        assert_eq!(
            positive(b"99999999999999999999999", "window_ms", 10),
            Err(Error::positive_integer("window_ms"))
        );
    }

    #[test]
    fn non_negative_accepts_zero_and_refuses_beyond_i64() {
        assert_eq!(non_negative(b"0", "TS"), Ok(0));
        assert_eq!(
            non_negative(b"9223372036854775807", "TS"),
            Ok(i64::MAX as u64)
        );
        assert!(non_negative(b"9223372036854775808", "TS").is_err());
        assert!(non_negative(b"-5", "TS").is_err());
    }

    #[test]
    fn finite_refuses_nan_infinities_overflow_and_garbage() {
        assert_eq!(finite(b"75", "value"), Ok(75.0));
        assert_eq!(finite(b"-1.5e3", "value"), Ok(-1500.0));
        for bad in [
            &b"nan"[..],
            b"NaN",
            b"inf",
            b"-inf",
            b"infinity",
            b"1e400",
            b"",
            b" 1",
            b"1,5",
            b"0x10",
            b"\xff",
        ] {
            assert_eq!(
                finite(bad, "value"),
                Err(Error::finite_number("value")),
                "{bad:?}"
            );
        }
    }
}
