//! The panic boundary and argument checks every `extern "C"` function goes through.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::error::{set_last_error, steward_result, FfiError};

/// Runs a fallible body inside a panic boundary and turns its outcome into a result code,
/// recording the last error on failure.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), FfiError>) -> steward_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => steward_result::STEWARD_RESULT_OK,
        Ok(Err(e)) => {
            let code = e.code;
            set_last_error(e);
            code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(FfiError::new(
                steward_result::STEWARD_RESULT_PANIC,
                format!("steward panicked: {what}; this is a bug, please report it"),
            ));
            steward_result::STEWARD_RESULT_PANIC
        }
    }
}

/// Runs an infallible body (accessors, frees) inside a panic boundary; `fallback` on panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Borrows a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::new(
            steward_result::STEWARD_RESULT_INVALID_UTF8,
            format!(
                "argument `{name}` is not valid UTF-8 (bad byte at offset {}); pass UTF-8 text",
                e.valid_up_to()
            ),
        )
    })
}

/// Borrows a handle argument.
///
/// # Safety
/// `p` must be NULL or point to a live `T`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, FfiError> {
    unsafe { p.as_ref() }.ok_or_else(|| FfiError::null(name))
}

/// Mutably borrows a handle argument.
///
/// # Safety
/// `p` must be NULL or point to a live `T` nobody else uses right now.
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, FfiError> {
    unsafe { p.as_mut() }.ok_or_else(|| FfiError::null(name))
}

/// Checks an out-parameter and returns it for writing after success.
pub(crate) fn out_arg<T>(p: *mut T, name: &str) -> Result<*mut T, FfiError> {
    if p.is_null() {
        Err(FfiError::null(name))
    } else {
        Ok(p)
    }
}

/// A duration in milliseconds from C: `>= 0` and at most `max`.
pub(crate) fn arg_millis(ms: i64, what: &str, max: Duration) -> Result<Duration, FfiError> {
    if ms < 0 {
        return Err(FfiError::invalid(format!(
            "{what} must be >= 0 ms, got {ms} ms"
        )));
    }
    let d = Duration::from_millis(ms as u64);
    if d > max {
        return Err(FfiError::invalid(format!(
            "{what} of {ms} ms is more than the maximum of {} ms",
            max.as_millis()
        )));
    }
    Ok(d)
}

/// Copies `text` into a caller buffer of `len` bytes: as much UTF-8 as fits (whole characters)
/// plus a NUL; the byte count (without NUL) goes to `*written`.
///
/// # Safety
/// `buf` must be NULL or valid for `len` bytes; `written` NULL or valid for one `usize`.
pub(crate) unsafe fn write_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> Result<(), FfiError> {
    let written = out_arg(written, "written")?;
    if buf.is_null() {
        return Err(FfiError::null("buf"));
    }
    if len == 0 {
        unsafe { *written = 0 };
        return Err(FfiError::new(
            steward_result::STEWARD_RESULT_BUFFER_TOO_SMALL,
            format!("the buffer has 0 bytes; {} are needed", text.len() + 1),
        ));
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
        *written = n;
    }
    if n < text.len() {
        return Err(FfiError::new(
            steward_result::STEWARD_RESULT_BUFFER_TOO_SMALL,
            format!("the buffer has {len} bytes; {} are needed", text.len() + 1),
        ));
    }
    Ok(())
}

/// Text handed to C: the bytes plus a trailing NUL, so it can be read as a C string or with
/// its length (stdout, stderr and data may contain NUL bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(Vec<u8>);

impl Text {
    pub(crate) fn new(s: &str) -> Text {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        Text(v)
    }
    pub(crate) fn ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len() - 1
    }
}

/// Writes `text`'s length into an optional out-parameter and returns its pointer.
///
/// # Safety
/// `len_out` must be NULL or valid for one `usize`.
pub(crate) unsafe fn text_out(text: &Text, len_out: *mut usize) -> *const c_char {
    if !len_out.is_null() {
        unsafe { *len_out = text.len() };
    }
    text.ptr()
}

thread_local! {
    /// The nodes whose callbacks this thread is running right now (innermost last).
    static IN_CALLBACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as running a callback of node `node_id` while the guard lives.
pub(crate) struct CallbackScope(());

impl CallbackScope {
    pub(crate) fn enter(node_id: u64) -> CallbackScope {
        let _ = IN_CALLBACK.try_with(|v| v.borrow_mut().push(node_id));
        CallbackScope(())
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        let _ = IN_CALLBACK.try_with(|v| v.borrow_mut().pop());
    }
}

/// True while this thread runs a callback of node `node_id`.
pub(crate) fn in_callback_of(node_id: u64) -> bool {
    IN_CALLBACK
        .try_with(|v| v.borrow().contains(&node_id))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::steward_result::*;

    #[test]
    fn guard_turns_panics_into_a_code_and_message() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, STEWARD_RESULT_PANIC);
        assert_eq!(
            crate::explain::steward_last_error_code(),
            STEWARD_RESULT_PANIC
        );
        let mut buf = [0 as c_char; 128];
        let mut n = 0usize;
        let r =
            unsafe { crate::explain::steward_last_error_message(buf.as_mut_ptr(), 128, &mut n) };
        assert_eq!(r, STEWARD_RESULT_OK);
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert!(s.contains("boom"), "{s}");
        assert_eq!(guard_value(7, || panic!("x")), 7);
    }

    #[test]
    fn write_text_cuts_at_character_boundaries() {
        let mut buf = [1 as c_char; 4];
        let mut n = 99usize;
        // "aé" is 3 bytes; "aéb" needs 5 with the NUL.
        let e = unsafe { write_text("aéb", buf.as_mut_ptr(), 4, &mut n) }.unwrap_err();
        assert_eq!(e.code, STEWARD_RESULT_BUFFER_TOO_SMALL);
        assert_eq!(n, 3);
        assert_eq!(buf[3], 0);
        let e = unsafe { write_text("é", buf.as_mut_ptr(), 2, &mut n) }.unwrap_err();
        assert_eq!(e.code, STEWARD_RESULT_BUFFER_TOO_SMALL);
        assert_eq!((n, buf[0]), (0, 0));
        unsafe { write_text("ok", buf.as_mut_ptr(), 4, &mut n) }.unwrap();
        assert_eq!(n, 2);
        let e = unsafe { write_text("ok", std::ptr::null_mut(), 4, &mut n) }.unwrap_err();
        assert_eq!(e.code, STEWARD_RESULT_NULL_PARAMETER);
    }

    #[test]
    fn string_arguments_are_checked() {
        let e = unsafe { arg_str(std::ptr::null(), "json") }.unwrap_err();
        assert_eq!(e.code, STEWARD_RESULT_NULL_PARAMETER);
        assert!(e.message.contains("`json`"));
        let bad = b"ab\xffc\0";
        let e = unsafe { arg_str(bad.as_ptr().cast(), "name") }.unwrap_err();
        assert_eq!(e.code, STEWARD_RESULT_INVALID_UTF8);
        assert!(e.message.contains("offset 2"), "{}", e.message);
    }

    #[test]
    fn millis_are_range_checked() {
        let max = Duration::from_secs(10);
        assert_eq!(
            arg_millis(-1, "x", max).unwrap_err().code,
            STEWARD_RESULT_INVALID_ARGUMENT
        );
        assert_eq!(
            arg_millis(10_001, "x", max).unwrap_err().code,
            STEWARD_RESULT_INVALID_ARGUMENT
        );
        assert_eq!(arg_millis(5, "x", max).unwrap(), Duration::from_millis(5));
    }
}
