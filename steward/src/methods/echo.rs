//! `echo` (command): returns its data at once, joined by spaces — for liveness checks and benchmarks.

use crate::wire::handler::Request;
use crate::wire::result::MethodResult;

pub(crate) async fn handle(req: Request) -> MethodResult {
    let mut r = MethodResult::ok(req.data.join(" "));
    r.exit_code = Some(0);
    r
}
