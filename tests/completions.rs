//! The committed completion scripts, run by the shells: the positional PVs complete from
//! LVM (a fake `pvs` on PATH), --status and --abort from the conversions, --key-file from
//! files, and a value that is no file (--cipher) not from files.

use std::{
    env, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

/// A directory with fake `pvs` and `pvencrypt` commands and a file `key`; removed on drop.
struct Fakes(PathBuf);

impl Fakes {
    fn new(shell: &str) -> Fakes {
        let dir = env::temp_dir().join(format!("pvencrypt-completion-{shell}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        };
        // As LVM prints it: indented.
        script("pvs", "printf '  /dev/sda5\\n  /dev/vdb1\\n'");
        // A stopped conversion, as --status --reportformat json reports it.
        script(
            "pvencrypt",
            r#"[ "$*" = "--status --reportformat json" ] || exit 2
printf '{\n  "report": [\n    {\n      "conversion": [\n        {\n          "pv": "/dev/sdc1",\n          "name": "sdc1_crypt"\n        }\n      ]\n    }\n  ]\n}\n'"#,
        );
        fs::write(dir.join("key"), "k").unwrap();
        Fakes(dir)
    }

    fn path_var(&self) -> String {
        format!("{}:{}", self.0.display(), env::var("PATH").unwrap_or_default())
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("completions").join(name)
}

fn have(shell: &str) -> bool {
    let found = Command::new(shell).args(["-c", "true"]).status().is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: no {shell} here");
    }
    found
}

/// COMPREPLY, one per line, for the command line `words` (the last one being completed),
/// as bash's programmable completion calls the function.
fn bash(fakes: &Fakes, words: &[&str]) -> Vec<String> {
    let harness = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
_pvencrypt pvencrypt "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", harness, "bash"])
        .arg(script("pvencrypt.bash"))
        .args(words)
        .current_dir(&fakes.0)
        .env("PATH", fakes.path_var())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

#[test]
fn bash_completes_pvs_conversions_and_key_files() {
    if !have("bash") {
        return;
    }
    let f = Fakes::new("bash");
    assert_eq!(bash(&f, &["pvencrypt", ""]), ["/dev/sda5", "/dev/vdb1"]);
    assert_eq!(bash(&f, &["pvencrypt", "-y", "/dev/s"]), ["/dev/sda5"]);
    assert_eq!(bash(&f, &["pvencrypt", "--status", ""]), ["/dev/sdc1"]);
    assert_eq!(bash(&f, &["pvencrypt", "--ab"]), ["--abort"]);
    let key = f.0.join("key").display().to_string();
    assert_eq!(bash(&f, &["pvencrypt", "--key-file", &key[..key.len() - 1]]), [key.as_str()]);
    assert_eq!(bash(&f, &["pvencrypt", "-d", "ke"]), ["key"]);
    // Not a file: the word stays as typed, no file names offered.
    assert_eq!(bash(&f, &["pvencrypt", "--cipher", "ke"]), ["ke"]);
    assert_eq!(bash(&f, &["pvencrypt", "--sector-size", "40"]), ["4096"]);
}

#[test]
fn bash_completes_running_conversions_after_abort() {
    // The status files live in /run/pvencrypt: a private tmpfs over /run in a mount
    // namespace of its own, so that the machine's own files are neither seen nor touched.
    // SAFETY: no preconditions.
    if !have("bash") || !have("unshare") || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root, bash and unshare");
        return;
    }
    let f = Fakes::new("abort");
    let harness = r#"mount -t tmpfs tmpfs /run && mkdir /run/pvencrypt || exit 1
echo '{"pv":"/dev/sdd1","name":"sdd1_crypt","state":"encrypting"}' >/run/pvencrypt/sdd1.json
echo '{"pv":"/dev/sde2","name":"sde2_crypt","state":"switching"}' >/run/pvencrypt/sde2.json
source "$1"
COMP_WORDS=(pvencrypt --abort ""); COMP_CWORD=2; COMPREPLY=()
_pvencrypt pvencrypt "" --abort
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "--norc", "-c", harness, "bash"])
        .arg(script("pvencrypt.bash"))
        .env("PATH", f.path_var())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("unshare failed") {
        eprintln!("skipped: no mount namespace here: {err}");
        return;
    }
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().collect::<Vec<_>>(), ["/dev/sdd1", "/dev/sde2"]);
}

#[test]
fn fish_completes_pvs_and_key_files() {
    if !have("fish") {
        return;
    }
    let f = Fakes::new("fish");
    let complete = |line: &str| {
        let out = Command::new("fish")
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(script("pvencrypt.fish"))
            .arg(line)
            .current_dir(&f.0)
            .env("PATH", f.path_var())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // "candidate<TAB>description" lines.
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(complete("pvencrypt /dev/"), ["/dev/sda5", "/dev/vdb1"]);
    assert_eq!(complete("pvencrypt --status /dev/"), ["/dev/sdc1"]);
    assert_eq!(complete("pvencrypt --key-file ke"), ["key"]);
    assert_eq!(complete("pvencrypt --cipher ke"), Vec::<String>::new());
}

/// Each line typed into an interactive zsh (under zsh's own pseudo-terminal driver,
/// zpty) with one Tab, the completion system loaded from completions/: the buffer after
/// the Tab, as a widget bound to ^X writes it to a file.
const ZSH_DRIVER: &str = r#"zmodload zsh/zpty
local comp=$1 out=$2; shift 2
zpty z zsh -f -i
zpty -w z "fpath=($comp \$fpath); autoload -U compinit; compinit -u -D; setopt nobeep"
zpty -w z "dump() { print -r -- \"\$BUFFER\" >$out/\$((++n)); BUFFER=; }; n=0; zle -N dump; bindkey '^X' dump"
for line in "$@"; do zpty -w -n z "$line"$'\t\x18'; done
for i in {1..$#}; do
  for t in {1..300}; do [[ -e $out/$i ]] && break; sleep 0.1; done
  print -r -- "$(<$out/$i)"
done
zpty -d z"#;

#[test]
fn zsh_completes_pvs_conversions_and_key_files() {
    if !have("zsh") {
        return;
    }
    let f = Fakes::new("zsh");
    let out_dir = f.0.join("buffers");
    fs::create_dir(&out_dir).unwrap();
    let lines =
        ["pvencrypt /dev/s", "pvencrypt --status /dev/s", "pvencrypt --key-file ke", "pvencrypt --cipher ke", "pvencrypt --ab"];
    let out = Command::new("zsh")
        .args(["-f", "-c", ZSH_DRIVER, "zsh"])
        .arg(script(""))
        .arg(&out_dir)
        .args(lines)
        .current_dir(&f.0)
        .env("PATH", f.path_var())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let buffers: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(
        buffers,
        [
            "pvencrypt /dev/sda5",
            "pvencrypt --status /dev/sdc1",
            "pvencrypt --key-file key",
            // Not a file: nothing offered.
            "pvencrypt --cipher ke",
            "pvencrypt --abort"
        ]
    );
}
