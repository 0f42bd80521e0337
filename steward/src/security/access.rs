//! Receivers decide: which sender nodes may call which methods here, and with which arguments.
//!
//! The list is an allow list: a message runs only if a rule lets its sender call its method
//! with its data; everything not listed is denied. A rule can restrict the data (for
//! `shellCommand`, the argv) to one exact argv or to an argv prefix, compared element by
//! element. A node that configures no list gets [`AccessList::default_for`] its central node.

use serde::{Deserialize, Serialize};

/// Matches a sender or a method: one exact name, or every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Any name.
    Any,
    /// Exactly this name.
    Exact(String),
}

impl Pattern {
    /// `"*"` is [`Pattern::Any`], anything else an exact name.
    pub fn parse(s: &str) -> Pattern {
        if s == "*" {
            Pattern::Any
        } else {
            Pattern::Exact(s.to_owned())
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == s,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(s) => f.write_str(s),
        }
    }
}

/// Which data (for `shellCommand`: which argv) a rule allows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Argv {
    /// Any data.
    #[default]
    Any,
    /// Exactly this list, element by element (`["uptime"]` allows `uptime` with no arguments).
    Exact(Vec<String>),
    /// This list followed by anything: `["systemctl", "status"]` allows
    /// `systemctl status nginx`, not `systemctl stop nginx`. Elements are compared whole, so
    /// `["systemctl", "status;reboot"]` does not match. Never use a prefix after which an
    /// argument can change what runs (`["bash", "-c"]`, `["find", "/"]` with `-exec`).
    Prefix(Vec<String>),
}

impl Argv {
    fn matches(&self, data: &[String]) -> bool {
        match self {
            Argv::Any => true,
            Argv::Exact(a) => a.as_slice() == data,
            Argv::Prefix(p) => data.len() >= p.len() && data[..p.len()] == p[..],
        }
    }
}

/// One permission: `from` may call `method` with data matching `argv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleSpec", into = "RuleSpec")]
pub struct Rule {
    /// Sender node.
    pub from: Pattern,
    /// Method.
    pub method: Pattern,
    /// Allowed data (argv for `shellCommand`).
    pub argv: Argv,
}

/// A rule as written in a TOML config file, a trust bundle or JSON:
/// `{ from = "central", method = "shellCommand", argv_prefix = ["systemctl", "status"] }`.
/// At most one of `argv` (exact) and `argv_prefix`; neither allows any data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Sender node, or `"*"`.
    pub from: String,
    /// Method, or `"*"`.
    pub method: String,
    /// The exact argv allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// The argv prefix allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_prefix: Option<Vec<String>>,
}

impl TryFrom<RuleSpec> for Rule {
    type Error = crate::Error;
    fn try_from(s: RuleSpec) -> crate::Result<Rule> {
        let pattern = |what: &str, v: &str, check: fn(&str) -> crate::Result<()>| {
            if v == "*" {
                Ok(Pattern::Any)
            } else {
                check(v)
                    .map(|()| Pattern::Exact(v.to_owned()))
                    .map_err(|e| crate::Error::config_from(format!("access rule, {what}: {e}"), e))
            }
        };
        let argv = match (s.argv, s.argv_prefix) {
            (Some(_), Some(_)) => {
                return Err(crate::Error::config(format!(
                    "access rule {}:{} gives both argv and argv_prefix; give one",
                    s.from, s.method
                )))
            }
            (Some(a), None) => Argv::Exact(a),
            (None, Some(p)) => Argv::Prefix(p),
            (None, None) => Argv::Any,
        };
        Ok(Rule {
            from: pattern("from", &s.from, crate::wire::names::node)?,
            method: pattern("method", &s.method, crate::wire::names::method)?,
            argv,
        })
    }
}

impl From<Rule> for RuleSpec {
    fn from(r: Rule) -> RuleSpec {
        let (argv, argv_prefix) = match r.argv {
            Argv::Any => (None, None),
            Argv::Exact(a) => (Some(a), None),
            Argv::Prefix(p) => (None, Some(p)),
        };
        RuleSpec {
            from: r.from.to_string(),
            method: r.method.to_string(),
            argv,
            argv_prefix,
        }
    }
}

/// The receiver's access list. A node always accepts messages from itself.
///
/// The default lets the central node call every method, every node send `errorLog` and
/// `hello`, and (on central) `textLogging`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessList {
    rules: Vec<Rule>,
}

impl AccessList {
    /// An empty list: only the node itself may call it.
    pub fn empty() -> Self {
        AccessList { rules: Vec::new() }
    }

    /// The default list for a fleet whose central node is `central`.
    pub fn default_for(central: &str) -> Self {
        AccessList::empty()
            .allow(central, "*")
            .allow("*", "errorLog")
            .allow("*", "hello")
    }

    /// The default list of node `me`: [`AccessList::default_for`], and on central itself also
    /// `textLogging` from every node (the original's "send logs from an end node back to a
    /// central log subscriber").
    pub fn default_for_node(me: &str, central: &str) -> Self {
        let list = AccessList::default_for(central);
        if me == central {
            list.allow("*", "textLogging")
        } else {
            list
        }
    }

    /// Adds a rule; `"*"` matches every sender or method.
    pub fn allow(self, from: &str, method: &str) -> Self {
        self.allow_argv(from, method, Argv::Any)
    }

    /// Adds a rule restricting the data (argv): `from` may call `method` only with `argv`.
    ///
    /// # Examples
    /// ```
    /// use steward::{AccessList, Argv};
    /// let list = AccessList::empty()
    ///     .allow_argv("central", "shellCommand", Argv::Prefix(vec!["systemctl".into(), "status".into()]))
    ///     .allow_argv("central", "shellCommand", Argv::Exact(vec!["uptime".into()]));
    /// let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    /// assert!(list.check("ship1", "central", "shellCommand", &argv(&["systemctl", "status", "nginx"])).is_ok());
    /// assert!(list.check("ship1", "central", "shellCommand", &argv(&["systemctl", "stop", "nginx"])).is_err());
    /// assert!(list.check("ship1", "central", "shellCommand", &argv(&["uptime", "-p"])).is_err());
    /// ```
    pub fn allow_argv(mut self, from: &str, method: &str, argv: Argv) -> Self {
        self.rules.push(Rule {
            from: Pattern::parse(from),
            method: Pattern::parse(method),
            argv,
        });
        self
    }

    /// Adds a rule.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True if `from` may call `method` on node `me` with some data (argv restrictions are
    /// not looked at; receivers use [`AccessList::check`]).
    pub fn allows(&self, me: &str, from: &str, method: &str) -> bool {
        from == me
            || self
                .rules
                .iter()
                .any(|r| r.from.matches(from) && r.method.matches(method))
    }

    /// Whether `from` may call `method` with `data` on node `me`; the error is the receiver's
    /// reason for refusing.
    pub fn check(&self, me: &str, from: &str, method: &str, data: &[String]) -> Result<(), String> {
        if from == me {
            return Ok(());
        }
        let mut method_listed = false;
        for r in &self.rules {
            if r.from.matches(from) && r.method.matches(method) {
                if r.argv.matches(data) {
                    return Ok(());
                }
                method_listed = true;
            }
        }
        Err(if method_listed {
            format!(
                "{from} may call {method} on {me} only with other arguments: {} is not in its access list",
                show_argv(data)
            )
        } else {
            format!("{from} may not call {method} on {me} (not in its access list)")
        })
    }
}

/// The argv as JSON, shortened for a log line.
fn show_argv(data: &[String]) -> String {
    let s = serde_json::to_string(data).unwrap_or_default();
    if s.chars().count() > 200 {
        let cut: String = s.chars().take(200).collect();
        format!("{cut}…")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list() {
        let a = AccessList::default_for("central");
        assert!(a.allows("ship1", "central", "shellCommand"));
        assert!(!a.allows("ship1", "ship2", "shellCommand"));
        assert!(a.allows("central", "ship2", "errorLog"));
        assert!(a.allows("ship1", "ship1", "anything"));
        assert!(!a.allows("central", "ship1", "textLogging"));
        let on_central = AccessList::default_for_node("central", "central");
        assert!(on_central.allows("central", "ship1", "textLogging"));
        let on_ship = AccessList::default_for_node("ship2", "central");
        assert!(!on_ship.allows("ship2", "ship1", "textLogging"));
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_exact_and_prefix_compare_whole_elements() {
        let a = AccessList::empty()
            .allow_argv(
                "central",
                "shellCommand",
                Argv::Prefix(v(&["systemctl", "status"])),
            )
            .allow_argv("central", "shellCommand", Argv::Exact(v(&["uptime"])));
        let ok = |d: &[&str]| a.check("ship1", "central", "shellCommand", &v(d));
        assert!(ok(&["systemctl", "status"]).is_ok());
        assert!(ok(&["systemctl", "status", "nginx"]).is_ok());
        assert!(ok(&["uptime"]).is_ok());
        for bad in [
            &["systemctl"][..],
            &["systemctl", "stop", "nginx"],
            &["systemctl", "status;reboot"],
            &["systemctl status"],
            &["uptime", "-p"],
            &[],
            &["bash", "-c", "uptime"],
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains("only with other arguments"), "{e}");
            assert!(e.contains("not in its access list"), "{e}");
        }
        // Another method or sender is not listed at all: default deny.
        let e = a.check("ship1", "central", "echo", &[]).unwrap_err();
        assert!(e.contains("may not call echo"), "{e}");
        assert!(a
            .check("ship1", "ship2", "shellCommand", &v(&["uptime"]))
            .is_err());
        // A node may always call itself.
        assert!(a
            .check("ship1", "ship1", "shellCommand", &v(&["rm"]))
            .is_ok());
    }

    #[test]
    fn rules_round_trip_through_toml_and_json_and_refuse_nonsense() {
        #[derive(Deserialize)]
        struct File {
            access: AccessList,
        }
        let f: File = toml::from_str(
            r#"access = [
                { from = "central", method = "shellCommand", argv_prefix = ["systemctl", "status"] },
                { from = "central", method = "shellCommand", argv = ["uptime"] },
                { from = "*", method = "errorLog" },
            ]"#,
        )
        .unwrap();
        assert_eq!(f.access.rules().len(), 3);
        assert_eq!(f.access.rules()[1].argv, Argv::Exact(v(&["uptime"])));
        let json = serde_json::to_string(&f.access).unwrap();
        let back: AccessList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f.access);
        for bad in [
            r#"[{"from":"central","method":"x","argv":[],"argv_prefix":[]}]"#,
            r#"[{"from":"bad name","method":"x"}]"#,
            r#"[{"from":"central","method":"a.b"}]"#,
            r#"[{"from":"central","method":"x","args":[]}]"#,
        ] {
            assert!(serde_json::from_str::<AccessList>(bad).is_err(), "{bad}");
        }
    }
}
