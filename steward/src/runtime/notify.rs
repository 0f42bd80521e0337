//! Notifications to the embedding program: final message states and error reports.
//!
//! Listeners run one at a time on a dedicated thread (`steward-callbacks`), never on the I/O
//! runtime, so a slow callback delays only later callbacks, never delivery.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::wire::result::MessageStatus;

/// What kind of failure an [`ErrorReport`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorReportKind {
    /// Retries ran out without an ACK.
    DeliveryFailed,
    /// A message expired before delivery or execution.
    Expired,
    /// The method ran and failed (non-zero exit, error, timeout, unknown outcome).
    MethodFailed,
    /// The receiver refused a message.
    Rejected,
    /// Input (inmsg.txt, API) that could not be accepted.
    BadInput,
    /// An internal task failed and was restarted or stopped.
    TaskFailed,
    /// The broker refused this node while it was (re)connecting: credentials revoked,
    /// expired or changed, or a certificate no longer trusted.
    BrokerAuth,
}

/// One failure, as delivered to error listeners and to the central `errorLog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// When (ms since the Unix epoch).
    pub time_ms: u64,
    /// The node that reports it.
    pub node: String,
    /// The message concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// What failed.
    pub kind: ErrorReportKind,
    /// Why, in words for the operator.
    pub reason: String,
}

/// Something a listener is told.
#[derive(Debug, Clone)]
pub enum Notification {
    /// A message this node sent reached a final state (completed, failed, expired, ...).
    Finished(MessageStatus),
    /// A failure happened.
    Error(ErrorReport),
}

/// Identifies a listener for [`crate::Node::remove_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) u64);

pub(crate) type Listener = Arc<dyn Fn(&Notification) + Send + Sync>;

enum Cmd {
    Notify(Box<Notification>),
    Barrier(std::sync::mpsc::Sender<()>),
}

pub(crate) struct Dispatcher {
    tx: Mutex<Option<std::sync::mpsc::Sender<Cmd>>>,
    listeners: Arc<Mutex<Vec<(u64, Listener)>>>,
    next_id: Mutex<u64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Dispatcher {
    pub(crate) fn start() -> std::io::Result<Dispatcher> {
        let (tx, rx) = std::sync::mpsc::channel::<Cmd>();
        let listeners: Arc<Mutex<Vec<(u64, Listener)>>> = Arc::default();
        let ls = listeners.clone();
        let thread = std::thread::Builder::new()
            .name("steward-callbacks".into())
            .spawn(move || {
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Notify(n) => {
                            let current: Vec<Listener> = ls
                                .lock()
                                .map(|l| l.iter().map(|(_, f)| f.clone()).collect())
                                .unwrap_or_default();
                            for f in current {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&n)))
                                    .is_err()
                                {
                                    tracing::error!(
                                        "a steward listener panicked; it stays registered"
                                    );
                                }
                            }
                        }
                        Cmd::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Dispatcher {
            tx: Mutex::new(Some(tx)),
            listeners,
            next_id: Mutex::new(1),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn notify(&self, n: Notification) {
        if let Ok(tx) = self.tx.lock() {
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(Cmd::Notify(Box::new(n)));
            }
        }
    }

    /// True if a listener is registered (so building a notification is worth it).
    pub(crate) fn has_listeners(&self) -> bool {
        self.listeners
            .lock()
            .map(|l| !l.is_empty())
            .unwrap_or(false)
    }

    pub(crate) fn add(&self, f: Listener) -> ListenerId {
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        if let Ok(mut l) = self.listeners.lock() {
            l.push((id, f));
        }
        ListenerId(id)
    }

    /// Removes a listener and waits until no call to it is in flight (unless called from a callback).
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let removed = match self.listeners.lock() {
            Ok(mut l) => {
                let before = l.len();
                l.retain(|(i, _)| *i != id.0);
                l.len() != before
            }
            Err(_) => false,
        };
        self.barrier();
        removed
    }

    /// Waits until every notification queued so far has been delivered.
    pub(crate) fn barrier(&self) {
        let on_dispatch_thread = std::thread::current().name() == Some("steward-callbacks");
        if on_dispatch_thread {
            return;
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(Cmd::Barrier(done_tx)).is_ok()))
            .unwrap_or(false);
        if sent {
            let _ = done_rx.recv();
        }
    }

    /// Delivers what is queued, then ends the thread and drops every listener.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            if std::thread::current().id() != h.thread().id() {
                let _ = h.join();
            }
        }
        if let Ok(mut l) = self.listeners.lock() {
            l.clear();
        }
    }
}
