//! A steward node in its own process, for tests that SIGKILL and restart nodes, measure a
//! node's memory, or limit its file sizes.
//!
//! * `steward-test-node serve NAME URL DIR` serves the built-in methods plus `record` (a command
//!   that appends its data to `<DIR>/<NAME>/record.log` and fsyncs) until killed; prints `ready`.
//! * `steward-test-node watch NAME URL DIR` is `serve` that also sends what is appended to
//!   `<DIR>/<NAME>/inmsg.txt`.
//! * `steward-test-node send NAME URL DIR TO COUNT` sends `record` commands `m-0 … m-(COUNT-1)`
//!   (ids `m-<i>`, so a restarted sender replays them idempotently) one by one, printing
//!   `accepted <i>` after each durable acceptance, then waits until all are completed and prints
//!   `completed <n>` (how many ended with an OK result) and `done`.
//! * `steward-test-node backlog NAME URL DIR TO COUNT` does the same in batches of 100 (prints
//!   `accepted <n>` with the number accepted so far after each batch).
//! * `steward-test-node fill NAME URL DIR TO LIMIT` limits the size of every file it writes to
//!   LIMIT bytes (`setrlimit(RLIMIT_FSIZE)`, SIGXFSZ ignored so writes fail with EFBIG; 0: no
//!   limit, e.g. on a small tmpfs), then sends 16 KiB `record` commands `f-<i>` until a send fails.
//!   Prints `accepted <i>` per success, `error <ErrorKind> <message>` for the failure and for
//!   one more attempt, then stops the node and prints `stopped`.
//!
//! Env: `RUST_LOG` (tracing to stderr), `STEWARD_TEST_ACK_MS` (ACK timeout, default 500), `STEWARD_TEST_WINDOW` (messages in
//! flight per subject, default the core's).

use std::io::Write;
use std::time::Duration;

use steward::{Kind, Message, Method, MethodResult, Node, Request};

fn record(req: Request) -> MethodResult {
    let path = req.data_dir.join("record.log");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{} {}", req.from_node, req.data.join(" "))?;
        f.sync_data()
    })();
    match res {
        Ok(()) => MethodResult::ok(""),
        Err(e) => MethodResult::failed(e.to_string()),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").ok();
    out.flush().ok();
}

/// Limits the size of files this process writes; writes past it fail with EFBIG.
fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls with valid arguments; no memory is shared.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: bytes as libc::rlim_t,
        };
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            eprintln!(
                "setrlimit(RLIMIT_FSIZE): {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(3);
        }
    }
}

async fn wait_all(receipts: Vec<steward::Receipt>) -> usize {
    let mut ok = 0;
    for r in receipts {
        let res = r.result().await.expect("result");
        if res.status == steward::ResultStatus::Ok {
            ok += 1;
        }
    }
    ok
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: steward-test-node serve|watch NAME URL DIR | send|backlog NAME URL DIR TO COUNT | fill NAME URL DIR TO LIMIT";
    let (mode, name, url, dir) = match &args[..] {
        [_, mode, name, url, dir, ..] => (mode.as_str(), name, url, dir),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let mut builder = Node::builder(name.as_str())
        .brokers(url.split(',').map(str::to_owned))
        .data_dir(std::path::Path::new(dir).join(name))
        .ack_timeout(Duration::from_millis(
            env_u64("STEWARD_TEST_ACK_MS").unwrap_or(500),
        ))
        .retry_wait(Duration::from_millis(50))
        .retry_wait_max(Duration::from_millis(300))
        .watch_inmsg(mode == "watch")
        // Delivery among names made up per test, not enrolment (see nodes::test_node).
        .signatures(steward::SignaturePolicy::Off)
        .allow("*", "record")
        .method(
            "record",
            Method::new(Kind::Command, |r: Request| async move { record(r) }),
        );
    if let Some(w) = env_u64("STEWARD_TEST_WINDOW") {
        builder = builder.window(w as usize);
    }
    let node = builder.start().await.expect("node start");
    match mode {
        "serve" | "watch" => {
            say("ready");
            futures::future::pending::<()>().await;
        }
        "send" | "backlog" => {
            let to = &args[5];
            let count: usize = args[6].parse().expect("COUNT");
            let msg = |i: usize| {
                Message::command(to.as_str(), "record", [format!("m-{i}")])
                    .with_id(format!("m-{i}"))
            };
            let mut receipts = Vec::new();
            if mode == "send" {
                for i in 0..count {
                    receipts.push(node.send(msg(i)).await.expect("send"));
                    say(format!("accepted {i}"));
                }
            } else {
                for start in (0..count).step_by(100) {
                    let batch = (start..(start + 100).min(count)).map(msg).collect();
                    receipts.extend(node.send_batch(batch).await.expect("send_batch"));
                    say(format!("accepted {}", receipts.len()));
                }
            }
            let ok = wait_all(receipts).await;
            say(format!("completed {ok}"));
            say("done");
            node.stop().await;
        }
        "fill" => {
            let to = &args[5];
            let limit: u64 = args[6].parse().expect("LIMIT");
            if limit > 0 {
                limit_file_size(limit);
            }
            let pad = "x".repeat(16 * 1024);
            let mut failures = 0;
            for i in 0.. {
                let m = Message::command(to.as_str(), "record", [format!("f-{i}"), pad.clone()])
                    .with_id(format!("f-{i}"));
                match node.send(m).await {
                    Ok(_) => say(format!("accepted {i}")),
                    Err(e) => {
                        say(format!("error {:?} {e}", e.kind()));
                        failures += 1;
                        if failures == 2 {
                            break;
                        }
                    }
                }
            }
            node.stop().await;
            say("stopped");
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
