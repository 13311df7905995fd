//! The architecture invariants of ARCHITECTURE.md that a reading of the source can check:
//! the top-level modules of `core/src` form the layering below (so no cycle), and only
//! `storage` touches the file system. The test reads the source files, so a new `use` that
//! breaks a layer fails here with the file and the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which other top-level modules each module may name (`crate::<module>`). Test scaffolding
/// (`fuzzing`, `testing`) and the crate root are outside the layering.
const ALLOWED: &[(&str, &[&str])] = &[
    ("distance", &[]),
    ("error", &[]),
    ("process", &["error"]),
    ("interrupt", &["error"]),
    ("hugepages", &[]),
    ("background", &["hugepages"]),
    ("filter", &["error", "text"]),
    ("text", &[]),
    ("index", &["distance", "hugepages"]),
    ("types", &["distance", "error", "filter", "index", "text"]),
    (
        "storage",
        &[
            "distance", "error", "filter", "index", "process", "text", "types",
        ],
    ),
    (
        "collection",
        &[
            "background",
            "distance",
            "error",
            "filter",
            "hugepages",
            "index",
            "interrupt",
            "process",
            "storage",
            "text",
            "types",
        ],
    ),
];
const OUTSIDE: &[&str] = &["fuzzing", "testing", "lib"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module of a file: its first path component under `src` (file stem for a top-level file).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a line, without its `//` comment.
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let from = module_of(src, &f);
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to != from
                    && !to.is_empty()
                    && to.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    let at = format!("{}:{}", f.display(), n + 1);
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(at);
                }
            }
        }
    }
    graph
}

fn src_dir() -> PathBuf {
    trovedb_tests::repo_root().join("core").join("src")
}

#[test]
fn top_level_modules_follow_the_layering() {
    let graph = edges(&src_dir());
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, to)| (*m, to.iter().copied().collect()))
        .collect();
    let mut bad = Vec::new();
    for (from, tos) in &graph {
        if OUTSIDE.contains(&from.as_str()) {
            continue;
        }
        let Some(ok) = allowed.get(from.as_str()) else {
            bad.push(format!("module `{from}` is not in the layering table"));
            continue;
        };
        for (to, at) in tos {
            if !ok.contains(to.as_str()) && !OUTSIDE.contains(&to.as_str()) {
                bad.push(format!("{at}: `{from}` uses `crate::{to}`"));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

/// Depth-first search with colours; a grey node reached again closes a cycle.
fn visit(
    m: &str,
    graph: &BTreeMap<String, BTreeMap<String, String>>,
    colour: &mut BTreeMap<String, u8>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    match colour.get(m) {
        Some(1) => {
            let i = path.iter().position(|p| p == m).unwrap_or(0);
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        Some(2) => return None,
        _ => {}
    }
    colour.insert(m.to_owned(), 1);
    path.push(m.to_owned());
    for to in graph.get(m).into_iter().flat_map(BTreeMap::keys) {
        if OUTSIDE.contains(&to.as_str()) {
            continue;
        }
        if let Some(c) = visit(to, graph, colour, path) {
            return Some(c);
        }
    }
    path.pop();
    colour.insert(m.to_owned(), 2);
    None
}

#[test]
fn module_graph_has_no_cycle() {
    let graph = edges(&src_dir());
    let mut colour = BTreeMap::new();
    for m in graph.keys().filter(|m| !OUTSIDE.contains(&m.as_str())) {
        if let Some(cycle) = visit(m, &graph, &mut colour, &mut Vec::new()) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

/// Whether `line` contains `word` not as the tail of a longer name (`LockFile::` is not
/// `File::`).
fn mentions(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        word.starts_with('.')
            || !line[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn only_storage_touches_the_file_system() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let needles = [
        "std::fs",
        "fs::",
        "File::",
        "OpenOptions",
        ".exists()",
        ".is_dir()",
        ".is_file()",
        "read_dir",
        "remove_file",
    ];
    let mut bad = Vec::new();
    for f in files {
        let m = module_of(&src, &f);
        if m == "storage" || OUTSIDE.contains(&m.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may use the file system to check what the engine did.
        let body = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in body.lines().enumerate() {
            let line = code(line);
            if let Some(w) = needles.iter().find(|w| mentions(line, w)) {
                bad.push(format!("{}:{}: `{w}`", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "file system used outside storage:\n{}",
        bad.join("\n")
    );
}
