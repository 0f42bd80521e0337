//! Validation of node, method and message-id names, the only strings that reach subjects and paths.

use crate::error::{Error, Result};

/// Longest allowed name, in bytes (all allowed characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` is 1-64 characters of `[A-Za-z0-9_-]`; `what` names the kind in the error.
pub fn validate(what: &'static str, name: &str) -> Result<()> {
    let shown = || {
        let mut s: String = name.chars().take(80).collect();
        if name.chars().count() > 80 {
            s.push('…');
        }
        s
    };
    if name.is_empty() {
        return Err(Error::InvalidName {
            what,
            name: String::new(),
            reason: "it is empty".into(),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::InvalidName {
            what,
            name: shown(),
            reason: format!("character {} is not allowed", describe(c)),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName {
            what,
            name: shown(),
            reason: format!(
                "it is {} characters long (at most {MAX_NAME_LEN})",
                name.len()
            ),
        });
    }
    Ok(())
}

/// Checks a node name.
pub fn node(name: &str) -> Result<()> {
    validate("node", name)
}

/// Checks a method name.
pub fn method(name: &str) -> Result<()> {
    validate("method", name)
}

fn describe(c: char) -> String {
    match c {
        ' ' => "' ' (space)".into(),
        '\t' => "'\\t' (tab)".into(),
        '\0' => "NUL".into(),
        '.' => "'.' (subject separator)".into(),
        '*' | '>' => format!("'{c}' (subject wildcard)"),
        c if c.is_control() => format!("U+{:04X} (control character)", c as u32),
        c if !c.is_ascii() => format!("'{c}' (U+{:04X}, non-ASCII)", c as u32),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["ship1", "central", "a", "A-b_9", &"x".repeat(64)] {
            assert!(node(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names_naming_the_character() {
        for (n, needle) in [
            ("", "empty"),
            ("a.b", "'.'"),
            ("a*", "wildcard"),
            ("a>", "wildcard"),
            ("a b", "space"),
            ("a\tb", "tab"),
            ("../x", "'.'"),
            ("a/b", "'/'"),
            ("$SYS", "'$'"),
            ("a\0", "NUL"),
            ("skíp", "non-ASCII"),
        ] {
            let e = node(n).unwrap_err().to_string();
            assert!(e.contains(needle), "{n:?}: {e}");
        }
        let e = node(&"x".repeat(65)).unwrap_err().to_string();
        assert!(e.contains("65 characters"), "{e}");
    }
}
