//! `steward.Receipt`: proof that a message was durably accepted, and the way to its result.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert;
use crate::dispatch::Job;
use crate::errors::{self, py_result};
use crate::runtime::Running;
use crate::types::{PyMessageStatus, PyMethodResult};

/// How often a blocking wait wakes to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A message accepted by the node. Wait for its result with `result()` or `await receipt`.
///
/// It holds the message id and waits through the node (`Node::result(id)`), so a receipt made
/// by `Node.receipt(id)` for a message stored before a restart works like the one `send()`
/// returned.
#[pyclass(module = "steward", name = "Receipt", frozen)]
pub struct PyReceipt {
    id: String,
    to_node: String,
    subject: String,
    running: Arc<Running>,
}

impl PyReceipt {
    pub(crate) fn new(receipt: steward::Receipt, running: Arc<Running>) -> Self {
        PyReceipt {
            id: receipt.id,
            to_node: receipt.to_node,
            subject: receipt.subject,
            running,
        }
    }

    /// The receipt of a stored message, from its status.
    pub(crate) fn from_status(status: &steward::MessageStatus, running: Arc<Running>) -> Self {
        PyReceipt {
            id: status.id.clone(),
            to_node: status.to_node.clone(),
            subject: status.subject.clone(),
            running,
        }
    }

    /// Runs `fut` on the node's runtime and waits for it, detached, waking every 50 ms to let
    /// Python raise KeyboardInterrupt (or another signal handler's exception).
    fn wait_for<T, F>(&self, py: Python<'_>, fut: F, timeout: Option<Duration>) -> PyResult<T>
    where
        T: Send + 'static,
        F: Future<Output = steward::Result<T>> + Send + 'static,
    {
        self.running.check()?;
        let (tx, mut rx) = mpsc::channel();
        let task = self.running.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let step = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_CHECK_INTERVAL),
                None => SIGNAL_CHECK_INTERVAL,
            };
            // The receiver is not Sync, so it moves into the detached closure and back.
            let (received, back) = py.detach(move || (rx.recv_timeout(step), rx));
            rx = back;
            match received {
                Ok(outcome) => return py_result(outcome),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(errors::to_py(steward::Error::Stopped))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Err(e) = py.check_signals() {
                task.abort();
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                task.abort();
                return Err(errors::to_py(steward::Error::TimedOut(format!(
                    "message {} after {} s; it is still pending: wait again, or check it with status()",
                    self.id,
                    timeout.unwrap_or_default().as_secs_f64()
                ))));
            }
        }
    }
}

fn wait_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    convert::opt_seconds(timeout, "timeout", |name, reason| {
        PyValueError::new_err(format!("{name}: {reason}"))
    })
}

#[pymethods]
impl PyReceipt {
    /// The message id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The destination node.
    #[getter]
    fn to_node(&self) -> &str {
        &self.to_node
    }

    /// The subject (`<to_node>.<command|event>.<method>`).
    #[getter]
    fn subject(&self) -> &str {
        &self.subject
    }

    /// Blocks until the result is in and returns it (a `Result`; check `.ok` or `.status`).
    ///
    /// The interpreter is released while waiting and Ctrl-C raises KeyboardInterrupt. Raises
    /// `TimedOut` after `timeout` seconds (None: wait as long as it takes), or `Rejected`,
    /// `NotAllowed`, `Expired`, `DeliveryFailed`, `Cancelled`, `NoResult` when no result will come.
    #[pyo3(signature = (timeout = None))]
    fn result(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMethodResult> {
        let timeout = wait_timeout(timeout)?;
        let (node, id) = (self.running.node.clone(), self.id.clone());
        let inner = self.wait_for(py, async move { node.result(&id).await }, timeout)?;
        Ok(PyMethodResult { inner })
    }

    /// Blocks until the message reaches a final state and returns its `MessageStatus`
    /// (never raises for a failed delivery; see `state`). Same waiting rules as `result()`.
    #[pyo3(signature = (timeout = None))]
    fn wait(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMessageStatus> {
        let timeout = wait_timeout(timeout)?;
        let (node, id) = (self.running.node.clone(), self.id.clone());
        let st = self.wait_for(py, async move { node.wait(&id).await }, timeout)?;
        Ok(PyMessageStatus::new(st))
    }

    /// The message's current state, as a `MessageStatus`.
    fn status(&self, py: Python<'_>) -> PyResult<PyMessageStatus> {
        let (node, id) = (self.running.node.clone(), self.id.clone());
        let st = py_result(self.running.block_on(py, async move {
            node.message(&id).await?.ok_or(steward::Error::NotFound(id))
        })?)?;
        Ok(PyMessageStatus::new(st))
    }

    /// Cancels the message if its destination has not received it yet; False if too late.
    fn cancel(&self, py: Python<'_>) -> PyResult<bool> {
        let node = self.running.node.clone();
        let id = self.id.clone();
        py_result(
            self.running
                .block_on(py, async move { node.cancel(&id).await })?,
        )
    }

    /// `await receipt` gives the `Result` without blocking the event loop (same errors as
    /// `result()`; use `asyncio.wait_for` for a timeout).
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.running.check()?;
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let future = event_loop.call_method0("create_future")?;
        let dispatcher = self.running.dispatcher.clone();
        let key = dispatcher.add_future(event_loop.unbind(), future.clone().unbind())?;
        let (node, id) = (self.running.node.clone(), self.id.clone());
        self.running.handle.spawn(async move {
            let outcome = node.result(&id).await;
            dispatcher.post(Job::Resolve {
                future: key,
                outcome,
            });
        });
        future.call_method0("__await__")
    }

    fn __repr__(&self) -> String {
        format!("Receipt(id={:?}, subject={:?})", self.id, self.subject)
    }
}
