// Renders the man page and the shell completions from the CLI definition into OUT_DIR.
// tests/generated.rs checks that the committed copies in man/ and completions/ match.
use std::{env, fs, io, path::PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code)]
mod cli {
    include!("src/cli.rs");
}

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cmd = cli::Cli::command();

    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).section("8").date("").render(&mut page)?;
    fs::write(out.join("pvencrypt.8"), page)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "pvencrypt", &out)?;
    }
    Ok(())
}
