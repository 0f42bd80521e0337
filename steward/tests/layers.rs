//! The core's layers, checked from its sources: a module may use only the layers above it (see
//! `ARCHITECTURE.md`). Every `crate::<layer>` path in a file below `steward/src` is read — also
//! the root re-exports such as `crate::Node`, counted as the layer that defines them — and one
//! that reaches a lower layer fails the test, naming the file and the path.
//!
//! A second test keeps `Node` in the node layer: a task below it gets the narrow handles it
//! uses (see `delivery/mod.rs`), never the node.

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
    assert!(
        against.is_empty(),
        "these files use a layer below their own (top down: {ORDER:?}); pass them a narrow \
         handle instead: {against:?}"
    );
    println!("{} files, each using only the layers above it", files.len());
}

/// Whether `code` names the type `Node` (not `NodeConfig`, `NodeBuilder`, …).
fn names_node(code: &str) -> bool {
    code.match_indices("Node").any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + "Node".len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

#[test]
fn nothing_below_the_node_layer_names_node() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut naming: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
        .filter(|rel| rel != "lib.rs" && !rel.starts_with("node/"))
        .filter(|rel| names_node(&code(&src.join(rel))))
        .collect();
    naming.sort();
    assert!(
        naming.is_empty(),
        "these files below node/ name `Node`; give them the handles they use instead: {naming:?}"
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
    assert!(names_node("fn f(n: &Node)") && names_node("crate::Node::send"));
    assert!(!names_node("NodeConfig, NodeBuilder, MyNode"));
}
