//! A started node: the tokio runtime (2 workers) that drives the core node, the node's
//! callback thread ([`Dispatcher`]) and its optional embedded nats-server; the blocking helpers
//! that `Node` and `Receipt` calls share; and the order in which it all stops.
//!
//! Every blocking call detaches from the interpreter while it waits, so other Python threads
//! keep running.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};

use steward::EmbeddedBroker;

use crate::dispatch::Dispatcher;
use crate::errors;

/// How long stopping lets the runtime finish leftover tasks.
pub(crate) const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Longest wait for the core's `Node::stop` (which gives running methods 5 s). Its final
/// flush to the broker waits for a reconnect when the broker is gone for good, so without
/// this bound `stop()` would hang whenever the broker stopped first.
const CORE_STOP_LIMIT: Duration = Duration::from_secs(7);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A runtime for one node: 2 worker threads named `steward-rt`.
pub(crate) fn new_runtime() -> PyResult<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("steward-rt")
        .enable_all()
        .build()
        .map_err(|e| {
            errors::to_py(steward::Error::Config {
                reason: format!("cannot start the node's runtime threads: {e}"),
                source: Some(Box::new(e)),
            })
        })
}

/// A started node: the runtime, the core node and what must be stopped with it.
pub(crate) struct Running {
    pub(crate) node: steward::Node,
    pub(crate) handle: Handle,
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// The broker URLs in use (the embedded broker's, if the node started one).
    pub(crate) brokers: Vec<String>,
    runtime: Mutex<Option<Runtime>>,
    broker: Mutex<Option<EmbeddedBroker>>,
    stopped: AtomicBool,
}

impl Running {
    /// A started node whose callback thread runs; it owns `runtime` and `broker` from here on.
    pub(crate) fn new(
        node: steward::Node,
        runtime: Runtime,
        dispatcher: Arc<Dispatcher>,
        broker: Option<EmbeddedBroker>,
        brokers: Vec<String>,
    ) -> Arc<Running> {
        Arc::new(Running {
            node,
            handle: runtime.handle().clone(),
            dispatcher,
            brokers,
            runtime: Mutex::new(Some(runtime)),
            broker: Mutex::new(broker),
            stopped: AtomicBool::new(false),
        })
    }

    /// Fails with `Stopped` once the node has stopped.
    pub(crate) fn check(&self) -> PyResult<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(errors::to_py(steward::Error::Stopped));
        }
        Ok(())
    }

    /// Runs a short future (a disk commit, a store read) to completion, detached.
    pub(crate) fn block_on<F>(&self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.check()?;
        let handle = &self.handle;
        Ok(py.detach(|| handle.block_on(fut)))
    }

    /// Stops it all, in order: later calls fail with `Stopped`; the core node stops (within
    /// `CORE_STOP_LIMIT`) and the runtime shuts down; the callback thread finishes its queue;
    /// then the embedded broker stops.
    pub(crate) fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.stopped.store(true, Ordering::Release);
        let node = self.node.clone();
        let handle = self.handle.clone();
        let runtime = lock(&self.runtime).take();
        py.detach(move || {
            let finished = handle.block_on(async {
                tokio::time::timeout(CORE_STOP_LIMIT, node.stop())
                    .await
                    .is_ok()
            });
            if !finished {
                tracing::warn!(
                    node = %node.name(),
                    "the node did not finish stopping within {} s (is the broker gone?); \
                     its data directory is released once its last Receipt is dropped",
                    CORE_STOP_LIMIT.as_secs()
                );
            }
            if let Some(rt) = runtime {
                rt.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
            }
        });
        self.dispatcher.shutdown(py)?;
        let broker = lock(&self.broker).take();
        if let Some(mut b) = broker {
            py.detach(move || b.stop());
        }
        Ok(())
    }
}
