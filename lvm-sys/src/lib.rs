//! Raw bindings to liblvm2cmd (`lvm2cmd.h`), generated at build time.
//!
//! liblvm2cmd runs LVM commands in-process. It is not thread-safe: use a
//! single handle and serialize every call (the safe wrapper lives in the
//! `pvencrypt` crate, `src/lvm.rs`).
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_header() {
        assert_eq!(LVM2_COMMAND_SUCCEEDED, 1);
        assert_eq!(LVM2_LOG_ERROR, 3);
        assert_eq!(LVM2_LOG_PRINT, 4);
        assert_eq!(LVM2_LOG_DEBUG, 7);
    }

    #[test]
    fn symbols_link() {
        // Taking the addresses forces the linker to resolve them.
        let f: [*const (); 7] = [
            lvm2_init as *const (),
            lvm2_init_threaded as *const (),
            lvm2_run as *const (),
            lvm2_log_fn as *const (),
            lvm2_log_level as *const (),
            lvm2_disable_dmeventd_monitoring as *const (),
            lvm2_exit as *const (),
        ];
        assert!(f.iter().all(|p| !p.is_null()));
    }
}
