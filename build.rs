// Renders the man page and the shell completions from the CLI definition into OUT_DIR.
// tests/generated.rs checks that the committed copies in man/ and completions/ match.
use std::{env, fs, io, path::PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code)]
mod cli {
    include!("src/cli.rs");
}

#[allow(dead_code)]
#[path = "src/units.rs"]
mod units;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/units.rs");
    println!("cargo:rerun-if-changed=man/pvencrypt.8.in");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cmd = cli::Cli::command();

    fs::write(out.join("pvencrypt.8"), man_page(&cmd)?)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), "pvencrypt", &out)?;
        let script = fs::read_to_string(&path)?;
        let script = match shell {
            Shell::Bash => bash(script),
            Shell::Zsh => zsh(script),
            _ => fish(script),
        };
        fs::write(&path, script)?;
    }
    Ok(())
}

/// man/pvencrypt.8.in with each `@SECTION@` line replaced by clap_mangen's rendering:
/// the options and the description come from src/cli.rs, the rest (a synopsis with every
/// form, examples, notes...) is written there.
fn man_page(cmd: &clap::Command) -> io::Result<String> {
    type Render = fn(&clap_mangen::Man, &mut dyn io::Write) -> io::Result<()>;
    // The description without its first sentence, which NAME already shows.
    let about = cmd.get_long_about().expect("cli.rs documents Cli").to_string();
    let description = about.split_once("\n\n").map_or(about.as_str(), |(_, rest)| rest).to_string();
    let man = clap_mangen::Man::new(cmd.clone().long_about(description)).section("8").date("");
    let mut page = String::from(
        r#".ie \n(.g .ds Aq \(aq
.el .ds Aq '
"#,
    );
    for line in include_str!("man/pvencrypt.8.in").lines() {
        let render: Option<Render> = match line {
            "@TITLE@" => Some(clap_mangen::Man::render_title),
            "@NAME@" => Some(clap_mangen::Man::render_name_section),
            "@DESCRIPTION@" => Some(clap_mangen::Man::render_description_section),
            "@OPTIONS@" => Some(clap_mangen::Man::render_options_section),
            l if l.starts_with('@') => panic!("unknown section {l} in man/pvencrypt.8.in"),
            _ => None,
        };
        match render {
            Some(render) => {
                let mut roff = Vec::new();
                render(&man, &mut roff)?;
                // Each rendering starts with the string definition the page begins with.
                let roff = String::from_utf8(roff).expect("roff is UTF-8");
                page += roff.trim_start_matches(".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n");
            }
            None => {
                page += line;
                page.push('\n');
            }
        }
    }
    Ok(page)
}

/// `from` replaced by `to` in `script`, which must hold it: a new clap_complete that
/// words its output differently fails the build instead of losing the PV completion.
fn patch(script: String, from: &str, to: &str) -> String {
    assert!(script.contains(from), "clap_complete's output no longer holds {from:?}");
    script.replace(from, to)
}

/// How each shell finds the PVs: LVM's PVs to convert (pvs), the running conversions
/// after --abort (their status files), every conversion pvencrypt reports after --status.
const PV_JSON_FIELD: &str = r#"grep -o '"pv": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'"#;

fn bash(script: String) -> String {
    // The positional PVs, also as the first word; files only where a file is meant
    // (--key-file), so no fallback to bash's default completion.
    let script = patch(script, "if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then", "if [[ ${cur} == -* ]] ; then");
    let default =
        "            COMPREPLY=( $(compgen -W \"${opts}\" -- \"${cur}\") )\n            return 0\n            ;;\n    esac\n}";
    let script = patch(script, default, &default.replace("compgen -W \"${opts}\"", "compgen -W \"$(_pvencrypt_pvs)\""));
    let script = patch(script, " -o bashdefault -o default", "");
    format!(
        r#"# PVs for the positional arguments: LVM's PVs; after --abort the running conversions,
# after --status every conversion pvencrypt reports.
_pvencrypt_pvs() {{
    case " ${{COMP_WORDS[*]}} " in
        *" --abort "*) cat /run/pvencrypt/*.json 2>/dev/null | {PV_JSON_FIELD} ;;
        *" --status "*) "${{COMP_WORDS[0]}}" --status --reportformat json 2>/dev/null | {PV_JSON_FIELD} ;;
        *) pvs --noheadings -o pv_name 2>/dev/null ;;
    esac
}}

{script}"#
    )
}

fn zsh(script: String) -> String {
    let script = patch(script, "resume unfinished conversions:' \\", "resume unfinished conversions:_pvencrypt_pvs' \\");
    let helper = format!(
        r#"# PVs for the positional arguments: LVM's PVs; after --abort the running conversions,
# after --status every conversion pvencrypt reports.
(( $+functions[_pvencrypt_pvs] )) ||
_pvencrypt_pvs() {{
    local expl
    local -a pvs
    if (( ${{+opt_args[--abort]}} )); then
        pvs=( $(cat /run/pvencrypt/*.json(N) /dev/null 2>/dev/null | {PV_JSON_FIELD}) )
    elif (( ${{+opt_args[--status]}} )); then
        pvs=( $(pvencrypt --status --reportformat json 2>/dev/null | {PV_JSON_FIELD}) )
    else
        pvs=( $(pvs --noheadings -o pv_name 2>/dev/null) )
    fi
    _wanted pvs expl 'physical volume' compadd -a pvs
}}

"#
    );
    let dispatch = "if [ \"$funcstack[1]\" = \"_pvencrypt\" ]; then";
    patch(script, dispatch, &format!("{helper}{dispatch}"))
}

fn fish(script: String) -> String {
    format!(
        r#"{script}
# PVs for the positional arguments, never files: LVM's PVs; after --abort the running
# conversions, after --status every conversion pvencrypt reports.
function __pvencrypt_pvs
    if __fish_seen_argument -l abort
        set -l files /run/pvencrypt/*.json
        test -n "$files"; and cat $files | {PV_JSON_FIELD}
    else if __fish_seen_argument -l status
        pvencrypt --status --reportformat json 2>/dev/null | {PV_JSON_FIELD}
    else
        pvs --noheadings -o pv_name 2>/dev/null | string trim
    end
end
complete -c pvencrypt -f -a '(__pvencrypt_pvs)'
"#
    )
}
