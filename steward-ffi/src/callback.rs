//! Callbacks from C as `{context, call, drop}` triples: the types C passes in, and the `call`
//! types of the status and error callbacks (`slot` takes a triple over and guarantees `drop`
//! runs exactly once, after the last `call`).

use std::ffi::c_void;

use crate::method::{steward_completion, steward_request};
use crate::status::{steward_error_report, steward_message_status};

/// Called with the final state of every message this node sent (completed, failed, expired,
/// rejected or cancelled), including the result's stdout, stderr and exit status.
///
/// Thread: the node's `steward-callbacks` thread, one notification at a time (status and
/// error callbacks of one node never overlap each other, but they may overlap method and event
/// callbacks, which run on other threads).
///
/// `status` is borrowed for the duration of the call only: copy what you need, never free it.
/// `context` is passed back unchanged. `drop`, if not NULL, is called exactly once with
/// `context` after the last `call` (when the callback is removed or the node stops).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct steward_status_callback {
    /// Your state, passed to `call` and `drop`. May be NULL.
    pub context: *mut c_void,
    /// Must not be NULL.
    pub call:
        Option<unsafe extern "C" fn(context: *mut c_void, status: *const steward_message_status)>,
    /// Releases `context`; may be NULL.
    pub drop: Option<unsafe extern "C" fn(context: *mut c_void)>,
}

/// Called with every error report of the node (delivery failed, rejected, expired, method
/// failed, bad input, internal task failures).
///
/// Thread: the node's `steward-callbacks` thread, like `steward_status_callback`.
/// `report` is borrowed for the duration of the call only. `drop` runs exactly once, after the
/// last `call`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct steward_error_callback {
    /// Your state, passed to `call` and `drop`. May be NULL.
    pub context: *mut c_void,
    /// Must not be NULL.
    pub call:
        Option<unsafe extern "C" fn(context: *mut c_void, report: *const steward_error_report)>,
    /// Releases `context`; may be NULL.
    pub drop: Option<unsafe extern "C" fn(context: *mut c_void)>,
}

/// Called with each incoming event of one method; the event counts as handled (ACKed with
/// success) when `call` returns.
///
/// Thread: a blocking-pool thread of the node's runtime (never an I/O thread, so a slow call
/// delays only later events of the same sender and subject). Events from different senders
/// may be delivered concurrently, so calls may overlap. `event` is borrowed for the duration
/// of the call only. `drop` runs exactly once, after the last `call`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct steward_event_callback {
    /// Your state, passed to `call` and `drop`. May be NULL.
    pub context: *mut c_void,
    /// Must not be NULL.
    pub call: Option<unsafe extern "C" fn(context: *mut c_void, event: *const steward_request)>,
    /// Releases `context`; may be NULL.
    pub drop: Option<unsafe extern "C" fn(context: *mut c_void)>,
}

/// Serves one method: called with each request and a completion handle that must be finished
/// exactly once with `steward_completion_ok` or `steward_completion_fail`, either before `call`
/// returns or later from any thread.
///
/// Thread: a blocking-pool thread of the node's runtime (never an I/O thread). Requests from
/// different senders may run concurrently, so calls may overlap; requests of one sender on one
/// subject run one after another (the next starts when the completion is finished).
/// `request` is borrowed for the duration of the call only. `drop` runs exactly once, after
/// the last `call`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct steward_method_callback {
    /// Your state, passed to `call` and `drop`. May be NULL.
    pub context: *mut c_void,
    /// Must not be NULL.
    pub call: Option<
        unsafe extern "C" fn(
            context: *mut c_void,
            request: *const steward_request,
            completion: *mut steward_completion,
        ),
    >,
    /// Releases `context`; may be NULL.
    pub drop: Option<unsafe extern "C" fn(context: *mut c_void)>,
}

/// The `call` of a `steward_status_callback`.
pub(crate) type StatusCall = unsafe extern "C" fn(*mut c_void, *const steward_message_status);
/// The `call` of a `steward_error_callback`.
pub(crate) type ErrorCall = unsafe extern "C" fn(*mut c_void, *const steward_error_report);
