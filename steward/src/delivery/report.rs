//! The error kernel's reporting half: every error report goes to the log, to the node's
//! listeners and to central's `errorLog` (queued through the outbox, or appended directly to
//! `errors.log` on central itself).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::NodeConfig;
use crate::delivery::outbox::Outbox;
use crate::runtime::notify::{Dispatcher, ErrorReport, ErrorReportKind, Notification};
use crate::wire::envelope::now_ms;
use crate::wire::message::Message;

/// File name of the central error log inside the data directory.
pub const ERRORS_LOG: &str = "errors.log";

/// Reports errors: the log line, the listeners, central.
pub(crate) struct Reporter {
    cfg: Arc<NodeConfig>,
    dispatcher: Arc<Dispatcher>,
    outbox: Outbox,
    /// Serializes central's own appends to `errors.log`.
    lock: Mutex<()>,
}

impl Reporter {
    /// A reporter for the node of `cfg`, telling `dispatcher`'s listeners and queueing to
    /// central through `outbox`.
    pub(crate) fn new(cfg: Arc<NodeConfig>, dispatcher: Arc<Dispatcher>, outbox: Outbox) -> Self {
        Reporter {
            cfg,
            dispatcher,
            outbox,
            lock: Mutex::new(()),
        }
    }

    /// Reports an error: log, local listeners, and central's `errorLog`.
    pub(crate) fn report(&self, message_id: Option<String>, kind: ErrorReportKind, reason: String) {
        let report = self.error_report(message_id, kind, reason);
        tracing::warn!(msg_id = report.message_id.as_deref(), kind = ?report.kind, "{}", report.reason);
        self.dispatcher.notify(Notification::Error(report.clone()));
        forward(&self.outbox, &self.cfg, &self.lock, report);
    }

    /// Tells only the local listeners (for the failure of an error report itself: sending it to
    /// central could loop).
    pub(crate) fn report_locally(
        &self,
        message_id: Option<String>,
        kind: ErrorReportKind,
        reason: String,
    ) {
        let report = self.error_report(message_id, kind, reason);
        self.dispatcher.notify(Notification::Error(report));
    }

    fn error_report(
        &self,
        message_id: Option<String>,
        kind: ErrorReportKind,
        reason: String,
    ) -> ErrorReport {
        ErrorReport {
            time_ms: now_ms(),
            node: self.cfg.name.clone(),
            message_id,
            kind,
            reason,
        }
    }
}

/// Appends JSON lines to `errors.log` at `path`, fsync'd.
pub(crate) fn append(path: &Path, lines: &[serde_json::Value]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l)?;
        buf.push(b'\n');
    }
    let mut f = crate::private_files::append(path)?;
    f.write_all(&buf)?;
    f.sync_data()
}

/// Sends a report to central's `errorLog` through `outbox`, or appends it directly when this
/// node (`cfg`) is central (`lock` serializes those appends).
fn forward(outbox: &Outbox, cfg: &NodeConfig, lock: &Mutex<()>, report: ErrorReport) {
    // The message the report is about, for the log lines below.
    let about = report.message_id.clone();
    if cfg.name == cfg.central {
        let path = cfg.data_dir.join(ERRORS_LOG);
        let line = serde_json::to_value(&report).unwrap_or_default();
        let _guard = lock.lock();
        if let Err(e) = append(&path, &[line]) {
            tracing::error!(
                msg_id = about.as_deref(),
                "cannot write {}: {e}",
                path.display()
            );
        }
        return;
    }
    let data = serde_json::to_string(&report).unwrap_or_default();
    let msg = Message::event(cfg.central.clone(), "errorLog", [data]);
    let prepared = match outbox.prepare(msg, None, false) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(
                msg_id = about.as_deref(),
                "cannot prepare an error report for central: {e}"
            );
            return;
        }
    };
    let r = outbox.submit_with(
        |_| Ok(()),
        vec![prepared],
        move |r| match r {
            Ok(_) => {}
            Err(e) => tracing::error!(
                msg_id = about.as_deref(),
                "cannot queue an error report for central: {e}"
            ),
        },
    );
    if r.is_err() {
        tracing::debug!(
            msg_id = report.message_id.as_deref(),
            "node stopping; error report not queued"
        );
    }
}
