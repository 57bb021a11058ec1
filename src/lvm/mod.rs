//! LVM access through liblvm2cmd: LVM commands run inside this process (the
//! product never spawns the `lvm` binary) and their JSON reports are parsed
//! into typed rows.
//!
//! liblvm2cmd keeps global state (log function, umask, `/run/lock/lvm`
//! flocks) and LVM itself says it is not thread-safe, so every call goes
//! through one mutex; callers on several threads simply take turns. Each
//! call runs in a fresh LVM context, like a CLI invocation (see `LVM`
//! below for why).
//!
//! Things an in-process LVM does to *our* process, which callers must mind:
//! - it sets the umask to 0077; [`run`] puts the previous one back after each
//!   call, but another thread creating files meanwhile gets 0077;
//! - during suspend it `mlockall`s the process and raises its priority;
//! - it takes the same flocks as the CLI: never hold a VG lock yourself
//!   across a call, you would deadlock on your own flock;
//! - commands that prompt read our stdin, so pass `-y`/`-f` where they ask;
//! - never pass `-b`: the polling daemon is started by forking us;
//! - a few commands (`lvmconfig`, getopt errors) write to stdout/stderr
//!   directly instead of through the log callback, so they are not captured.
//!
//! All sizes come out as [`Sectors`] or [`Extents`] (crate::units).
//!
//! One file per concern: `command` (the runner), `report` (typed rows), `metadata`,
//! `config` (lvm.conf), `devices_file`, `label` (the on-disk PV label), `lock` (the VG
//! lock pvencrypt takes itself).

use std::{
    ffi::{CStr, CString},
    fmt, fs, io,
    os::raw::{c_char, c_int},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use lvm2cmd_sys as sys;
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

pub use crate::units::{Bytes, Extents, Sectors};

mod command;
mod config;
mod devices_file;
mod label;
mod lock;
mod metadata;
mod report;

pub use command::*;
pub use config::*;
pub use devices_file::*;
pub use label::*;
pub use lock::*;
pub use metadata::*;
pub use report::*;

#[derive(Debug)]
pub enum Error {
    /// An argument that lvm's command-line splitter can't carry.
    Argument { arg: String, why: &'static str },
    /// `lvm2_init` failed; `errors` are LVM's own lines.
    Init { errors: Vec<String> },
    /// The command ran and returned something other than success.
    Command { cmd: String, rc: i32, errors: Vec<String> },
    /// The command succeeded but its report wasn't what we asked for.
    Report { cmd: String, msg: String },
}

impl Error {
    fn report(cmd: &str, msg: impl Into<String>) -> Error {
        Error::Report { cmd: cmd.to_owned(), msg: msg.into() }
    }
}

/// What lvm2_run's return codes mean (lvm2cmd.h).
fn rc_meaning(rc: i32) -> &'static str {
    match rc as u32 {
        sys::LVM2_NO_SUCH_COMMAND => "no such command",
        sys::LVM2_INVALID_PARAMETERS => "invalid command line",
        sys::LVM2_INIT_FAILED => "initialisation failed",
        sys::LVM2_PROCESSING_FAILED => "processing failed",
        _ => "unexpected return code",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Argument { arg, why } => write!(f, "cannot pass {arg:?} to LVM: {why}"),
            Error::Init { errors } => {
                f.write_str("cannot initialise liblvm2cmd")?;
                write_lines(f, errors)
            }
            Error::Command { cmd, rc, errors } => {
                write!(f, "`{cmd}` failed ({}, rc {rc})", rc_meaning(*rc))?;
                write_lines(f, errors)
            }
            Error::Report { cmd, msg } => write!(f, "unexpected report from `{cmd}`: {msg}"),
        }
    }
}

/// LVM's lines are what tells the user what went wrong, so show them all.
fn write_lines(f: &mut fmt::Formatter<'_>, lines: &[String]) -> fmt::Result {
    if !lines.is_empty() {
        write!(f, ": {}", lines.join("; "))?;
    }
    Ok(())
}

impl std::error::Error for Error {}

/// The dm uuid prefix of every LV of the VG (LVM writes the VG uuid without dashes).
pub fn lv_uuid_prefix(vg_uuid: &str) -> String {
    format!("LVM-{}", vg_uuid.replace('-', ""))
}

/// The active LVs of the VG, on any PV.
pub fn active_lvs(vg_uuid: Option<&str>) -> Vec<devicemapper::Device> {
    let Some(vg_uuid) = vg_uuid else { return vec![] };
    crate::dm::Dm::open().and_then(|dm| dm.devices_with_uuid(&lv_uuid_prefix(vg_uuid))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_error_shows_lvm_lines() {
        let e = Error::Command {
            cmd: "vgs -- nosuchvg".into(),
            rc: 5,
            errors: vec![r#"Volume group "nosuchvg" not found"#.into(), "Cannot process volume group nosuchvg".into()],
        };
        assert_eq!(
            e.to_string(),
            r#"`vgs -- nosuchvg` failed (processing failed, rc 5): Volume group "nosuchvg" not found; Cannot process volume group nosuchvg"#
        );
        let e = Error::Command { cmd: "lvs --bogus".into(), rc: 3, errors: vec![] };
        assert_eq!(e.to_string(), "`lvs --bogus` failed (invalid command line, rc 3)");
        let e = Error::Init { errors: vec!["no config".into()] };
        assert_eq!(e.to_string(), "cannot initialise liblvm2cmd: no config");
    }
}
