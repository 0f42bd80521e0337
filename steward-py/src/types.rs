//! Read-only value objects handed to Python: results, message states, destinations, error
//! reports and method requests. Each is a snapshot; none holds a reference into the node.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use steward::{MethodResult, ResultStatus};

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

fn status_str(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Ok => "ok",
        ResultStatus::Failed => "failed",
        ResultStatus::Unknown => "unknown",
    }
}

/// The outcome of one method run on the receiving node.
///
/// Returned by `Receipt.result()` and `await receipt`; a Python method may also return one to
/// control every field (for example a failed result with output).
#[pyclass(module = "steward", name = "Result", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyMethodResult {
    pub(crate) inner: MethodResult,
}

#[pymethods]
impl PyMethodResult {
    /// A result to return from a Python method: `status` is "ok" (default), "failed" or "unknown".
    #[new]
    #[pyo3(signature = (stdout = "", stderr = "", *, status = "ok", exit_code = None, error = None, truncated = false))]
    fn new(
        stdout: &str,
        stderr: &str,
        status: &str,
        exit_code: Option<i32>,
        error: Option<String>,
        truncated: bool,
    ) -> PyResult<Self> {
        let status = match status {
            "ok" => ResultStatus::Ok,
            "failed" => ResultStatus::Failed,
            "unknown" => ResultStatus::Unknown,
            other => {
                return Err(PyValueError::new_err(format!(
                    "status must be \"ok\", \"failed\" or \"unknown\", not {other:?}"
                )))
            }
        };
        Ok(PyMethodResult {
            inner: MethodResult {
                status,
                exit_code,
                stdout: stdout.to_owned(),
                stderr: stderr.to_owned(),
                truncated,
                duration_ms: 0,
                node: String::new(),
                error,
            },
        })
    }

    /// A failed result with `reason` (and optional output), for Python methods.
    #[staticmethod]
    #[pyo3(signature = (reason, stdout = "", stderr = "", exit_code = None))]
    fn failure(reason: String, stdout: &str, stderr: &str, exit_code: Option<i32>) -> Self {
        let mut inner = MethodResult::failed(reason);
        inner.stdout = stdout.to_owned();
        inner.stderr = stderr.to_owned();
        inner.exit_code = exit_code;
        PyMethodResult { inner }
    }

    /// Captured standard output, or the method's reply text.
    #[getter]
    fn stdout(&self) -> &str {
        &self.inner.stdout
    }
    /// Captured standard error.
    #[getter]
    fn stderr(&self) -> &str {
        &self.inner.stderr
    }
    /// The process exit code, when a process ran and exited normally.
    #[getter]
    fn exit_code(&self) -> Option<i32> {
        self.inner.exit_code
    }
    /// "ok", "failed" or "unknown" (the receiver stopped after it was started, before it finished).
    #[getter]
    fn status(&self) -> &'static str {
        status_str(self.inner.status)
    }
    /// True when `status` is "ok".
    #[getter]
    fn ok(&self) -> bool {
        self.inner.status == ResultStatus::Ok
    }
    /// Run time in seconds.
    #[getter]
    fn duration(&self) -> f64 {
        self.inner.duration_ms as f64 / 1000.0
    }
    /// The node that ran the method.
    #[getter]
    fn node(&self) -> &str {
        &self.inner.node
    }
    /// True when output was cut at the receiver's capture limit.
    #[getter]
    fn truncated(&self) -> bool {
        self.inner.truncated
    }
    /// Why the method failed, when it did.
    #[getter]
    fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }

    /// The result as a plain dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("status", self.status())?;
        d.set_item("exit_code", self.inner.exit_code)?;
        d.set_item("stdout", &self.inner.stdout)?;
        d.set_item("stderr", &self.inner.stderr)?;
        d.set_item("truncated", self.inner.truncated)?;
        d.set_item("duration", self.duration())?;
        d.set_item("node", &self.inner.node)?;
        d.set_item("error", self.inner.error.as_deref())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Result(status={:?}, exit_code={}, node={:?}, stdout={:?}, error={})",
            self.status(),
            py_opt(self.inner.exit_code),
            self.inner.node,
            shorten(&self.inner.stdout),
            py_opt(self.inner.error.as_deref().map(|e| format!("{e:?}")))
        )
    }
}

/// `None` or the value, as Python would show it.
fn py_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(57).collect();
        t.push_str("...");
        t
    }
}

/// Where a sent message stands, as the sending node knows it.
#[pyclass(module = "steward", name = "MessageStatus", frozen)]
pub struct PyMessageStatus {
    inner: steward::MessageStatus,
}

impl PyMessageStatus {
    pub(crate) fn new(inner: steward::MessageStatus) -> Self {
        PyMessageStatus { inner }
    }
}

#[pymethods]
impl PyMessageStatus {
    /// The message id.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// The destination node.
    #[getter]
    fn to_node(&self) -> &str {
        &self.inner.to_node
    }
    /// The subject it travels on (`<to_node>.<command|event>.<method>`).
    #[getter]
    fn subject(&self) -> &str {
        &self.inner.subject
    }
    /// "queued", "sent", "received", "completed", "failed", "expired", "rejected" or "cancelled".
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }
    /// True once the state never changes again.
    #[getter]
    fn is_final(&self) -> bool {
        self.inner.state.is_final()
    }
    /// Send attempts so far.
    #[getter]
    fn attempts(&self) -> u32 {
        self.inner.attempts
    }
    /// The result, once completed.
    #[getter]
    fn result(&self) -> Option<PyMethodResult> {
        self.inner
            .result
            .clone()
            .map(|inner| PyMethodResult { inner })
    }
    /// Why it failed, expired or was rejected.
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.inner.reason.as_deref()
    }

    /// For a rejected message, why as a code when the receiver said: ``"notAllowed"`` (its
    /// access list), ``"notServed"`` (no such method, or the other kind), ``"untrusted"`` (the
    /// signature or key); else ``None``.
    #[getter]
    fn refusal(&self) -> Option<&'static str> {
        self.inner.refusal.map(|r| r.as_str())
    }
    /// When it was accepted, in milliseconds since the Unix epoch.
    #[getter]
    fn created_ms(&self) -> u64 {
        self.inner.created_ms
    }
    /// When its state last changed, in milliseconds since the Unix epoch.
    #[getter]
    fn updated_ms(&self) -> u64 {
        self.inner.updated_ms
    }
    /// The message as sent, in the original JSON format (a dict).
    #[getter]
    fn message<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.message)
    }

    /// The status as a plain dict (camelCase keys, as in the JSON format).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v =
            serde_json::to_value(&self.inner).map_err(|e| PyValueError::new_err(e.to_string()))?;
        json_to_py(py, &v)
    }

    fn __repr__(&self) -> String {
        format!(
            "MessageStatus(id={:?}, subject={:?}, state={:?}, attempts={})",
            self.inner.id,
            self.inner.subject,
            self.inner.state.as_str(),
            self.inner.attempts
        )
    }
}

/// What the sending node knows about one destination node.
#[pyclass(module = "steward", name = "DestinationStatus", frozen)]
pub struct PyDestinationStatus {
    inner: steward::DestinationStatus,
}

impl PyDestinationStatus {
    pub(crate) fn new(inner: steward::DestinationStatus) -> Self {
        PyDestinationStatus { inner }
    }
}

#[pymethods]
impl PyDestinationStatus {
    /// The destination node.
    #[getter]
    fn node(&self) -> &str {
        &self.inner.node
    }
    /// Messages accepted and not yet final.
    #[getter]
    fn pending(&self) -> u64 {
        self.inner.pending
    }
    /// Messages completed (results in).
    #[getter]
    fn completed(&self) -> u64 {
        self.inner.completed
    }
    /// Messages failed, expired, rejected or cancelled.
    #[getter]
    fn failed(&self) -> u64 {
        self.inner.failed
    }
    /// Last ACK or result from it, in milliseconds since the Unix epoch.
    #[getter]
    fn last_ack_ms(&self) -> Option<u64> {
        self.inner.last_ack_ms
    }
    /// Last message of any kind from it, in milliseconds since the Unix epoch.
    #[getter]
    fn last_seen_ms(&self) -> Option<u64> {
        self.inner.last_seen_ms
    }

    fn __repr__(&self) -> String {
        format!(
            "DestinationStatus(node={:?}, pending={}, completed={}, failed={})",
            self.inner.node, self.inner.pending, self.inner.completed, self.inner.failed
        )
    }
}

/// One failure reported by the node (delivery failed, rejected, expired, method failed, bad input).
#[pyclass(module = "steward", name = "ErrorReport", frozen)]
pub struct PyErrorReport {
    inner: steward::ErrorReport,
}

impl PyErrorReport {
    pub(crate) fn new(inner: steward::ErrorReport) -> Self {
        PyErrorReport { inner }
    }
}

#[pymethods]
impl PyErrorReport {
    /// When, in milliseconds since the Unix epoch.
    #[getter]
    fn time_ms(&self) -> u64 {
        self.inner.time_ms
    }
    /// The node that reports it.
    #[getter]
    fn node(&self) -> &str {
        &self.inner.node
    }
    /// The message concerned, if any.
    #[getter]
    fn message_id(&self) -> Option<&str> {
        self.inner.message_id.as_deref()
    }
    /// "deliveryFailed", "expired", "methodFailed", "rejected", "badInput", "taskFailed" or
    /// "brokerAuth".
    #[getter]
    fn kind(&self) -> String {
        serde_json::to_value(self.inner.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    /// Why, in words for the operator.
    #[getter]
    fn reason(&self) -> &str {
        &self.inner.reason
    }

    fn __repr__(&self) -> String {
        format!(
            "ErrorReport(kind={:?}, message_id={}, reason={:?})",
            self.kind(),
            py_opt(self.inner.message_id.as_deref().map(|m| format!("{m:?}"))),
            self.inner.reason
        )
    }
}

/// One incoming message, handed to a Python method served with `Node.method()` / `Node.serve()`.
#[pyclass(module = "steward", name = "Request", frozen)]
pub struct PyRequest {
    inner: steward::Request,
}

impl PyRequest {
    pub(crate) fn new(inner: steward::Request) -> Self {
        PyRequest { inner }
    }
}

#[pymethods]
impl PyRequest {
    /// The message id (the same on a resend).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// The sending node.
    #[getter]
    #[allow(clippy::wrong_self_convention)] // a field name, not a conversion
    fn from_node(&self) -> &str {
        &self.inner.from_node
    }
    /// This node.
    #[getter]
    fn to_node(&self) -> &str {
        &self.inner.to_node
    }
    /// "command" or "event".
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }
    /// The method called.
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }
    /// The arguments.
    #[getter]
    fn data(&self) -> Vec<String> {
        self.inner.data.clone()
    }
    /// How long the method may run, in seconds; after that its result is a failure.
    #[getter]
    fn method_timeout(&self) -> f64 {
        self.inner.method_timeout.as_secs_f64()
    }
    /// This node's data directory.
    #[getter]
    fn data_dir(&self) -> String {
        self.inner.data_dir.display().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "Request(id={:?}, from_node={:?}, method={:?}, data={:?})",
            self.inner.id, self.inner.from_node, self.inner.method, self.inner.data
        )
    }
}
