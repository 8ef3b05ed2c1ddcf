//! Every error reply the module sends, built by named constructors so handlers never spell
//! messages inline and tests can match on the kind.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The standard arity error; Redis formats it.
    WrongArity,
    /// The key holds a value of another type.
    WrongType,
    /// An argument is malformed; the message names it.
    Arg(String),
    /// A serialized value could not be decoded.
    Corrupt(&'static str),
}

impl Error {
    pub fn positive_integer(name: &str) -> Self {
        Error::Arg(format!("{name} must be a positive integer"))
    }

    pub fn non_negative_integer(name: &str) -> Self {
        Error::Arg(format!("{name} must be a non-negative integer"))
    }

    pub fn integer_at_most(name: &str, max: u64) -> Self {
        Error::Arg(format!("{name} must be an integer between 1 and {max}"))
    }

    pub fn finite_number(name: &str) -> Self {
        Error::Arg(format!("{name} must be a finite number"))
    }

    pub fn syntax(what: &str) -> Self {
        Error::Arg(format!("syntax error near '{what}'"))
    }

    pub fn custom(message: impl Into<String>) -> Self {
        Error::Arg(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongArity => f.write_str("ERR wrong number of arguments"),
            Error::WrongType => {
                f.write_str("WRONGTYPE Operation against a key holding the wrong kind of value")
            }
            Error::Arg(msg) => write!(f, "ERR {msg}"),
            Error::Corrupt(what) => write!(f, "ERR invalid serialized value: {what}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
