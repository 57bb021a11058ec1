//! One error type for the whole program; its kind decides the exit status that
//! scripts rely on (documented in the man page, see cli.rs).
//!
//! Exit 3 promises that the disk is byte-for-byte unchanged, so the kind an error was made
//! with is not the last word: the code that runs from the first write to the disk on
//! returns [`Written`], whose conversion from any error turns a refusal into a failure.
//! The phase decides, at its boundary, not the leaf that made the error.

use std::{error::Error as StdError, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stopped at a checkpoint on request; resumable.
    Interrupted = 1,
    /// The passphrase opens no keyslot (cryptsetup's exit 2, "no permission").
    WrongPassphrase = 2,
    /// Refused before touching the disk; an invalid command line too (LVM's exit 3).
    Refused = 3,
    /// Unusable key material.
    Key = 4,
    /// Failed after the first write; the device is the plain PV again or a LUKS2 device
    /// stock cryptsetup opens, and pvencrypt goes on from either.
    Failed = 5,
    /// Failed, and undoing the failed step failed too: the message says what is left to do.
    Unrecovered = 6,
}

type Source = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
    cause: Option<Cause>,
}

#[derive(Debug)]
enum Cause {
    /// What made `msg` happen; shown as "msg: source".
    Source(Source),
    /// A step failed (`failed`) and was undone, or undoing it failed too (`undo`): both
    /// kept, as stratisd's rollback errors keep theirs. Shown as "failed\n[undo\n]msg".
    Rollback { failed: Box<Error>, undo: Option<Box<Error>> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into(), cause: None }
    }

    /// `msg` because of `source`, which stays an error of its own (`source()`).
    pub fn caused_by(kind: Kind, msg: impl Into<String>, source: impl Into<Source>) -> Error {
        Error { kind, msg: msg.into(), cause: Some(Cause::Source(source.into())) }
    }

    /// `failed` was undone (`undo` None) or undoing it failed (`undo`); `note` says where
    /// that leaves the device, `kind` what that means for the exit status.
    pub fn rollback(kind: Kind, failed: Error, undo: Option<Error>, note: impl Into<String>) -> Error {
        Error { kind, msg: note.into(), cause: Some(Cause::Rollback { failed: Box::new(failed), undo: undo.map(Box::new) }) }
    }

    pub fn exit_code(&self) -> i32 {
        self.kind as i32
    }

    /// The error undoing a failed step met, if any.
    pub fn undo_error(&self) -> Option<&Error> {
        match &self.cause {
            Some(Cause::Rollback { undo, .. }) => undo.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            None => f.write_str(&self.msg),
            Some(Cause::Source(s)) => write!(f, "{}: {s}", self.msg),
            Some(Cause::Rollback { failed, undo }) => {
                write!(f, "{failed}")?;
                if let Some(u) = undo {
                    write!(f, "\n{u}")?;
                }
                if !self.msg.is_empty() {
                    write!(f, "\n{}", self.msg)?;
                }
                Ok(())
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.cause {
            None => None,
            Some(Cause::Source(s)) => Some(s.as_ref()),
            Some(Cause::Rollback { failed, .. }) => Some(failed.as_ref()),
        }
    }
}

/// An error of the code that runs from the first write to the disk on: never a refusal
/// (exit 3 would claim the disk unchanged). `?` converts any [`Error`] into it; the
/// conversion back keeps what it became.
#[derive(Debug)]
pub struct Written(Error);

impl From<Error> for Written {
    fn from(e: Error) -> Written {
        match e.kind {
            Kind::Refused => Written(Error { kind: Kind::Failed, ..e }),
            _ => Written(e),
        }
    }
}

impl From<Written> for Error {
    fn from(w: Written) -> Error {
        w.0
    }
}

impl Written {
    pub fn kind(&self) -> Kind {
        self.0.kind
    }
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub fn refuse<T, E: From<Error>>(msg: impl Into<String>) -> Result<T, E> {
    Err(Error::new(Kind::Refused, msg).into())
}

pub fn fail<T, E: From<Error>>(msg: impl Into<String>) -> Result<T, E> {
    Err(Error::new(Kind::Failed, msg).into())
}

/// Adds what we were doing to a library error, which stays the source.
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

impl<T, E: Into<Source>> Context<T> for std::result::Result<T, E> {
    fn context(self, kind: Kind, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::caused_by(kind, what(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the first write no error exits 3, whatever made it: a refusal from a leaf
    /// (a device-mapper name, a device that is not LUKS2) becomes a failure; the others
    /// keep their kind, and the message and its source stay.
    #[test]
    fn after_the_first_write_nothing_exits_3() {
        fn leaf() -> Result<()> {
            Err(std::io::Error::other("the cause")).context(Kind::Refused, || "a leaf refuses".into())
        }
        fn written() -> Result<(), Written> {
            leaf()?;
            Ok(())
        }
        let e = Error::from(written().unwrap_err());
        assert_eq!(e.exit_code(), 5);
        assert_eq!(e.to_string(), "a leaf refuses: the cause");
        assert_eq!(e.source().unwrap().to_string(), "the cause");
        for kind in [Kind::Interrupted, Kind::WrongPassphrase, Kind::Key, Kind::Failed, Kind::Unrecovered] {
            assert_eq!(Written::from(Error::new(kind, "x")).kind(), kind);
        }
        assert_eq!(leaf().unwrap_err().exit_code(), 3, "before the first write a refusal is one");
    }

    /// A rollback keeps both errors and says where it left the device.
    #[test]
    fn a_rollback_carries_the_failure_and_the_undo() {
        let failed = Error::new(Kind::Refused, "Invalid device-mapper name");
        let undo = Error::caused_by(Kind::Failed, "Restoring the first 1 MiB failed too", std::io::Error::other("EIO"));
        let e = Error::rollback(Kind::Unrecovered, failed, Some(undo), "Do not reboot.");
        assert_eq!(e.exit_code(), 6);
        assert_eq!(e.to_string(), "Invalid device-mapper name\nRestoring the first 1 MiB failed too: EIO\nDo not reboot.");
        assert_eq!(e.source().unwrap().to_string(), "Invalid device-mapper name");
        assert_eq!(e.undo_error().unwrap().source().unwrap().to_string(), "EIO");
    }
}
