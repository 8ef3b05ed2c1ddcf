//! `StoreError`: every way a Redis call can fail, as a value. Redis's own errors are sorted
//! here, once, by their code (and the module's argument errors by [`parse_refusal`]); nothing
//! above the store reads an error's text.

use std::fmt;

use redis::RedisError;

/// Why a Redis call did not succeed. The `String`s are for the log, never for a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No connection, a timeout, a node loading or failing over: try again later.
    Unavailable(String),
    /// Redis answers but the tally module is not loaded.
    ModuleMissing,
    /// The write was taken but fewer replicas than required confirmed it.
    NotAcknowledged { replicas: i64, wanted: u32 },
    /// A metric type's key holds a value that is not a metric series (`WRONGTYPE`); the type,
    /// when known.
    WrongType(Option<String>),
    /// Storing these types would make more than `max` distinct types (`MAX_TYPES`).
    TooManyTypes { max: usize },
    /// Redis refused the command for another reason.
    Server(String),
    /// The module refused an argument the client chose (a window beyond the retention, a range
    /// of too many buckets). The client's fault: 422. `max` is the bound the module states,
    /// when it states one (for `window_ms`: the retention, in ms); `message` is the module's
    /// message without `ERR`, worded for the client.
    Refused {
        argument: Argument,
        max: Option<u64>,
        message: String,
    },
    /// A reply the API does not understand.
    Protocol(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "Redis unavailable: {why}"),
            StoreError::ModuleMissing => f.write_str("the tally module is not loaded in Redis"),
            StoreError::NotAcknowledged { replicas, wanted } => write!(
                f,
                "write not acknowledged: {replicas} of {wanted} replicas confirmed it"
            ),
            StoreError::WrongType(Some(kind)) => {
                write!(
                    f,
                    "the key of metric type {kind:?} holds another Redis type"
                )
            }
            StoreError::WrongType(None) => f.write_str("a metric key holds another Redis type"),
            StoreError::TooManyTypes { max } => {
                write!(f, "the type index already holds {max} types (MAX_TYPES)")
            }
            StoreError::Server(msg) => write!(f, "Redis error: {msg}"),
            StoreError::Refused { message, .. } => f.write_str(message),
            StoreError::Protocol(msg) => write!(f, "unexpected Redis reply: {msg}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        match e.code() {
            // A server-side error reply.
            Some(code) => match code {
                "LOADING" | "CLUSTERDOWN" | "MASTERDOWN" | "TRYAGAIN" | "READONLY" | "MOVED"
                | "ASK" | "NOREPLICAS" | "BUSY" => StoreError::Unavailable(e.to_string()),
                "WRONGTYPE" => StoreError::WrongType(None),
                "ERR" if e.detail().is_some_and(|d| d.contains("unknown command")) => {
                    StoreError::ModuleMissing
                }
                _ => StoreError::Server(e.to_string()),
            },
            // I/O, connect/response timeouts, no node for the slot, ...
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// A client-chosen argument of a module command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument {
    /// `METRIC.SUMMARY ... WINDOW window_ms`.
    WindowMs,
    /// `METRIC.RANGE`'s `bucket_ms`.
    BucketMs,
    /// `METRIC.RANGE`'s `from_ms`.
    FromMs,
    /// `METRIC.RANGE`'s `to_ms`.
    ToMs,
    /// The span of `METRIC.RANGE` (`the range spans more than N buckets of bucket_ms`).
    Span,
}

impl Argument {
    /// How the module's argument errors begin for this argument (its `Error::Arg` messages
    /// name the argument first; the span error starts with `the range spans`).
    fn prefix(self) -> &'static str {
        match self {
            Argument::WindowMs => "window_ms",
            Argument::BucketMs => "bucket_ms",
            Argument::FromMs => "from_ms",
            Argument::ToMs => "to_ms",
            Argument::Span => "the range spans",
        }
    }
}

/// Reads one of the module's documented argument errors (the message after `ERR`): which of
/// `arguments` it refuses, and the upper bound `<name> must be an integer between 1 and <max>`
/// states. `None` for any other message. The only place that reads a module message's text.
pub(crate) fn parse_refusal(
    detail: &str,
    arguments: &[Argument],
) -> Option<(Argument, Option<u64>)> {
    let argument = *arguments.iter().find(|a| detail.starts_with(a.prefix()))?;
    let max = detail
        .strip_prefix(argument.prefix())
        .and_then(|rest| rest.strip_prefix(" must be an integer between 1 and "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    Some((argument, max))
}

/// An `ERR` reply that refuses one of `arguments` is `Refused`; anything else converts as
/// usual.
pub(crate) fn refused(e: RedisError, arguments: &[Argument]) -> StoreError {
    if e.code() == Some("ERR") {
        if let Some(detail) = e.detail() {
            if let Some((argument, max)) = parse_refusal(detail, arguments) {
                return StoreError::Refused {
                    argument,
                    max,
                    message: detail.to_string(),
                };
            }
        }
    }
    StoreError::from(e)
}

/// Whether `e` says the connection it came from is broken (or stuck): it is then dropped, and
/// the next call dials a new one.
pub(crate) fn broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
/// A `WrongType` error names `kind`.
pub(crate) fn with_kind(e: StoreError, kind: &str) -> StoreError {
    match e {
        StoreError::WrongType(None) => StoreError::WrongType(Some(kind.to_string())),
        e => e,
    }
}

/// `REDIS_URL` cannot be used (found when the store is built, at start-up): the client
/// library's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(pub String);

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidUrl {}

impl From<RedisError> for InvalidUrl {
    fn from(e: RedisError) -> Self {
        InvalidUrl(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrongtype_is_its_own_error_and_io_errors_break_the_connection() {
        let wrong = redis::make_extension_error(
            "WRONGTYPE".to_string(),
            Some("Operation against a key holding the wrong kind of value".to_string()),
        );
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert!(broken(&io));
        assert!(!broken(&wrong));
        assert_eq!(
            with_kind(StoreError::from(wrong), "cpu"),
            StoreError::WrongType(Some("cpu".to_string()))
        );
    }

    #[test]
    fn connection_errors_mean_redis_is_unavailable() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
    }
    #[test]
    fn the_module_argument_errors_are_refusals_with_their_bound() {
        let window = [Argument::WindowMs];
        assert_eq!(
            parse_refusal(
                "window_ms must be an integer between 1 and 3600000",
                &window
            ),
            Some((Argument::WindowMs, Some(3_600_000)))
        );
        let range = [
            Argument::Span,
            Argument::BucketMs,
            Argument::FromMs,
            Argument::ToMs,
        ];
        assert_eq!(
            parse_refusal(
                "the range spans more than 10000 buckets of bucket_ms",
                &range
            ),
            Some((Argument::Span, None))
        );
        assert_eq!(
            parse_refusal("bucket_ms must be a positive integer", &range),
            Some((Argument::BucketMs, None))
        );
        // An argument the command does not refuse, or another error, is not a refusal.
        assert_eq!(
            parse_refusal("window_ms must be an integer between 1 and 5", &range),
            None
        );
        assert_eq!(parse_refusal("syntax error near 'X'", &window), None);
        let e = redis::make_extension_error(
            "ERR".to_string(),
            Some("window_ms must be an integer between 1 and 60000".to_string()),
        );
        assert_eq!(
            refused(e, &window),
            StoreError::Refused {
                argument: Argument::WindowMs,
                max: Some(60_000),
                message: "window_ms must be an integer between 1 and 60000".to_string(),
            }
        );
    }
}
