//! The library's modules call only the ones below them: no module reaches, through any
//! chain of `crate::` paths, back to itself (issue 22: a cycle through eight files made
//! every one of them harder to change). Read from the sources, test code left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Top-level module → the top-level modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let path_re = regex::Regex::new(r"crate::(\w+)").unwrap();
    let use_re = regex::Regex::new(r"(?s)use crate::\{(.*?)\};").unwrap();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = g.entry(top.clone()).or_default();
        deps.extend(path_re.captures_iter(code).map(|c| c[1].to_string()));
        for c in use_re.captures_iter(code) {
            // The names at the top level of the braces: `a::{..}, b, c::d`.
            let (mut depth, mut name, mut names) = (0, String::new(), Vec::new());
            for ch in c[1].chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => names.push(std::mem::take(&mut name)),
                    _ if depth == 0 => name.push(ch),
                    _ => {}
                }
            }
            names.push(name);
            deps.extend(names.iter().filter_map(|n| n.split("::").next()).map(|n| n.trim().to_string()));
        }
        deps.remove(&top);
    }
    let modules: BTreeSet<String> = g.keys().cloned().collect();
    g.values_mut().for_each(|d| d.retain(|m| modules.contains(m)));
    g
}

#[test]
fn no_module_reaches_back_to_itself() {
    let g = graph();
    assert!(g.len() > 20 && g["convert"].contains("switch"), "the sources were not read: {g:?}");
    for start in g.keys() {
        // Everything reachable from `start`'s dependencies, with the path that got there.
        let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut todo: Vec<(&str, Vec<&str>)> = g[start].iter().map(|d| (d.as_str(), vec![start.as_str()])).collect();
        while let Some((m, path)) = todo.pop() {
            if seen.contains_key(m) {
                continue;
            }
            let mut path = path;
            path.push(m);
            assert!(m != start, "a module cycle: {}", path.join(" -> "));
            for d in &g[m] {
                todo.push((d, path.clone()));
            }
            seen.insert(m, path);
        }
    }
}
