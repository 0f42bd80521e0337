//! What follows a message's final state: its waiters are answered, the metrics counted, the
//! audit writer woken, the listeners told, and failures reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::delivery::report::Reporter;
use crate::error::{Error, Result};
use crate::runtime::metrics::Metrics;
use crate::runtime::notify::{Dispatcher, ErrorReportKind, Notification};
use crate::wire::result::{MessageState, MessageStatus, ResultStatus};

/// Waiters for final states, and what runs when a message reaches one.
pub(crate) struct Finals {
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<MessageStatus>>>>,
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
            metrics,
            audit_wake: Arc::new(Notify::new()),
            dispatcher,
            reporter,
        }
    }

    /// Registers a waiter for the final state of `id`.
    pub(crate) fn wait_for(&self, id: &str) -> Result<oneshot::Receiver<MessageStatus>> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().map_err(|_| Error::Stopped)?;
        let list = waiters.entry(id.to_owned()).or_default();
        // Waits given up earlier (timed out, dropped) leave closed senders behind.
        list.retain(|w| !w.is_closed());
        list.push(tx);
        Ok(rx)
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
        if let Some(ws) = self.waiters.lock().ok().and_then(|mut w| w.remove(&st.id)) {
            for w in ws {
                let _ = w.send(st.clone());
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
