//! pvencrypt: encrypt an LVM physical volume in place while its logical volumes stay in
//! use. The binary (main.rs) parses the command line and dispatches; everything else
//! lives here, one module per concern (see ARCHITECTURE.md).

pub mod abort;
pub mod boot;
pub mod cli;
pub mod convert;
pub mod decrypt;
pub mod direct;
pub mod dm;
pub mod error;
pub mod fault;
pub mod front;
pub mod guardian;
pub mod header;
pub mod in_place;
pub mod inspect;
pub mod key;
pub mod luks;
pub mod lvm;
pub mod metadata;
pub mod modes;
pub mod mover;
pub mod options;
pub mod output;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod queue;
pub mod report;
pub mod resume;
pub mod running;
pub mod service;
pub mod switch;
pub mod sys;
pub mod units;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
pub(crate) mod testing;
