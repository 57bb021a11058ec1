mod cli;
mod convert;
mod dm;
mod error;
mod fault;
mod key;
mod luks;
#[allow(dead_code)] // reports not used yet serve --make-room (issue 4)
mod lvm;
mod plan;
mod progress;
mod switch;

use std::{
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::atomic::Ordering,
};

use clap::Parser;

use crate::{
    cli::Cli,
    error::{Error, Kind, Result},
    key::KeySource,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    fault::init();
    luks::capture_log();
    install_signal_handlers();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvencrypt: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    convert::STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn key_source(cli: &Cli) -> KeySource<'_> {
    KeySource { file: cli.key_file.as_deref(), size: cli.keyfile_size, offset: cli.keyfile_offset }
}

fn run(cli: &Cli) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::new(Kind::Refused, "pvencrypt must run as root."));
    }
    if cli.background || cli.abort || cli.status {
        return Err(Error::new(Kind::Refused, "--background, --abort and --status are not available in this version yet."));
    }
    if cli.pvs.is_empty() {
        return resume_all(cli);
    }

    // Every PV is checked before anything is asked or changed.
    let mut targets = Vec::new();
    for path in &cli.pvs {
        if convert::has_luks_magic(path) {
            return resume_one(cli, path);
        }
        let t = convert::preflight(cli, path)?;
        convert::format_of(cli, t.room.shift)?;
        targets.push(t);
    }
    if cli.pvs.len() > 1 && cli.name.is_some() {
        return Err(Error::new(Kind::Refused, "--name applies to one PV only."));
    }
    for t in &targets {
        if !cli.quiet || cli.test {
            println!("{}", convert::describe(t));
        }
    }
    if cli.test {
        println!("Test mode: nothing was changed.");
        return Ok(());
    }
    confirm(cli)?;
    let key = key_source(cli).read("Enter passphrase for the new LUKS2 device: ", true)?;
    for t in &targets {
        convert::convert(cli, t, &key)?;
        if !cli.quiet {
            println!("{}: encrypted; the volume group runs on /dev/mapper/{}.", t.path.display(), t.name);
        }
    }
    Ok(())
}

fn confirm(cli: &Cli) -> Result<()> {
    if cli.yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(Error::new(Kind::Refused, "Not on a terminal: confirm with --yes."));
    }
    print!("Encrypt in place? The data stays in use throughout. [y/n]: ");
    io::stdout().flush().ok();
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer).ok();
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(Error::new(Kind::Refused, "Not confirmed; nothing was changed."))
    }
}

fn resume_one(cli: &Cli, path: &std::path::Path) -> Result<()> {
    let mut cd = luks::open(path)?;
    let Some((_, m)) = luks::marker(&mut cd) else {
        return Err(Error::new(Kind::Refused, format!("{} is already a LUKS device.", path.display())));
    };
    drop(cd);
    let key = key_source(cli).read(&format!("Enter passphrase for {}: ", path.display()), false)?;
    convert::resume(cli, path, &m, &key)
}

fn resume_all(cli: &Cli) -> Result<()> {
    let todo = convert::unfinished();
    if todo.is_empty() {
        if !cli.quiet {
            println!("No conversion to resume.");
        }
        return Ok(());
    }
    for (path, m) in &todo {
        let key = key_source(cli).read(&format!("Enter passphrase for {}: ", path.display()), false)?;
        convert::resume(cli, path, m, &key)?;
        if !cli.quiet {
            println!("{}: encrypted; the volume group runs on /dev/mapper/{}.", path.display(), m.name);
        }
    }
    Ok(())
}
