//! The message a user sends, and the original `inmsg.txt` JSON format it is parsed from.
//!
//! ```json
//! [{"toNode":"ship1","data":["bash","-c","ls -l"],"commandOrEvent":"command","method":"shellCommand"}]
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::wire::names;

/// Whether a message asks for something to be run (command) or delivers something (event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Run something and ACK with its result.
    Command,
    /// Deliver something and ACK that it was handled.
    Event,
}

impl Kind {
    /// The subject token: `command` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Event => "event",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a message stops being worth delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Relative to the moment the sender accepts it.
    Ttl(Duration),
    /// An absolute time.
    At(SystemTime),
}

/// One message to one node. Unset options take the node's defaults.
///
/// # Examples
/// ```
/// use steward::{Kind, Message};
/// let m = Message::new("ship1", Kind::Command, "shellCommand", ["bash", "-c", "uptime"]);
/// assert_eq!(m.subject(), "ship1.command.shellCommand");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Caller-chosen id (1-64 of `[A-Za-z0-9_-]`); a ULID is assigned when absent.
    pub id: Option<String>,
    /// The destination node.
    pub to_node: String,
    /// Command or event.
    pub kind: Kind,
    /// The method to call on the destination.
    pub method: String,
    /// The method's arguments (for `shellCommand`, the argv).
    pub data: Vec<String>,
    /// How long to wait for the receiver's ACK before resending; zero means fire-and-forget.
    pub ack_timeout: Option<Duration>,
    /// How many times to resend before giving up; `None` takes the node default.
    pub retries: Option<u32>,
    /// Base wait between resends (grows with jitter, capped).
    pub retry_wait: Option<Duration>,
    /// When the message expires: neither sent nor run after that.
    pub expiry: Option<Expiry>,
    /// How long the method may run at the receiver before it is killed.
    pub method_timeout: Option<Duration>,
}

impl Message {
    /// A message with node defaults for every option.
    pub fn new<I, S>(
        to_node: impl Into<String>,
        kind: Kind,
        method: impl Into<String>,
        data: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Message {
            id: None,
            to_node: to_node.into(),
            kind,
            method: method.into(),
            data: data.into_iter().map(Into::into).collect(),
            ack_timeout: None,
            retries: None,
            retry_wait: None,
            expiry: None,
            method_timeout: None,
        }
    }

    /// A command message.
    pub fn command<I, S>(to_node: impl Into<String>, method: impl Into<String>, data: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(to_node, Kind::Command, method, data)
    }

    /// An event message.
    pub fn event<I, S>(to_node: impl Into<String>, method: impl Into<String>, data: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(to_node, Kind::Event, method, data)
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the ACK timeout (zero: fire-and-forget).
    pub fn with_ack_timeout(mut self, d: Duration) -> Self {
        self.ack_timeout = Some(d);
        self
    }
    /// Sets the number of resends.
    pub fn with_retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }
    /// Sets the base wait between resends.
    pub fn with_retry_wait(mut self, d: Duration) -> Self {
        self.retry_wait = Some(d);
        self
    }
    /// Sets a time to live from acceptance.
    pub fn with_ttl(mut self, d: Duration) -> Self {
        self.expiry = Some(Expiry::Ttl(d));
        self
    }
    /// Sets an absolute expiry.
    pub fn with_expires_at(mut self, t: SystemTime) -> Self {
        self.expiry = Some(Expiry::At(t));
        self
    }
    /// Sets the method's run-time limit at the receiver.
    pub fn with_method_timeout(mut self, d: Duration) -> Self {
        self.method_timeout = Some(d);
        self
    }

    /// The NATS subject: `<toNode>.<command|event>.<method>`.
    pub fn subject(&self) -> String {
        format!("{}.{}.{}", self.to_node, self.kind, self.method)
    }

    /// Checks names, id and option ranges; `index` is the position in its JSON array, if any.
    pub fn validate(&self, index: Option<usize>) -> Result<()> {
        let at = |field: &str, e: Error| match e {
            Error::InvalidName { reason, name, .. } => Error::invalid(
                index,
                Some(field),
                format!("{name:?}: {reason}; use 1-64 characters of A-Z a-z 0-9 _ -"),
            ),
            other => other,
        };
        names::node(&self.to_node).map_err(|e| at("toNode", e))?;
        names::method(&self.method).map_err(|e| at("method", e))?;
        if let Some(id) = &self.id {
            names::validate("id", id).map_err(|e| at("id", e))?;
        }
        let limits = [
            ("ackTimeout", self.ack_timeout, MAX_ACK_TIMEOUT),
            ("retryWait", self.retry_wait, MAX_RETRY_WAIT),
            ("methodTimeout", self.method_timeout, MAX_METHOD_TIMEOUT),
        ];
        for (field, value, max) in limits {
            if let Some(d) = value {
                if d > max {
                    return Err(Error::invalid(
                        index,
                        Some(field),
                        format!(
                            "{} s is more than the maximum of {} s",
                            d.as_secs_f64(),
                            max.as_secs()
                        ),
                    ));
                }
            }
        }
        if let Some(Expiry::Ttl(d)) = self.expiry {
            if d > MAX_TTL {
                return Err(Error::invalid(
                    index,
                    Some("ttl"),
                    format!(
                        "{} s is more than the maximum of {} s",
                        d.as_secs_f64(),
                        MAX_TTL.as_secs()
                    ),
                ));
            }
        }
        if self.method_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                index,
                Some("methodTimeout"),
                "must be more than 0 seconds",
            ));
        }
        Ok(())
    }

    /// The message in the original JSON format (every option that is set), for logs and resends.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone().into());
        }
        m.insert("toNode".into(), self.to_node.clone().into());
        m.insert("data".into(), self.data.clone().into());
        m.insert("commandOrEvent".into(), self.kind.as_str().into());
        m.insert("method".into(), self.method.clone().into());
        if let Some(d) = self.ack_timeout {
            m.insert("ackTimeout".into(), secs(d));
        }
        if let Some(n) = self.retries {
            m.insert("retries".into(), n.into());
        }
        if let Some(d) = self.retry_wait {
            m.insert("retryWait".into(), secs(d));
        }
        match self.expiry {
            Some(Expiry::Ttl(d)) => {
                m.insert("ttl".into(), secs(d));
            }
            Some(Expiry::At(t)) => {
                let s = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                m.insert("expiresAt".into(), secs(s));
            }
            None => {}
        }
        if let Some(d) = self.method_timeout {
            m.insert("methodTimeout".into(), secs(d));
        }
        Value::Object(m)
    }
}

fn secs(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        d.as_secs().into()
    } else {
        d.as_secs_f64().into()
    }
}

/// Upper bound for `ackTimeout`.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Upper bound for `retryWait`.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Upper bound for `methodTimeout`.
pub const MAX_METHOD_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Upper bound for `ttl`.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Deepest JSON nesting accepted (the format itself needs 3 levels).
pub const MAX_JSON_DEPTH: usize = 32;

/// The result of parsing one JSON text: the valid messages and an error per invalid one.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    /// Valid messages with the index of the array element they came from (`toNodes` gives several).
    pub messages: Vec<(usize, Message)>,
    /// One error per invalid element, naming its index and field.
    pub errors: Vec<Error>,
}

/// Parses a JSON array of messages (or one message object). Fails only if the text is not JSON
/// at all; invalid elements are reported in [`ParsedBatch::errors`] while valid ones are kept.
pub fn parse_json(text: &str) -> Result<ParsedBatch> {
    let value = parse_value_text(text)?;
    Ok(parse_value(&value))
}

/// Parses JSON text with a depth limit, so hostile nesting cannot exhaust the stack.
pub(crate) fn parse_value_text(text: &str) -> Result<Value> {
    if let Some(depth) = too_deep(text) {
        return Err(Error::invalid(
            None,
            None,
            format!("JSON is nested {depth}+ levels deep (at most {MAX_JSON_DEPTH})"),
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| Error::invalid(None, None, format!("not valid JSON: {e}")))
}

/// Returns the depth reached if the text nests deeper than [`MAX_JSON_DEPTH`] (strings respected).
pub(crate) fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses an already-decoded JSON value: an array of message objects or one object.
pub fn parse_value(value: &Value) -> ParsedBatch {
    let mut batch = ParsedBatch::default();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match parse_one(item, Some(i)) {
                    Ok(ms) => batch.messages.extend(ms.into_iter().map(|m| (i, m))),
                    Err(e) => batch.errors.push(e),
                }
            }
        }
        Value::Object(_) => match parse_one(value, None) {
            Ok(ms) => batch.messages.extend(ms.into_iter().map(|m| (0, m))),
            Err(e) => batch.errors.push(e),
        },
        other => batch.errors.push(Error::invalid(
            None,
            None,
            format!(
                "expected a JSON array of message objects, found {}",
                type_name(other)
            ),
        )),
    }
    batch
}

const FIELDS: &str = "toNode, toNodes, data, commandOrEvent, method, id, ackTimeout, retries, retryWait, ttl, expiresAt, methodTimeout";

/// Parses one message object; `toNodes` expands into one message per node.
pub fn parse_one(value: &Value, index: Option<usize>) -> Result<Vec<Message>> {
    let err = |field: Option<&str>, reason: String| Error::invalid(index, field, reason);
    let obj = value.as_object().ok_or_else(|| {
        err(
            None,
            format!("expected a message object, found {}", type_name(value)),
        )
    })?;
    for key in obj.keys() {
        if key == "fromNode" {
            return Err(err(
                Some("fromNode"),
                "is set by the sending node and cannot be given; remove it".into(),
            ));
        }
        if !FIELDS.split(", ").any(|f| f == key) {
            return Err(err(
                Some(key),
                format!("unknown field; known fields are {FIELDS}"),
            ));
        }
    }
    let string = |field: &str| -> Result<Option<String>> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(err(
                Some(field),
                format!("expected a string, found {}", type_name(v)),
            )),
        }
    };
    let seconds = |field: &str| -> Result<Option<Duration>> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f < 0.0 {
                    return Err(err(
                        Some(field),
                        format!("expected seconds >= 0, found {n}"),
                    ));
                }
                Duration::try_from_secs_f64(f)
                    .map(Some)
                    .map_err(|_| err(Some(field), format!("{n} seconds is out of range")))
            }
            Some(v) => Err(err(
                Some(field),
                format!("expected a number of seconds, found {}", type_name(v)),
            )),
        }
    };

    let method = string("method")?.ok_or_else(|| err(Some("method"), "is missing".into()))?;
    let kind = match string("commandOrEvent")?.as_deref() {
        Some("command") => Kind::Command,
        Some("event") => Kind::Event,
        Some(other) => {
            return Err(err(
                Some("commandOrEvent"),
                format!("must be \"command\" or \"event\", found {other:?}"),
            ))
        }
        None => return Err(err(Some("commandOrEvent"), "is missing".into())),
    };
    let data = match obj.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(err(
                    Some("data"),
                    format!("element {i} must be a string, found {}", type_name(other)),
                )),
            })
            .collect::<Result<Vec<_>>>()?,
        Some(v) => {
            return Err(err(
                Some("data"),
                format!("expected an array of strings, found {}", type_name(v)),
            ))
        }
    };
    let mut targets = Vec::new();
    if let Some(to) = string("toNode")? {
        targets.push(to);
    }
    match obj.get("toNodes") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) => targets.push(s.clone()),
                    other => {
                        return Err(err(
                            Some("toNodes"),
                            format!("element {i} must be a string, found {}", type_name(other)),
                        ))
                    }
                }
            }
        }
        Some(v) => {
            return Err(err(
                Some("toNodes"),
                format!("expected an array of node names, found {}", type_name(v)),
            ))
        }
    }
    if targets.is_empty() {
        return Err(err(
            Some("toNode"),
            "is missing (give toNode or toNodes)".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    let id = string("id")?;
    if id.is_some() && targets.len() > 1 {
        return Err(err(
            Some("id"),
            "cannot be combined with several toNodes; each destination gets its own id".into(),
        ));
    }
    let retries = match obj.get("retries") {
        None => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(r) if r <= u32::MAX as u64 => Some(r as u32),
            _ => {
                return Err(err(
                    Some("retries"),
                    format!("expected a whole number from 0 to {}, found {n}", u32::MAX),
                ))
            }
        },
        Some(v) => {
            return Err(err(
                Some("retries"),
                format!("expected a whole number, found {}", type_name(v)),
            ))
        }
    };
    let ttl = seconds("ttl")?;
    let expires_at = seconds("expiresAt")?;
    let expiry = match (ttl, expires_at) {
        (Some(_), Some(_)) => {
            return Err(err(
                Some("expiresAt"),
                "give either ttl or expiresAt, not both".into(),
            ))
        }
        (Some(t), None) => Some(Expiry::Ttl(t)),
        (None, Some(at)) => Some(Expiry::At(UNIX_EPOCH + at)),
        (None, None) => None,
    };
    let template = Message {
        id,
        to_node: String::new(),
        kind,
        method,
        data,
        ack_timeout: seconds("ackTimeout")?,
        retries,
        retry_wait: seconds("retryWait")?,
        expiry,
        method_timeout: seconds("methodTimeout")?,
    };
    targets
        .into_iter()
        .map(|to| {
            let m = Message {
                to_node: to,
                ..template.clone()
            };
            m.validate(index)?;
            Ok(m)
        })
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_format() {
        let b = parse_json(
            r#"[{"toNode":"ship1","data":["bash","-c","ls -l ../"],"commandOrEvent":"command","method":"shellCommand"}]"#,
        )
        .unwrap();
        assert!(b.errors.is_empty());
        let m = &b.messages[0].1;
        assert_eq!(m.subject(), "ship1.command.shellCommand");
        assert_eq!(m.data, ["bash", "-c", "ls -l ../"]);
    }

    #[test]
    fn to_nodes_fans_out_and_bad_neighbours_are_reported_by_index() {
        let b = parse_json(
            r#"[{"toNodes":["a","b"],"commandOrEvent":"event","method":"m"},
                {"toNode":"x.y","commandOrEvent":"event","method":"m"},
                {"toNode":"c","commandOrEvent":"event","method":"m","ackTimeout":"5"},
                {"toNode":"d","commandOrEvent":"event","method":"m","bogus":1}]"#,
        )
        .unwrap();
        assert_eq!(b.messages.len(), 2);
        let errs: Vec<String> = b.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errs[0].contains("index 1") && errs[0].contains("toNode"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("index 2") && errs[1].contains("ackTimeout"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("index 3") && errs[2].contains("bogus"),
            "{errs:?}"
        );
    }

    #[test]
    fn rejects_from_node_negative_and_deep() {
        let e = parse_one(
            &serde_json::json!({"toNode":"a","fromNode":"b","commandOrEvent":"event","method":"m"}),
            Some(0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("fromNode"));
        let e = parse_one(
            &serde_json::json!({"toNode":"a","commandOrEvent":"event","method":"m","ttl":-1}),
            Some(0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ttl"));
        let deep = "[".repeat(10_000);
        assert!(parse_json(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested"));
    }

    #[test]
    fn json_round_trip() {
        let m = Message::command("s", "echo", ["x"])
            .with_ttl(Duration::from_millis(1500))
            .with_retries(3);
        let back = parse_one(&m.to_json(), None).unwrap();
        assert_eq!(back, vec![m]);
    }
}
