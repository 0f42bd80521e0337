//! The exception hierarchy: one root, `StewardError`, and one subclass per `steward::ErrorKind`.
//!
//! The classes are defined in Python (`python/steward/_errors.py`), so that `TimedOut` can also
//! be a `TimeoutError`, `InvalidMessage` a `ValueError`, and every `InvalidMessage` has
//! `receipts` and `errors`. Here they are imported by name; which one is raised depends only on
//! the core's error kind — and, for `NotAllowed`, on the variant `steward::Error::NotAllowed` (the
//! receiver's refusal code), never on message text.

use pyo3::import_exception;
use pyo3::prelude::*;

import_exception!(steward._errors, StewardError);
import_exception!(steward._errors, InvalidName);
import_exception!(steward._errors, InvalidMessage);
import_exception!(steward._errors, ConfigError);
import_exception!(steward._errors, StorageError);
import_exception!(steward._errors, DataDirInUse);
import_exception!(steward._errors, BrokerUnavailable);
import_exception!(steward._errors, BrokerAuthError);
import_exception!(steward._errors, Stopped);
import_exception!(steward._errors, NotFound);
import_exception!(steward._errors, TimedOut);
import_exception!(steward._errors, Expired);
import_exception!(steward._errors, Rejected);
import_exception!(steward._errors, NotAllowed);
import_exception!(steward._errors, DeliveryFailed);
import_exception!(steward._errors, Cancelled);
import_exception!(steward._errors, NoResult);
import_exception!(steward._errors, IoError);

/// Turns a core error into the matching Python exception. Needs no attached thread: the
/// exception object is created lazily when Python raises it.
pub(crate) fn to_py(err: steward::Error) -> PyErr {
    use steward::ErrorKind as K;
    let msg = err.to_string();
    if let steward::Error::NotAllowed { .. } = err {
        return NotAllowed::new_err(msg);
    }
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

/// The error for a `send()` argument the core refused, naming the argument: `InvalidName` when
/// the core's error kind is `InvalidName` (a bad `to`, `method` or `id`), otherwise as [`to_py`].
pub(crate) fn argument_error(field: &str, err: steward::Error) -> PyErr {
    match err.kind() {
        steward::ErrorKind::InvalidName => {
            InvalidName::new_err(format!("invalid message, field `{field}`: {err}"))
        }
        _ => to_py(err),
    }
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

/// Adds the exception classes to the module (their `kind` codes and `__module__` are set in
/// `_errors.py`). Resolving each class here makes a missing one fail at import, not at a raise.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = [
        py.get_type::<StewardError>(),
        py.get_type::<InvalidName>(),
        py.get_type::<InvalidMessage>(),
        py.get_type::<ConfigError>(),
        py.get_type::<StorageError>(),
        py.get_type::<DataDirInUse>(),
        py.get_type::<BrokerUnavailable>(),
        py.get_type::<BrokerAuthError>(),
        py.get_type::<Stopped>(),
        py.get_type::<NotFound>(),
        py.get_type::<TimedOut>(),
        py.get_type::<Expired>(),
        py.get_type::<Rejected>(),
        py.get_type::<NotAllowed>(),
        py.get_type::<DeliveryFailed>(),
        py.get_type::<Cancelled>(),
        py.get_type::<NoResult>(),
        py.get_type::<IoError>(),
    ];
    for class in classes {
        m.add(class.name()?, class)?;
    }
    Ok(())
}
