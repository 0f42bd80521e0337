//! The C functions that explain failures: the message and code of the last error on this
//! thread, and the name and description of any result code.

use std::ffi::c_char;

use crate::boundary::{guard, guard_value, write_text};
use crate::error::steward_result::{STEWARD_RESULT_OK, STEWARD_RESULT_PANIC};
use crate::error::{last_error, set_last_error, steward_result};

/// Writes the message of the last failed call on this thread into `buf`.
///
/// "Last failed call" is the most recent steward function on this thread that returned a code
/// other than `STEWARD_RESULT_OK` (successful calls leave it in place, like `errno`). With no
/// failure yet, the message is empty. This function and `steward_result_message` never change
/// the last error.
///
/// Writes at most `len - 1` bytes of UTF-8 (cut at a character boundary) and a NUL, and stores
/// the number of bytes written (without the NUL) in `*written`.
///
/// Returns `STEWARD_RESULT_OK`, `STEWARD_RESULT_BUFFER_TOO_SMALL` when the message was cut
/// (what fit is still written), or `STEWARD_RESULT_NULL_PARAMETER` when `buf` or `written` is
/// NULL.
///
/// Ownership: `buf` (of `len` bytes) and `written` belong to the caller. Thread-safe: each
/// thread has its own last error.
#[no_mangle]
pub unsafe extern "C" fn steward_last_error_message(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> steward_result {
    let keep = guard_value(None, last_error);
    let code = guard(|| {
        let text = keep.as_ref().map(|e| e.message.as_str()).unwrap_or("");
        write_text(text, buf, len, written)
    });
    // Asking for the message must not replace it with a complaint about the asking.
    if let Some(e) = keep {
        set_last_error(e);
    }
    code
}

/// The code of the last failed call on this thread (`STEWARD_RESULT_OK` if none yet).
///
/// Thread-safe: each thread has its own last error. Never fails.
#[no_mangle]
pub extern "C" fn steward_last_error_code() -> steward_result {
    guard_value(STEWARD_RESULT_PANIC, || {
        last_error().map(|e| e.code).unwrap_or(STEWARD_RESULT_OK)
    })
}

/// Writes a description of the result code `code` into `buf` (see `steward_last_error_message`
/// for the buffer rules). `code` is a `steward_result`; an unknown number gets a message that
/// says so (and `STEWARD_RESULT_OK` is still returned).
///
/// Returns `STEWARD_RESULT_OK`, `STEWARD_RESULT_BUFFER_TOO_SMALL` or
/// `STEWARD_RESULT_NULL_PARAMETER`. Never changes the last error. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_result_message(
    code: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> steward_result {
    let keep = guard_value(None, last_error);
    let r = guard(|| {
        let text = match steward_result::from_u32(code) {
            Some(r) => r.description().to_owned(),
            None => format!("unknown steward_result code {code}"),
        };
        write_text(&text, buf, len, written)
    });
    if let Some(e) = keep {
        set_last_error(e);
    }
    r
}

/// The name of the result code `code` as a static NUL-terminated string, such as
/// `"STEWARD_RESULT_NULL_PARAMETER"`, or `"STEWARD_RESULT_UNKNOWN"` for a number that is not a
/// code. The string is static: never free it. Never fails; thread-safe.
#[no_mangle]
pub extern "C" fn steward_result_name(code: u32) -> *const c_char {
    guard_value(
        c"STEWARD_RESULT_UNKNOWN".as_ptr(),
        || match steward_result::from_u32(code) {
            Some(r) => r.name().as_ptr(),
            None => c"STEWARD_RESULT_UNKNOWN".as_ptr(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::error::ALL_RESULTS;

    #[test]
    fn names_and_descriptions() {
        for code in ALL_RESULTS {
            let p = steward_result_name(code as u32);
            let s = unsafe { CStr::from_ptr(p) };
            assert_eq!(s, code.name());
            assert!(!code.description().is_empty());
        }
        let p = steward_result_name(9999);
        assert_eq!(
            unsafe { CStr::from_ptr(p) }.to_str().unwrap(),
            "STEWARD_RESULT_UNKNOWN"
        );
    }
}
