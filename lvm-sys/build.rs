// Generates the raw bindings from the system lvm2cmd.h, so they always match
// the installed liblvm2cmd (Debian's liblvm2-dev ships the header but no .pc
// file, hence linking by plain name).
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rustc-link-lib=dylib=lvm2cmd");
    println!("cargo:rerun-if-changed=wrapper.h");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("lvm2_.*")
        .allowlist_type("lvm2_log_fn_t")
        .allowlist_var("LVM2_.*")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over lvm2cmd.h (is liblvm2-dev installed?)")
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}
