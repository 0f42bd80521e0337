//! The one Python thread per node that runs every Python callback.
//!
//! Tokio threads (and the core's own listener thread) never touch the interpreter: they push a
//! plain-Rust [`Job`] onto a queue and write one byte to a pipe. The callback thread is a
//! Python `threading.Thread` running an asyncio event loop that watches the pipe's read end;
//! when woken it drains the queue and, attached to the interpreter, calls listeners and
//! methods. Synchronous callbacks run one at a time; async methods and async listeners become
//! tasks on that same loop, so many can be in flight. The Python objects themselves (callbacks, futures, tasks)
//! live in a registry that is only touched while attached, and jobs refer to them by key.
//! The thread also forwards queued log records: the dispatcher is a [`Wake`] of [`logging`].

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};
use tokio::sync::oneshot;

use steward::{MethodResult, Notification, Request};

use crate::errors;
use crate::logging::{self, Wake};
use crate::types::{PyErrorReport, PyMessageStatus, PyMethodResult, PyRequest};

/// Work for the callback thread. Holds no Python objects, so any thread may create and drop it.
pub(crate) enum Job {
    /// A final message state or an error report from the core.
    Notify(Notification),
    /// Run the Python method registered under `method` and send its result to `reply`.
    Call {
        method: u64,
        call: u64,
        request: Request,
        reply: oneshot::Sender<MethodResult>,
    },
    /// The caller gave up on `call` (method timeout): cancel it if it is an asyncio task.
    Cancel { call: u64 },
    /// Complete the asyncio future registered under `future` (an `await receipt`).
    Resolve {
        future: u64,
        outcome: steward::Result<MethodResult>,
    },
    /// Stop the event loop after the jobs queued before this one.
    Shutdown,
}

/// How long a stopping node lets its `async def` listeners finish before cancelling them.
const LISTENER_GRACE: Duration = Duration::from_secs(2);

/// Which notifications a listener wants.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Result,
    Error,
}

struct MethodEntry {
    name: String,
    func: Py<PyAny>,
}

#[derive(Default)]
struct Registry {
    listeners: Vec<(ListenerKind, Py<PyAny>)>,
    methods: HashMap<u64, MethodEntry>,
    futures: HashMap<u64, (Py<PyAny>, Py<PyAny>)>,
    tasks: HashMap<u64, Py<PyAny>>,
    /// Tasks of `async def` listeners (on_result, on_error), by key.
    listener_tasks: HashMap<u64, Py<PyAny>>,
    replies: HashMap<u64, (String, oneshot::Sender<MethodResult>)>,
    event_loop: Option<Py<PyAny>>,
    thread: Option<Py<PyAny>>,
}

/// The queue, the wake-up pipe and the registry of one node's callback thread.
pub(crate) struct Dispatcher {
    node: String,
    jobs: Mutex<VecDeque<Job>>,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
    closed: AtomicBool,
    thread_started: AtomicBool,
    next_key: AtomicU64,
    registry: Mutex<Registry>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatcher {
    /// A dispatcher whose thread is not running yet (listeners may already be added).
    pub(crate) fn new(node: &str) -> std::io::Result<Arc<Dispatcher>> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`; we own them from here on.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created by pipe2 and are not owned elsewhere.
        let (wake_read, wake_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Arc::new(Dispatcher {
            node: node.to_owned(),
            jobs: Mutex::new(VecDeque::new()),
            wake_read,
            wake_write,
            closed: AtomicBool::new(false),
            thread_started: AtomicBool::new(false),
            next_key: AtomicU64::new(1),
            registry: Mutex::new(Registry::default()),
        }))
    }

    /// A fresh key for a registry entry or a call.
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a job for the callback thread. Never blocks and never touches Python. Returns
    /// false once the dispatcher has shut down (the job is dropped).
    pub(crate) fn post(&self, job: Job) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        lock(&self.jobs).push_back(job);
        self.wake();
        true
    }

    fn drain_pipe(&self) {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a valid buffer of the given length from our own pipe.
            let n = unsafe {
                libc::read(
                    self.wake_read.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
        }
    }

    // ----- registry (call only while attached) -----

    pub(crate) fn add_listener(&self, kind: ListenerKind, func: Py<PyAny>) {
        lock(&self.registry).listeners.push((kind, func));
    }

    /// Removes every registration of `func` as a listener; true if there was one.
    pub(crate) fn remove_listener(&self, py: Python<'_>, func: &Bound<'_, PyAny>) -> bool {
        let removed: Vec<_> = {
            let mut reg = lock(&self.registry);
            let (gone, kept) = std::mem::take(&mut reg.listeners)
                .into_iter()
                .partition(|(_, f)| f.bind(py).is(func));
            reg.listeners = kept;
            gone
        };
        // Dropped outside the lock: a decref may run arbitrary Python code (`__del__`).
        !removed.is_empty()
    }

    /// Registers a Python method; returns its key. Replaces an earlier one of the same name.
    pub(crate) fn add_method(&self, name: &str, func: Py<PyAny>) -> u64 {
        let key = self.next_key();
        let replaced = {
            let mut reg = lock(&self.registry);
            let replaced = Self::take_methods(&mut reg, name);
            reg.methods.insert(
                key,
                MethodEntry {
                    name: name.to_owned(),
                    func,
                },
            );
            replaced
        };
        drop(replaced); // outside the lock, see remove_listener
        key
    }

    /// Forgets the Python method `name`; true if it was registered.
    pub(crate) fn remove_method(&self, name: &str) -> bool {
        let removed = Self::take_methods(&mut lock(&self.registry), name);
        !removed.is_empty()
    }

    fn take_methods(reg: &mut Registry, name: &str) -> Vec<MethodEntry> {
        let keys: Vec<u64> = reg
            .methods
            .iter()
            .filter(|(_, m)| m.name == name)
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| reg.methods.remove(k)).collect()
    }

    /// Registers an asyncio future (with its loop) to complete later via [`Job::Resolve`].
    pub(crate) fn add_future(&self, event_loop: Py<PyAny>, future: Py<PyAny>) -> PyResult<u64> {
        if self.closed.load(Ordering::Acquire) {
            return Err(errors::to_py(steward::Error::Stopped));
        }
        let key = self.next_key();
        lock(&self.registry)
            .futures
            .insert(key, (event_loop, future));
        Ok(key)
    }

    /// True when called on this dispatcher's callback thread.
    pub(crate) fn on_callback_thread(&self, py: Python<'_>) -> bool {
        let thread = lock(&self.registry)
            .thread
            .as_ref()
            .map(|t| t.clone_ref(py));
        let Some(thread) = thread else { return false };
        py.import("threading")
            .and_then(|t| t.call_method0("current_thread"))
            .map(|cur| cur.is(thread.bind(py)))
            .unwrap_or(false)
    }

    // ----- the thread -----

    /// Starts the callback thread (a daemon `threading.Thread` named `steward-<node>`).
    pub(crate) fn start_thread(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let runner = Py::new(py, Runner { d: self.clone() })?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("target", runner.bind(py).getattr("run")?)?;
        kwargs.set_item("name", format!("steward-{}", self.node))?;
        kwargs.set_item("daemon", true)?;
        let thread = py
            .import("threading")?
            .getattr("Thread")?
            .call((), Some(&kwargs))?;
        lock(&self.registry).thread = Some(thread.clone().unbind());
        thread.call_method0("start")?;
        self.thread_started.store(true, Ordering::Release);
        Ok(())
    }

    /// Asks the thread to finish the queued jobs and end, then waits for it (unless called on
    /// it). Afterwards no callback runs, pending `await`s fail with `Stopped` and pending
    /// method calls fail.
    pub(crate) fn shutdown(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let first = !self.closed.load(Ordering::Acquire);
        if first {
            lock(&self.jobs).push_back(Job::Shutdown);
            self.closed.store(true, Ordering::Release);
            self.wake();
        }
        let thread = lock(&self.registry)
            .thread
            .as_ref()
            .map(|t| t.clone_ref(py));
        match thread {
            Some(t) if !self.on_callback_thread(py) => {
                t.bind(py).call_method0("join")?;
            }
            Some(_) => {}
            None => self.cleanup(py),
        }
        Ok(())
    }

    fn run(self: &Arc<Self>, py: Python<'_>, runner: Bound<'_, Runner>) -> PyResult<()> {
        let asyncio = py.import("asyncio")?;
        let event_loop = asyncio.call_method0("new_event_loop")?;
        asyncio.call_method1("set_event_loop", (&event_loop,))?;
        lock(&self.registry).event_loop = Some(event_loop.clone().unbind());
        let fd = self.wake_read.as_raw_fd();
        event_loop.call_method1("add_reader", (fd, runner.getattr("drain")?))?;
        let outcome = event_loop.call_method0("run_forever");
        if let Err(e) = &outcome {
            log_exception(py, "the steward callback loop failed", e);
        }
        // Let async listeners finish (a while), cancel what is still running (async methods,
        // slow listeners), then close the loop.
        let cleanup = (|| -> PyResult<()> {
            let listening: Vec<Py<PyAny>> = lock(&self.registry)
                .listener_tasks
                .values()
                .map(|t| t.clone_ref(py))
                .collect();
            if !listening.is_empty() {
                let kwargs = PyDict::new(py);
                kwargs.set_item("timeout", LISTENER_GRACE.as_secs_f64())?;
                let waiting = asyncio
                    .getattr("wait")?
                    .call((PyList::new(py, listening)?,), Some(&kwargs))?;
                event_loop.call_method1("run_until_complete", (waiting,))?;
            }
            let _ = event_loop.call_method1("remove_reader", (fd,));
            let tasks = asyncio.call_method1("all_tasks", (&event_loop,))?;
            let tasks: Vec<Bound<'_, PyAny>> = tasks.try_iter()?.collect::<PyResult<_>>()?;
            if !tasks.is_empty() {
                for t in &tasks {
                    t.call_method0("cancel")?;
                }
                let kwargs = PyDict::new(py);
                kwargs.set_item("return_exceptions", true)?;
                let gathered = asyncio
                    .getattr("gather")?
                    .call(pyo3::types::PyTuple::new(py, &tasks)?, Some(&kwargs))?;
                event_loop.call_method1("run_until_complete", (gathered,))?;
            }
            event_loop.call_method1(
                "run_until_complete",
                (event_loop.call_method0("shutdown_asyncgens")?,),
            )?;
            event_loop.call_method0("close")?;
            Ok(())
        })();
        if let Err(e) = cleanup {
            log_exception(py, "closing the steward callback loop failed", &e);
        }
        self.cleanup(py);
        outcome.map(|_| ())
    }

    /// Runs what is queued, then fails whatever still waits and drops every Python object.
    fn cleanup(self: &Arc<Self>, py: Python<'_>) {
        self.drain(py);
        let mut reg = lock(&self.registry);
        let futures: Vec<_> = reg.futures.drain().map(|(_, f)| f).collect();
        let tasks: Vec<_> = reg.tasks.drain().map(|(_, t)| t).collect();
        let listener_tasks: Vec<_> = reg.listener_tasks.drain().map(|(_, t)| t).collect();
        let replies: Vec<_> = reg.replies.drain().collect();
        let listeners = std::mem::take(&mut reg.listeners);
        let methods = std::mem::take(&mut reg.methods);
        reg.event_loop = None;
        drop(reg);
        for (event_loop, future) in futures {
            resolve(
                py,
                event_loop.bind(py),
                future.bind(py),
                Err(steward::Error::Stopped),
            );
        }
        for (_, (name, reply)) in replies {
            let _ = reply.send(MethodResult::failed(format!(
                "the node stopped before the Python method {name} finished"
            )));
        }
        drop((tasks, listener_tasks, listeners, methods));
    }

    /// Runs every queued job (attached, on the callback thread or during cleanup).
    fn drain(self: &Arc<Self>, py: Python<'_>) {
        self.drain_pipe();
        loop {
            let jobs: Vec<Job> = lock(&self.jobs).drain(..).collect();
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                self.run_job(py, job);
            }
        }
        logging::drain(py);
    }

    fn run_job(self: &Arc<Self>, py: Python<'_>, job: Job) {
        match job {
            Job::Notify(n) => self.notify(py, n),
            Job::Call {
                method,
                call,
                request,
                reply,
            } => self.call(py, method, call, request, reply),
            Job::Cancel { call } => {
                let task = lock(&self.registry).tasks.remove(&call);
                if let Some(task) = task {
                    let _ = task.bind(py).call_method0("cancel");
                }
            }
            Job::Resolve { future, outcome } => {
                let entry = lock(&self.registry).futures.remove(&future);
                if let Some((event_loop, fut)) = entry {
                    resolve(py, event_loop.bind(py), fut.bind(py), outcome);
                }
            }
            Job::Shutdown => {
                let event_loop = lock(&self.registry)
                    .event_loop
                    .as_ref()
                    .map(|l| l.clone_ref(py));
                if let Some(l) = event_loop {
                    if let Err(e) = l.bind(py).call_method0("stop") {
                        log_exception(py, "stopping the steward callback loop failed", &e);
                    }
                }
            }
        }
    }

    fn notify(self: &Arc<Self>, py: Python<'_>, n: Notification) {
        let (kind, arg) = match n {
            Notification::Finished(st) => (
                ListenerKind::Result,
                Py::new(py, PyMessageStatus::new(st)).map(Py::into_any),
            ),
            Notification::Error(rep) => (
                ListenerKind::Error,
                Py::new(py, PyErrorReport::new(rep)).map(Py::into_any),
            ),
        };
        let arg = match arg {
            Ok(a) => a,
            Err(e) => return log_exception(py, "cannot build a notification object", &e),
        };
        let listeners: Vec<Py<PyAny>> = lock(&self.registry)
            .listeners
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, f)| f.clone_ref(py))
            .collect();
        let what = match kind {
            ListenerKind::Result => "on_result",
            ListenerKind::Error => "on_error",
        };
        for f in listeners {
            let started = f
                .bind(py)
                .call1((arg.clone_ref(py),))
                .and_then(|value| self.start_listener_task(py, &value, what));
            if let Err(e) = started {
                log_exception(
                    py,
                    &format!("a steward {what} callback raised; the node keeps running"),
                    &e,
                );
            }
        }
    }

    /// If a listener returned an awaitable (an `async def` listener), runs it as a task on the
    /// callback loop; its exception, if any, is logged when it ends.
    fn start_listener_task(
        self: &Arc<Self>,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        what: &'static str,
    ) -> PyResult<()> {
        let inspect = py.import("inspect")?;
        if !inspect.call_method1("isawaitable", (value,))?.is_truthy()? {
            return Ok(());
        }
        let event_loop = lock(&self.registry)
            .event_loop
            .as_ref()
            .map(|l| l.clone_ref(py));
        let task = event_loop
            .ok_or_else(|| PyRuntimeError::new_err("the callback loop is not running"))
            .and_then(|l| {
                let kwargs = PyDict::new(py);
                kwargs.set_item("loop", l.bind(py))?;
                py.import("asyncio")?
                    .getattr("ensure_future")?
                    .call((value,), Some(&kwargs))
            });
        let task = match task {
            Ok(t) => t,
            Err(_) => {
                // The loop is closed (the node is stopping): close the coroutine so it is not
                // reported as never awaited, and say why it did not run.
                if value.hasattr("close")? {
                    let _ = value.call_method0("close");
                }
                log_warning(
                    py,
                    &format!("the node stopped before an async {what} callback could run"),
                );
                return Ok(());
            }
        };
        let key = self.next_key();
        lock(&self.registry)
            .listener_tasks
            .insert(key, task.clone().unbind());
        let done = Py::new(
            py,
            ListenerDone {
                d: Arc::downgrade(self),
                key,
                what,
            },
        )?;
        task.call_method1("add_done_callback", (done,))?;
        Ok(())
    }

    fn listener_done(&self, py: Python<'_>, key: u64, what: &str, task: &Bound<'_, PyAny>) {
        let removed = lock(&self.registry).listener_tasks.remove(&key);
        drop(removed);
        let failure = (|| -> PyResult<Option<PyErr>> {
            if task.call_method0("cancelled")?.is_truthy()? {
                log_warning(
                    py,
                    &format!(
                        "an async {what} callback was cancelled: the node stopped before it finished"
                    ),
                );
                return Ok(None);
            }
            let exc = task.call_method0("exception")?;
            Ok((!exc.is_none()).then(|| PyErr::from_value(exc)))
        })();
        let failure = match failure {
            Ok(f) => f,
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            log_exception(
                py,
                &format!("a steward {what} callback raised; the node keeps running"),
                &e,
            );
        }
    }

    fn call(
        self: &Arc<Self>,
        py: Python<'_>,
        method: u64,
        call: u64,
        request: Request,
        reply: oneshot::Sender<MethodResult>,
    ) {
        let name = request.method.clone();
        let func = lock(&self.registry)
            .methods
            .get(&method)
            .map(|m| m.func.clone_ref(py));
        let Some(func) = func else {
            let _ = reply.send(MethodResult::failed(format!(
                "the Python method {name} is no longer served"
            )));
            return;
        };
        let outcome =
            Py::new(py, PyRequest::new(request)).and_then(|req| func.bind(py).call1((req,)));
        let value = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(method_failed(py, &name, &e));
                return;
            }
        };
        match self.start_task(py, &value, call) {
            Ok(false) => {
                let _ = reply.send(to_method_result(py, &name, &value));
            }
            Ok(true) => {
                lock(&self.registry).replies.insert(call, (name, reply));
            }
            Err(e) => {
                let _ = reply.send(method_failed(py, &name, &e));
            }
        }
    }

    /// If `value` is awaitable, runs it as a task on the callback loop and returns true.
    fn start_task(
        self: &Arc<Self>,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        call: u64,
    ) -> PyResult<bool> {
        let inspect = py.import("inspect")?;
        if !inspect.call_method1("isawaitable", (value,))?.is_truthy()? {
            return Ok(false);
        }
        let event_loop = lock(&self.registry)
            .event_loop
            .as_ref()
            .map(|l| l.clone_ref(py))
            .ok_or_else(|| PyRuntimeError::new_err("the callback loop is not running"))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("loop", event_loop.bind(py))?;
        let task = py
            .import("asyncio")?
            .getattr("ensure_future")?
            .call((value,), Some(&kwargs))?;
        lock(&self.registry)
            .tasks
            .insert(call, task.clone().unbind());
        let done = Py::new(
            py,
            TaskDone {
                d: Arc::downgrade(self),
                call,
            },
        )?;
        task.call_method1("add_done_callback", (done,))?;
        Ok(true)
    }

    fn task_done(&self, py: Python<'_>, call: u64, task: &Bound<'_, PyAny>) {
        let mut reg = lock(&self.registry);
        reg.tasks.remove(&call);
        let Some((name, reply)) = reg.replies.remove(&call) else {
            return;
        };
        drop(reg);
        let result = (|| -> PyResult<MethodResult> {
            if task.call_method0("cancelled")?.is_truthy()? {
                return Ok(MethodResult::failed(format!(
                    "the Python method {name} was cancelled (method timeout or node stopping)"
                )));
            }
            let exc = task.call_method0("exception")?;
            if !exc.is_none() {
                return Ok(method_failed(py, &name, &PyErr::from_value(exc)));
            }
            let value = task.call_method0("result")?;
            Ok(to_method_result(py, &name, &value))
        })();
        let result = result.unwrap_or_else(|e| method_failed(py, &name, &e));
        let _ = reply.send(result);
    }
}

/// Log records wake the callback thread, which drains them with its jobs.
impl Wake for Dispatcher {
    /// True while the callback thread runs and accepts jobs.
    fn is_running(&self) -> bool {
        self.thread_started.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }

    /// Wakes the callback thread (a full pipe means it is already due to wake).
    fn wake(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a valid buffer to our own non-blocking pipe.
        unsafe {
            libc::write(self.wake_write.as_raw_fd(), (&byte as *const u8).cast(), 1);
        }
    }
}

/// The callable objects a callback thread hands to Python: the thread's target and the
/// pipe's reader callback.
#[pyclass(module = "steward._steward", frozen)]
struct Runner {
    d: Arc<Dispatcher>,
}

#[pymethods]
impl Runner {
    /// Thread body: runs the callback loop until the node stops.
    fn run(slf: Bound<'_, Self>) -> PyResult<()> {
        let d = slf.get().d.clone();
        d.run(slf.py(), slf)
    }

    /// Reader callback: runs the queued jobs.
    fn drain(&self, py: Python<'_>) {
        self.d.drain(py);
    }
}

/// Done-callback of an async method's task: sends its result back to the core.
#[pyclass(module = "steward._steward", frozen)]
struct TaskDone {
    d: std::sync::Weak<Dispatcher>,
    call: u64,
}

#[pymethods]
impl TaskDone {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) {
        if let Some(d) = self.d.upgrade() {
            d.task_done(py, self.call, task);
        }
    }
}

/// Done-callback of an async listener's task: logs its exception, if any.
#[pyclass(module = "steward._steward", frozen)]
struct ListenerDone {
    d: std::sync::Weak<Dispatcher>,
    key: u64,
    what: &'static str,
}

#[pymethods]
impl ListenerDone {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) {
        if let Some(d) = self.d.upgrade() {
            d.listener_done(py, self.key, self.what, task);
        }
    }
}

/// Converts what a Python method returned into a result.
fn to_method_result(py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> MethodResult {
    if value.is_none() {
        return MethodResult::ok("");
    }
    if let Ok(r) = value.cast::<PyMethodResult>() {
        return r.get().inner.clone();
    }
    if let Ok(s) = value.cast::<PyString>() {
        return MethodResult::ok(s.to_string_lossy());
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return MethodResult::ok(String::from_utf8_lossy(b.as_bytes()));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return MethodResult::ok(String::from_utf8_lossy(&b.to_vec()));
    }
    let json = py
        .import("json")
        .and_then(|j| j.call_method1("dumps", (value,)))
        .and_then(|s| s.extract::<String>());
    match json {
        Ok(text) => MethodResult::ok(text),
        Err(e) => {
            let type_name = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            MethodResult::failed(format!(
                "the Python method {name} returned a {type_name}, which is not str, bytes, None, \
                 steward.Result or JSON-serialisable: {e}"
            ))
        }
    }
}

/// A failed result for a method that raised: the error names the exception, stderr holds the
/// traceback. Also logged, since the sender may never look at the result.
fn method_failed(py: Python<'_>, name: &str, err: &PyErr) -> MethodResult {
    let mut r = MethodResult::failed(describe(py, err));
    r.stderr = traceback_text(py, err);
    log_warning(
        py,
        &format!(
            "the Python method {name} raised; it is reported as a failed result: {}",
            describe(py, err)
        ),
    );
    r
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let value = err.value(py);
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    if text.is_empty() {
        type_name
    } else {
        format!("{type_name}: {text}")
    }
}

fn traceback_text(py: Python<'_>, err: &PyErr) -> String {
    let value = err.value(py);
    (|| -> PyResult<String> {
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (err.get_type(py), value, err.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })()
    .unwrap_or_else(|_| describe(py, err))
}

/// Logs an exception (with traceback) on the `steward` logger; never raises.
pub(crate) fn log_exception(py: Python<'_>, message: &str, err: &PyErr) {
    let logged = (|| -> PyResult<()> {
        let value = err.value(py);
        if let Some(tb) = err.traceback(py) {
            value.setattr("__traceback__", tb)?;
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", value)?;
        py.import("logging")?
            .call_method1("getLogger", ("steward",))?
            .call_method("error", (message,), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        err.print(py);
    }
}

fn log_warning(py: Python<'_>, message: &str) {
    let _ = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", ("steward",)))
        .and_then(|l| l.call_method1("warning", (message,)));
}

/// Completes an asyncio future from the callback thread, safely across threads and loops.
fn resolve(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    future: &Bound<'_, PyAny>,
    outcome: steward::Result<MethodResult>,
) {
    let scheduled = (|| -> PyResult<()> {
        let (ok, value): (bool, Py<PyAny>) = match outcome {
            Ok(r) => (true, Py::new(py, PyMethodResult { inner: r })?.into_any()),
            Err(e) => (false, errors::to_py(e).into_value(py).into_any()),
        };
        let setter = pyo3::wrap_pyfunction!(set_future, py)?;
        event_loop.call_method1("call_soon_threadsafe", (setter, future, ok, value))?;
        Ok(())
    })();
    if let Err(e) = scheduled {
        // The loop is closed: nobody awaits this future any more.
        if !e.is_instance_of::<PyRuntimeError>(py) {
            log_exception(py, "cannot complete an awaited steward receipt", &e);
        }
    }
}

/// Runs on the awaiting loop: sets the future's result or exception unless it was cancelled.
#[pyfunction]
fn set_future(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}
