//! pvencrypt: encrypt an LVM physical volume in place while its logical volumes stay in
//! use. The binary (main.rs) parses the command line and dispatches; everything else
//! lives here, one module per concern (see ARCHITECTURE.md).

pub mod boot;
pub mod cli;
pub mod convert;
pub mod direct;
pub mod dm;
pub mod error;
pub mod fault;
pub mod guardian;
pub mod header;
pub mod inspect;
pub mod key;
pub mod luks;
pub mod lvm;
pub mod mover;
pub mod options;
pub mod plan;
pub mod poll;
pub mod preflight;
pub mod progress;
pub mod queue;
pub mod resume;
pub mod service;
pub mod switch;
pub mod sys;
pub mod units;
