//! What a method produced, and the state of a message as the sender sees it.

use serde::{Deserialize, Serialize};

/// How a method run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The method finished successfully (for a command: exit status 0).
    Ok,
    /// The method finished and reported failure (non-zero exit, error, killed at timeout).
    Failed,
    /// The receiver stopped after the message was started (running, or queued behind messages
    /// started with it) and before it finished; it was not run again, so its outcome is unknown.
    Unknown,
}

/// The outcome of one method run at the receiver, carried back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodResult {
    /// How it ended.
    pub status: ResultStatus,
    /// The process exit code, for commands that ran a process and exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Captured standard output (lossy UTF-8), or the method's reply text.
    #[serde(default)]
    pub stdout: String,
    /// Captured standard error (lossy UTF-8).
    #[serde(default)]
    pub stderr: String,
    /// True when output was cut at the capture limit.
    #[serde(default)]
    pub truncated: bool,
    /// Run time in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The node that ran it.
    #[serde(default)]
    pub node: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MethodResult {
    /// A successful result with `stdout` as its text.
    pub fn ok(stdout: impl Into<String>) -> Self {
        MethodResult {
            status: ResultStatus::Ok,
            exit_code: None,
            stdout: stdout.into(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 0,
            node: String::new(),
            error: None,
        }
    }

    /// A failed result with a reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        MethodResult {
            status: ResultStatus::Failed,
            error: Some(reason.into()),
            ..MethodResult::ok("")
        }
    }

    /// The result reported when the receiver died while the method ran.
    pub fn unknown(reason: impl Into<String>) -> Self {
        MethodResult {
            status: ResultStatus::Unknown,
            error: Some(reason.into()),
            ..MethodResult::ok("")
        }
    }
}

/// Where a message stands, as its sender knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Durably accepted, not yet sent.
    Queued,
    /// Sent at least once; no ACK yet.
    Sent,
    /// The receiver confirmed it and is (or will be) running it.
    Received,
    /// The result is in (see [`MessageStatus::result`]).
    Completed,
    /// Retries ran out without an ACK.
    Failed,
    /// Its TTL ran out before delivery or execution.
    Expired,
    /// The receiver refused it.
    Rejected,
    /// Cancelled by the operator before delivery.
    Cancelled,
}

impl MessageState {
    /// True for states that never change again (except a late result after `Failed`).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MessageState::Queued | MessageState::Sent | MessageState::Received
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Sent => "sent",
            MessageState::Received => "received",
            MessageState::Completed => "completed",
            MessageState::Failed => "failed",
            MessageState::Expired => "expired",
            MessageState::Rejected => "rejected",
            MessageState::Cancelled => "cancelled",
        }
    }
}

/// Why a receiver refused a message, when it says (see [`MessageStatus::refusal`]); the
/// receiver's own words are in [`MessageStatus::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Refusal {
    /// The receiver's access list does not let the sender call this method (with these
    /// arguments).
    NotAllowed,
    /// The receiver does not serve the method, or serves it as the other kind.
    NotServed,
    /// The signature did not hold, or its key is not trusted for the sender.
    Untrusted,
}

impl Refusal {
    /// camelCase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "notAllowed",
            Refusal::NotServed => "notServed",
            Refusal::Untrusted => "untrusted",
        }
    }
}

/// The full state of one message at its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatus {
    /// Message id.
    pub id: String,
    /// The message as sent, in the original JSON format (id, defaults and expiry filled in).
    pub message: serde_json::Value,
    /// Destination node.
    pub to_node: String,
    /// Subject it travels on.
    pub subject: String,
    /// Current state.
    pub state: MessageState,
    /// Send attempts so far.
    pub attempts: u32,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MethodResult>,
    /// Why it failed, expired or was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a rejected message: why, as a code, when the receiver said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// When it was accepted (ms since the Unix epoch).
    pub created_ms: u64,
    /// When its state last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// What a sender knows about one destination node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The node.
    pub node: String,
    /// Messages accepted and not yet final.
    pub pending: u64,
    /// Messages completed (results in).
    pub completed: u64,
    /// Messages failed, expired, rejected or cancelled.
    pub failed: u64,
    /// Last ACK or result from it (ms since the Unix epoch).
    pub last_ack_ms: Option<u64>,
    /// Last message of any kind (including `hello`) from it.
    pub last_seen_ms: Option<u64>,
}
