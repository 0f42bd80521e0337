//! What follows a message's final state: its waiters are answered, the metrics counted, the
//! audit writer woken, the listeners told, and failures reported.
//!
//! A result the receiver holds durably is handed to the callers of `result()` at once, before
//! the sender's own final-state commit ([`Finals::answer_early`]): that commit is not on the caller's
//! path. A crash before it leaves the message pending; it is sent again after the restart and
//! the receiver answers from its record with the same result. Meanwhile the message's status
//! reads completed ([`Finals::finishing`]); listeners, the audit log and `wait()` follow the
//! commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::delivery::report::Reporter;
use crate::error::{Error, Result};
use crate::runtime::metrics::Metrics;
use crate::runtime::notify::{Dispatcher, ErrorReportKind, Notification};
use crate::wire::result::{MessageState, MessageStatus, MethodResult, Refusal, ResultStatus};

/// One waiter: for the final state (committed), or only for the result.
enum Waiter {
    Final(oneshot::Sender<MessageStatus>),
    Result(oneshot::Sender<Result<MethodResult>>),
}

impl Waiter {
    fn is_closed(&self) -> bool {
        match self {
            Waiter::Final(tx) => tx.is_closed(),
            Waiter::Result(tx) => tx.is_closed(),
        }
    }
}

/// A completed message whose final state is being committed.
#[derive(Debug, Clone)]
pub(crate) struct Finishing {
    /// Its result, as the receiver holds it.
    pub result: MethodResult,
    /// Send attempts.
    pub attempts: u32,
    /// When the result came (ms since the Unix epoch).
    pub at_ms: u64,
}

/// Waiters for final states, and what runs when a message reaches one.
pub(crate) struct Finals {
    waiters: Mutex<HashMap<String, Vec<Waiter>>>,
    /// Completed messages whose final state is not committed yet.
    finishing: Mutex<HashMap<String, Finishing>>,
    metrics: Arc<Metrics>,
    /// Wakes the audit writer when a message reaches a final state.
    pub audit_wake: Arc<Notify>,
    dispatcher: Arc<Dispatcher>,
    reporter: Arc<Reporter>,
}

impl Finals {
    /// Finals counting into `metrics`, telling `dispatcher`'s listeners, reporting failures
    /// through `reporter`.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        dispatcher: Arc<Dispatcher>,
        reporter: Arc<Reporter>,
    ) -> Self {
        Finals {
            waiters: Mutex::default(),
            finishing: Mutex::default(),
            metrics,
            audit_wake: Arc::new(Notify::new()),
            dispatcher,
            reporter,
        }
    }

    /// Registers a waiter for the final state of `id`.
    pub(crate) fn wait_for(&self, id: &str) -> Result<oneshot::Receiver<MessageStatus>> {
        let (tx, rx) = oneshot::channel();
        self.add(id, Waiter::Final(tx))?;
        Ok(rx)
    }

    /// Registers a waiter for the result of `id` only: answered as soon as the result is in,
    /// before its final state is committed (see the module docs).
    pub(crate) fn wait_result(&self, id: &str) -> Result<oneshot::Receiver<Result<MethodResult>>> {
        let (tx, rx) = oneshot::channel();
        self.add(id, Waiter::Result(tx))?;
        Ok(rx)
    }

    fn add(&self, id: &str, w: Waiter) -> Result<()> {
        let mut waiters = self.waiters.lock().map_err(|_| Error::Stopped)?;
        let list = waiters.entry(id.to_owned()).or_default();
        // Waits given up earlier (timed out, dropped) leave closed senders behind.
        list.retain(|w| !w.is_closed());
        list.push(w);
        Ok(())
    }

    /// A result the receiver holds durably came for `id`: its status reads completed from now
    /// on, while its final state is being committed. Call before submitting that commit.
    pub(crate) fn finishing_now(&self, id: &str, f: Finishing) {
        if let Ok(mut m) = self.finishing.lock() {
            m.insert(id.to_owned(), f);
        }
    }

    /// Answers the result waiters of `id` with its result (see [`Self::finishing_now`]). Call
    /// after submitting the final-state commit, so a status read that follows the answer waits
    /// for that commit ([`crate::store::Store::settle`]).
    pub(crate) fn answer_early(&self, id: &str, result: &MethodResult) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        if let Some(list) = waiters.get_mut(id) {
            list.retain_mut(|w| match w {
                Waiter::Result(_) => {
                    if let Waiter::Result(tx) =
                        std::mem::replace(w, Waiter::Final(oneshot::channel().0))
                    {
                        let _ = tx.send(Ok(result.clone()));
                    }
                    false
                }
                Waiter::Final(_) => true,
            });
            if list.is_empty() {
                waiters.remove(id);
            }
        }
    }

    /// The result of `id` if it came and its final state is still being committed.
    pub(crate) fn finishing(&self, id: &str) -> Option<Finishing> {
        self.finishing.lock().ok()?.get(id).cloned()
    }

    /// Removes the waiters of `id` whose receiving side is gone (only those: others may still wait).
    pub(crate) fn prune(&self, id: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            if let Some(list) = w.get_mut(id) {
                list.retain(|s| !s.is_closed());
                if list.is_empty() {
                    w.remove(id);
                }
            }
        }
    }

    /// Drops every waiter (at stop: their waits end with `Stopped`).
    pub(crate) fn clear(&self) {
        if let Ok(mut w) = self.waiters.lock() {
            w.clear();
        }
    }

    /// Everything that follows a final state: waiters, listeners, error reports.
    pub(crate) fn after_final(&self, st: MessageStatus) {
        self.metrics.finished(&st);
        if let Ok(mut m) = self.finishing.lock() {
            m.remove(&st.id);
        }
        if let Some(ws) = self.waiters.lock().ok().and_then(|mut w| w.remove(&st.id)) {
            for w in ws {
                match w {
                    Waiter::Final(tx) => {
                        let _ = tx.send(st.clone());
                    }
                    Waiter::Result(tx) => {
                        let _ = tx.send(status_to_result(st.clone()));
                    }
                }
            }
        }
        if st.subject.ends_with(".event._result") {
            if st.state != MessageState::Completed {
                tracing::error!(msg_id = %st.id, to = %st.to_node, "a result could not be delivered: {:?}", st.reason);
            }
            return;
        }
        let failure = match st.state {
            MessageState::Failed => Some((
                ErrorReportKind::DeliveryFailed,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Expired => Some((
                ErrorReportKind::Expired,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Rejected => Some((
                ErrorReportKind::Rejected,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Completed => match &st.result {
                Some(r) if r.status != ResultStatus::Ok => Some((
                    ErrorReportKind::MethodFailed,
                    r.error.clone().unwrap_or_else(|| match r.exit_code {
                        Some(c) => format!("exit status {c}"),
                        None => "method failed".into(),
                    }),
                )),
                _ => None,
            },
            _ => None,
        };
        self.audit_wake.notify_one();
        let about_error_log = st.subject.ends_with(".event.errorLog");
        if self.dispatcher.has_listeners() {
            self.dispatcher.notify(Notification::Finished(st.clone()));
        }
        if let Some((kind, reason)) = failure {
            let reason = format!("{} on {}: {reason}", st.subject, st.to_node);
            if about_error_log {
                // Never report the failure of an error report to central: that could loop.
                tracing::error!(msg_id = %st.id, to = %st.to_node, method = "errorLog", "error report to central failed: {reason}");
                self.reporter.report_locally(Some(st.id), kind, reason);
            } else {
                self.reporter.report(Some(st.id), kind, reason);
            }
        }
    }
}

/// The result of a message in its final state; its failure, expiry, refusal or cancellation as
/// the error.
pub(crate) fn status_to_result(st: MessageStatus) -> Result<MethodResult> {
    let reason = st.reason.clone().unwrap_or_default();
    match st.state {
        MessageState::Completed => st.result.ok_or(Error::NoResult(st.id)),
        MessageState::Failed => Err(Error::DeliveryFailed {
            id: st.id,
            node: st.to_node,
            reason,
        }),
        MessageState::Expired => Err(Error::Expired {
            id: st.id,
            stage: if reason.contains("run") {
                "run".into()
            } else {
                "delivered".into()
            },
        }),
        MessageState::Rejected if st.refusal == Some(Refusal::NotAllowed) => {
            Err(Error::NotAllowed {
                id: st.id,
                node: st.to_node,
                reason,
            })
        }
        MessageState::Rejected => Err(Error::Rejected {
            id: st.id,
            node: st.to_node,
            reason,
        }),
        MessageState::Cancelled => Err(Error::Cancelled(st.id)),
        _ => Err(Error::Stopped),
    }
}
