//! One error type for the whole program; its kind decides the exit status that
//! scripts rely on (documented in the man page, see cli.rs).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stopped at a checkpoint on request; resumable.
    Interrupted = 1,
    /// Refused before touching the disk.
    Refused = 3,
    /// Unusable key material.
    Key = 4,
    /// Failed while converting; the device is in a standard, resumable state.
    Failed = 5,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into() }
    }
    pub fn exit_code(&self) -> i32 {
        self.kind as i32
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub fn refuse<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::new(Kind::Refused, msg))
}

pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::new(Kind::Failed, msg))
}

/// Adds what we were doing to a library error.
pub trait Context<T> {
    fn context(self, kind: Kind, what: impl FnOnce() -> String) -> Result<T>;
    /// The common case: a failure while converting.
    fn or_fail(self, what: impl FnOnce() -> String) -> Result<T>
    where
        Self: Sized,
    {
        self.context(Kind::Failed, what)
    }
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, kind: Kind, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, format!("{}: {e}", what())))
    }
}
