//! Methods and events served by C functions: the request view, the completion handle, and the
//! handlers that run C code off the I/O threads.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use steward::{Kind, Method, MethodResult, Request};
use tokio::sync::oneshot;

use crate::boundary::{arg_str, guard, guard_value, text_out, Text};
use crate::error::{steward_result, FfiError};
use crate::slot::Slot;

/// Whether a message asks for something to be run (command) or delivers something (event).
/// Numbers are stable.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_kind {
    /// Run something and reply with its result.
    STEWARD_KIND_COMMAND = 0,
    /// Deliver something; the reply says it was handled.
    STEWARD_KIND_EVENT = 1,
}

/// Reads a `steward_kind` passed as a number (C may pass any value).
pub(crate) fn kind_arg(kind: u32) -> Result<Kind, FfiError> {
    match kind {
        0 => Ok(Kind::Command),
        1 => Ok(Kind::Event),
        n => Err(FfiError::invalid(format!(
            "kind {n} is not a steward_kind; use STEWARD_KIND_COMMAND (0) or STEWARD_KIND_EVENT (1)"
        ))),
    }
}

/// One incoming message handed to a method or event callback (opaque, borrowed for the
/// duration of the call: copy what you need, never free it). Immutable.
pub struct steward_request {
    id: Text,
    from_node: Text,
    to_node: Text,
    method: Text,
    kind: steward_kind,
    data: Vec<Text>,
    method_timeout_ms: u64,
    data_dir: Text,
}

impl steward_request {
    fn new(r: &Request) -> steward_request {
        steward_request {
            id: Text::new(&r.id),
            from_node: Text::new(&r.from_node),
            to_node: Text::new(&r.to_node),
            method: Text::new(&r.method),
            kind: match r.kind {
                Kind::Command => steward_kind::STEWARD_KIND_COMMAND,
                Kind::Event => steward_kind::STEWARD_KIND_EVENT,
            },
            data: r.data.iter().map(|s| Text::new(s)).collect(),
            method_timeout_ms: r.method_timeout.as_millis() as u64,
            data_dir: Text::new(&r.data_dir.to_string_lossy()),
        }
    }
}

macro_rules! with {
    ($p:expr, $none:expr, |$s:ident| $body:expr) => {
        guard_value($none, || match unsafe { $p.as_ref() } {
            Some($s) => $body,
            None => $none,
        })
    };
}

/// The message id (the same on a resend). Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_id(request: *const steward_request) -> *const c_char {
    with!(request, std::ptr::null(), |r| r.id.ptr())
}

/// The sending node (checked against the access list). Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_from_node(
    request: *const steward_request,
) -> *const c_char {
    with!(request, std::ptr::null(), |r| r.from_node.ptr())
}

/// This node's name. Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_to_node(request: *const steward_request) -> *const c_char {
    with!(request, std::ptr::null(), |r| r.to_node.ptr())
}

/// The method called. Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_method(request: *const steward_request) -> *const c_char {
    with!(request, std::ptr::null(), |r| r.method.ptr())
}

/// Command or event (`STEWARD_KIND_COMMAND` for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_request_kind(request: *const steward_request) -> steward_kind {
    with!(request, steward_kind::STEWARD_KIND_COMMAND, |r| r.kind)
}

/// The number of data arguments (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_request_data_len(request: *const steward_request) -> usize {
    with!(request, 0, |r| r.data.len())
}

/// Data argument `i` (NULL if out of range). Arguments are passed literally, never through a
/// shell; one may contain NUL bytes, so its length goes to `*len` when `len` is not NULL.
/// Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_data_at(
    request: *const steward_request,
    i: usize,
    len: *mut usize,
) -> *const c_char {
    with!(request, std::ptr::null(), |r| match r.data.get(i) {
        Some(t) => unsafe { text_out(t, len) },
        None => std::ptr::null(),
    })
}

/// How long the method may run (ms); the request fails if the completion is not finished by
/// then.
#[no_mangle]
pub unsafe extern "C" fn steward_request_method_timeout_ms(request: *const steward_request) -> u64 {
    with!(request, 0, |r| r.method_timeout_ms)
}

/// This node's data directory. Owned by `request`.
#[no_mangle]
pub unsafe extern "C" fn steward_request_data_dir(
    request: *const steward_request,
) -> *const c_char {
    with!(request, std::ptr::null(), |r| r.data_dir.ptr())
}

/// The handle that finishes one request of a C method (opaque).
///
/// It is a token, not memory: it stays "pending" until the first of
/// `steward_completion_ok` / `steward_completion_fail`, the method timeout, or the node's stop.
/// Finishing it again, or after that, is detected and returns
/// `STEWARD_RESULT_COMPLETION_NOT_PENDING`; nothing needs to be freed, and a completion never
/// finished leaks nothing.
pub struct steward_completion {
    _private: [u8; 0],
}

struct Pending {
    node_id: u64,
    method: String,
    node: String,
    tx: oneshot::Sender<MethodResult>,
}

#[derive(Default)]
struct Registry {
    next: usize,
    pending: HashMap<usize, Pending>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Registers a pending completion unless the node is stopping (checked under the registry
/// lock, so `abandon` never misses one).
fn register(
    node_id: u64,
    stopping: &AtomicBool,
    req: &Request,
    tx: oneshot::Sender<MethodResult>,
) -> Option<usize> {
    let mut reg = registry();
    if stopping.load(Ordering::SeqCst) {
        return None;
    }
    reg.next += 1;
    let token = reg.next;
    reg.pending.insert(
        token,
        Pending {
            node_id,
            method: req.method.clone(),
            node: req.to_node.clone(),
            tx,
        },
    );
    Some(token)
}

/// Finishes a pending completion; false if it was not pending.
fn complete(token: usize, result: MethodResult) -> bool {
    let pending = registry().pending.remove(&token);
    match pending {
        Some(p) => {
            let _ = p.tx.send(result);
            true
        }
        None => false,
    }
}

/// Marks node `node_id` as stopping and finishes its pending completions with an unknown
/// outcome, so stopping never waits for C code that will not complete.
pub(crate) fn abandon(node_id: u64, stopping: &AtomicBool) {
    let drained: Vec<Pending> = {
        let mut reg = registry();
        stopping.store(true, Ordering::SeqCst);
        let tokens: Vec<usize> = reg
            .pending
            .iter()
            .filter(|(_, p)| p.node_id == node_id)
            .map(|(t, _)| *t)
            .collect();
        tokens
            .into_iter()
            .filter_map(|t| reg.pending.remove(&t))
            .collect()
    };
    for p in drained {
        let _ = p.tx.send(MethodResult::unknown(format!(
            "{} stopped before the C handler for {} completed; its outcome is unknown",
            p.node, p.method
        )));
    }
}

/// Removes a token when the request's future ends (timeout, stop), so late completions are
/// detected rather than kept.
struct TokenGuard(usize);

impl Drop for TokenGuard {
    fn drop(&mut self) {
        registry().pending.remove(&self.0);
    }
}

pub(crate) type MethodCall =
    unsafe extern "C" fn(*mut c_void, *const steward_request, *mut steward_completion);
pub(crate) type EventCall = unsafe extern "C" fn(*mut c_void, *const steward_request);

/// A C callback serving a method or handling an event.
pub(crate) enum Served {
    Method(Slot<MethodCall>),
    Event(Slot<EventCall>),
}

impl Served {
    pub(crate) fn close(&self) {
        match self {
            Served::Method(s) => s.close(),
            Served::Event(s) => s.close(),
        }
    }
    pub(crate) fn disarm(&self) {
        match self {
            Served::Method(s) => s.disarm(),
            Served::Event(s) => s.disarm(),
        }
    }
}

/// The core method that runs `served` for each request.
pub(crate) fn method_for(
    kind: Kind,
    served: Arc<Served>,
    node_id: u64,
    stopping: Arc<AtomicBool>,
) -> Method {
    Method::new(kind, move |req: Request| {
        run(served.clone(), node_id, stopping.clone(), req)
    })
}

async fn run(
    served: Arc<Served>,
    node_id: u64,
    stopping: Arc<AtomicBool>,
    req: Request,
) -> MethodResult {
    let (tx, rx) = oneshot::channel();
    let Some(token) = register(node_id, &stopping, &req, tx) else {
        return MethodResult::failed(format!(
            "{} was stopping, so {} was not run; send it again",
            req.to_node, req.method
        ));
    };
    let _guard = TokenGuard(token);
    let view = steward_request::new(&req);
    let method = req.method.clone();
    // C code may block for long: it runs on the blocking pool, never on an I/O thread.
    drop(tokio::task::spawn_blocking(move || {
        let ran = match &*served {
            Served::Method(slot) => slot
                .invoke(|ctx, call| unsafe { call(ctx, &view, token as *mut steward_completion) }),
            Served::Event(slot) => {
                let ran = slot.invoke(|ctx, call| unsafe { call(ctx, &view) });
                if ran {
                    complete(token, MethodResult::ok(""));
                }
                ran
            }
        };
        if !ran {
            complete(
                token,
                MethodResult::failed(format!("{method} is no longer served here")),
            );
        }
    }));
    match tokio::time::timeout(req.method_timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => MethodResult::unknown(format!(
            "the C handler for {} was dropped before it completed",
            req.method
        )),
        Err(_) => MethodResult::failed(format!(
            "the C handler for {} did not complete within {} ms",
            req.method,
            req.method_timeout.as_millis()
        )),
    }
}

fn finish(completion: *mut steward_completion, result: MethodResult) -> Result<(), FfiError> {
    if !complete(completion as usize, result) {
        return Err(FfiError::new(
            steward_result::STEWARD_RESULT_COMPLETION_NOT_PENDING,
            "this completion is not pending: it was already finished, its method timed out, or its node stopped",
        ));
    }
    Ok(())
}

/// Finishes a request successfully with `output` as its reply text (the sender sees it as the
/// result's stdout). `output` may be NULL for no text; it is copied.
///
/// Call exactly once per completion, from any thread, during or after the method callback.
/// Returns `STEWARD_RESULT_OK`; `STEWARD_RESULT_COMPLETION_NOT_PENDING` if the completion was
/// already finished, timed out or abandoned by a stop (harmless); `STEWARD_RESULT_NULL_PARAMETER`
/// or `STEWARD_RESULT_INVALID_UTF8` for bad arguments (the completion then stays pending).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_completion_ok(
    completion: *mut steward_completion,
    output: *const c_char,
) -> steward_result {
    guard(|| {
        if completion.is_null() {
            return Err(FfiError::null("completion"));
        }
        let text = if output.is_null() {
            ""
        } else {
            unsafe { arg_str(output, "output") }?
        };
        finish(completion, MethodResult::ok(text))
    })
}

/// Finishes a request as failed with `reason` (required, copied); the sender sees a failed
/// result with this error. Same rules as `steward_completion_ok`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_completion_fail(
    completion: *mut steward_completion,
    reason: *const c_char,
) -> steward_result {
    guard(|| {
        if completion.is_null() {
            return Err(FfiError::null("completion"));
        }
        let reason = unsafe { arg_str(reason, "reason") }?;
        finish(completion, MethodResult::failed(reason))
    })
}
