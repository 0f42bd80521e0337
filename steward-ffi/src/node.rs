//! The node handle: starting a node on its own runtime, sending, querying, callbacks, stopping.

use std::collections::HashMap;
use std::ffi::c_char;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use steward::{AccessList, ListenerId, Node, NodeBuilder};
use tokio::runtime::{Handle, Runtime};

use crate::boundary::{
    arg_millis, arg_ref, arg_str, guard, guard_value, in_callback_of, out_arg, Text,
};
use crate::callback::{
    steward_error_callback, steward_event_callback, steward_method_callback,
    steward_status_callback, ErrorCall, StatusCall,
};
use crate::config::{method_name_arg, steward_node_builder};
use crate::error::{steward_result, FfiError};
use crate::message::{steward_message, STEWARD_ID_BUF_LEN};
use crate::method::{self, kind_arg, EventCall, MethodCall, Served};
use crate::slot::{take, Closable, Slot};
use crate::status::{
    steward_destination_list, steward_error_report, steward_message_status, steward_send_report,
};

/// How long stopping waits for the runtime's remaining tasks before dropping them.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);
/// Tokio worker threads per node.
const WORKER_THREADS: usize = 2;

/// A running (or stopped) steward node with its own tokio runtime (opaque).
///
/// Created by `steward_node_start`; stopped by `steward_node_stop`; freed by
/// `steward_node_free`. Every function taking a node is thread-safe (the node may be used from
/// several threads at once) except `steward_node_free`, which must be the last use.
pub struct steward_node {
    name: Text,
    public_key: Text,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: u64,
    running: Mutex<Option<Running>>,
    /// Held for the whole stop, so a second stop returns only when the first is done.
    stop_lock: Mutex<()>,
    stopping: Arc<AtomicBool>,
    callbacks: Mutex<Callbacks>,
}

struct Running {
    rt: Runtime,
    node: Node,
}

#[derive(Default)]
struct Callbacks {
    next_listener: u64,
    listeners: HashMap<u64, (ListenerId, Arc<dyn Closable>)>,
    served: HashMap<String, Arc<Served>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The runtime handle and node, or `STOPPED` (also while a stop is under way, so calls
    /// from callbacks still finishing get a clear answer).
    fn live(&self) -> Result<(Handle, Node), FfiError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(FfiError::stopped());
        }
        lock(&self.running)
            .as_ref()
            .map(|r| (r.rt.handle().clone(), r.node.clone()))
            .ok_or_else(FfiError::stopped)
    }

    fn stop(&self) -> Result<(), FfiError> {
        if in_callback_of(self.id) {
            return Err(FfiError::new(
                steward_result::STEWARD_RESULT_IN_CALLBACK,
                "steward_node_stop was called from one of this node's own callbacks, where it would wait for itself; call it from another thread",
            ));
        }
        let _stop = lock(&self.stop_lock);
        let Some((handle, node)) = lock(&self.running)
            .as_ref()
            .map(|r| (r.rt.handle().clone(), r.node.clone()))
        else {
            return Ok(());
        };
        // C completions still pending are finished as "unknown" first, so the node's stop
        // never waits for C code that might not complete.
        method::abandon(self.id, &self.stopping);
        let stopper = node.clone();
        let _ = block(&handle, async move { stopper.stop().await });
        drop(node);
        // The core no longer calls anything; wait for C calls still running, then run drops.
        let cbs = std::mem::take(&mut *lock(&self.callbacks));
        for (_, (_, slot)) in cbs.listeners {
            slot.close();
        }
        for (_, served) in cbs.served {
            served.close();
        }
        if let Some(running) = lock(&self.running).take() {
            shutdown(running);
        }
        Ok(())
    }
}

/// Drops the node and shuts its runtime down on a fresh thread, where no runtime context can
/// make tokio refuse to block.
fn shutdown(running: Running) {
    let worker = std::thread::Builder::new()
        .name("steward-shutdown".into())
        .spawn(move || {
            let Running { rt, node } = running;
            {
                let _ctx = rt.enter();
                drop(node);
            }
            rt.shutdown_timeout(RUNTIME_SHUTDOWN);
        });
    if let Ok(w) = worker {
        let _ = w.join();
    }
}

/// Runs `fut` on the node's runtime and waits for it from this (non-runtime) thread. Works
/// from any thread, including the runtime's blocking pool, where C callbacks run.
pub(crate) fn block<T: Send + 'static>(
    rt: &Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, FfiError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // A runtime shut down meanwhile drops the task, and with it the sender.
    rx.recv().map_err(|_| FfiError::stopped())
}

fn finished_listener(node: &Node, slot: Arc<Slot<StatusCall>>) -> ListenerId {
    node.on_finished(move |st| {
        slot.invoke(|ctx, call| {
            let view = steward_message_status::new(st);
            unsafe { call(ctx, &view) }
        });
    })
}

fn error_listener(node: &Node, slot: Arc<Slot<ErrorCall>>) -> ListenerId {
    node.on_error(move |r| {
        slot.invoke(|ctx, call| {
            let view = steward_error_report::new(r);
            unsafe { call(ctx, &view) }
        });
    })
}

fn build_runtime(name: &str) -> Result<Runtime, FfiError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name(format!("steward-{name}"))
        .enable_all()
        .build()
        .map_err(|e| {
            FfiError::new(
                steward_result::STEWARD_RESULT_CONFIG,
                format!("cannot start the node's runtime: {e}"),
            )
        })
}

/// Starts a node from `builder`: opens its store in the data directory, connects to the broker
/// (retrying in the background if it is down), resumes unfinished work and starts serving.
/// The node runs on its own tokio runtime (2 worker threads) owned by the node handle.
///
/// Ownership: this function always takes a non-NULL `builder`, whatever it returns. On
/// success the node owns what the builder held; on every failure (also
/// `STEWARD_RESULT_NULL_PARAMETER` for a NULL `out`) the builder is freed here and the `drop`
/// of each callback it held has run. Either way, never use or free the builder after this
/// call. (A NULL `builder` returns `STEWARD_RESULT_NULL_PARAMETER`.) On success writes the
/// node to `*out`; the caller owns it and frees it with `steward_node_free`.
///
/// Errors: `STEWARD_RESULT_DATA_DIR_IN_USE`, `STEWARD_RESULT_STORAGE`,
/// `STEWARD_RESULT_CONFIG` (also for unreadable credential or certificate files),
/// `STEWARD_RESULT_INVALID_NAME`, `STEWARD_RESULT_BROKER_UNAVAILABLE` (an unusable URL),
/// `STEWARD_RESULT_BROKER_AUTH` (the broker answered but refused the node: credentials not
/// accepted, untrusted certificate, TLS refused; nothing runs), ... with details in
/// `steward_last_error_message`. Thread-safe (for different builders); blocks until the node
/// runs (a broker that is down does not block: the node connects in the background; one that
/// takes more than 5 s to answer is treated as down).
#[no_mangle]
pub unsafe extern "C" fn steward_node_start(
    builder: *mut steward_node_builder,
    out: *mut *mut steward_node,
) -> steward_result {
    guard(|| {
        if builder.is_null() {
            return Err(FfiError::null("builder"));
        }
        // Taken before any other check, so every return below frees it (and runs the drops of
        // its callbacks): the caller never has to.
        let b = unsafe { Box::from_raw(builder) };
        let out = out_arg(out, "out")?;
        let node = start(*b)?;
        unsafe { *out = Box::into_raw(Box::new(node)) };
        Ok(())
    })
}

fn start(b: steward_node_builder) -> Result<steward_node, FfiError> {
    let steward_node_builder {
        id,
        mut cfg,
        allow,
        access_cleared,
        methods,
        finished,
        errors,
        ..
    } = b;
    let mut access = if access_cleared {
        AccessList::empty()
    } else {
        AccessList::default_for_node(&cfg.name, &cfg.central)
    };
    for rule in allow {
        access.push(rule);
    }
    cfg.access = access;
    let name = cfg.name.clone();
    let stopping = Arc::new(AtomicBool::new(false));
    let mut builder = NodeBuilder::from_config(cfg);
    let mut served = HashMap::new();
    for (method_name, kind, s) in methods {
        builder = builder.method(
            method_name.clone(),
            method::method_for(kind, s.clone(), id, stopping.clone()),
        );
        served.insert(method_name, s);
    }
    let rt = build_runtime(&name)?;
    let node = match block(rt.handle(), builder.start()) {
        Ok(Ok(node)) => node,
        Ok(Err(e)) => {
            drop(served);
            shutdown_runtime_only(rt);
            return Err(e.into());
        }
        Err(e) => {
            shutdown_runtime_only(rt);
            return Err(e);
        }
    };
    let mut cbs = Callbacks {
        served,
        ..Callbacks::default()
    };
    for slot in finished {
        let lid = finished_listener(&node, slot.clone());
        cbs.next_listener += 1;
        cbs.listeners.insert(cbs.next_listener, (lid, slot));
    }
    for slot in errors {
        let lid = error_listener(&node, slot.clone());
        cbs.next_listener += 1;
        cbs.listeners.insert(cbs.next_listener, (lid, slot));
    }
    Ok(steward_node {
        name: Text::new(&name),
        public_key: Text::new(&node.public_key().to_string()),
        shared: Arc::new(Shared {
            id,
            running: Mutex::new(Some(Running { rt, node })),
            stop_lock: Mutex::new(()),
            stopping,
            callbacks: Mutex::new(cbs),
        }),
    })
}

fn shutdown_runtime_only(rt: Runtime) {
    let worker = std::thread::Builder::new()
        .name("steward-shutdown".into())
        .spawn(move || rt.shutdown_timeout(RUNTIME_SHUTDOWN));
    if let Ok(w) = worker {
        let _ = w.join();
    }
}

/// Stops the node: no new input, running methods get a short grace period, unfinished work
/// stays on disk to resume at the next start, and the node's runtime is shut down.
///
/// When it returns, no callback of this node is running or will run again, and the `drop` of
/// every callback has run exactly once. C method completions still pending are abandoned: the
/// request is recorded as finished with outcome UNKNOWN ("<node> stopped before the C handler
/// for <method> completed"), which the sender receives as a completed message whose run status
/// is `STEWARD_RUN_UNKNOWN` (right away if the broker is reachable, otherwise when this node
/// next starts with the same data directory); finishing such a completion later returns
/// `STEWARD_RESULT_COMPLETION_NOT_PENDING`.
///
/// Idempotent: stopping a stopped node returns `STEWARD_RESULT_OK`; concurrent calls all return
/// after the stop is complete. Returns `STEWARD_RESULT_IN_CALLBACK` (and does nothing) when
/// called from one of this node's own callbacks or callback `drop`s, where it would wait for
/// itself. Thread-safe. The handle stays valid until `steward_node_free`; other functions then
/// return `STEWARD_RESULT_STOPPED`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_stop(node: *mut steward_node) -> steward_result {
    guard(|| {
        let n = unsafe { arg_ref(node.cast_const(), "node") }?;
        n.shared.stop()
    })
}

/// Stops the node (if still running) and frees the handle. NULL is ignored. The handle must not
/// be used afterwards, and no other thread may be using it.
///
/// If called from one of this node's own callbacks, the stop and release happen on a helper
/// thread once that callback has returned (the handle must not be used afterwards either way).
#[no_mangle]
pub unsafe extern "C" fn steward_node_free(node: *mut steward_node) {
    guard_value((), || {
        if node.is_null() {
            return;
        }
        let n = unsafe { Box::from_raw(node) };
        if in_callback_of(n.shared.id) {
            let spawned = std::thread::Builder::new()
                .name("steward-free".into())
                .spawn(move || {
                    let _ = n.shared.stop();
                    drop(n);
                });
            if spawned.is_err() {
                // No thread: nothing safe is left to do but leave the node running.
                tracing_free_failed();
            }
        } else {
            let _ = n.shared.stop();
        }
    })
}

fn tracing_free_failed() {
    eprintln!(
        "steward: cannot start a thread to free a node from its own callback; it is left running"
    );
}

/// The node's name. Owned by `node`, valid until `steward_node_free`; NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_node_name(node: *const steward_node) -> *const c_char {
    guard_value(std::ptr::null(), || match unsafe { node.as_ref() } {
        Some(n) => n.name.ptr(),
        None => std::ptr::null(),
    })
}

/// The node's public key (base64, 44 characters; also in `node.pub` beside its private key):
/// what other nodes pin (`steward_node_builder_set_central_key`) or trust
/// (`steward_node_builder_trust_key`). Owned by `node`, valid until `steward_node_free`; NULL
/// for NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_node_public_key(node: *const steward_node) -> *const c_char {
    guard_value(std::ptr::null(), || match unsafe { node.as_ref() } {
        Some(n) => n.public_key.ptr(),
        None => std::ptr::null(),
    })
}

/// True while the node is running and connected to a broker. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_is_connected(node: *const steward_node) -> bool {
    guard_value(false, || match unsafe { node.as_ref() } {
        Some(n) => n.shared.live().is_ok_and(|(_, node)| node.is_connected()),
        None => false,
    })
}

/// The core node behind a handle argument, for the functions of other modules.
///
/// # Safety
/// `node` must be NULL or a live handle.
pub(crate) unsafe fn live_node(node: *const steward_node) -> Result<Node, FfiError> {
    let n = unsafe { arg_ref(node, "node") }?;
    n.shared.live().map(|(_, live)| live)
}

pub(crate) fn with_node(
    node: *const steward_node,
    f: impl FnOnce(&Shared, Handle, Node) -> Result<(), FfiError>,
) -> steward_result {
    guard(|| {
        let n = unsafe { arg_ref(node, "node") }?;
        let (handle, live) = n.shared.live()?;
        f(&n.shared, handle, live)
    })
}

/// Sends messages given as JSON in the `inmsg.txt` format: one message object or an array of
/// them, e.g. `[{"toNode":"ship1","data":["bash","-c","ls -l ../"],
/// "commandOrEvent":"command","method":"shellCommand"}]`.
///
/// Valid elements are durably accepted (fsync'd) even when others are refused. On
/// `STEWARD_RESULT_OK` writes a report to `*out` (owned by the caller, free with
/// `steward_send_report_free`) listing the accepted ids and one error (code, message naming the
/// index and field) per refused element: check `steward_send_report_rejected_len`.
/// Returns `STEWARD_RESULT_INVALID_MESSAGE` when the text is not JSON at all (nothing sent),
/// `STEWARD_RESULT_STORAGE` when the store failed (nothing sent), `STEWARD_RESULT_STOPPED`,
/// or argument errors. `json` is copied. Thread-safe; blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_send_json(
    node: *const steward_node,
    json: *const c_char,
    out: *mut *mut steward_send_report,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let json = unsafe { arg_str(json, "json") }?.to_owned();
        let out = out_arg(out, "out")?;
        let report = block(&handle, async move { live.send_json(&json).await })??;
        let report = steward_send_report::new(&report);
        unsafe { *out = Box::into_raw(Box::new(report)) };
        Ok(())
    })
}

/// Sends one message built with the `steward_message_*` setters; `message` is not consumed.
///
/// On `STEWARD_RESULT_OK` the message is durably accepted and its id (at most 64 characters) is
/// written NUL-terminated to `out_id`, a caller buffer of `out_id_len` bytes, which must be at
/// least `STEWARD_ID_BUF_LEN` (checked before sending: `STEWARD_RESULT_BUFFER_TOO_SMALL`).
/// Errors: `STEWARD_RESULT_INVALID_MESSAGE` (missing destination or method, out-of-range
/// option), `STEWARD_RESULT_STORAGE`, `STEWARD_RESULT_STOPPED`, argument errors. Thread-safe;
/// blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_send(
    node: *const steward_node,
    message: *const steward_message,
    out_id: *mut c_char,
    out_id_len: usize,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let m = unsafe { arg_ref(message, "message") }?.to_message()?;
        let out_id = out_arg(out_id, "out_id")?;
        if out_id_len < STEWARD_ID_BUF_LEN {
            return Err(FfiError::new(
                steward_result::STEWARD_RESULT_BUFFER_TOO_SMALL,
                format!("out_id has {out_id_len} bytes; pass at least STEWARD_ID_BUF_LEN ({STEWARD_ID_BUF_LEN})"),
            ));
        }
        let receipt = block(&handle, async move { live.send(m).await })??;
        let id = receipt.id.as_bytes();
        let n = id.len().min(STEWARD_ID_BUF_LEN - 1);
        unsafe {
            std::ptr::copy_nonoverlapping(id.as_ptr(), out_id.cast::<u8>(), n);
            *out_id.add(n) = 0;
        }
        Ok(())
    })
}

/// The current state of message `id` sent by this node. On `STEWARD_RESULT_OK` writes a status
/// to `*out` (owned by the caller, free with `steward_message_status_free`). Returns
/// `STEWARD_RESULT_NOT_FOUND` for an unknown id. `id` is copied. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_message_status(
    node: *const steward_node,
    id: *const c_char,
    out: *mut *mut steward_message_status,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let id = unsafe { arg_str(id, "id") }?.to_owned();
        let out = out_arg(out, "out")?;
        let wanted = id.clone();
        let st = block(&handle, async move { live.message(&wanted).await })??;
        let st = st.ok_or_else(|| FfiError::from(steward::Error::NotFound(id)))?;
        unsafe { *out = Box::into_raw(Box::new(steward_message_status::new(&st))) };
        Ok(())
    })
}

/// Waits up to `timeout_ms` (0 to 7 days) for message `id` to reach a final state (completed,
/// failed, expired, rejected, cancelled). On `STEWARD_RESULT_OK` writes its status to `*out`
/// (owned by the caller, free with `steward_message_status_free`). Returns
/// `STEWARD_RESULT_TIMED_OUT`, `STEWARD_RESULT_NOT_FOUND`, `STEWARD_RESULT_STOPPED` (the node
/// stopped while waiting). Thread-safe; blocks the calling thread.
#[no_mangle]
pub unsafe extern "C" fn steward_node_wait(
    node: *const steward_node,
    id: *const c_char,
    timeout_ms: i64,
    out: *mut *mut steward_message_status,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let id = unsafe { arg_str(id, "id") }?.to_owned();
        let out = out_arg(out, "out")?;
        let limit = arg_millis(timeout_ms, "timeout", steward::MAX_METHOD_TIMEOUT)?;
        let wanted = id.clone();
        let st = block(&handle, async move {
            tokio::time::timeout(limit, live.wait(&wanted)).await
        })?;
        let st = match st {
            Ok(r) => r?,
            Err(_) => {
                return Err(FfiError::from(steward::Error::TimedOut(format!(
                    "message {id} to reach a final state within {timeout_ms} ms"
                ))))
            }
        };
        unsafe { *out = Box::into_raw(Box::new(steward_message_status::new(&st))) };
        Ok(())
    })
}

/// Cancels message `id` if its destination has not received it yet. On `STEWARD_RESULT_OK`
/// writes to `*out_cancelled` whether it was cancelled (false: too late). Returns
/// `STEWARD_RESULT_NOT_FOUND` for an unknown id. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_cancel(
    node: *const steward_node,
    id: *const c_char,
    out_cancelled: *mut bool,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let id = unsafe { arg_str(id, "id") }?.to_owned();
        let out = out_arg(out_cancelled, "out_cancelled")?;
        let done = block(&handle, async move { live.cancel(&id).await })??;
        unsafe { *out = done };
        Ok(())
    })
}

/// What this node knows of every destination it sent to. On `STEWARD_RESULT_OK` writes a list
/// to `*out` (owned by the caller, free with `steward_destination_list_free`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_destinations(
    node: *const steward_node,
    out: *mut *mut steward_destination_list,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let out = out_arg(out, "out")?;
        let list = block(&handle, async move { live.destinations() })??;
        unsafe { *out = Box::into_raw(Box::new(steward_destination_list::new(&list))) };
        Ok(())
    })
}

fn serve(
    shared: &Shared,
    live: &Node,
    method: &str,
    kind: steward::Kind,
    served: Arc<Served>,
) -> Result<(), FfiError> {
    let m = method::method_for(kind, served.clone(), shared.id, shared.stopping.clone());
    if let Err(e) = live.serve(method, m) {
        served.disarm();
        return Err(e.into());
    }
    let old = lock(&shared.callbacks)
        .served
        .insert(method.to_owned(), served);
    if let Some(old) = old {
        old.close();
    }
    Ok(())
}

/// Serves (or replaces) `method` (a `steward_kind`) with a C callback while the node runs; see
/// `steward_method_callback` for threads and completion. Replacing a callback closes the old
/// one (waiting for its calls in flight, then running its `drop`).
///
/// On success the node owns `callback`: its `drop` runs exactly once, when the method is
/// unserved or replaced or the node stops. On failure `drop` is not called. Errors:
/// `STEWARD_RESULT_INVALID_NAME` (bad or `_`-reserved name), `STEWARD_RESULT_INVALID_ARGUMENT`
/// (bad kind), `STEWARD_RESULT_NULL_PARAMETER` (NULL `call`), `STEWARD_RESULT_STOPPED`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_serve(
    node: *const steward_node,
    method: *const c_char,
    kind: u32,
    callback: steward_method_callback,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let method = unsafe { arg_str(method, "method") }?;
        method_name_arg(method)?;
        let kind = kind_arg(kind)?;
        let slot = take::<MethodCall>(callback.context, callback.call, callback.drop, shared.id)?;
        serve(shared, &live, method, kind, Arc::new(Served::Method(slot)))
    })
}

/// Handles incoming events of `method` with a C callback while the node runs (see
/// `steward_event_callback`). Ownership as for `steward_node_serve`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_on_event(
    node: *const steward_node,
    method: *const c_char,
    callback: steward_event_callback,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let method = unsafe { arg_str(method, "method") }?;
        method_name_arg(method)?;
        let slot = take::<EventCall>(callback.context, callback.call, callback.drop, shared.id)?;
        serve(
            shared,
            &live,
            method,
            steward::Kind::Event,
            Arc::new(Served::Event(slot)),
        )
    })
}

/// Stops serving `method` (later requests for it are rejected) and writes to `*out_removed`
/// whether it was served by a C callback. Waits for the callback's calls in flight (unless
/// called from inside one), then runs its `drop`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_unserve(
    node: *const steward_node,
    method: *const c_char,
    out_removed: *mut bool,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let method = unsafe { arg_str(method, "method") }?;
        let out = out_arg(out_removed, "out_removed")?;
        let old = lock(&shared.callbacks).served.remove(method);
        if let Some(old) = &old {
            live.unserve(method);
            old.close();
        }
        unsafe { *out = old.is_some() };
        Ok(())
    })
}

fn add_listener(
    shared: &Shared,
    slot: Arc<dyn Closable>,
    register: impl FnOnce() -> ListenerId,
    out: *mut u64,
) {
    let lid = register();
    let mut cbs = lock(&shared.callbacks);
    cbs.next_listener += 1;
    let id = cbs.next_listener;
    cbs.listeners.insert(id, (lid, slot));
    unsafe { *out = id };
}

/// Registers a final-state callback (see `steward_status_callback`) and writes its id (for
/// `steward_node_remove_listener`) to `*out_listener`. On success the node owns `callback`
/// (`drop` runs exactly once: on removal or when the node stops); on failure `drop` is not
/// called. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_on_finished(
    node: *const steward_node,
    callback: steward_status_callback,
    out_listener: *mut u64,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let out = out_arg(out_listener, "out_listener")?;
        let slot = Arc::new(take::<StatusCall>(
            callback.context,
            callback.call,
            callback.drop,
            shared.id,
        )?);
        let s = slot.clone();
        add_listener(shared, slot, || finished_listener(&live, s), out);
        Ok(())
    })
}

/// Registers an error-report callback (see `steward_error_callback`); as
/// `steward_node_on_finished`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_on_error(
    node: *const steward_node,
    callback: steward_error_callback,
    out_listener: *mut u64,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let out = out_arg(out_listener, "out_listener")?;
        let slot = Arc::new(take::<ErrorCall>(
            callback.context,
            callback.call,
            callback.drop,
            shared.id,
        )?);
        let s = slot.clone();
        add_listener(shared, slot, || error_listener(&live, s), out);
        Ok(())
    })
}

/// Removes a status or error callback and writes to `*out_removed` whether `listener` was
/// registered. When it returns, no call to it is running (unless called from inside it) and
/// its `drop` has run (or runs when that inner call returns). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_remove_listener(
    node: *const steward_node,
    listener: u64,
    out_removed: *mut bool,
) -> steward_result {
    with_node(node, |shared, _, live| {
        let out = out_arg(out_removed, "out_removed")?;
        let found = lock(&shared.callbacks).listeners.remove(&listener);
        if let Some((lid, slot)) = &found {
            live.remove_listener(*lid);
            slot.close();
        }
        unsafe { *out = found.is_some() };
        Ok(())
    })
}
