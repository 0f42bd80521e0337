//! How results and status are shown, and which exit status a result maps to.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use steward::{DestinationStatus, MessageState, MessageStatus, ResultStatus};

/// Exit status: the message was refused.
pub const EXIT_INVALID: i32 = 64;
/// Exit status: delivery failed after the retries.
pub const EXIT_DELIVERY_FAILED: i32 = 65;
/// Exit status: the message expired.
pub const EXIT_EXPIRED: i32 = 66;
/// Exit status: the receiver rejected the message.
pub const EXIT_REJECTED: i32 = 67;
/// Exit status: the message was cancelled.
pub const EXIT_CANCELLED: i32 = 68;
/// Exit status: no node could be used.
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit status: the method failed without an exit status.
pub const EXIT_METHOD_FAILED: i32 = 70;
/// Exit status: the broker refused the node (credentials, certificate, TLS); EX_NOPERM.
pub const EXIT_BROKER_REFUSED: i32 = 77;
/// Exit status: `--timeout` ran out.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status: interrupted by SIGINT/SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Lines of each output stream a running node prints per result (all of it is in audit.log).
const MAX_LOG_LINES: usize = 200;

/// The method a message called.
pub fn method_of(st: &MessageStatus) -> String {
    st.message["method"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| st.subject.rsplit('.').next().unwrap_or("").to_owned())
}

/// The exit status `steward send` gives for a final message.
pub fn exit_code(st: &MessageStatus) -> i32 {
    match st.state {
        MessageState::Completed => match &st.result {
            Some(r) => match (r.exit_code, r.status) {
                (Some(c), _) => c.clamp(0, 255),
                (None, ResultStatus::Ok) => 0,
                (None, _) => EXIT_METHOD_FAILED,
            },
            None => 0,
        },
        MessageState::Failed => EXIT_DELIVERY_FAILED,
        MessageState::Expired => EXIT_EXPIRED,
        MessageState::Rejected => EXIT_REJECTED,
        MessageState::Cancelled => EXIT_CANCELLED,
        MessageState::Queued | MessageState::Sent | MessageState::Received => EXIT_TIMEOUT,
    }
}

/// One line describing how a final message ended.
pub fn summary(st: &MessageStatus) -> String {
    let method = method_of(st);
    let mut s = format!(
        "{} {} on {}: {}",
        st.id,
        method,
        st.to_node,
        st.state.as_str()
    );
    match (&st.state, &st.result) {
        (MessageState::Completed, Some(r)) => {
            let status = match r.status {
                ResultStatus::Ok => "ok",
                ResultStatus::Failed => "failed",
                ResultStatus::Unknown => "outcome unknown",
            };
            let _ = write!(s, ", {status}");
            if let Some(c) = r.exit_code {
                let _ = write!(s, ", exit {c}");
            }
            let _ = write!(s, ", {} ms", r.duration_ms);
            if r.truncated {
                s.push_str(", output truncated at the capture limit");
            }
            if let Some(e) = &r.error {
                let _ = write!(s, ": {e}");
            }
        }
        (MessageState::Completed, None) => s.push_str(" (no result: sent without ACK)"),
        _ => {
            let _ = write!(s, " after {} attempt(s)", st.attempts);
            if let Some(r) = &st.reason {
                let _ = write!(s, ": {r}");
            }
        }
    }
    s
}

/// Prints a result that reached a running node (standard output, one block per message).
pub fn print_finished(st: &MessageStatus) {
    let method = method_of(st);
    let ok_internal = method == "errorLog"
        && st.state == MessageState::Completed
        && st
            .result
            .as_ref()
            .is_none_or(|r| r.status == ResultStatus::Ok);
    if method == "hello" || ok_internal {
        return;
    }
    let mut out = format!("result {}\n", summary(st));
    if let Some(r) = &st.result {
        for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            let lines: Vec<&str> = text.lines().collect();
            for l in lines.iter().take(MAX_LOG_LINES) {
                let _ = writeln!(out, "  {name}| {l}");
            }
            if lines.len() > MAX_LOG_LINES {
                let _ = writeln!(
                    out,
                    "  {name}| ... {} more line(s) in audit.log",
                    lines.len() - MAX_LOG_LINES
                );
            }
        }
    }
    print!("{out}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// "3s ago", "5m ago", "never".
pub fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

/// "in 23h" for a time in the future (ms since the Unix epoch), "never" for none.
pub fn until(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let secs = ms.saturating_sub(now_ms()) / 1000;
    match secs {
        s if s < 120 => format!("in {s}s"),
        s if s < 7200 => format!("in {}m", s / 60),
        s if s < 172_800 => format!("in {}h", s / 3600),
        s => format!("in {}d", s / 86400),
    }
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max.saturating_sub(3)).collect();
        s.push_str("...");
        s
    }
}

/// The status report as tables.
pub fn status_text(report: &Value) -> String {
    let mut out = String::new();
    let dir = report["dataDir"].as_str().unwrap_or("?");
    if report["running"].as_bool() == Some(true) {
        let conn = if report["connected"].as_bool() == Some(true) {
            "connected to the broker"
        } else {
            "NOT connected to the broker"
        };
        let _ = writeln!(
            out,
            "node {} running on {dir} ({conn})",
            report["node"].as_str().unwrap_or("?")
        );
    } else {
        let _ = writeln!(
            out,
            "no node running on {dir}; read from its store (states are as of when it stopped)"
        );
    }
    let dests: Vec<DestinationStatus> =
        serde_json::from_value(report["destinations"].clone()).unwrap_or_default();
    let _ = writeln!(out, "\ndestinations:");
    if dests.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    } else {
        let w = dests.iter().map(|d| d.node.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "  {:w$}  {:>7}  {:>9}  {:>6}  {:>10}  {:>10}",
            "NODE", "PENDING", "COMPLETED", "FAILED", "LAST ACK", "LAST SEEN"
        );
        for d in &dests {
            let _ = writeln!(
                out,
                "  {:w$}  {:>7}  {:>9}  {:>6}  {:>10}  {:>10}",
                d.node,
                d.pending,
                d.completed,
                d.failed,
                ago(d.last_ack_ms),
                ago(d.last_seen_ms)
            );
        }
    }
    let msgs: Vec<MessageStatus> =
        serde_json::from_value(report["messages"].clone()).unwrap_or_default();
    let _ = writeln!(out, "\nrecent messages (newest first):");
    if msgs.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    } else {
        let wid = msgs.iter().map(|m| m.id.len()).max().unwrap_or(2).max(2);
        let wto = msgs
            .iter()
            .map(|m| m.to_node.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let wm = msgs
            .iter()
            .map(|m| method_of(m).len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "  {:wid$}  {:wto$}  {:wm$}  {:9}  {:>8}  {:>8}  OUTCOME",
            "ID", "TO", "METHOD", "STATE", "ATTEMPTS", "AGE"
        );
        for m in &msgs {
            let outcome = match (&m.result, &m.reason) {
                (Some(r), _) => match (r.exit_code, &r.error) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(e)) => short(e, 60),
                    (None, None) => "ok".into(),
                },
                (None, Some(reason)) => short(reason, 60),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:wid$}  {:wto$}  {:wm$}  {:9}  {:>8}  {:>8}  {}",
                m.id,
                m.to_node,
                method_of(m),
                m.state.as_str(),
                m.attempts,
                ago(Some(m.created_ms)).trim_end_matches(" ago"),
                outcome
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward::MethodResult;

    fn status(state: MessageState, result: Option<MethodResult>) -> MessageStatus {
        MessageStatus {
            id: "m1".into(),
            message: serde_json::json!({"method": "shellCommand"}),
            to_node: "ship1".into(),
            subject: "ship1.command.shellCommand".into(),
            state,
            attempts: 1,
            result,
            reason: Some("why".into()),
            refusal: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let mut r = MethodResult::ok("hi");
        r.exit_code = Some(3);
        assert_eq!(exit_code(&status(MessageState::Completed, Some(r))), 3);
        assert_eq!(
            exit_code(&status(
                MessageState::Completed,
                Some(MethodResult::ok("x"))
            )),
            0
        );
        assert_eq!(
            exit_code(&status(
                MessageState::Completed,
                Some(MethodResult::failed("killed"))
            )),
            EXIT_METHOD_FAILED
        );
        assert_eq!(
            exit_code(&status(MessageState::Failed, None)),
            EXIT_DELIVERY_FAILED
        );
        assert_eq!(
            exit_code(&status(MessageState::Expired, None)),
            EXIT_EXPIRED
        );
        assert_eq!(
            exit_code(&status(MessageState::Rejected, None)),
            EXIT_REJECTED
        );
        assert_eq!(
            exit_code(&status(MessageState::Cancelled, None)),
            EXIT_CANCELLED
        );
    }

    #[test]
    fn summary_names_state_exit_and_reason() {
        let mut r = MethodResult::ok("hi");
        r.exit_code = Some(0);
        let s = summary(&status(MessageState::Completed, Some(r)));
        assert!(s.contains("completed, ok, exit 0"), "{s}");
        let s = summary(&status(MessageState::Rejected, None));
        assert!(s.contains("rejected after 1 attempt(s): why"), "{s}");
    }
}
