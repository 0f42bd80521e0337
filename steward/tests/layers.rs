//! The core's layers, checked from its sources: a module may use only the layers above it (see
//! `ARCHITECTURE.md`). Every `crate::<layer>` path in a file below `steward/src` is read — also
//! the root re-exports such as `crate::Node`, counted as the layer that defines them — and one
//! that reaches a lower layer fails the test, naming the file and the path.
//!
//! `KNOWN` lists the imports against the order that remain while `node::Inner` is split into
//! narrow handles (issue 13). It may only shrink: an entry that is no longer needed fails too,
//! so the list stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers from the top down: each may use those before it (above), never those after it.
const ORDER: &[&str] = &[
    "error",
    "private_files",
    "wire",
    "store",
    "security",
    "config",
    "runtime",
    "delivery",
    "methods",
    "central",
    "ops",
    "node",
];

/// (file under `steward/src`, layer it still reaches against the order).
const KNOWN: &[(&str, &str)] = &[
    ("central/enrol.rs", "node"),
    ("delivery/screen.rs", "central"),
    ("delivery/screen.rs", "node"),
    ("central/registry.rs", "node"),
    ("delivery/confirm.rs", "node"),
    ("delivery/executor.rs", "node"),
    ("delivery/publisher.rs", "node"),
    ("delivery/receiver.rs", "node"),
];

fn rank(layer: &str) -> Option<usize> {
    ORDER.iter().position(|l| *l == layer)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: without comments (doc links are not imports) and without its
/// `#[cfg(test)]` part (tests may reach anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names `lib.rs` re-exports at the root, with the layer each comes from
/// (`pub use node::{Node, …}` → `Node` is `node`).
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = lib;
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let end = rest.find(';').unwrap();
        let (stmt, tail) = rest.split_at(end);
        rest = tail;
        let layer = stmt.split("::").next().unwrap().trim().to_owned();
        let list = stmt.rsplit("::").next().unwrap();
        for name in list.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.split(" as ").last().unwrap().trim();
            if !name.is_empty() {
                names.insert(name.to_owned(), layer.clone());
            }
        }
    }
    names
}

/// Every layer a piece of code names through `crate::…` (directly or through a root name).
fn layers_used(code: &str, root: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let after = &code[at + "crate::".len()..];
        let parts: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').collect()
        } else {
            vec![after]
        };
        for part in parts {
            let word: String = part
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if rank(&word).is_some() {
                used.insert(word);
            } else if let Some(layer) = root.get(&word) {
                used.insert(layer.clone());
            }
        }
    }
    used
}

#[test]
fn modules_use_only_the_layers_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut against = BTreeSet::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "lib.rs" {
            continue;
        }
        let layer = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let own = rank(layer).unwrap_or_else(|| {
            panic!("src/{rel}: `{layer}` is not a layer; add it to ORDER (and ARCHITECTURE.md)")
        });
        for used in layers_used(&code(file), &root) {
            if rank(&used).unwrap() > own {
                against.insert((rel.clone(), used));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(f, l)| (f.to_string(), l.to_string()))
        .collect();
    let new: Vec<_> = against.difference(&known).collect();
    let gone: Vec<_> = known.difference(&against).collect();
    assert!(
        new.is_empty(),
        "these files use a layer below their own (top down: {ORDER:?}); pass them a narrow \
         handle instead: {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these imports against the order are gone: remove them from KNOWN: {gone:?}"
    );
    println!(
        "{} files, {} imports against the layer order left (KNOWN)",
        files.len(),
        against.len()
    );
}

#[test]
fn the_reader_sees_grouped_paths_and_root_names() {
    let root = root_names("pub use node::{Node, NodeBuilder as Builder};\npub use wire::x::Y;");
    assert_eq!(root["Node"], "node");
    assert_eq!(root["Builder"], "node");
    assert_eq!(root["Y"], "wire");
    let used = layers_used(
        "use crate::{wire::names, node::Inner};\nfn f(n: &crate::Node) -> crate::store::X {}",
        &root,
    );
    let want: BTreeSet<String> = ["wire", "node", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(used, want);
}
