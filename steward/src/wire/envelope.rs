//! The wire format between nodes: the envelope a message travels in, and the receiver's reply.

use serde::{Deserialize, Serialize};

use crate::wire::frame::Tag;
use crate::wire::message::Kind;
use crate::wire::result::{MethodResult, Refusal};

/// Reserved method carrying a command's result back to its sender.
pub(crate) const RESULT_METHOD: &str = "_result";
/// Header carrying the sender's lowest unfinished sequence number on the stream.
pub(crate) const FLOOR_HEADER: &str = "Steward-Floor";

/// What travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireKind {
    Command,
    Event,
    /// A result returning to the sender of `result_of`.
    Result,
}

impl WireKind {
    pub(crate) fn subject_token(self) -> &'static str {
        match self {
            WireKind::Command => "command",
            WireKind::Event | WireKind::Result => "event",
        }
    }
}

impl From<Kind> for WireKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Command => WireKind::Command,
            Kind::Event => WireKind::Event,
        }
    }
}

/// A signature and the public key that made it, as carried in an envelope or an answer (what
/// is signed: `security/signing.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seal {
    /// The signer's public key (base64).
    pub key: String,
    /// The ed25519 signature (base64) over the canonical encoding of the signed fields.
    pub sig: String,
}

/// A message on the wire. Immutable once stored in the outbox; the floor travels in a header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub id: String,
    pub from: String,
    pub to: String,
    pub kind: WireKind,
    pub method: String,
    #[serde(default)]
    pub data: Vec<String>,
    /// Identifies the sender's store instance: sequence numbers restart only with a new epoch.
    #[serde(default)]
    pub epoch: u64,
    /// Position in the sender's stream for this subject; 0 means unordered.
    #[serde(default)]
    pub seq: u64,
    /// False for fire-and-forget messages.
    #[serde(default)]
    pub ack: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub method_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MethodResult>,
    /// For a result: how the message ended if it did not run (`expired`); absent means it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ReplyStatus>,
    /// The sender's signature over every field above (see `signing`); absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Seal>,
    /// In JSON: the binary wire version the sender also reads (absent from nodes that read only
    /// JSON); how a node learns what a peer speaks (see `delivery/peers.rs`). Not signed: a
    /// forged value costs bytes, never trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<u8>,
    /// Set by the receiver once the frame's session tag held: the sender's public key.
    #[serde(skip)]
    pub authentic: Option<[u8; 32]>,
}

impl Envelope {
    pub(crate) fn subject(&self) -> String {
        format!("{}.{}.{}", self.to, self.kind.subject_token(), self.method)
    }
}

/// The receiver's answer to one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReplyStatus {
    /// Durably recorded; the result follows as a message of its own.
    Received,
    /// Already finished; the result (if kept) is attached.
    Done,
    /// Refused; never run.
    Rejected,
    /// Past its expiry; never run.
    Expired,
    /// An earlier message of the stream is missing; `expected` says which.
    Gap,
    /// Older than anything still pending and no longer remembered: processed or skipped long ago.
    Stale,
    /// The receiver could not record it now (store failure); try again later.
    Retry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub id: String,
    pub status: ReplyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MethodResult>,
    /// For `rejected`: why, as a code (absent when the receiver gives only a reason). Kept as
    /// sent, so the signature over it holds even for a code this version does not know (see
    /// [`Reply::refusal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The answering node's signature, when the sender asked for one (see `signing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Seal>,
    /// As [`Envelope::wire`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<u8>,
    /// A binary reply's session tag (see `security/session.rs`).
    #[serde(skip)]
    pub tag: Option<Tag>,
    /// A binary reply saying the session tag could not be checked: send signed JSON instead.
    #[serde(skip)]
    pub send_signed: bool,
}

impl Reply {
    /// The refusal code, if the receiver gave one this version knows.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .as_deref()
            .and_then(|c| serde_json::from_value(serde_json::Value::from(c)).ok())
    }

    /// Sets the refusal code.
    pub(crate) fn set_refusal(&mut self, refusal: Option<Refusal>) {
        self.refusal = refusal.map(|r| r.as_str().to_owned());
    }

    pub(crate) fn new(id: &str, status: ReplyStatus) -> Self {
        Reply {
            id: id.to_owned(),
            status,
            expected: None,
            reason: None,
            result: None,
            refusal: None,
            sig: None,
            wire: None,
            tag: None,
            send_signed: false,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_refusal_code_reads_as_none_and_the_answer_still_counts() {
        let r: Reply = serde_json::from_str(
            r#"{"id":"m1","status":"rejected","reason":"r","refusal":"someNewCode"}"#,
        )
        .unwrap();
        assert_eq!((r.status, r.refusal()), (ReplyStatus::Rejected, None));
        assert_eq!(r.refusal.as_deref(), Some("someNewCode"));
        let r: Reply =
            serde_json::from_str(r#"{"id":"m1","status":"rejected","refusal":"notAllowed"}"#)
                .unwrap();
        assert_eq!(r.refusal(), Some(Refusal::NotAllowed));
        let r: Reply = serde_json::from_str(r#"{"id":"m1","status":"done"}"#).unwrap();
        assert_eq!(r.refusal(), None);
        for code in [Refusal::NotAllowed, Refusal::NotServed, Refusal::Untrusted] {
            let mut r = Reply::new("m1", ReplyStatus::Rejected);
            r.set_refusal(Some(code));
            let back: Reply = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
            assert_eq!(back.refusal(), Some(code));
        }
    }
}
