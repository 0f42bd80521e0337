//! `shellCommand` (command): runs `data` as argv directly — no implicit shell; `bash -c` only
//! when the message says so. Output is captured up to the node's limit per stream (truncation is
//! reported), the whole process group is killed at `methodTimeout`, and the exit status returned.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::wire::handler::Request;
use crate::wire::result::{MethodResult, ResultStatus};

/// Kills the command's whole process group when dropped (also when the node stops mid-run).
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn handle(req: Request) -> MethodResult {
    let Some(program) = req.data.first() else {
        return MethodResult::failed(
            "data is empty; give the command and its arguments, e.g. [\"bash\",\"-c\",\"ls -l\"]",
        );
    };
    if let Some(i) = req.data.iter().position(|a| a.contains('\0')) {
        return MethodResult::failed(format!(
            "argument {i} contains a NUL byte, which no command can receive"
        ));
    }
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(&req.data[1..])
        .current_dir(&req.data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut r = MethodResult::failed(format!("cannot start {program:?}: {e}"));
            r.exit_code = Some(127);
            return r;
        }
    };
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let limit = req.output_limit;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let run = async {
        let (o, e, status) = tokio::join!(capture(out, limit), capture(err, limit), child.wait());
        (o, e, status)
    };
    let outcome = tokio::time::timeout(req.method_timeout, run).await;
    let mut r = match outcome {
        Ok(((stdout, t1), (stderr, t2), status)) => {
            guard.0 = None; // exited and its pipes are closed: nothing left to kill
            let mut r = MethodResult::ok(String::from_utf8_lossy(&stdout).into_owned());
            r.stderr = String::from_utf8_lossy(&stderr).into_owned();
            r.truncated = t1 || t2;
            match status {
                Ok(s) => {
                    r.exit_code = s.code();
                    if s.code() != Some(0) {
                        r.status = ResultStatus::Failed;
                        r.error = Some(match (s.code(), s.signal()) {
                            (Some(c), _) => format!("exit status {c}"),
                            (None, Some(sig)) => format!("killed by signal {sig}"),
                            _ => "ended abnormally".into(),
                        });
                    }
                }
                Err(e) => {
                    r.status = ResultStatus::Failed;
                    r.error = Some(format!("cannot wait for the command: {e}"));
                }
            }
            r
        }
        Err(_) => {
            guard.kill();
            let mut r = MethodResult::failed(format!(
                "killed (with its whole process group) after methodTimeout of {:?}",
                req.method_timeout
            ));
            r.exit_code = None;
            r
        }
    };
    if r.truncated {
        let note = format!("output truncated at {limit} bytes per stream");
        r.error = Some(match r.error.take() {
            Some(e) => format!("{e}; {note}"),
            None => note,
        });
    }
    r.duration_ms = started.elapsed().as_millis() as u64;
    r
}

/// Reads a stream to its end, keeping at most `limit` bytes; returns (bytes, truncated).
async fn capture<R: AsyncRead + Unpin>(stream: Option<R>, limit: usize) -> (Vec<u8>, bool) {
    let Some(mut s) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut truncated = false;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::Kind;
    use std::time::Duration;

    fn req(data: &[&str], timeout_ms: u64, limit: usize) -> Request {
        Request {
            id: "t".into(),
            from_node: "central".into(),
            to_node: "ship1".into(),
            kind: Kind::Command,
            method: "shellCommand".into(),
            data: data.iter().map(|s| s.to_string()).collect(),
            method_timeout: Duration::from_millis(timeout_ms),
            data_dir: std::env::temp_dir(),
            output_limit: limit,
        }
    }

    #[tokio::test]
    async fn runs_argv_without_a_shell() {
        let r = handle(req(&["echo", "a;b", "$(x)", "-o...", "*"], 5000, 1 << 20)).await;
        assert_eq!(r.status, ResultStatus::Ok);
        assert_eq!(r.stdout, "a;b $(x) -o... *\n");
        assert_eq!(r.exit_code, Some(0));
    }

    #[tokio::test]
    async fn reports_exit_status_and_stderr() {
        let r = handle(req(&["bash", "-c", "echo oops >&2; exit 3"], 5000, 1 << 20)).await;
        assert_eq!(r.status, ResultStatus::Failed);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stderr, "oops\n");
    }

    #[tokio::test]
    async fn kills_the_whole_group_at_timeout() {
        let marker = std::env::temp_dir().join(format!("steward-grp-{}", std::process::id()));
        let script = format!("(sleep 1.5; touch {}) & sleep 30", marker.display());
        let r = handle(req(&["bash", "-c", &script], 300, 1 << 20)).await;
        assert_eq!(r.status, ResultStatus::Failed);
        assert!(r.error.unwrap().contains("methodTimeout"));
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert!(
            !marker.exists(),
            "a process of the group survived the timeout"
        );
    }

    #[tokio::test]
    async fn truncates_at_the_limit() {
        let r = handle(req(&["bash", "-c", "head -c 5000 /dev/zero"], 5000, 1000)).await;
        assert!(r.truncated);
        assert_eq!(r.stdout.len(), 1000);
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_failure() {
        let r = handle(req(&["/nonexistent/prog"], 5000, 1000)).await;
        assert_eq!(r.status, ResultStatus::Failed);
        assert!(r.error.unwrap().contains("cannot start"));
    }
}
