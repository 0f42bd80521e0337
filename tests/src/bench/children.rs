//! Child process modes of `steward-bench` (the parent starts the same binary with one of these
//! as its first argument). Each prints one-line reports on stdout and exits when its stdin
//! closes, so a parent that dies takes its children along.
//!
//! * `--nodes-child URL DIR PREFIX START COUNT`: hosts nodes `PREFIX<START>` … serving the
//!   built-ins; once all are connected prints `ready COUNT MS RSS_KB THREADS FDS`, or `error INDEX MESSAGE` and
//!   `limits STARTED RSS_KB THREADS FDS` when a node cannot start.
//! * `--serve-child NAME URL DIR`: one node serving the built-ins; prints `ready STARTED_MS
//!   CONNECTED_MS` (since exec: `start()` returned, connected to the broker).
//! * `--queue-child NAME URL DIR TO COUNT`: queues COUNT `echo` commands `q-<i>` to TO in
//!   batches of 1,000, prints `queued MS` and waits to be killed.
//! * `--resume-child NAME URL DIR COUNT`: restarts NAME and waits until COUNT messages `q-<i>`
//!   are completed; prints `done DONE_MS STARTED_MS FAILED PENDING FIRST_MS CONNECTED_MS` (times
//!   since exec: all completed, `start()` returned, first completion, connected to the broker).
//! * `--footprint-child idle|dests|queued URL DIR N`: resident memory of one node (see
//!   [`footprint`]); prints `footprint …`.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use steward::{Kind, Message, MessageState, Method, MethodResult, Node, NodeBuilder, Notification};

use super::proc;

/// Options shared by every bench node (`noop` and, declared repeatable, `noopr`: event methods
/// that do nothing): resend an unanswered message within half a second, so
/// that the time a destination needs to come back is not dominated by the default backoff
/// (1 s doubling to 30 s).
pub fn builder(name: &str, url: &str, dir: &std::path::Path) -> NodeBuilder {
    signed(dir, Node::builder(name))
        .brokers([url.to_owned()])
        .data_dir(dir.join(name))
        .retry_wait(Duration::from_millis(100))
        .retry_wait_max(Duration::from_millis(500))
        .allow("*", "noop")
        .allow("*", "echo")
        .allow("*", "noopr")
        .method(
            "noop",
            Method::new(Kind::Event, |_| async { MethodResult::ok("") }),
        )
        .method(
            "noopr",
            Method::new(Kind::Event, |_| async { MethodResult::ok("") }).repeatable(),
        )
}

/// By default (steward's default, `required`) every bench node requires signed messages and
/// signs with one shared key (a fixed test seed, never a real key) that it trusts for `central`
/// and `ship1` — the names the throughput section uses — so the cost of verification shows.
/// With `STEWARD_BENCH_SIGNATURES=off`, every message is signed and nothing checked; with
/// `unsigned`, nothing is signed either (the cost of signing shows).
fn signed(dir: &std::path::Path, b: NodeBuilder) -> NodeBuilder {
    use base64::Engine as _;
    match std::env::var("STEWARD_BENCH_SIGNATURES").as_deref() {
        Ok("off") => return b.signatures(steward::SignaturePolicy::Off),
        Ok("unsigned") => return b.signatures(steward::SignaturePolicy::Unsigned),
        _ => {}
    }
    let seed = [7u8; 32];
    let path = dir.join("bench.key");
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("bench key file");
        let line = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(seed)
        );
        f.write_all(line.as_bytes()).expect("bench key file");
    }
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let key = steward::PublicKey::parse(&base64::engine::general_purpose::STANDARD.encode(public))
        .expect("bench public key");
    b.signatures(steward::SignaturePolicy::Required)
        .key_file(path)
        .trust_key("central", key)
        .trust_key("ship1", key)
}

/// Prints one line and flushes.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits until `node` is connected to the broker (`start()` returns before that), polling.
pub async fn wait_connected(node: &Node, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !node.is_connected() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// The nodes a `--nodes-child` hosts, for `stats` requests.
static HOSTED: std::sync::Mutex<Vec<Node>> = std::sync::Mutex::new(Vec::new());

/// Exits the process when stdin closes (the parent finished or died); answers a `stats` line
/// with `stats JOBS COMMITS APPLY_NS COMMIT_NS`, the store writer counters summed over the
/// hosted nodes.
fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "stats" {
                let nodes = HOSTED.lock().unwrap_or_else(|p| p.into_inner());
                let mut sum = [0u64; 4];
                for n in nodes.iter() {
                    let st = n.store_stats();
                    for (s, v) in
                        sum.iter_mut()
                            .zip([st.jobs, st.commits, st.apply_ns, st.commit_ns])
                    {
                        *s += v;
                    }
                }
                say(format!("stats {} {} {} {}", sum[0], sum[1], sum[2], sum[3]));
            }
        }
        std::process::exit(0);
    });
}

/// Runs the child mode named by `args[1]`; returns false if `args[1]` names none.
pub fn run(args: &[String]) -> bool {
    let exec = Instant::now();
    let mode = args.get(1).map(String::as_str).unwrap_or_default();
    if !matches!(
        mode,
        "--nodes-child"
            | "--serve-child"
            | "--queue-child"
            | "--resume-child"
            | "--footprint-child"
    ) {
        return false;
    }
    proc::raise_nofile();
    exit_on_stdin_eof();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let a = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{mode}: argument {i} missing: {args:?}"))
    };
    let n = |i: usize| -> usize { a(i).parse().expect("a number") };
    rt.block_on(async {
        match mode {
            "--nodes-child" => nodes(a(2), a(3).as_ref(), a(4), n(5), n(6)).await,
            "--serve-child" => serve(a(2), a(3), a(4).as_ref(), exec).await,
            "--queue-child" => queue(a(2), a(3), a(4).as_ref(), a(5), n(6), exec).await,
            "--resume-child" => resume(a(2), a(3), a(4).as_ref(), n(5), exec).await,
            _ => super::footprint::child(a(2), a(3), a(4).as_ref(), n(5)).await,
        }
    });
    true
}

async fn nodes(url: &str, dir: &std::path::Path, prefix: &str, start: usize, count: usize) {
    let t = Instant::now();
    let mut started = Vec::with_capacity(count);
    let mut s = futures::stream::iter(start..start + count)
        .map(|i| async move {
            let name = format!("{prefix}{i}");
            (i, builder(&name, url, dir).start().await)
        })
        .buffer_unordered(16);
    while let Some((i, r)) = s.next().await {
        match r {
            Ok(node) => started.push(node),
            Err(e) => {
                say(format!("error {i} {e}"));
                say(format!(
                    "limits {} {} {} {}",
                    started.len(),
                    proc::rss_kb(),
                    proc::threads(),
                    proc::fds()
                ));
                std::process::exit(1);
            }
        }
    }
    let mut unconnected = 0;
    for n in &started {
        if !wait_connected(n, Duration::from_secs(120)).await {
            unconnected += 1;
        }
    }
    if unconnected > 0 {
        say(format!(
            "error {start} {unconnected} nodes did not connect within 120 s"
        ));
        say(format!(
            "limits {} {} {} {}",
            started.len(),
            proc::rss_kb(),
            proc::threads(),
            proc::fds()
        ));
        std::process::exit(1);
    }
    HOSTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(started.iter().cloned());
    say(format!(
        "ready {} {} {} {} {}",
        started.len(),
        t.elapsed().as_millis(),
        proc::rss_kb(),
        proc::threads(),
        proc::fds()
    ));
    futures::future::pending::<()>().await;
}

async fn serve(name: &str, url: &str, dir: &std::path::Path, exec: Instant) {
    let node = builder(name, url, dir).start().await.expect("node start");
    let started = exec.elapsed().as_millis();
    wait_connected(&node, Duration::from_secs(60)).await;
    say(format!("ready {started} {}", exec.elapsed().as_millis()));
    futures::future::pending::<()>().await;
    drop(node);
}

async fn queue(
    name: &str,
    url: &str,
    dir: &std::path::Path,
    to: &str,
    count: usize,
    exec: Instant,
) {
    let node = builder(name, url, dir).start().await.expect("node start");
    for start in (0..count).step_by(1000) {
        let batch = (start..(start + 1000).min(count))
            .map(|i| Message::command(to, "echo", ["x"]).with_id(format!("q-{i}")))
            .collect();
        node.send_batch(batch).await.expect("send_batch");
    }
    say(format!("queued {}", exec.elapsed().as_millis()));
    futures::future::pending::<()>().await;
}

async fn resume(name: &str, url: &str, dir: &std::path::Path, count: usize, exec: Instant) {
    let completed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(tokio::sync::Notify::new());
    let first = Arc::new(std::sync::OnceLock::new());
    let (c, f, n, fi) = (
        completed.clone(),
        failed.clone(),
        all_in.clone(),
        first.clone(),
    );
    let node = builder(name, url, dir)
        .on_notification(move |ev| {
            if let Notification::Finished(st) = ev {
                if !st.id.starts_with("q-") {
                    return;
                }
                if st.state != MessageState::Completed {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                let _ = fi.set(exec.elapsed().as_millis());
                if c.fetch_add(1, Ordering::Relaxed) + 1 == count {
                    n.notify_one();
                }
            }
        })
        .start()
        .await
        .expect("node start");
    let started = exec.elapsed().as_millis();
    // When the broker connection came up (start() returns before that).
    let probe = node.clone();
    let connected = tokio::spawn(async move {
        wait_connected(&probe, Duration::from_secs(60)).await;
        exec.elapsed().as_millis()
    });
    all_in.notified().await;
    let done = exec.elapsed().as_millis();
    let pending: u64 = node
        .destinations()
        .map(|d| d.iter().map(|d| d.pending).sum())
        .unwrap_or(u64::MAX);
    let connected = connected.await.unwrap_or(done);
    say(format!(
        "done {done} {started} {} {pending} {} {connected}",
        failed.load(Ordering::Relaxed),
        first.get().copied().unwrap_or(done)
    ));
    node.stop().await;
}
