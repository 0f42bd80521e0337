//! The node's tasks: where they are spawned, the shutdown signal they watch, and the handles
//! `Node::stop` waits for.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Spawns and keeps the node's tasks; says when the node stops.
pub(crate) struct Tasks {
    /// The runtime the node started on; tasks are spawned here even from the store's thread.
    pub rt: tokio::runtime::Handle,
    /// `true` once the node stops.
    pub shutdown: watch::Sender<bool>,
    list: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    /// Tasks on the current runtime, not stopping.
    pub(crate) fn new() -> Tasks {
        Tasks {
            rt: tokio::runtime::Handle::current(),
            shutdown: watch::channel(false).0,
            list: Mutex::default(),
        }
    }

    /// Spawns `fut` on the node's runtime and keeps its handle for `stop`.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.rt.spawn(fut);
        self.keep(handle);
    }

    /// Keeps a handle of a task spawned elsewhere, for `stop` (finished ones are dropped).
    pub(crate) fn keep(&self, handle: JoinHandle<()>) {
        if let Ok(mut t) = self.list.lock() {
            t.retain(|h| !h.is_finished());
            t.push(handle);
        }
    }

    /// True once the node stops.
    pub(crate) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that sees the node stop.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Signals the stop; false if it was signalled before.
    pub(crate) fn stop(&self) -> bool {
        !self.shutdown.send_replace(true)
    }

    /// The handles of every task still kept (for `stop` to wait on).
    pub(crate) fn take(&self) -> Vec<JoinHandle<()>> {
        self.list
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
