//! No crate's modules import each other in a cycle: each module uses only modules below it, so
//! each can be read (and changed) knowing only what it builds on. The graph is read from the
//! sources: every `crate::a::b` path and `super::` path outside test modules is an edge to the
//! deepest module file it names.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module file under `src`, by its module path (`lib.rs` and `main.rs` are the root).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            // Sibling test files are test modules, not part of the graph.
            if parts.last().is_some_and(|p| p == "tests") {
                continue;
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The longest prefix of `path` that is a module file.
fn resolve(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|p| files.contains_key(p))
}

/// The code of a module file without comments and without its `#[cfg(test)] mod` block.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read source");
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths a piece of code names: `crate::a::b`, `crate::a::{b, c::d}`, `super::x`.
fn named_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for (start, _) in text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
    {
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let mut base: Vec<String> = Vec::new();
        let mut i = start;
        if text[start..].starts_with("crate::") {
            i += "crate::".len();
        } else {
            let mut parent = me.to_vec();
            while text[i..].starts_with("super::") {
                parent.pop();
                i += "super::".len();
            }
            base = parent;
        }
        let mut segment = String::new();
        while i < bytes.len() {
            let c = bytes[i];
            if is_ident(c) {
                segment.push(c);
                i += 1;
            } else if text[i..].starts_with("::") {
                base.push(std::mem::take(&mut segment));
                i += 2;
                if bytes.get(i) == Some(&'{') {
                    let end = text[i..].find('}').map_or(text.len(), |e| i + e);
                    for item in text[i + 1..end].split(',') {
                        let item = item.trim().split(" as ").next().unwrap_or("").trim();
                        let mut p = base.clone();
                        p.extend(item.split("::").map(str::to_string));
                        out.push(p);
                    }
                    segment.clear();
                    break;
                }
            } else {
                break;
            }
        }
        if !segment.is_empty() {
            base.push(segment);
        }
        out.push(base);
    }
    out
}

fn cycles_in(src: &Path) -> Vec<Vec<Module>> {
    let files = modules(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (me, path) in &files {
        let deps = edges.entry(me.clone()).or_default();
        for named in named_paths(&code(path), me) {
            if let Some(target) = resolve(&files, &named) {
                // A module naming its own descendants declares them; that is not an import.
                if target != *me && !target.starts_with(me.as_slice()) {
                    deps.insert(target);
                }
            }
        }
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        n: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        found: &mut Vec<Vec<Module>>,
    ) {
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(at) = stack.iter().position(|s| s == m) {
                found.push(stack[at..].to_vec());
            } else if !done.contains(m) {
                visit(m, edges, stack, done, found);
            }
        }
        stack.pop();
        done.insert(n.clone());
    }
    for n in edges.keys() {
        if !done.contains(n) {
            visit(n, &edges, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut srcs = vec![PathBuf::from("src")];
    for entry in fs::read_dir("crates").expect("crates/").flatten() {
        srcs.push(entry.path().join("src"));
    }
    srcs.push(PathBuf::from("bench/purser-bench/src"));
    let mut report = Vec::new();
    for src in &srcs {
        for cycle in cycles_in(src) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            report.push(format!("{}: {}", src.display(), names.join(" -> ")));
        }
    }
    assert!(
        report.is_empty(),
        "modules that import each other:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_graph_reader_finds_a_cycle_it_is_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    fs::write(src.join("a.rs"), "use crate::b::{Thing, other::More};\n").unwrap();
    fs::create_dir(src.join("b")).unwrap();
    fs::write(src.join("b/mod.rs"), "mod other;\nuse super::c::X;\n").unwrap();
    fs::write(src.join("b/other.rs"), "// crate::a::nothing\n").unwrap();
    fs::write(src.join("c.rs"), "pub fn f() { crate::a::g() }\n").unwrap();
    let cycles = cycles_in(src);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].len(), 3);
    // Without the last edge there is none.
    fs::write(src.join("c.rs"), "pub fn f() {}\n").unwrap();
    assert!(cycles_in(src).is_empty());
}
