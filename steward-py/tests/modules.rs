//! The modules of `steward-py/src` form layers, checked from their sources: a module may use
//! only the modules listed before it in `ORDER`, so there is no import cycle among them.
//!
//! Every `crate::<module>` path is read, also grouped ones (`use crate::{errors, types::X}`),
//! outside comments, string literals and a file's `#[cfg(test)]` part (tests may reach
//! anything). A `crate::<name>` that is no module is an item of the root, `lib.rs`, which
//! declares (so uses) every module. A cycle fails the test, named module by module; so does an
//! import against `ORDER`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules from the top down: each may use those before it, never those after it.
const ORDER: &[&str] = &[
    "errors",   // the exception classes
    "convert",  // argument checks whose errors name the argument
    "types",    // value objects (Result, MessageStatus, ...)
    "logging",  // tracing events to Python logging; wakes callback threads through `Wake`
    "dispatch", // the callback thread of a node
    "runtime",  // a started node: tokio runtime, core node, blocking helpers, stop
    "receipt",  // Receipt, waiting through the started node
    "security", // the broker credentials and TLS options of Node()
    "options",  // the other options of Node()
    "node",     // Node: lifecycle, send, serve; builds receipts
    "lib",      // the module root: registers everything
];

/// The code of a file: without comments (doc links are not imports), string and character
/// literals (messages are not imports) and its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(hashes) = string_start(&chars, i) {
            // "...", or a raw string r"..." / r#"..."#: skip to its end.
            let raw = chars[i] == 'r';
            i += usize::from(raw) + hashes + 1;
            let end = format!("\"{}", "#".repeat(hashes));
            while i < chars.len() && !at(i, &end) {
                i += if !raw && chars[i] == '\\' { 2 } else { 1 };
            }
            i += end.len();
            out.push_str("\"\"");
        } else if chars[i] == '\'' && (at(i + 1, "\\") || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''), not a lifetime ('a).
            i += if at(i + 1, "\\") { 3 } else { 2 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// If a string literal starts at `chars[i]`, the number of `#` of its raw form (0 otherwise).
fn string_start(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] == '"' {
        return Some(0);
    }
    let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    if chars[i] != 'r' || after_ident {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
    // Not a raw identifier (r#type).
    (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// The leading identifier of `s` (after spaces).
fn word(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first names after every `crate::` in `code`: `crate::a::X` gives `a`,
/// `crate::{a, b::{X, Y}}` gives `a` and `b`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`
        }
        let after = &code[at + "crate::".len()..];
        let Some(group) = after.strip_prefix('{') else {
            names.insert(word(after));
            continue;
        };
        // The top-level items of the group, up to its closing brace.
        let (mut depth, mut start) = (0, 0);
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.insert(word(&group[start..k]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.insert(word(&group[start..k]));
                    start = k + 1;
                }
                _ => {}
            }
        }
    }
    names.remove("");
    names
}

/// The modules `lib.rs` declares (`mod x;`, `pub(crate) mod x;`).
fn declared(lib: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for line in lib.lines().filter_map(|l| l.trim().strip_suffix(';')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [.., "mod", name] = words[..] {
            modules.insert(name.to_owned());
        }
    }
    modules
}

/// module → the modules it uses.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            !path.is_dir(),
            "{}: this test reads a flat src/; teach it nested modules",
            path.display()
        );
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        let code = code(&std::fs::read_to_string(&path).unwrap());
        assert!(
            !code.contains("super::"),
            "src/{module}.rs: write `crate::<module>`, not `super::` (this test reads crate:: paths)"
        );
        graph.insert(module, crate_paths(&code));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, used) in graph.iter_mut() {
        // A name that is no module is a root item: defined in lib.rs.
        *used = used
            .iter()
            .map(|u| {
                if modules.contains(u) {
                    u.clone()
                } else {
                    "lib".into()
                }
            })
            .filter(|u| u != module)
            .collect();
    }
    let lib = declared(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    graph.get_mut("lib").unwrap().extend(lib);
    graph
}

/// A cycle in `graph` (as `a -> b -> a`), if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut found = path[at..].to_vec();
            found.push(m.to_owned());
            return Some(found);
        }
        if !done.insert(m.to_owned()) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_have_no_import_cycle_and_follow_the_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut against = Vec::new();
    for (module, used) in &graph {
        for u in used {
            if let (Some(own), Some(other)) = (rank(module), rank(u)) {
                if other > own {
                    against.push(format!("{module} uses {u}"));
                }
            }
        }
    }
    if let Some(c) = cycle(&graph) {
        panic!(
            "import cycle among the modules of src/: {}; imports against ORDER: {against:?}",
            c.join(" -> ")
        );
    }
    let listed: BTreeSet<String> = ORDER.iter().map(|m| m.to_string()).collect();
    let files: BTreeSet<String> = graph.keys().cloned().collect();
    assert_eq!(files, listed, "ORDER must list exactly the files of src/");
    assert!(
        against.is_empty(),
        "imports against ORDER (top down: {ORDER:?}); reorder it or cut the import: {against:?}"
    );
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    println!("{} modules, {edges} imports, no cycle", graph.len());
}

#[test]
fn the_reader_sees_paths_only_in_code() {
    let text = r##"
//! [`crate::node`] in a doc comment
use crate::{errors::{self, config_error}, types::X, dispatch};
fn f() -> crate::receipt::R { g("crate::security", '"', 'a') /* crate::convert */ }
let s = r#"crate::options "quoted""#; // crate::lib
struct S<'a>(&'a crate::runtime::H); mycrate::logging::f();
let r#type = '\''; crate::after_quote::f();
#[cfg(test)]
mod tests { use crate::node; }
"##;
    let found = crate_paths(&code(text));
    let want: BTreeSet<String> = [
        "errors",
        "types",
        "dispatch",
        "receipt",
        "runtime",
        "after_quote",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, want);
    let lib = "mod errors;\npub(crate) mod node;\nuse pyo3::prelude::*;";
    assert_eq!(declared(lib), ["errors", "node"].map(String::from).into());
}

#[test]
fn a_cycle_is_named() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("dispatch", vec!["errors", "logging"]),
        ("errors", vec![]),
        ("logging", vec!["dispatch"]),
    ]
    .into_iter()
    .map(|(m, u)| (m.into(), u.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle(&graph).unwrap().join(" -> "),
        "dispatch -> logging -> dispatch"
    );
}
