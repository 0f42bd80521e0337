//! The message builder: one message assembled with setters, sent with `steward_node_send`.

use std::ffi::c_char;

use steward::{Kind, Message, MAX_ACK_TIMEOUT, MAX_METHOD_TIMEOUT, MAX_TTL};

use crate::boundary::{arg_millis, arg_mut, arg_str, guard, guard_value, out_arg};
use crate::config::{retries_arg, MAX_RETRY_WAIT};
use crate::error::{steward_result, FfiError};
use crate::method::kind_arg;

/// The longest message id plus its NUL: size of the buffer `steward_node_send` writes the id
/// into.
pub const STEWARD_ID_BUF_LEN: usize = 65;

/// One message being assembled (opaque). Create with `steward_message_new`, set at least the
/// destination and method, send with `steward_node_send` (as often as you like: it is not
/// consumed), free with `steward_message_free`. Unset options take the node's defaults. Not
/// thread-safe: use one message from one thread at a time.
pub struct steward_message {
    to_node: Option<String>,
    kind: Kind,
    method: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    ack_timeout: Option<std::time::Duration>,
    retries: Option<u32>,
    retry_wait: Option<std::time::Duration>,
    ttl: Option<std::time::Duration>,
    method_timeout: Option<std::time::Duration>,
}

impl steward_message {
    /// The core message, or an error naming the missing setter.
    pub(crate) fn to_message(&self) -> Result<Message, FfiError> {
        let to = self.to_node.clone().ok_or_else(|| {
            FfiError::new(
                steward_result::STEWARD_RESULT_INVALID_MESSAGE,
                "invalid message, field `toNode`: is missing; call steward_message_set_to",
            )
        })?;
        let method = self.method.clone().ok_or_else(|| {
            FfiError::new(
                steward_result::STEWARD_RESULT_INVALID_MESSAGE,
                "invalid message, field `method`: is missing; call steward_message_set_method",
            )
        })?;
        let mut m = Message::new(to, self.kind, method, self.data.clone());
        m.id = self.id.clone();
        m.ack_timeout = self.ack_timeout;
        m.retries = self.retries;
        m.retry_wait = self.retry_wait;
        m.expiry = self.ttl.map(steward::Expiry::Ttl);
        m.method_timeout = self.method_timeout;
        m.validate(None)?;
        Ok(m)
    }
}

/// Creates an empty command message. On success writes it to `*out`; the caller owns it and
/// frees it with `steward_message_free`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_message_new(out: *mut *mut steward_message) -> steward_result {
    guard(|| {
        let out = out_arg(out, "out")?;
        let m = steward_message {
            to_node: None,
            kind: Kind::Command,
            method: None,
            data: Vec::new(),
            id: None,
            ack_timeout: None,
            retries: None,
            retry_wait: None,
            ttl: None,
            method_timeout: None,
        };
        unsafe { *out = Box::into_raw(Box::new(m)) };
        Ok(())
    })
}

/// Frees a message. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_message_free(message: *mut steward_message) {
    guard_value((), || {
        if !message.is_null() {
            drop(unsafe { Box::from_raw(message) });
        }
    })
}

fn with_message(
    message: *mut steward_message,
    f: impl FnOnce(&mut steward_message) -> Result<(), FfiError>,
) -> steward_result {
    guard(|| {
        let m = unsafe { arg_mut(message, "message") }?;
        f(m)
    })
}

fn name(p: *const c_char, arg: &str, what: &'static str) -> Result<String, FfiError> {
    let s = unsafe { arg_str(p, arg) }?;
    steward::validate_name(what, s)?;
    Ok(s.to_owned())
}

/// Sets the destination node (1-64 of `A-Z a-z 0-9 _ -`; `.`, `*`, `>`, spaces and the like
/// are refused with `STEWARD_RESULT_INVALID_NAME`). Copied.
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_to(
    message: *mut steward_message,
    node: *const c_char,
) -> steward_result {
    with_message(message, |m| {
        m.to_node = Some(name(node, "node", "node")?);
        Ok(())
    })
}

/// Sets command or event (a `steward_kind`; command by default).
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_kind(
    message: *mut steward_message,
    kind: u32,
) -> steward_result {
    with_message(message, |m| {
        m.kind = kind_arg(kind)?;
        Ok(())
    })
}

/// Sets the method to call on the destination (a name, as for nodes). Copied.
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_method(
    message: *mut steward_message,
    method: *const c_char,
) -> steward_result {
    with_message(message, |m| {
        m.method = Some(name(method, "method", "method")?);
        Ok(())
    })
}

/// Appends one data argument (for `shellCommand`, one argv element; passed literally, never
/// through a shell unless the argv itself runs one). Copied.
#[no_mangle]
pub unsafe extern "C" fn steward_message_add_data(
    message: *mut steward_message,
    arg: *const c_char,
) -> steward_result {
    with_message(message, |m| {
        let arg = unsafe { arg_str(arg, "arg") }?;
        m.data.push(arg.to_owned());
        Ok(())
    })
}

/// Removes every data argument.
#[no_mangle]
pub unsafe extern "C" fn steward_message_clear_data(
    message: *mut steward_message,
) -> steward_result {
    with_message(message, |m| {
        m.data.clear();
        Ok(())
    })
}

/// Sets the message id (1-64 of `A-Z a-z 0-9 _ -`); without one, a ULID is assigned. Sending
/// the same id again returns it without sending twice. Copied.
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_id(
    message: *mut steward_message,
    id: *const c_char,
) -> steward_result {
    with_message(message, |m| {
        m.id = Some(name(id, "id", "id")?);
        Ok(())
    })
}

/// Sets the ACK timeout in ms (0: fire-and-forget, no result; at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_ack_timeout_ms(
    message: *mut steward_message,
    ms: i64,
) -> steward_result {
    with_message(message, |m| {
        m.ack_timeout = Some(arg_millis(ms, "ack timeout", MAX_ACK_TIMEOUT)?);
        Ok(())
    })
}

/// Sets the number of resends, 0 to 4294967295.
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_retries(
    message: *mut steward_message,
    retries: i64,
) -> steward_result {
    with_message(message, |m| {
        m.retries = Some(retries_arg(retries)?);
        Ok(())
    })
}

/// Sets the base wait between resends in ms (at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_retry_wait_ms(
    message: *mut steward_message,
    ms: i64,
) -> steward_result {
    with_message(message, |m| {
        m.retry_wait = Some(arg_millis(ms, "retry wait", MAX_RETRY_WAIT)?);
        Ok(())
    })
}

/// Sets the time to live in ms from acceptance (more than 0, at most 10 years): after it the
/// message is neither sent nor run.
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_ttl_ms(
    message: *mut steward_message,
    ms: i64,
) -> steward_result {
    with_message(message, |m| {
        let d = arg_millis(ms, "ttl", MAX_TTL)?;
        if d.is_zero() {
            return Err(FfiError::invalid("ttl must be more than 0 ms"));
        }
        m.ttl = Some(d);
        Ok(())
    })
}

/// Sets how long the method may run at the receiver, in ms (more than 0, at most 7 days).
#[no_mangle]
pub unsafe extern "C" fn steward_message_set_method_timeout_ms(
    message: *mut steward_message,
    ms: i64,
) -> steward_result {
    with_message(message, |m| {
        let d = arg_millis(ms, "method timeout", MAX_METHOD_TIMEOUT)?;
        if d.is_zero() {
            return Err(FfiError::invalid("method timeout must be more than 0 ms"));
        }
        m.method_timeout = Some(d);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn new_message() -> *mut steward_message {
        let mut m = std::ptr::null_mut();
        assert_eq!(
            unsafe { steward_message_new(&mut m) },
            steward_result::STEWARD_RESULT_OK
        );
        m
    }

    #[test]
    fn missing_fields_name_the_setter() {
        let m = new_message();
        let e = unsafe { &*m }.to_message().unwrap_err();
        assert_eq!(e.code, steward_result::STEWARD_RESULT_INVALID_MESSAGE);
        assert!(
            e.message.contains("steward_message_set_to"),
            "{}",
            e.message
        );
        let ship = CString::new("ship1").unwrap();
        unsafe { steward_message_set_to(m, ship.as_ptr()) };
        let e = unsafe { &*m }.to_message().unwrap_err();
        assert!(
            e.message.contains("steward_message_set_method"),
            "{}",
            e.message
        );
        unsafe { steward_message_free(m) };
    }

    #[test]
    fn setters_build_the_core_message() {
        let m = new_message();
        let c = |s: &str| CString::new(s).unwrap();
        let (to, method, a, b, id) = (c("ship1"), c("shellCommand"), c("ls"), c("-l"), c("m1"));
        unsafe {
            steward_message_set_to(m, to.as_ptr());
            steward_message_set_method(m, method.as_ptr());
            steward_message_set_kind(m, 0);
            steward_message_add_data(m, a.as_ptr());
            steward_message_add_data(m, b.as_ptr());
            steward_message_set_id(m, id.as_ptr());
            steward_message_set_ttl_ms(m, 1500);
            steward_message_set_retries(m, 4);
            steward_message_set_ack_timeout_ms(m, 0);
        }
        let msg = unsafe { &*m }.to_message().unwrap();
        assert_eq!(msg.subject(), "ship1.command.shellCommand");
        assert_eq!(msg.data, ["ls", "-l"]);
        assert_eq!(msg.id.as_deref(), Some("m1"));
        assert_eq!(msg.retries, Some(4));
        assert_eq!(msg.ack_timeout, Some(std::time::Duration::ZERO));
        assert_eq!(
            msg.expiry,
            Some(steward::Expiry::Ttl(std::time::Duration::from_millis(1500)))
        );
        // Out-of-range values are refused and leave the message as it was.
        assert_eq!(
            unsafe { steward_message_set_retries(m, -1) },
            steward_result::STEWARD_RESULT_INVALID_ARGUMENT
        );
        assert_eq!(unsafe { &*m }.to_message().unwrap().retries, Some(4));
        unsafe { steward_message_free(m) };
    }
}
