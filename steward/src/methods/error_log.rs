//! `errorLog` (event, on central): appends error reports to `<data_dir>/errors.log` as JSON
//! lines (time, node, message id, reason). Every other node forwards its errors here.

use crate::delivery::report::{append, ERRORS_LOG};
use crate::runtime::notify::ErrorReport;
use crate::wire::handler::Request;
use crate::wire::result::MethodResult;

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
