//! What the library asks of the command's front end (main.rs, the command line): the
//! passphrase, a confirmation, and `-b`. The modes themselves (modes.rs `convert_pvs`,
//! `resume_one` and `resume_all`; abort.rs `stop`) live in the library.

use crate::{error::Result, key::Passphrase, running::Run};

pub trait Front {
    /// The passphrase, asked with `prompt` (`verify`: twice on a terminal).
    fn passphrase(&self, prompt: &str, verify: bool) -> Result<Passphrase>;
    /// Goes on only if the admin says so (or --yes); `moves`: extents pvmove would move to
    /// make room, that --make-room did not ask for.
    fn confirm(&self, moves: Option<u64>) -> Result<()>;
    /// `-b` was given.
    fn detaches(&self) -> bool;
    /// `-b`: true in the caller, which returns at once; the unit (with systemd) or the
    /// forked child carries on. `key`: the passphrase the caller hands to its unit; None
    /// only where there is nothing to hand (in the unit, or without -b).
    fn background(&self, runs: &mut Vec<Run>, key: Option<&Passphrase>) -> Result<bool>;
    /// --key-file names the key: no TPM2 token is tried.
    fn key_file(&self) -> bool;
    /// The arguments the command was given, recorded for the PVs it queues.
    fn args(&self) -> Vec<String>;
}
