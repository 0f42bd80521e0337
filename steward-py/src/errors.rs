//! The exception hierarchy: one root, `StewardError`, and one subclass per `steward::ErrorKind`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    steward,
    StewardError,
    PyException,
    "Root of every steward error. The `kind` attribute holds the stable error code (e.g. \"rejected\")."
);
create_exception!(
    steward,
    InvalidName,
    StewardError,
    "A node, method or message id breaks the naming rules (1-64 characters of A-Z a-z 0-9 _ -)."
);
create_exception!(
    steward,
    InvalidMessage,
    StewardError,
    "A message (JSON or send() arguments) is malformed or has a bad field; the text names the field."
);
create_exception!(
    steward,
    ConfigError,
    StewardError,
    "The node configuration is unusable (bad option, missing nats-server, ...)."
);
create_exception!(
    steward,
    StorageError,
    StewardError,
    "The message store in the data directory failed; check disk space and permissions."
);
create_exception!(
    steward,
    DataDirInUse,
    StewardError,
    "Another steward node holds the data directory; stop it or choose another data_dir."
);
create_exception!(
    steward,
    BrokerUnavailable,
    StewardError,
    "The NATS broker could not be reached or refused the node."
);
create_exception!(
    steward,
    BrokerAuthError,
    BrokerUnavailable,
    "The NATS broker answered but refused the node: credentials not accepted, an untrusted certificate, or TLS refused. The message says what to fix."
);
create_exception!(
    steward,
    Stopped,
    StewardError,
    "The node is stopped (or not started); create and start a new Node."
);
create_exception!(
    steward,
    NotFound,
    StewardError,
    "No message with that id is known to this node."
);
create_exception!(
    steward,
    TimedOut,
    StewardError,
    "Waiting took longer than allowed; the message may still complete later."
);
create_exception!(
    steward,
    Expired,
    StewardError,
    "The message's time to live ran out before it was delivered or run."
);
create_exception!(
    steward,
    Rejected,
    StewardError,
    "The receiving node refused the message (unknown method, wrong kind, not allowed, ...)."
);
create_exception!(
    steward,
    NotAllowed,
    Rejected,
    "The receiving node refused the message because its access list does not allow the sender to call that method."
);
create_exception!(
    steward,
    DeliveryFailed,
    StewardError,
    "Delivery was given up after the configured retries without an ACK."
);
create_exception!(
    steward,
    Cancelled,
    StewardError,
    "The message was cancelled before delivery."
);
create_exception!(
    steward,
    NoResult,
    StewardError,
    "The message was sent without ACK (ack_timeout=0), so no result will come."
);
create_exception!(
    steward,
    IoError,
    StewardError,
    "A file could not be read or written."
);

/// The receiver's wording for an access-list refusal (see the core's receiver).
const ACCESS_LIST_REFUSAL: &str = "not in its access list";

/// Turns a core error into the matching Python exception. Needs no attached thread: the
/// exception object is created lazily when Python raises it.
pub(crate) fn to_py(err: steward::Error) -> PyErr {
    use steward::ErrorKind as K;
    let msg = err.to_string();
    match err.kind() {
        K::InvalidName => InvalidName::new_err(msg),
        K::InvalidMessage => InvalidMessage::new_err(msg),
        K::Config => ConfigError::new_err(msg),
        K::Storage => StorageError::new_err(msg),
        K::DataDirInUse => DataDirInUse::new_err(msg),
        K::BrokerUnavailable => BrokerUnavailable::new_err(msg),
        K::BrokerAuth => BrokerAuthError::new_err(msg),
        K::Stopped => Stopped::new_err(msg),
        K::NotFound => NotFound::new_err(msg),
        K::TimedOut => TimedOut::new_err(msg),
        K::Expired => Expired::new_err(msg),
        K::Rejected if msg.contains(ACCESS_LIST_REFUSAL) => NotAllowed::new_err(msg),
        K::Rejected => Rejected::new_err(msg),
        K::DeliveryFailed => DeliveryFailed::new_err(msg),
        K::Cancelled => Cancelled::new_err(msg),
        K::NoResult => NoResult::new_err(msg),
        K::Io => IoError::new_err(msg),
        _ => StewardError::new_err(msg),
    }
}

/// Shorthand: map a core result into a Python result.
pub(crate) fn py_result<T>(r: steward::Result<T>) -> PyResult<T> {
    r.map_err(to_py)
}

/// An `InvalidMessage` for a bad `send()` argument, naming the field.
pub(crate) fn invalid_message(field: &str, reason: impl std::fmt::Display) -> PyErr {
    InvalidMessage::new_err(format!("invalid message, field `{field}`: {reason}"))
}

/// A `ConfigError` for a bad `Node()` option, naming the option.
pub(crate) fn config_error(option: &str, reason: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(format!(
        "invalid configuration, option `{option}`: {reason}"
    ))
}

/// Registers the exception classes in the module, each with its stable `kind` code as a
/// class attribute (`err.kind` works on every instance).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = [
        ("StewardError", py.get_type::<StewardError>(), "error"),
        ("InvalidName", py.get_type::<InvalidName>(), "invalid_name"),
        (
            "InvalidMessage",
            py.get_type::<InvalidMessage>(),
            "invalid_message",
        ),
        ("ConfigError", py.get_type::<ConfigError>(), "config"),
        ("StorageError", py.get_type::<StorageError>(), "storage"),
        (
            "DataDirInUse",
            py.get_type::<DataDirInUse>(),
            "data_dir_in_use",
        ),
        (
            "BrokerUnavailable",
            py.get_type::<BrokerUnavailable>(),
            "broker_unavailable",
        ),
        (
            "BrokerAuthError",
            py.get_type::<BrokerAuthError>(),
            "broker_auth",
        ),
        ("Stopped", py.get_type::<Stopped>(), "stopped"),
        ("NotFound", py.get_type::<NotFound>(), "not_found"),
        ("TimedOut", py.get_type::<TimedOut>(), "timed_out"),
        ("Expired", py.get_type::<Expired>(), "expired"),
        ("Rejected", py.get_type::<Rejected>(), "rejected"),
        ("NotAllowed", py.get_type::<NotAllowed>(), "rejected"),
        (
            "DeliveryFailed",
            py.get_type::<DeliveryFailed>(),
            "delivery_failed",
        ),
        ("Cancelled", py.get_type::<Cancelled>(), "cancelled"),
        ("NoResult", py.get_type::<NoResult>(), "no_result"),
        ("IoError", py.get_type::<IoError>(), "io"),
    ];
    for (name, class, kind) in classes {
        class.setattr("kind", kind)?;
        class.setattr("__module__", "steward")?;
        m.add(name, class)?;
    }
    Ok(())
}
