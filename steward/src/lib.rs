//! steward: asynchronous command and control of edge nodes over NATS.
//!
//! A [`Node`] sends [`Message`]s to other nodes on `<toNode>.<command|event>.<method>`, keeps
//! each one durably in its outbox until the receiver ACKs it, its retries run out or it
//! expires, and records the result that comes back. Receivers run each message at most once
//! (a resend gets the stored answer), in the order the sender sent them per subject.
//!
//! See `ARCHITECTURE.md` in the repository for the map of modules and the life of a message.

// Layers, each using only those above it (`tests/layers.rs` checks the imports):
mod central;
mod config;
mod delivery;
mod error;
mod methods;
mod node;
mod ops;
mod private_files;
mod runtime;
mod security;
mod store;
mod wire;

pub use central::enrol::CENTRAL_KEY_FILE;
pub use central::registry::{KeyInfo, KeyState, REGISTRY_FILE};
pub use config::NodeConfig;
pub use delivery::report::ERRORS_LOG;
pub use error::{Error, ErrorKind, Result};
pub use node::control::{cancel_offline, inspect, Inspection, CONTROL_SOCKET};
pub use node::ingest::{INMSG, MAX_INMSG_BYTES, REJECTED_DIR};
pub use node::{Node, NodeBuilder, Receipt, SendReport};
pub use ops::audit::AUDIT_LOG;
pub use runtime::broker::{EmbeddedBroker, INSTALL_HINT};
pub use runtime::metrics::{METRICS_PATH, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use runtime::notify::{ErrorReport, ErrorReportKind, ListenerId, Notification};
pub use security::access::{AccessList, Argv, Pattern, Rule, RuleSpec};
pub use security::broker_auth::{BrokerAuth, BrokerTls, Secret};
pub use security::join::{JoinToken, JoinTokenInfo, DEFAULT_TOKEN_VALIDITY};
pub use security::keys::{public_key_path, PublicKey, KEY_FILE, PUBLIC_KEY_FILE};
pub use security::trust::{SignaturePolicy, TrustedKey, TRUST_FILE};
pub use store::StoreStats;
pub use wire::frame::{fuzz_frame, WireFormat};
pub use wire::handler::{Handler, HandlerFuture, Method, Request};
pub use wire::message::{
    parse_json, parse_value, Expiry, Kind, Message, ParsedBatch, MAX_ACK_TIMEOUT,
    MAX_METHOD_TIMEOUT, MAX_RETRY_WAIT, MAX_TTL,
};
pub use wire::names::{validate as validate_name, MAX_NAME_LEN};
pub use wire::result::{
    DestinationStatus, MessageState, MessageStatus, MethodResult, Refusal, ResultStatus,
};

/// Entry points for the fuzz targets in `steward/fuzz` (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the `inmsg.txt` reader over raw bytes: (valid messages, refused parts and elements).
    pub fn inmsg(bytes: &[u8]) -> (usize, usize) {
        crate::node::ingest::parse_inmsg_bytes(bytes)
    }
}
