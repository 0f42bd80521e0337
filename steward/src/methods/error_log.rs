//! `errorLog` (event, on central): appends error reports to `<data_dir>/errors.log` as JSON
//! lines (time, node, message id, reason). Every other node forwards its errors here.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::config::NodeConfig;
use crate::delivery::outbox::Outbox;
use crate::runtime::notify::ErrorReport;
use crate::wire::handler::Request;
use crate::wire::message::Message;
use crate::wire::result::MethodResult;

/// File name of the central error log inside the data directory.
pub const ERRORS_LOG: &str = "errors.log";

pub(crate) async fn handle(req: Request) -> MethodResult {
    let mut lines = Vec::new();
    for d in &req.data {
        // The reporting node is the authenticated sender, whatever the report says.
        let line = match serde_json::from_str::<ErrorReport>(d) {
            Ok(mut r) => {
                r.node = req.from_node.clone();
                serde_json::to_value(&r).unwrap_or_default()
            }
            Err(_) => serde_json::json!({
                "timeMs": crate::wire::envelope::now_ms(), "node": req.from_node, "kind": "unparsed", "reason": d,
            }),
        };
        lines.push(line);
    }
    let path = req.data_dir.join(ERRORS_LOG);
    match tokio::task::spawn_blocking(move || append(&path, &lines)).await {
        Ok(Ok(())) => MethodResult::ok(""),
        Ok(Err(e)) => MethodResult::failed(format!("cannot write {ERRORS_LOG}: {e}")),
        Err(e) => MethodResult::failed(e.to_string()),
    }
}

fn append(path: &Path, lines: &[serde_json::Value]) -> std::io::Result<()> {
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
pub(crate) fn forward(outbox: &Outbox, cfg: &NodeConfig, lock: &Mutex<()>, report: ErrorReport) {
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
