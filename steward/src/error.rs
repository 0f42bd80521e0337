//! Typed errors. Every public operation fails with [`Error`]; match on [`Error::kind`].

use std::path::PathBuf;

/// The boxed underlying error that the variants wrapping another error keep as their source.
type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, as a stable, copyable code (the C and Python layers map these one-to-one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A node or method name breaks the naming rules.
    InvalidName,
    /// A message (JSON or built in code) is malformed or has a bad field.
    InvalidMessage,
    /// The node configuration is unusable.
    Config,
    /// The on-disk store failed or is damaged.
    Storage,
    /// Another process holds the data directory.
    DataDirInUse,
    /// The broker could not be used.
    BrokerUnavailable,
    /// The broker was reached but refused this node: credentials not accepted, an untrusted
    /// certificate, a refused TLS handshake, or TLS required by one side only.
    BrokerAuth,
    /// The node has been stopped.
    Stopped,
    /// No message with that id is known.
    NotFound,
    /// Waiting took longer than allowed.
    TimedOut,
    /// The message expired before it could be delivered or run.
    Expired,
    /// The receiver refused the message (not allowed, unknown method, ...).
    Rejected,
    /// Delivery was given up after the configured retries.
    DeliveryFailed,
    /// The message was cancelled before delivery.
    Cancelled,
    /// The message was sent without ACK, so no result will come.
    NoResult,
    /// A file could not be read or written.
    Io,
}

/// The error type of every steward operation.
///
/// Variants that wrap another error ([`Error::Config`], [`Error::Storage`], [`Error::Damaged`],
/// [`Error::BrokerUnavailable`], [`Error::Io`]) return it from
/// [`std::error::Error::source`], so a caller can walk down to the OS error under a failed
/// store write (downcast to [`std::io::Error`]). The store's own error in that chain is opaque
/// (its type is not part of the API); it shows redb's text. Each message already includes the
/// underlying error's text, so a report that prints every error of the chain repeats it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node or method name is not 1-64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid {what} name {name:?}: {reason}; use 1-64 characters of A-Z a-z 0-9 _ -")]
    InvalidName {
        /// Which name ("node", "method", "id").
        what: &'static str,
        /// The offending name (possibly shortened).
        name: String,
        /// Which character or rule broke.
        reason: String,
    },
    /// A message failed validation.
    #[error("invalid message{}{}: {reason}", index.map(|i| format!(" at index {i}")).unwrap_or_default(), field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    InvalidMessage {
        /// Position of the message in its JSON array, if it came from one.
        index: Option<usize>,
        /// The field at fault, if one is.
        field: Option<String>,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The configuration cannot be used.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
        /// The error that made the setting unusable (a file that cannot be read or parsed, an
        /// address that cannot be bound, ...), if one did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The store in the data directory failed.
    #[error("the message store failed: {reason}; check free disk space and permissions of the data directory")]
    Storage {
        /// What failed (it includes the underlying error's text).
        reason: String,
        /// The underlying error (the store's, with the OS error under it where there is
        /// one), if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A record in the store failed its checksum or could not be decoded; it is not used.
    #[error("{reason}")]
    Damaged {
        /// What is damaged and what to do about it.
        reason: String,
        /// The error that found the damage (a decoding error, the store's own report), if
        /// one did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The store file is locked by another process.
    #[error("the data directory {0} is in use by another steward node; stop it or choose another --data-dir")]
    DataDirInUse(PathBuf),
    /// The broker could not be used.
    #[error("NATS broker unavailable: {reason}")]
    BrokerUnavailable {
        /// The broker URL(s) or the operation, and why it failed.
        reason: String,
        /// The NATS client's error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The broker answered but refused this node (see [`ErrorKind::BrokerAuth`]).
    #[error("the NATS broker {broker} refused this node: {reason}")]
    BrokerAuth {
        /// The broker URL(s).
        broker: String,
        /// What was refused and what to do about it.
        reason: String,
    },
    /// The node has stopped; start a new one.
    #[error("the node is stopped")]
    Stopped,
    /// Unknown message id.
    #[error("no message with id {0} is known to this node")]
    NotFound(String),
    /// A wait ran out of time.
    #[error("timed out waiting for {0}")]
    TimedOut(String),
    /// The message's TTL ran out.
    #[error("message {id} expired before it was {stage}")]
    Expired {
        /// Message id.
        id: String,
        /// "delivered" or "run".
        stage: String,
    },
    /// The receiver refused the message.
    #[error("message {id} was rejected by {node}: {reason}")]
    Rejected {
        /// Message id.
        id: String,
        /// The refusing node.
        node: String,
        /// The receiver's reason.
        reason: String,
    },
    /// The receiver's access list does not let this node call the method (a kind of
    /// [`ErrorKind::Rejected`]).
    #[error("message {id} was rejected by {node}: {reason}")]
    NotAllowed {
        /// Message id.
        id: String,
        /// The refusing node.
        node: String,
        /// The receiver's reason.
        reason: String,
    },
    /// Retries ran out.
    #[error("message {id} to {node} failed: {reason}")]
    DeliveryFailed {
        /// Message id.
        id: String,
        /// The destination node.
        node: String,
        /// Why delivery was given up.
        reason: String,
    },
    /// Cancelled by the operator.
    #[error("message {0} was cancelled before delivery")]
    Cancelled(String),
    /// A key or trust operation could not be done (not central, unknown node, ...).
    #[error("{0}")]
    Trust(String),
    /// Fire-and-forget message: there is no result to wait for.
    #[error("message {0} was sent without ACK (ackTimeout 0); no result will come")]
    NoResult(String),
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The stable code for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::InvalidMessage { .. } => ErrorKind::InvalidMessage,
            Error::Config { .. } | Error::Trust(_) => ErrorKind::Config,
            Error::Storage { .. } | Error::Damaged { .. } => ErrorKind::Storage,
            Error::DataDirInUse(_) => ErrorKind::DataDirInUse,
            Error::BrokerUnavailable { .. } => ErrorKind::BrokerUnavailable,
            Error::BrokerAuth { .. } => ErrorKind::BrokerAuth,
            Error::Stopped => ErrorKind::Stopped,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::TimedOut(_) => ErrorKind::TimedOut,
            Error::Expired { .. } => ErrorKind::Expired,
            Error::Rejected { .. } | Error::NotAllowed { .. } => ErrorKind::Rejected,
            Error::DeliveryFailed { .. } => ErrorKind::DeliveryFailed,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::NoResult(_) => ErrorKind::NoResult,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn invalid(
        index: Option<usize>,
        field: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidMessage {
            index,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An unusable configuration, with nothing underneath.
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::Config {
            reason: reason.into(),
            source: None,
        }
    }

    /// An unusable configuration because of `source` (whose text `reason` should include).
    pub(crate) fn config_from(reason: impl Into<String>, source: impl Into<BoxedSource>) -> Self {
        Error::Config {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// A store failure with nothing underneath.
    pub(crate) fn storage(reason: impl Into<String>) -> Self {
        Error::Storage {
            reason: reason.into(),
            source: None,
        }
    }

    /// A store failure caused by `source` (whose text `reason` should include).
    pub(crate) fn storage_from(reason: impl Into<String>, source: impl Into<BoxedSource>) -> Self {
        Error::Storage {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// A damaged record or store file, found without an underlying error (a checksum).
    pub(crate) fn damaged(reason: impl Into<String>) -> Self {
        Error::Damaged {
            reason: reason.into(),
            source: None,
        }
    }

    /// A damaged record or store file, reported by `source` (whose text `reason` should
    /// include).
    pub(crate) fn damaged_from(reason: impl Into<String>, source: impl Into<BoxedSource>) -> Self {
        Error::Damaged {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// An unusable broker because of `source` (whose text `reason` should include).
    pub(crate) fn broker_unavailable_from(
        reason: impl Into<String>,
        source: impl Into<BoxedSource>,
    ) -> Self {
        Error::BrokerUnavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

/// Shorthand for results of steward operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
