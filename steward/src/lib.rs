//! steward: asynchronous command and control of edge nodes over NATS.
//!
//! A [`Node`] sends [`Message`]s to other nodes on `<toNode>.<command|event>.<method>`, keeps
//! each one durably in its outbox until the receiver ACKs it, its retries run out or it
//! expires, and records the result that comes back. Receivers run each message at most once
//! (a resend gets the stored answer), in the order the sender sent them per subject.
//!
//! See `ARCHITECTURE.md` in the repository for the map of modules and the life of a message.

mod access;
mod audit;
mod broker;
mod config;
mod confirm;
mod connect;
mod control;
mod enrol;
mod envelope;
mod error;
mod executor;
mod handler;
mod ingest;
mod keys;
mod message;
mod methods;
mod metrics;
mod names;
mod node;
mod notify;
mod private_files;
mod publisher;
mod receiver;
mod registry;
mod result;
mod retention;
mod security;
mod signing;
mod store;
mod supervisor;
mod trust;

pub use access::{AccessList, Argv, Pattern, Rule, RuleSpec};
pub use audit::AUDIT_LOG;
pub use broker::{EmbeddedBroker, INSTALL_HINT};
pub use config::NodeConfig;
pub use control::{cancel_offline, inspect, Inspection, CONTROL_SOCKET};
pub use enrol::{JoinToken, JoinTokenInfo, CENTRAL_KEY_FILE, DEFAULT_TOKEN_VALIDITY};
pub use error::{Error, ErrorKind, Result};
pub use handler::{Handler, HandlerFuture, Method, Request};
pub use ingest::{INMSG, MAX_INMSG_BYTES, REJECTED_DIR};
pub use keys::{public_key_path, PublicKey, KEY_FILE, PUBLIC_KEY_FILE};
pub use message::{
    parse_json, parse_value, Expiry, Kind, Message, ParsedBatch, MAX_ACK_TIMEOUT,
    MAX_METHOD_TIMEOUT, MAX_RETRY_WAIT, MAX_TTL,
};
pub use methods::error_log::ERRORS_LOG;
pub use metrics::{METRICS_PATH, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use names::{validate as validate_name, MAX_NAME_LEN};
pub use node::{Node, NodeBuilder, Receipt, SendReport};
pub use notify::{ErrorReport, ErrorReportKind, ListenerId, Notification};
pub use registry::{KeyState, REGISTRY_FILE};
pub use result::{DestinationStatus, MessageState, MessageStatus, MethodResult, ResultStatus};
pub use security::{BrokerAuth, BrokerTls, Secret};
pub use store::StoreStats;
pub use trust::{KeyInfo, SignaturePolicy, TrustedKey, TRUST_FILE};

/// Entry points for the fuzz targets in `steward/fuzz` (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the `inmsg.txt` reader over raw bytes: (valid messages, refused parts and elements).
    pub fn inmsg(bytes: &[u8]) -> (usize, usize) {
        crate::ingest::parse_inmsg_bytes(bytes)
    }
}
