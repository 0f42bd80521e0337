//! The modules of steward-ffi in layers, checked from their sources: a module may use only the
//! modules before it in `ORDER`, so their imports form no cycle (issue 13).
//!
//! Every `crate::<module>` path in a file of `steward-ffi/src` is read, also inside groups
//! (`use crate::{a::X, b::{Y, Z}}`) and as `super::<module>`; comments, string literals and
//! `#[cfg(test)]` items are skipped (doc links are not imports, and tests may reach anything).
//! An import cycle fails the test naming it, and so does a use of a module later in `ORDER`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules from the bottom up: each may use those before it, never those after it.
const ORDER: &[&str] = &[
    "error",    // result codes, FfiError, the per-thread last error
    "boundary", // the panic boundary, argument checks, text handed to C
    "explain",  // the C functions that explain failures and result codes
    "slot",     // a callback triple taken over: `drop` once, after the last `call`
    "status",   // views of message states, error reports, destinations, send reports
    "method",   // requests and completions of methods and events served in C
    "callback", // the callback triples C passes in
    "config",   // the node builder
    "message",  // the message builder
    "node",     // the node handle: start, send, query, callbacks, stop
    "enrol",    // join tokens
    "keys",     // central's key registry
    "metrics",  // the metrics endpoint
];

/// `text` without comments, string and character literals (each string becomes `""`).
fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let ident_before = out.ends_with(|p: char| p.is_alphanumeric() || p == '_');
        if rest.starts_with("//") {
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        } else if rest.starts_with("/*") {
            rest = &rest[rest.find("*/").map_or(rest.len(), |end| end + 2)..];
            out.push(' ');
        } else if let Some(len) = raw_string_len(rest).filter(|_| !ident_before) {
            rest = &rest[len..];
            out.push_str("\"\"");
        } else if c == '"' {
            let mut chars = rest.char_indices().skip(1);
            let mut end = rest.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => drop(chars.next()),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            rest = &rest[end..];
            out.push_str("\"\"");
        } else if c == '\'' {
            // 'x' and '\n' are characters; 'a (no closing quote) is a lifetime.
            let mut chars = rest.char_indices().skip(1);
            let literal_end = match (chars.next(), chars.next()) {
                (Some((_, '\\')), _) => rest[3..].find('\'').map(|i| i + 4),
                (Some(_), Some((i, '\''))) => Some(i + 1),
                _ => None,
            };
            rest = &rest[literal_end.unwrap_or(1)..];
            out.push_str(if literal_end.is_some() { "' '" } else { "'" });
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The length of the raw string literal (`r"…"`, `r#"…"#`) at the start of `s`, if any.
fn raw_string_len(s: &str) -> Option<usize> {
    let hashes = s
        .strip_prefix('r')?
        .chars()
        .take_while(|c| *c == '#')
        .count();
    let body = s[1 + hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    Some(
        body.find(&close)
            .map_or(s.len(), |end| 2 + hashes + end + close.len()),
    )
}

/// The code of a source file: without comments, literals and `#[cfg(test)]` items (an item
/// ends at its first `;`, or at the `}` matching its first `{`).
fn code(text: &str) -> String {
    let mut code = strip_comments_and_strings(text);
    while let Some(at) = code.find("#[cfg(test)]") {
        let item = at + "#[cfg(test)]".len();
        let mut depth = 0;
        let mut end = code.len();
        for (i, c) in code[item..].char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = item + i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = item + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(at..end, "");
    }
    code
}

/// The first word of each path in `paths`: `a::X` → `a`; `{a::X, b::{Y, Z}}` → `a`, `b`.
fn first_words(paths: &str) -> Vec<String> {
    let word = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = paths.strip_prefix('{') else {
        return vec![word(paths)];
    };
    let mut words = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                words.push(word(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                words.push(word(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    words.retain(|w| !w.is_empty() && w != "self");
    words
}

/// Every name directly under the crate root that `code` reaches with `crate::` or `super::`.
fn crate_names_used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for prefix in ["crate::", "super::"] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            used.extend(first_words(&code[at + prefix.len()..]));
        }
    }
    used
}

/// The modules of `steward-ffi/src` (lib.rs is the root, not a module) and those each uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            !path.is_dir(),
            "{}: a module directory; this test reads only src/*.rs, extend it",
            path.display()
        );
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            files.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut graph = BTreeMap::new();
    for (module, text) in &files {
        let mut uses = crate_names_used(&code(text));
        for name in &uses {
            assert!(
                files.contains_key(name),
                "src/{module}.rs: `crate::{name}` is not a module; name it through the module \
                 that defines it, so this test can see the dependency"
            );
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle for every back edge a depth-first walk meets, as `a → b → a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn walk<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        path.push(node);
        for next in &graph[node] {
            if let Some(at) = path.iter().position(|m| m == next) {
                found.push(format!("{} → {next}", path[at..].join(" → ")));
            } else if !done.contains(next.as_str()) {
                walk(next, graph, path, done, found);
            }
        }
        path.pop();
        done.insert(node);
    }
    let (mut path, mut done, mut found) = (Vec::new(), BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        if !done.contains(node.as_str()) {
            walk(node, graph, &mut path, &mut done, &mut found);
        }
    }
    found
}

#[test]
fn modules_have_no_import_cycle() {
    let graph = module_graph();
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between modules: {found:#?}"
    );
    let edges: usize = graph.values().map(|uses| uses.len()).sum();
    println!(
        "{} modules, {edges} imports between them, no cycle",
        graph.len()
    );
}

#[test]
fn modules_use_only_the_modules_before_them_in_order() {
    let graph = module_graph();
    let listed: BTreeSet<String> = ORDER.iter().map(|m| m.to_string()).collect();
    let present: BTreeSet<String> = graph.keys().cloned().collect();
    assert_eq!(
        listed, present,
        "ORDER must list exactly the modules of src/"
    );
    let rank = |m: &str| ORDER.iter().position(|o| *o == m).unwrap();
    let against: Vec<String> = graph
        .iter()
        .flat_map(|(module, uses)| uses.iter().map(move |used| (module, used)))
        .filter(|(module, used)| rank(used) > rank(module))
        .map(|(module, used)| format!("src/{module}.rs uses `{used}`"))
        .collect();
    assert!(
        against.is_empty(),
        "these modules use a module after them in ORDER (bottom up: {ORDER:?}): {against:#?}"
    );
}

#[test]
fn the_reader_skips_comments_literals_and_tests() {
    let text = r##"
        //! See [`crate::node`].
        use crate::{boundary::{guard, Text}, error::FfiError, self};
        use super::method::kind_arg;
        fn f<'a>(x: &'a str) -> char { g("crate::config", r#"crate::"keys""#); '"' } // crate::enrol
        /* crate::metrics */ const Q: char = '\'';
        fn h() -> crate::status::X { super::slot::take() }
        #[cfg(test)]
        mod tests { use crate::callback::Slot; fn t() { { crate::node::x(); } } }
        #[cfg(test)]
        use crate::message;
        static S: my_crate::Thing = $crate::explain::X;
    "##;
    let used = crate_names_used(&code(text));
    let want: BTreeSet<String> = ["boundary", "error", "method", "slot", "status"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(used, want);
    let mut graph = BTreeMap::new();
    for (m, uses) in [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &[])] {
        graph.insert(m.to_string(), uses.iter().map(|u| u.to_string()).collect());
    }
    assert_eq!(cycles(&graph), ["a → b → c → a"]);
}
