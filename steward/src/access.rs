//! Receivers decide: which sender nodes may call which methods here.

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

/// One permission: `from` may call `method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Sender node.
    pub from: Pattern,
    /// Method.
    pub method: Pattern,
}

/// The receiver's access list. A node always accepts messages from itself.
///
/// The default lets the central node call every method and every node send `errorLog` and
/// `hello` (to central).
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Adds a rule; `"*"` matches every sender or method.
    pub fn allow(mut self, from: &str, method: &str) -> Self {
        self.rules.push(Rule {
            from: Pattern::parse(from),
            method: Pattern::parse(method),
        });
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True if `from` may call `method` on node `me`.
    pub fn allows(&self, me: &str, from: &str, method: &str) -> bool {
        from == me
            || self
                .rules
                .iter()
                .any(|r| r.from.matches(from) && r.method.matches(method))
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
    }
}
