//! `echo` (command): returns its data at once, joined by spaces — for liveness checks and benchmarks.

use crate::handler::Request;
use crate::result::MethodResult;

pub(crate) async fn handle(req: Request) -> MethodResult {
    let mut r = MethodResult::ok(req.data.join(" "));
    r.exit_code = Some(0);
    r
}
