//! The crash and kill tests stop pvencrypt at named steps (PVENCRYPT_FAULT=STEP, pvfault=STEP
//! on the VM's command line, the step lists of the host scripts). A step the program does not
//! know would silently never fire, and the test would prove nothing: every name the scripts
//! use must be one of `fault::POINTS`, and every point must be used by some test.

use std::{collections::BTreeSet, fs, path::Path};

fn scripts(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            scripts(&p, out);
        } else if p.extension().is_some_and(|x| x == "sh") {
            out.push((p.display().to_string(), fs::read_to_string(&p).unwrap()));
        }
    }
}

/// Step names a script sets: PVENCRYPT_FAULT=A|B:mode, pvfault=A, and `for step in A B ...`.
fn steps_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for key in ["PVENCRYPT_FAULT=", "pvfault="] {
            for (i, _) in line.match_indices(key) {
                let v: String = line[i + key.len()..]
                    .trim_start_matches(['"', '\''])
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\'' | ' ' | ':'))
                    .collect();
                if v.is_empty() || v.contains('$') {
                    continue;
                }
                out.extend(v.split('|').map(|s| s.split('@').next().unwrap_or(s).to_string()));
            }
        }
        if let Some(list) = line.trim_start().strip_prefix("for step in ") {
            // `${CRASH_STEPS:-a b c}`: the default list.
            let list = list.split(';').next().unwrap();
            let list = list.strip_prefix("${").and_then(|l| l.split_once(":-")).map_or(list, |(_, l)| l.trim_end_matches('}'));
            out.extend(list.split_whitespace().map(|s| s.split('@').next().unwrap_or(s).to_string()));
        }
    }
    out
}

#[test]
fn every_fault_step_the_tests_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let mut all = Vec::new();
    scripts(&root, &mut all);
    let known: BTreeSet<&str> = pvencrypt::fault::POINTS.iter().copied().collect();
    let mut used = BTreeSet::new();
    for (path, text) in &all {
        for s in steps_in(text) {
            // Failure injection names an operation and a device ("resume vg-fs"), not a step.
            if s.starts_with("resume ") || s.starts_with("load ") || ["resume", "load"].contains(&s.as_str()) {
                continue;
            }
            assert!(known.contains(s.as_str()), "{path}: unknown fault step {s:?} (fault::POINTS: {known:?})");
            used.insert(s);
        }
    }
    let unused: Vec<_> = known.iter().filter(|k| !used.contains(**k)).collect();
    assert!(unused.is_empty(), "fault points no test uses: {unused:?}");
}

#[test]
fn step_names_are_read_from_every_form() {
    let t = "PVENCRYPT_FAULT='commit-primary|committed@2:stop' pvencrypt\n  VM_APPEND=\"pvfault=run-50\"\n\
             for step in a b@2 c; do\nfor step in ${CRASH_STEPS:-d e}; do\n# PVENCRYPT_FAULT=ignored\nPVENCRYPT_FAULT=\"$at:stop\"";
    assert_eq!(steps_in(t), ["commit-primary", "committed", "run-50", "a", "b", "c", "d", "e"]);
}
