//! Read-only views handed to C: message states with their results, error reports,
//! destinations and send reports, each with accessors and (when C owns it) a `_free`.
//!
//! Accessors never fail: given NULL (or an index out of range) they return NULL, 0 or false.
//! Strings they return are NUL-terminated, owned by the object, and valid until it is freed
//! (or, for objects lent to a callback, until the callback returns).

use std::ffi::c_char;

use steward::{
    DestinationStatus, ErrorReport, ErrorReportKind, MessageState, MessageStatus, MethodResult,
    Refusal, ResultStatus,
};

use crate::boundary::{guard_value, text_out, Text};
use crate::error::{steward_result, FfiError};

/// Where a message stands, as its sender knows it. Numbers are stable.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_message_state {
    /// Durably accepted, not yet sent.
    STEWARD_STATE_QUEUED = 0,
    /// Sent at least once; no ACK yet.
    STEWARD_STATE_SENT = 1,
    /// The receiver confirmed it and is (or will be) running it.
    STEWARD_STATE_RECEIVED = 2,
    /// The result is in.
    STEWARD_STATE_COMPLETED = 3,
    /// Retries ran out without an ACK.
    STEWARD_STATE_FAILED = 4,
    /// Its time to live ran out before delivery or execution.
    STEWARD_STATE_EXPIRED = 5,
    /// The receiver refused it.
    STEWARD_STATE_REJECTED = 6,
    /// Cancelled before delivery.
    STEWARD_STATE_CANCELLED = 7,
    /// A state this version of the C API does not know (newer core).
    STEWARD_STATE_UNKNOWN = 255,
}

/// Why a receiver refused a message, when it said (see `steward_message_status_refusal`).
/// Numbers are stable.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_refusal {
    /// Not refused, or the receiver gave only a reason.
    STEWARD_REFUSAL_NONE = 0,
    /// The receiver's access list does not let the sender call the method (with these
    /// arguments).
    STEWARD_REFUSAL_NOT_ALLOWED = 1,
    /// The receiver does not serve the method, or serves it as the other kind.
    STEWARD_REFUSAL_NOT_SERVED = 2,
    /// The signature did not hold, or its key is not trusted for the sender.
    STEWARD_REFUSAL_UNTRUSTED = 3,
    /// A code this version of the C API does not know (newer core).
    STEWARD_REFUSAL_UNKNOWN = 255,
}

/// How a method run ended. Numbers are stable.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_run_status {
    /// There is no result (yet).
    STEWARD_RUN_NONE = 0,
    /// The method finished successfully (for a command: exit status 0).
    STEWARD_RUN_OK = 1,
    /// The method finished and reported failure (non-zero exit, error, timeout).
    STEWARD_RUN_FAILED = 2,
    /// The receiver stopped after it was started and before it finished; its outcome is unknown.
    STEWARD_RUN_UNKNOWN = 3,
}

/// What kind of failure an error report describes. Numbers are stable.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_report_kind {
    /// Retries ran out without an ACK.
    STEWARD_REPORT_DELIVERY_FAILED = 0,
    /// A message expired before delivery or execution.
    STEWARD_REPORT_EXPIRED = 1,
    /// The method ran and failed.
    STEWARD_REPORT_METHOD_FAILED = 2,
    /// The receiver refused a message.
    STEWARD_REPORT_REJECTED = 3,
    /// Input (JSON, API) that could not be accepted.
    STEWARD_REPORT_BAD_INPUT = 4,
    /// An internal task failed.
    STEWARD_REPORT_TASK_FAILED = 5,
    /// The broker refused this node while it was (re)connecting: credentials revoked, expired
    /// or changed, or a certificate no longer trusted.
    STEWARD_REPORT_BROKER_AUTH = 6,
}

fn refusal_of(r: Option<Refusal>) -> steward_refusal {
    use steward_refusal::*;
    match r {
        None => STEWARD_REFUSAL_NONE,
        Some(Refusal::NotAllowed) => STEWARD_REFUSAL_NOT_ALLOWED,
        Some(Refusal::NotServed) => STEWARD_REFUSAL_NOT_SERVED,
        Some(Refusal::Untrusted) => STEWARD_REFUSAL_UNTRUSTED,
        Some(_) => STEWARD_REFUSAL_UNKNOWN,
    }
}

fn state_of(s: MessageState) -> steward_message_state {
    use steward_message_state::*;
    match s {
        MessageState::Queued => STEWARD_STATE_QUEUED,
        MessageState::Sent => STEWARD_STATE_SENT,
        MessageState::Received => STEWARD_STATE_RECEIVED,
        MessageState::Completed => STEWARD_STATE_COMPLETED,
        MessageState::Failed => STEWARD_STATE_FAILED,
        MessageState::Expired => STEWARD_STATE_EXPIRED,
        MessageState::Rejected => STEWARD_STATE_REJECTED,
        MessageState::Cancelled => STEWARD_STATE_CANCELLED,
    }
}

struct ResultView {
    status: steward_run_status,
    exit_code: Option<i32>,
    stdout: Text,
    stderr: Text,
    truncated: bool,
    duration_ms: u64,
    node: Text,
    error: Option<Text>,
}

impl ResultView {
    fn new(r: &MethodResult) -> ResultView {
        ResultView {
            status: match r.status {
                ResultStatus::Ok => steward_run_status::STEWARD_RUN_OK,
                ResultStatus::Failed => steward_run_status::STEWARD_RUN_FAILED,
                ResultStatus::Unknown => steward_run_status::STEWARD_RUN_UNKNOWN,
            },
            exit_code: r.exit_code,
            stdout: Text::new(&r.stdout),
            stderr: Text::new(&r.stderr),
            truncated: r.truncated,
            duration_ms: r.duration_ms,
            node: Text::new(&r.node),
            error: r.error.as_deref().map(Text::new),
        }
    }
}

/// The state of one message this node sent, with its result once completed (opaque).
///
/// Obtained from `steward_node_message_status` / `steward_node_wait` (owned by the caller:
/// free with `steward_message_status_free`) or lent to a `steward_status_callback` (borrowed:
/// valid during the call, never free it). Immutable, so safe to read from several threads.
pub struct steward_message_status {
    id: Text,
    to_node: Text,
    subject: Text,
    state: steward_message_state,
    attempts: u32,
    reason: Option<Text>,
    refusal: steward_refusal,
    created_ms: u64,
    updated_ms: u64,
    message_json: Text,
    result: Option<ResultView>,
}

impl steward_message_status {
    pub(crate) fn new(s: &MessageStatus) -> steward_message_status {
        steward_message_status {
            id: Text::new(&s.id),
            to_node: Text::new(&s.to_node),
            subject: Text::new(&s.subject),
            state: state_of(s.state),
            attempts: s.attempts,
            reason: s.reason.as_deref().map(Text::new),
            refusal: refusal_of(s.refusal),
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            message_json: Text::new(&s.message.to_string()),
            result: s.result.as_ref().map(ResultView::new),
        }
    }
}

/// Borrows a status, or returns `$none` for NULL.
macro_rules! with {
    ($p:expr, $none:expr, |$s:ident| $body:expr) => {
        guard_value($none, || match unsafe { $p.as_ref() } {
            Some($s) => $body,
            None => $none,
        })
    };
}

/// The message id (never NULL for a non-NULL `status`). Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_id(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s.id.ptr())
}

/// The destination node. Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_to_node(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s.to_node.ptr())
}

/// The NATS subject the message travels on (`<toNode>.<command|event>.<method>`). Owned by
/// `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_subject(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s.subject.ptr())
}

/// The current state (`STEWARD_STATE_UNKNOWN` for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_state(
    status: *const steward_message_status,
) -> steward_message_state {
    with!(status, steward_message_state::STEWARD_STATE_UNKNOWN, |s| s
        .state)
}

/// Send attempts so far.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_attempts(
    status: *const steward_message_status,
) -> u32 {
    with!(status, 0, |s| s.attempts)
}

/// Why it failed, expired or was rejected; NULL when there is no reason. Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_reason(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s
        .reason
        .as_ref()
        .map_or(std::ptr::null(), |r| r.ptr()))
}

/// For a rejected message, why as a code when the receiver said (`STEWARD_REFUSAL_NONE`
/// otherwise, and for NULL): tells an access-list refusal from the others without reading
/// the reason's words.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_refusal(
    status: *const steward_message_status,
) -> steward_refusal {
    with!(status, steward_refusal::STEWARD_REFUSAL_NONE, |s| s.refusal)
}

/// When it was accepted (ms since the Unix epoch).
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_created_ms(
    status: *const steward_message_status,
) -> u64 {
    with!(status, 0, |s| s.created_ms)
}

/// When its state last changed (ms since the Unix epoch).
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_updated_ms(
    status: *const steward_message_status,
) -> u64 {
    with!(status, 0, |s| s.updated_ms)
}

/// The message as sent, as one JSON object in the `inmsg.txt` format (id and defaults filled
/// in). Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_message_json(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s.message_json.ptr())
}

/// How the method run ended: `STEWARD_RUN_NONE` while there is no result.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_run_status(
    status: *const steward_message_status,
) -> steward_run_status {
    with!(status, steward_run_status::STEWARD_RUN_NONE, |s| s
        .result
        .as_ref()
        .map_or(steward_run_status::STEWARD_RUN_NONE, |r| r.status))
}

/// Writes the process exit code to `*out` and returns true, if the result has one (commands
/// that ran a process that exited normally); otherwise returns false and leaves `*out` alone.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_exit_code(
    status: *const steward_message_status,
    out: *mut i32,
) -> bool {
    with!(status, false, |s| {
        match (s.result.as_ref().and_then(|r| r.exit_code), out.is_null()) {
            (Some(code), false) => {
                unsafe { *out = code };
                true
            }
            _ => false,
        }
    })
}

/// The captured standard output (or the method's reply text); "" without a result. It may
/// contain NUL bytes: its length in bytes goes to `*len` when `len` is not NULL. Owned by
/// `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_stdout(
    status: *const steward_message_status,
    len: *mut usize,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| match &s.result {
        Some(r) => unsafe { text_out(&r.stdout, len) },
        None => unsafe { text_out(empty(), len) },
    })
}

/// The captured standard error; "" without a result. Length to `*len` as for stdout. Owned by
/// `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_stderr(
    status: *const steward_message_status,
    len: *mut usize,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| match &s.result {
        Some(r) => unsafe { text_out(&r.stderr, len) },
        None => unsafe { text_out(empty(), len) },
    })
}

/// True when the output was cut at the receiver's capture limit.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_truncated(
    status: *const steward_message_status,
) -> bool {
    with!(status, false, |s| s
        .result
        .as_ref()
        .is_some_and(|r| r.truncated))
}

/// The method's run time in milliseconds (0 without a result).
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_duration_ms(
    status: *const steward_message_status,
) -> u64 {
    with!(status, 0, |s| s
        .result
        .as_ref()
        .map_or(0, |r| r.duration_ms))
}

/// The node that ran the method; NULL without a result. Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_result_node(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s
        .result
        .as_ref()
        .map_or(std::ptr::null(), |r| r.node.ptr()))
}

/// Why the method failed; NULL when it did not (or there is no result). Owned by `status`.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_result_error(
    status: *const steward_message_status,
) -> *const c_char {
    with!(status, std::ptr::null(), |s| s
        .result
        .as_ref()
        .and_then(|r| r.error.as_ref())
        .map_or(std::ptr::null(), |e| e.ptr()))
}

/// Frees a status returned by `steward_node_message_status` or `steward_node_wait`. NULL is
/// ignored. Never pass a status lent to a callback. Not thread-safe with other uses of the
/// same status.
#[no_mangle]
pub unsafe extern "C" fn steward_message_status_free(status: *mut steward_message_status) {
    guard_value((), || {
        if !status.is_null() {
            drop(unsafe { Box::from_raw(status) });
        }
    })
}

fn empty() -> &'static Text {
    static EMPTY: std::sync::OnceLock<Text> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Text::new(""))
}

/// One error report (opaque), lent to a `steward_error_callback` for the duration of the call.
pub struct steward_error_report {
    time_ms: u64,
    node: Text,
    message_id: Option<Text>,
    kind: steward_report_kind,
    reason: Text,
}

impl steward_error_report {
    pub(crate) fn new(r: &ErrorReport) -> steward_error_report {
        use steward_report_kind::*;
        steward_error_report {
            time_ms: r.time_ms,
            node: Text::new(&r.node),
            message_id: r.message_id.as_deref().map(Text::new),
            kind: match r.kind {
                ErrorReportKind::DeliveryFailed => STEWARD_REPORT_DELIVERY_FAILED,
                ErrorReportKind::Expired => STEWARD_REPORT_EXPIRED,
                ErrorReportKind::MethodFailed => STEWARD_REPORT_METHOD_FAILED,
                ErrorReportKind::Rejected => STEWARD_REPORT_REJECTED,
                ErrorReportKind::BadInput => STEWARD_REPORT_BAD_INPUT,
                ErrorReportKind::TaskFailed => STEWARD_REPORT_TASK_FAILED,
                ErrorReportKind::BrokerAuth => STEWARD_REPORT_BROKER_AUTH,
            },
            reason: Text::new(&r.reason),
        }
    }
}

/// When it happened (ms since the Unix epoch).
#[no_mangle]
pub unsafe extern "C" fn steward_error_report_time_ms(report: *const steward_error_report) -> u64 {
    with!(report, 0, |r| r.time_ms)
}

/// The reporting node. Owned by `report`.
#[no_mangle]
pub unsafe extern "C" fn steward_error_report_node(
    report: *const steward_error_report,
) -> *const c_char {
    with!(report, std::ptr::null(), |r| r.node.ptr())
}

/// The message concerned; NULL when the report is not about one message. Owned by `report`.
#[no_mangle]
pub unsafe extern "C" fn steward_error_report_message_id(
    report: *const steward_error_report,
) -> *const c_char {
    with!(report, std::ptr::null(), |r| r
        .message_id
        .as_ref()
        .map_or(std::ptr::null(), |t| t.ptr()))
}

/// What failed (`STEWARD_REPORT_TASK_FAILED` for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_error_report_kind(
    report: *const steward_error_report,
) -> steward_report_kind {
    with!(
        report,
        steward_report_kind::STEWARD_REPORT_TASK_FAILED,
        |r| r.kind
    )
}

/// Why, in words for the operator. Owned by `report`.
#[no_mangle]
pub unsafe extern "C" fn steward_error_report_reason(
    report: *const steward_error_report,
) -> *const c_char {
    with!(report, std::ptr::null(), |r| r.reason.ptr())
}

struct Destination {
    node: Text,
    pending: u64,
    completed: u64,
    failed: u64,
    last_ack_ms: Option<u64>,
    last_seen_ms: Option<u64>,
}

/// What a node knows about each destination it sent to (opaque list).
///
/// Returned by `steward_node_destinations`; owned by the caller, free with
/// `steward_destination_list_free`. Immutable, so safe to read from several threads.
pub struct steward_destination_list {
    items: Vec<Destination>,
}

impl steward_destination_list {
    pub(crate) fn new(items: &[DestinationStatus]) -> steward_destination_list {
        steward_destination_list {
            items: items
                .iter()
                .map(|d| Destination {
                    node: Text::new(&d.node),
                    pending: d.pending,
                    completed: d.completed,
                    failed: d.failed,
                    last_ack_ms: d.last_ack_ms,
                    last_seen_ms: d.last_seen_ms,
                })
                .collect(),
        }
    }
}

fn dest<'a>(list: *const steward_destination_list, i: usize) -> Option<&'a Destination> {
    // SAFETY: the caller passes a live list; the reference does not outlive this call chain.
    unsafe { list.as_ref() }.and_then(|l| l.items.get(i))
}

/// The number of destinations (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_len(
    list: *const steward_destination_list,
) -> usize {
    with!(list, 0, |l| l.items.len())
}

/// The node name of destination `i`; NULL if `i` is out of range. Owned by `list`.
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_node(
    list: *const steward_destination_list,
    i: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        dest(list, i).map_or(std::ptr::null(), |d| d.node.ptr())
    })
}

/// Messages to destination `i` accepted and not yet final (0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_pending(
    list: *const steward_destination_list,
    i: usize,
) -> u64 {
    guard_value(0, || dest(list, i).map_or(0, |d| d.pending))
}

/// Messages to destination `i` completed (0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_completed(
    list: *const steward_destination_list,
    i: usize,
) -> u64 {
    guard_value(0, || dest(list, i).map_or(0, |d| d.completed))
}

/// Messages to destination `i` failed, expired, rejected or cancelled (0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_failed(
    list: *const steward_destination_list,
    i: usize,
) -> u64 {
    guard_value(0, || dest(list, i).map_or(0, |d| d.failed))
}

/// Writes the time of the last ACK or result from destination `i` (ms since the Unix epoch)
/// to `*out` and returns true; false (leaving `*out` alone) if there was none or `i` is out of
/// range.
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_last_ack_ms(
    list: *const steward_destination_list,
    i: usize,
    out: *mut u64,
) -> bool {
    guard_value(false, || {
        opt_out(dest(list, i).and_then(|d| d.last_ack_ms), out)
    })
}

/// Like `steward_destination_list_last_ack_ms`, for the last message of any kind from it.
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_last_seen_ms(
    list: *const steward_destination_list,
    i: usize,
    out: *mut u64,
) -> bool {
    guard_value(false, || {
        opt_out(dest(list, i).and_then(|d| d.last_seen_ms), out)
    })
}

fn opt_out(v: Option<u64>, out: *mut u64) -> bool {
    match v {
        Some(v) if !out.is_null() => {
            unsafe { *out = v };
            true
        }
        _ => false,
    }
}

/// Frees a destination list. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_destination_list_free(list: *mut steward_destination_list) {
    guard_value((), || {
        if !list.is_null() {
            drop(unsafe { Box::from_raw(list) });
        }
    })
}

struct Accepted {
    index: usize,
    id: Text,
}

struct Refused {
    index: i64,
    code: steward_result,
    message: Text,
}

/// What `steward_node_send_json` did with each element of a JSON batch (opaque): the ids of
/// the accepted messages (durably stored, in input order) and one error per refused element.
///
/// Owned by the caller: free with `steward_send_report_free`. Immutable, so safe to read from
/// several threads.
pub struct steward_send_report {
    accepted: Vec<Accepted>,
    rejected: Vec<Refused>,
}

impl steward_send_report {
    pub(crate) fn new(report: &steward::SendReport) -> steward_send_report {
        let accepted = report
            .accepted
            .iter()
            .map(|(index, receipt)| Accepted {
                index: *index,
                id: Text::new(&receipt.id),
            })
            .collect();
        let rejected = report
            .rejected
            .iter()
            .map(|e| {
                let index = match e {
                    steward::Error::InvalidMessage { index: Some(i), .. } => *i as i64,
                    _ => -1,
                };
                let ffi = FfiError::from_ref(e);
                Refused {
                    index,
                    code: ffi.code,
                    message: Text::new(&ffi.message),
                }
            })
            .collect();
        steward_send_report { accepted, rejected }
    }
}

/// The number of accepted messages (0 for NULL). A `toNodes` element gives one per node.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_accepted_len(
    report: *const steward_send_report,
) -> usize {
    with!(report, 0, |r| r.accepted.len())
}

/// The id of accepted message `i`; NULL if out of range. Owned by `report`.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_accepted_id(
    report: *const steward_send_report,
    i: usize,
) -> *const c_char {
    with!(report, std::ptr::null(), |r| r
        .accepted
        .get(i)
        .map_or(std::ptr::null(), |a| a.id.ptr()))
}

/// The position in the JSON array of the element accepted message `i` came from (0 for a
/// single object); -1 if out of range.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_accepted_index(
    report: *const steward_send_report,
    i: usize,
) -> i64 {
    with!(report, -1, |r| r
        .accepted
        .get(i)
        .map_or(-1, |a| a.index as i64))
}

/// The number of refused elements (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_rejected_len(
    report: *const steward_send_report,
) -> usize {
    with!(report, 0, |r| r.rejected.len())
}

/// The result code of refused element `i` (such as `STEWARD_RESULT_INVALID_MESSAGE`);
/// `STEWARD_RESULT_OK` if out of range.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_rejected_code(
    report: *const steward_send_report,
    i: usize,
) -> steward_result {
    with!(report, steward_result::STEWARD_RESULT_OK, |r| r
        .rejected
        .get(i)
        .map_or(steward_result::STEWARD_RESULT_OK, |e| e.code))
}

/// What is wrong with refused element `i`, naming its index and field; NULL if out of range.
/// Owned by `report`.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_rejected_message(
    report: *const steward_send_report,
    i: usize,
) -> *const c_char {
    with!(report, std::ptr::null(), |r| r
        .rejected
        .get(i)
        .map_or(std::ptr::null(), |e| e.message.ptr()))
}

/// The position in the JSON array of refused element `i`; -1 if unknown or out of range.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_rejected_index(
    report: *const steward_send_report,
    i: usize,
) -> i64 {
    with!(report, -1, |r| r.rejected.get(i).map_or(-1, |e| e.index))
}

/// Frees a send report. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_send_report_free(report: *mut steward_send_report) {
    guard_value((), || {
        if !report.is_null() {
            drop(unsafe { Box::from_raw(report) });
        }
    })
}
