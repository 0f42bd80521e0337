//! `textLogging` (event): appends the data lines to `<data_dir>/textlogging/<fromNode>.log` and
//! flushes them to disk before completing. The path comes from the validated sender name only.

use std::io::Write;

use crate::wire::handler::Request;
use crate::wire::result::MethodResult;

pub(crate) async fn handle(req: Request) -> MethodResult {
    if let Err(e) = crate::wire::names::node(&req.from_node) {
        return MethodResult::failed(e.to_string());
    }
    let dir = req.data_dir.join("textlogging");
    let path = dir.join(format!("{}.log", req.from_node));
    let lines = req.data;
    let res = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
        crate::private_files::create_dir(&dir)?;
        let mut f = crate::private_files::append(&path)?;
        let mut buf = String::new();
        for l in &lines {
            buf.push_str(l);
            if !l.ends_with('\n') {
                buf.push('\n');
            }
        }
        f.write_all(buf.as_bytes())?;
        f.sync_data()?;
        Ok(lines.len())
    })
    .await;
    match res {
        Ok(Ok(n)) => MethodResult::ok(format!("logged {n} line(s)")),
        Ok(Err(e)) => MethodResult::failed(format!("cannot write the text log: {e}")),
        Err(e) => MethodResult::failed(format!("text logging failed: {e}")),
    }
}
