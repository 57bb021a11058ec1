//! The man page and completions in the repository are the ones the build renders.
//! Run with PVENCRYPT_BLESS=1 to rewrite them after changing src/cli.rs.

use std::{fs, path::Path};

fn check(generated: &str, committed: &str) {
    let fresh = fs::read(Path::new(env!("OUT_DIR")).join(generated)).expect("build.rs output");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(committed);
    if std::env::var_os("PVENCRYPT_BLESS").is_some() {
        fs::write(&path, &fresh).unwrap();
    }
    let old = fs::read(&path).unwrap_or_default();
    assert!(old == fresh, "{committed} is stale: run PVENCRYPT_BLESS=1 cargo test --test generated");
}

#[test]
fn man_page_is_current() {
    check("pvencrypt.8", "man/pvencrypt.8");
}

#[test]
fn completions_are_current() {
    check("pvencrypt.bash", "completions/pvencrypt.bash");
    check("_pvencrypt", "completions/_pvencrypt");
    check("pvencrypt.fish", "completions/pvencrypt.fish");
}
