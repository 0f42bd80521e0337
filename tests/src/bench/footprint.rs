//! Section 5: resident memory of a node alone in its process (idle, with 1,000 destinations,
//! per queued message) and outbox bytes on disk per message. CPU time per message is measured
//! with the throughput runs ([`super::throughput`]).

use std::path::Path;
use std::time::{Duration, Instant};

use steward::{Message, Node};

use super::children::{builder, say};
use super::proc::{self, num, ChildProc};
use super::report::{Row, Target};
use super::Settings;

/// How long an idle process is left alone before its memory is read: the connection
/// handshake, first PINGs and lazy allocations happen in this window.
const SETTLE: Duration = Duration::from_secs(1);

/// Waits until every message has been tried at least once (its publisher ran into the
/// offline destination), polling the node.
async fn wait_attempted(node: &Node, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left: Vec<&String> = ids.iter().collect();
    while !left.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in left {
            let tried = node
                .message(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.attempts > 0);
            if !tried {
                still.push(id);
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The child side: `idle`, `dests` (one queued message to each of N offline destinations) or
/// `queued` (N messages queued for one offline destination).
pub async fn child(mode: &str, url: &str, dir: &Path, n: usize) {
    let base = proc::rss_kb();
    let node = builder("fp", url, dir).start().await.expect("node start");
    let db = dir.join("fp").join("steward.redb");
    match mode {
        "idle" => {
            tokio::time::sleep(SETTLE).await;
            say(format!(
                "footprint {} {base} {} {}",
                proc::rss_kb(),
                proc::threads(),
                proc::fds()
            ));
        }
        "dests" => {
            tokio::time::sleep(SETTLE).await;
            let before = proc::rss_kb();
            let msgs = (0..n)
                .map(|i| Message::command(format!("d{i}"), "echo", ["x"]).with_id(format!("d-{i}")))
                .collect();
            node.send_batch(msgs).await.expect("send_batch");
            let ids: Vec<String> = (0..n).map(|i| format!("d-{i}")).collect();
            wait_attempted(&node, &ids).await;
            tokio::time::sleep(SETTLE).await;
            say(format!(
                "footprint {} {before} {} {}",
                proc::rss_kb(),
                proc::threads(),
                proc::fds()
            ));
        }
        _ => {
            // Warm up: the destination's publisher exists and backs off before the baseline.
            node.send(Message::command("off", "echo", ["x"]).with_id("warm"))
                .await
                .expect("send");
            wait_attempted(&node, &["warm".to_owned()]).await;
            tokio::time::sleep(SETTLE).await;
            let (rss0, size0) = (proc::rss_kb(), proc::file_size(&db));
            let half = n / 2;
            let (mut rss_half, mut size_half) = (rss0, size0);
            for start in (0..n).step_by(1000) {
                let batch = (start..(start + 1000).min(n))
                    .map(|i| Message::command("off", "echo", ["x"]).with_id(format!("q-{i}")))
                    .collect();
                node.send_batch(batch).await.expect("send_batch");
                if start + 1000 == half {
                    (rss_half, size_half) = (proc::rss_kb(), proc::file_size(&db));
                }
            }
            tokio::time::sleep(SETTLE).await;
            say(format!(
                "footprint {} {rss0} {} {size0} {rss_half} {size_half}",
                proc::rss_kb(),
                proc::file_size(&db)
            ));
        }
    }
    std::process::exit(0);
}

async fn measure(mode: &str, url: &str, n: usize) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--footprint-child",
        mode,
        url,
        dir.path().to_str().expect("utf-8 tempdir"),
        &n.to_string(),
    ]
    .map(str::to_owned);
    let mut c = ChildProc::spawn(&args, &[]);
    let r = c.expect(&["footprint"], Duration::from_secs(120)).await;
    c.finish(Duration::from_secs(5)).await;
    r
}

/// Runs the footprint measures and appends their rows.
pub async fn run(url: &str, s: &Settings, rows: &mut Vec<Row>) {
    if let Some(w) = measure("idle", url, 0).await {
        let (rss, base, threads, fds): (f64, f64, u64, u64) =
            (num(&w, 1), num(&w, 2), num(&w, 3), num(&w, 4));
        rows.push(
            Row::new(5, "idle node, resident memory of its process", "MB", Some(rss / 1024.0), None)
                .target(Target::Below(10.0))
                .note(format!(
                    "VmRSS of a process running one connected node and nothing else ({} MB before the node started: runtime and binary); {threads} threads, {fds} fds",
                    super::report::fmt_num(base / 1024.0)
                )),
        );
    } else {
        rows.push(
            Row::new(
                5,
                "idle node, resident memory of its process",
                "MB",
                None,
                None,
            )
            .note("child failed"),
        );
    }
    let dests = 1000;
    if let Some(w) = measure("dests", url, dests).await {
        let (rss, before, threads, fds): (f64, f64, u64, u64) =
            (num(&w, 1), num(&w, 2), num(&w, 3), num(&w, 4));
        rows.push(
            Row::new(5, "node with 1,000 destinations (one queued message each)", "MB", Some(rss / 1024.0), None)
                .note(format!(
                    "{:.1} KB per destination over the idle node; every destination offline, each message tried once; {threads} threads, {fds} fds",
                    (rss - before) / dests as f64
                )),
        );
    }
    let n = s.queued;
    if let Some(w) = measure("queued", url, n).await {
        let (rss1, rss0, size1, size0): (f64, f64, f64, f64) =
            (num(&w, 1), num(&w, 2), num(&w, 3), num(&w, 4));
        let (rss_half, size_half): (f64, f64) = (num(&w, 5), num(&w, 6));
        let second = (n - n / 2) as f64;
        rows.push(
            Row::new(5, "memory per queued message", "B", Some((rss1 - rss0) * 1024.0 / n as f64), None)
                .target(Target::Below(1024.0))
                .note(format!(
                    "RSS delta over {n} echo commands queued for one offline destination ({} MB -> {} MB; the first messages fill the store's 16 MiB page cache and the 1,024-message send window); over the second half alone {} B per message",
                    super::report::fmt_num(rss0 / 1024.0),
                    super::report::fmt_num(rss1 / 1024.0),
                    super::report::fmt_num((rss1 - rss_half) * 1024.0 / second)
                )),
        );
        rows.push(
            Row::new(
                5,
                "outbox bytes on disk per queued message",
                "B",
                Some((size1 - size0) / n as f64),
                None,
            )
            .note(format!(
                "steward.redb file size delta over the same {n} messages ({} MB -> {} MB; the file grows in regions, so this includes space redb has reserved but not filled); over the second half alone {} B per message",
                super::report::fmt_num(size0 / 1e6),
                super::report::fmt_num(size1 / 1e6),
                super::report::fmt_num((size1 - size_half) / second)
            )),
        );
    }
}
