//! Result codes with their names and descriptions, the error type of the C layer, and the
//! per-thread last error (recorded by `boundary::guard`, read from C through `explain`).

use std::cell::RefCell;
use std::ffi::CStr;

use steward::ErrorKind;

/// The result of every fallible steward function.
///
/// The numbers are stable: a code keeps its number forever and a retired code's number is
/// never reused. `STEWARD_RESULT_OK` is 0; codes 1-99 come from the C layer itself; codes 100
/// and up map one-to-one to the kinds of error of the steward core.
///
/// After a function returns anything but `STEWARD_RESULT_OK`, `steward_last_error_message`
/// describes what went wrong on that thread.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum steward_result {
    /// Success.
    STEWARD_RESULT_OK = 0,
    /// A pointer argument was NULL.
    STEWARD_RESULT_NULL_PARAMETER = 1,
    /// steward panicked (a bug); the operation did not complete.
    STEWARD_RESULT_PANIC = 2,
    /// A string argument was not valid UTF-8.
    STEWARD_RESULT_INVALID_UTF8 = 3,
    /// A number or enum argument was out of range (negative timeout, unknown kind, ...).
    STEWARD_RESULT_INVALID_ARGUMENT = 4,
    /// The caller's buffer was too small; what fit was written (NUL-terminated).
    STEWARD_RESULT_BUFFER_TOO_SMALL = 5,
    /// The function was called from one of the node's own callbacks, where it would deadlock.
    STEWARD_RESULT_IN_CALLBACK = 6,
    /// The completion was already finished, timed out, or abandoned because its node stopped.
    STEWARD_RESULT_COMPLETION_NOT_PENDING = 7,
    /// The core reported a kind of error this version of the C API does not know.
    STEWARD_RESULT_UNKNOWN_ERROR = 8,
    /// A node or method name breaks the naming rules (1-64 of `A-Z a-z 0-9 _ -`).
    STEWARD_RESULT_INVALID_NAME = 100,
    /// A message (JSON or built with setters) is malformed or has a bad field.
    STEWARD_RESULT_INVALID_MESSAGE = 101,
    /// The node configuration is unusable.
    STEWARD_RESULT_CONFIG = 102,
    /// The on-disk store failed or is damaged.
    STEWARD_RESULT_STORAGE = 103,
    /// Another node (in this or another process) holds the data directory.
    STEWARD_RESULT_DATA_DIR_IN_USE = 104,
    /// The broker could not be reached or refused the connection.
    STEWARD_RESULT_BROKER_UNAVAILABLE = 105,
    /// The node has been stopped.
    STEWARD_RESULT_STOPPED = 106,
    /// No message with that id is known to this node.
    STEWARD_RESULT_NOT_FOUND = 107,
    /// Waiting took longer than allowed.
    STEWARD_RESULT_TIMED_OUT = 108,
    /// The message expired before it could be delivered or run.
    STEWARD_RESULT_EXPIRED = 109,
    /// The receiver refused the message (not allowed, method not served, ...).
    STEWARD_RESULT_REJECTED = 110,
    /// Delivery was given up after the configured retries.
    STEWARD_RESULT_DELIVERY_FAILED = 111,
    /// The message was cancelled before delivery.
    STEWARD_RESULT_CANCELLED = 112,
    /// The message was sent without ACK, so no result will come.
    STEWARD_RESULT_NO_RESULT = 113,
    /// A file could not be read or written.
    STEWARD_RESULT_IO = 114,
    /// The broker was reached but refused this node: credentials not accepted, an untrusted
    /// certificate, a refused TLS handshake, or TLS required by one side only.
    STEWARD_RESULT_BROKER_AUTH = 115,
}

use steward_result::*;

/// Every code, for tables and tests.
pub(crate) const ALL_RESULTS: [steward_result; 25] = [
    STEWARD_RESULT_OK,
    STEWARD_RESULT_NULL_PARAMETER,
    STEWARD_RESULT_PANIC,
    STEWARD_RESULT_INVALID_UTF8,
    STEWARD_RESULT_INVALID_ARGUMENT,
    STEWARD_RESULT_BUFFER_TOO_SMALL,
    STEWARD_RESULT_IN_CALLBACK,
    STEWARD_RESULT_COMPLETION_NOT_PENDING,
    STEWARD_RESULT_UNKNOWN_ERROR,
    STEWARD_RESULT_INVALID_NAME,
    STEWARD_RESULT_INVALID_MESSAGE,
    STEWARD_RESULT_CONFIG,
    STEWARD_RESULT_STORAGE,
    STEWARD_RESULT_DATA_DIR_IN_USE,
    STEWARD_RESULT_BROKER_UNAVAILABLE,
    STEWARD_RESULT_STOPPED,
    STEWARD_RESULT_NOT_FOUND,
    STEWARD_RESULT_TIMED_OUT,
    STEWARD_RESULT_EXPIRED,
    STEWARD_RESULT_REJECTED,
    STEWARD_RESULT_DELIVERY_FAILED,
    STEWARD_RESULT_CANCELLED,
    STEWARD_RESULT_NO_RESULT,
    STEWARD_RESULT_IO,
    STEWARD_RESULT_BROKER_AUTH,
];

impl steward_result {
    /// The code for a number, if it is one.
    pub(crate) fn from_u32(n: u32) -> Option<steward_result> {
        ALL_RESULTS.iter().copied().find(|r| *r as u32 == n)
    }

    /// The code's name as it appears in the header (a static string).
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            STEWARD_RESULT_OK => c"STEWARD_RESULT_OK",
            STEWARD_RESULT_NULL_PARAMETER => c"STEWARD_RESULT_NULL_PARAMETER",
            STEWARD_RESULT_PANIC => c"STEWARD_RESULT_PANIC",
            STEWARD_RESULT_INVALID_UTF8 => c"STEWARD_RESULT_INVALID_UTF8",
            STEWARD_RESULT_INVALID_ARGUMENT => c"STEWARD_RESULT_INVALID_ARGUMENT",
            STEWARD_RESULT_BUFFER_TOO_SMALL => c"STEWARD_RESULT_BUFFER_TOO_SMALL",
            STEWARD_RESULT_IN_CALLBACK => c"STEWARD_RESULT_IN_CALLBACK",
            STEWARD_RESULT_COMPLETION_NOT_PENDING => c"STEWARD_RESULT_COMPLETION_NOT_PENDING",
            STEWARD_RESULT_UNKNOWN_ERROR => c"STEWARD_RESULT_UNKNOWN_ERROR",
            STEWARD_RESULT_INVALID_NAME => c"STEWARD_RESULT_INVALID_NAME",
            STEWARD_RESULT_INVALID_MESSAGE => c"STEWARD_RESULT_INVALID_MESSAGE",
            STEWARD_RESULT_CONFIG => c"STEWARD_RESULT_CONFIG",
            STEWARD_RESULT_STORAGE => c"STEWARD_RESULT_STORAGE",
            STEWARD_RESULT_DATA_DIR_IN_USE => c"STEWARD_RESULT_DATA_DIR_IN_USE",
            STEWARD_RESULT_BROKER_UNAVAILABLE => c"STEWARD_RESULT_BROKER_UNAVAILABLE",
            STEWARD_RESULT_STOPPED => c"STEWARD_RESULT_STOPPED",
            STEWARD_RESULT_NOT_FOUND => c"STEWARD_RESULT_NOT_FOUND",
            STEWARD_RESULT_TIMED_OUT => c"STEWARD_RESULT_TIMED_OUT",
            STEWARD_RESULT_EXPIRED => c"STEWARD_RESULT_EXPIRED",
            STEWARD_RESULT_REJECTED => c"STEWARD_RESULT_REJECTED",
            STEWARD_RESULT_DELIVERY_FAILED => c"STEWARD_RESULT_DELIVERY_FAILED",
            STEWARD_RESULT_CANCELLED => c"STEWARD_RESULT_CANCELLED",
            STEWARD_RESULT_NO_RESULT => c"STEWARD_RESULT_NO_RESULT",
            STEWARD_RESULT_IO => c"STEWARD_RESULT_IO",
            STEWARD_RESULT_BROKER_AUTH => c"STEWARD_RESULT_BROKER_AUTH",
        }
    }

    /// A one-line description of the code (not of one particular failure).
    pub(crate) fn description(self) -> &'static str {
        match self {
            STEWARD_RESULT_OK => "success",
            STEWARD_RESULT_NULL_PARAMETER => "a pointer argument was NULL",
            STEWARD_RESULT_PANIC => {
                "steward panicked (a bug); the operation did not complete, please report it"
            }
            STEWARD_RESULT_INVALID_UTF8 => "a string argument was not valid UTF-8",
            STEWARD_RESULT_INVALID_ARGUMENT => "a number or enum argument was out of range",
            STEWARD_RESULT_BUFFER_TOO_SMALL => {
                "the buffer was too small; the text was cut to fit (pass a bigger buffer)"
            }
            STEWARD_RESULT_IN_CALLBACK => {
                "called from one of the node's own callbacks, where it would deadlock; call it from another thread"
            }
            STEWARD_RESULT_COMPLETION_NOT_PENDING => {
                "the completion was already finished, timed out, or abandoned because its node stopped"
            }
            STEWARD_RESULT_UNKNOWN_ERROR => {
                "the steward core reported a kind of error this C API version does not know"
            }
            STEWARD_RESULT_INVALID_NAME => {
                "a node or method name is invalid; use 1-64 characters of A-Z a-z 0-9 _ -"
            }
            STEWARD_RESULT_INVALID_MESSAGE => "the message is malformed or has a bad field",
            STEWARD_RESULT_CONFIG => "the node configuration is unusable",
            STEWARD_RESULT_STORAGE => {
                "the message store failed; check free disk space and permissions of the data directory"
            }
            STEWARD_RESULT_DATA_DIR_IN_USE => {
                "the data directory is in use by another steward node; stop it or choose another directory"
            }
            STEWARD_RESULT_BROKER_UNAVAILABLE => "the NATS broker could not be reached",
            STEWARD_RESULT_STOPPED => "the node is stopped; start a new one",
            STEWARD_RESULT_NOT_FOUND => "no message with that id is known to this node",
            STEWARD_RESULT_TIMED_OUT => "timed out",
            STEWARD_RESULT_EXPIRED => "the message expired before it was delivered or run",
            STEWARD_RESULT_REJECTED => "the receiver refused the message",
            STEWARD_RESULT_DELIVERY_FAILED => "delivery was given up after the configured retries",
            STEWARD_RESULT_CANCELLED => "the message was cancelled before delivery",
            STEWARD_RESULT_NO_RESULT => {
                "the message was sent without ACK (ack timeout 0); no result will come"
            }
            STEWARD_RESULT_IO => "a file could not be read or written",
            STEWARD_RESULT_BROKER_AUTH => {
                "the NATS broker refused this node (credentials not accepted, untrusted certificate, or TLS refused); the last error message says what to fix"
            }
        }
    }
}

/// The code for a kind of core error.
pub(crate) fn code_of_kind(kind: ErrorKind) -> steward_result {
    match kind {
        ErrorKind::InvalidName => STEWARD_RESULT_INVALID_NAME,
        ErrorKind::InvalidMessage => STEWARD_RESULT_INVALID_MESSAGE,
        ErrorKind::Config => STEWARD_RESULT_CONFIG,
        ErrorKind::Storage => STEWARD_RESULT_STORAGE,
        ErrorKind::DataDirInUse => STEWARD_RESULT_DATA_DIR_IN_USE,
        ErrorKind::BrokerUnavailable => STEWARD_RESULT_BROKER_UNAVAILABLE,
        ErrorKind::Stopped => STEWARD_RESULT_STOPPED,
        ErrorKind::NotFound => STEWARD_RESULT_NOT_FOUND,
        ErrorKind::TimedOut => STEWARD_RESULT_TIMED_OUT,
        ErrorKind::Expired => STEWARD_RESULT_EXPIRED,
        ErrorKind::Rejected => STEWARD_RESULT_REJECTED,
        ErrorKind::DeliveryFailed => STEWARD_RESULT_DELIVERY_FAILED,
        ErrorKind::Cancelled => STEWARD_RESULT_CANCELLED,
        ErrorKind::NoResult => STEWARD_RESULT_NO_RESULT,
        ErrorKind::Io => STEWARD_RESULT_IO,
        ErrorKind::BrokerAuth => STEWARD_RESULT_BROKER_AUTH,
        _ => STEWARD_RESULT_UNKNOWN_ERROR,
    }
}

/// A failure inside the C layer: the code to return and the message for the last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub code: steward_result,
    pub message: String,
}

impl FfiError {
    pub(crate) fn new(code: steward_result, message: impl Into<String>) -> Self {
        FfiError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn null(arg: &str) -> Self {
        Self::new(
            STEWARD_RESULT_NULL_PARAMETER,
            format!("argument `{arg}` is NULL; pass a valid pointer"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(STEWARD_RESULT_INVALID_ARGUMENT, message)
    }

    pub(crate) fn stopped() -> Self {
        Self::new(
            STEWARD_RESULT_STOPPED,
            "the node is stopped; start a new one with steward_node_start",
        )
    }
}

impl FfiError {
    pub(crate) fn from_ref(e: &steward::Error) -> Self {
        FfiError::new(code_of_kind(e.kind()), e.to_string())
    }
}

impl From<steward::Error> for FfiError {
    fn from(e: steward::Error) -> Self {
        FfiError::from_ref(&e)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<FfiError>> = const { RefCell::new(None) };
}

/// Records the error this thread's caller will read with `steward_last_error_message`.
pub(crate) fn set_last_error(e: FfiError) {
    // `try_with`: during thread teardown the slot may be gone; the code still reaches the caller.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(e));
}

/// The last error recorded on this thread, if any (reading it leaves it in place).
pub(crate) fn last_error() -> Option<FfiError> {
    LAST_ERROR
        .try_with(|slot| slot.borrow().clone())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        // These numbers are part of the ABI: never change them.
        let expected: [(steward_result, u32); 25] = [
            (STEWARD_RESULT_OK, 0),
            (STEWARD_RESULT_NULL_PARAMETER, 1),
            (STEWARD_RESULT_PANIC, 2),
            (STEWARD_RESULT_INVALID_UTF8, 3),
            (STEWARD_RESULT_INVALID_ARGUMENT, 4),
            (STEWARD_RESULT_BUFFER_TOO_SMALL, 5),
            (STEWARD_RESULT_IN_CALLBACK, 6),
            (STEWARD_RESULT_COMPLETION_NOT_PENDING, 7),
            (STEWARD_RESULT_UNKNOWN_ERROR, 8),
            (STEWARD_RESULT_INVALID_NAME, 100),
            (STEWARD_RESULT_INVALID_MESSAGE, 101),
            (STEWARD_RESULT_CONFIG, 102),
            (STEWARD_RESULT_STORAGE, 103),
            (STEWARD_RESULT_DATA_DIR_IN_USE, 104),
            (STEWARD_RESULT_BROKER_UNAVAILABLE, 105),
            (STEWARD_RESULT_STOPPED, 106),
            (STEWARD_RESULT_NOT_FOUND, 107),
            (STEWARD_RESULT_TIMED_OUT, 108),
            (STEWARD_RESULT_EXPIRED, 109),
            (STEWARD_RESULT_REJECTED, 110),
            (STEWARD_RESULT_DELIVERY_FAILED, 111),
            (STEWARD_RESULT_CANCELLED, 112),
            (STEWARD_RESULT_NO_RESULT, 113),
            (STEWARD_RESULT_IO, 114),
            (STEWARD_RESULT_BROKER_AUTH, 115),
        ];
        for (code, n) in expected {
            assert_eq!(code as u32, n, "{:?}", code.name());
            assert_eq!(steward_result::from_u32(n), Some(code));
        }
        assert_eq!(steward_result::from_u32(9), None);
    }

    #[test]
    fn every_core_kind_has_its_own_code() {
        let kinds = [
            ErrorKind::InvalidName,
            ErrorKind::InvalidMessage,
            ErrorKind::Config,
            ErrorKind::Storage,
            ErrorKind::DataDirInUse,
            ErrorKind::BrokerUnavailable,
            ErrorKind::Stopped,
            ErrorKind::NotFound,
            ErrorKind::TimedOut,
            ErrorKind::Expired,
            ErrorKind::Rejected,
            ErrorKind::DeliveryFailed,
            ErrorKind::Cancelled,
            ErrorKind::NoResult,
            ErrorKind::Io,
            ErrorKind::BrokerAuth,
        ];
        let codes: std::collections::HashSet<u32> =
            kinds.iter().map(|k| code_of_kind(*k) as u32).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(codes.iter().all(|c| *c >= 100));
    }
}
