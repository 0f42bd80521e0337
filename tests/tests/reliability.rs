//! The reliability suite: twelve fault scenarios, each counting messages sent, completed, lost,
//! executed twice and executed out of order (the last three must be zero).
//!
//! Every test runs a SHORT version here (hundreds to a few thousand messages, outages of
//! seconds). `STEWARD_FULL=1` selects the full numbers (1,000 sends with a 30 s cut,
//! 5,000 sends with 50 SIGKILLs, a 10,000 stream with a server SIGKILL and a 30 s SIGSTOP, a
//! one-minute leaf cut, a 10,000 backlog over a few KB/s); `scripts/reliability.sh` runs that and
//! prints the table. Each test prints its own table row (see `steward_tests::faults::Tally`).
//!
//! Faults are injected with real processes: `nats-server` children (killed, restarted,
//! SIGSTOPped, clustered, leaf-linked), `steward-test-node` processes (SIGKILLed, memory
//! measured, file sizes limited), and the harness's TCP proxy (cuts, dropped directions, and
//! latency / jitter / bandwidth shaping with random connection resets, standing in for
//! `tc netem`, whose kernel module this machine lacks).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use steward::{ErrorKind, Kind, Message, MessageState, Method, MethodResult, Node, ResultStatus};
use steward_tests::faults::{self, ids, read_record_log, rss_kib, scale, Rng, Tally};
use steward_tests::nodes::test_node;
use steward_tests::recorder::Recorder;
use steward_tests::{
    free_port, wait_until, wait_until_async, Direction, LinkShape, NatsCluster, NatsServer,
    TcpProxy,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Upper bound for waiting on results after the faults are over.
fn drain_limit() -> Duration {
    scale(Duration::from_secs(90), Duration::from_secs(900))
}

/// `record` commands to `to` with ids (and data) `<prefix>-<i>`.
fn record_msgs(to: &str, prefix: &str, range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| {
            let id = format!("{prefix}-{i}");
            Message::command(to, "record", [id.clone()]).with_id(id)
        })
        .collect()
}

/// Waits (within `within` overall) for every id to reach a final state and returns how many
/// ended `Completed` with a result of status `want`. Stops early at the deadline, printing the
/// first message that was not final, so the tally shows what is missing.
async fn count_final(node: &Node, ids: &[String], want: ResultStatus, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut n = 0;
    for id in ids {
        match tokio::time::timeout_at(deadline, node.wait(id)).await {
            Ok(Ok(st)) => {
                if st.state == MessageState::Completed
                    && st.result.as_ref().is_some_and(|r| r.status == want)
                {
                    n += 1;
                } else {
                    eprintln!("{id} ended as {:?}: {:?}", st.state, st.reason);
                }
            }
            Ok(Err(e)) => eprintln!("waiting for {id}: {e}"),
            Err(_) => {
                let st = node.message(id).await;
                eprintln!("{id} not final within {within:?}: {st:?}");
                return n;
            }
        }
    }
    n
}

async fn count_ok(node: &Node, ids: &[String]) -> usize {
    count_final(node, ids, ResultStatus::Ok, drain_limit()).await
}

/// A receiver node in this process whose `record` method feeds `rec`.
async fn recorder_node(name: &str, urls: &[String], dir: &Path, rec: &Recorder) -> Node {
    test_node(name, urls, dir)
        .method("record", rec.method(Kind::Command))
        .allow("*", "record")
        .start()
        .await
        .unwrap()
}

/// A sender streaming `msgs` in batches of `batch`, one batch per `every`, in the background.
/// `progress` counts accepted messages.
struct Stream {
    progress: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Stream {
    fn start(node: &Node, msgs: Vec<Message>, batch: usize, every: Duration) -> Stream {
        let progress = Arc::new(AtomicUsize::new(0));
        let p = progress.clone();
        let node = node.clone();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut tick = tokio::time::interval(every);
            for chunk in msgs.chunks(batch) {
                tick.tick().await;
                let receipts = node.send_batch(chunk.to_vec()).await.expect("send_batch");
                sent.extend(receipts.into_iter().map(|r| r.id));
                p.store(sent.len(), Ordering::SeqCst);
            }
            sent
        });
        Stream { progress, task }
    }

    fn accepted(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    async fn wait_accepted(&self, n: usize) {
        let p = self.progress.clone();
        assert!(
            wait_until_async(drain_limit(), || p.load(Ordering::SeqCst) >= n).await,
            "the stream never reached {n} accepted messages"
        );
    }

    async fn finish(self) -> Vec<String> {
        self.task.await.expect("stream task")
    }
}

/// A `steward-test-node` process; its stdout lines are collected in the background.
struct NodeProc {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl NodeProc {
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_steward-test-node"))
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn steward-test-node");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        NodeProc {
            child: Some(child),
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line matching `pred`, waited for up to `within`.
    async fn wait_line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until_async(within, || {
            found = self.lines().into_iter().find(|l| pred(l));
            found.is_some()
        })
        .await;
        found
    }

    /// The highest `accepted <n>` printed so far.
    fn last_accepted(&self) -> Option<i64> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("accepted ")?.parse().ok())
            .max()
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let exited = wait_until_async(within, || c.try_wait().ok().flatten().is_some()).await;
        if !exited {
            let _ = c.kill();
            let _ = c.wait();
        }
        exited
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------
// 1. Link cut during sends
// ---------------------------------------------------------------------------

/// Scenario 1. The edge node's link (through the TCP proxy) is cut while the central node
/// keeps sending (1,000 sends and a 30 s cut in the full version; 300 and 3 s short), then
/// restored. Must hold: every message runs exactly once, in the order sent, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_link_cut_during_sends() {
    let start = Instant::now();
    let n = scale(300, 1000);
    let cut_for = scale(Duration::from_secs(3), Duration::from_secs(30));
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &[proxy.url()], dir.path(), &rec).await;
    let central = test_node("central", &[server.url()], dir.path())
        .start()
        .await
        .unwrap();
    let third = n / 3;
    let mut sent = Vec::new();
    for m in record_msgs("ship1", "m", 0..third) {
        sent.push(central.send(m).await.unwrap().id);
    }
    assert!(
        wait_until_async(Duration::from_secs(20), || !rec.is_empty()).await,
        "nothing arrived before the cut"
    );
    proxy.cut();
    assert!(wait_until_async(Duration::from_secs(10), || !ship.is_connected()).await);
    // Sends spread over the whole outage.
    let during = record_msgs("ship1", "m", third..2 * third);
    let gap = cut_for / during.len() as u32;
    let cut_at = Instant::now();
    for m in during {
        sent.push(central.send(m).await.unwrap().id);
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(cut_for.saturating_sub(cut_at.elapsed())).await;
    let ran_during_cut = rec.len();
    proxy.restore();
    for m in record_msgs("ship1", "m", 2 * third..n) {
        sent.push(central.send(m).await.unwrap().id);
    }
    let completed = count_ok(&central, &sent).await;
    let t = Tally::single("1 link cut during sends", &ids("m", 0..n), &rec.seen())
        .completed(completed)
        .since(start)
        .note(format!(
            "cut {cut_for:?}; {ran_during_cut} ran before/while cut"
        ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 2. ACK direction dropped
// ---------------------------------------------------------------------------

/// Scenario 2. Only the sender's incoming direction is dropped (the proxy discards
/// server→sender bytes): the receiver runs every command but the sender hears no ACK and no
/// result, so it resends. Must hold: nothing runs twice (resends are answered from the
/// receiver's dedup record), every message completes once the direction is back, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_ack_direction_dropped() {
    let start = Instant::now();
    let n = scale(200, 1000);
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &[server.url()], dir.path(), &rec).await;
    let central = test_node("central", &[proxy.url()], dir.path())
        .start()
        .await
        .unwrap();
    assert!(wait_until_async(Duration::from_secs(10), || central.is_connected()).await);
    proxy.block_direction(Direction::ServerToClient);
    let sent: Vec<String> = central
        .send_batch(record_msgs("ship1", "m", 0..n))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(
        wait_until_async(Duration::from_secs(30), || rec.len() >= n).await,
        "the receiver ran only {} of {n}",
        rec.len()
    );
    // The sender must have resent while deaf.
    let first = sent[0].clone();
    assert!(
        steward_tests::wait_until_future(Duration::from_secs(20), || {
            let c = central.clone();
            let id = first.clone();
            async move { c.message(&id).await.unwrap().unwrap().attempts >= 2 }
        })
        .await,
        "the sender never resent"
    );
    tokio::time::sleep(scale(Duration::from_secs(1), Duration::from_secs(10))).await;
    let attempts = central.message(&first).await.unwrap().unwrap().attempts;
    let discarded = proxy.discarded_bytes();
    proxy.unblock();
    let completed = count_ok(&central, &sent).await;
    let t = Tally::single("2 ACK direction dropped", &ids("m", 0..n), &rec.seen())
        .completed(completed)
        .since(start)
        .note(format!(
            "{discarded} bytes of ACKs/results dropped; first message sent {attempts}x"
        ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Sender SIGKILLed at random points
// ---------------------------------------------------------------------------

/// Scenario 3. The sender is a `steward-test-node send` process SIGKILLed at random points
/// (after a random number of fresh acceptances, or a random time after its start — during
/// startup, mid-commit, mid-publish) and restarted each time; it re-sends the same ids
/// (`m-<i>`), which must be idempotent. 5,000 sends and 50 kills in the full version, 500 and
/// 10 short. Must hold: every message runs exactly once, in order, and all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_sender_sigkill_cycles() {
    let start = Instant::now();
    let n: usize = scale(500, 5000);
    let kills: usize = scale(10, 50);
    let mut rng = Rng::from_env("s03");
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", std::slice::from_ref(&url), dir.path(), &rec).await;
    let d = s(dir.path()).to_owned();
    let count = n.to_string();
    let args = ["send", "central", url.as_str(), d.as_str(), "ship1", &count];
    let mut max_accepted: i64 = -1;
    let (mut by_count, mut by_time) = (0, 0);
    let per_kill = (n / kills).max(2) as u64;
    for _ in 0..kills {
        let mut p = NodeProc::spawn(&args, &[]);
        if rng.chance(0.5) {
            by_count += 1;
            let target = max_accepted + rng.range(0, 2 * per_kill) as i64;
            p.wait_line(Duration::from_secs(60), |l| {
                l == "done"
                    || l.strip_prefix("accepted ")
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|v| v >= target)
            })
            .await;
        } else {
            by_time += 1;
            // Wait for the previous maximum to be re-accepted, then kill at a random moment.
            let prev = max_accepted;
            p.wait_line(Duration::from_secs(60), |l| {
                l == "done"
                    || l.strip_prefix("accepted ")
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|v| v >= prev)
            })
            .await;
            tokio::time::sleep(Duration::from_millis(rng.range(0, 400))).await;
        }
        p.sigkill();
        max_accepted = max_accepted.max(p.last_accepted().unwrap_or(-1));
    }
    let mut p = NodeProc::spawn(&args, &[]);
    let done = p.wait_line(drain_limit(), |l| l == "done").await;
    assert!(done.is_some(), "the final sender run never finished");
    let completed = p
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("completed ")?.parse().ok())
        .unwrap_or(0);
    assert!(p.wait_exit(Duration::from_secs(20)).await);
    let t = Tally::single(
        "3 sender SIGKILLed at random points",
        &ids("m", 0..n),
        &rec.seen(),
    )
    .completed(completed)
    .since(start)
    .note(format!(
        "{kills} SIGKILLs ({by_count} after k acceptances, {by_time} at a random time)"
    ));
    t.print();
    t.assert_clean();
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Receiver SIGKILLed mid-command
// ---------------------------------------------------------------------------

/// Scenario 4. The receiver (a `steward-test-node serve` process) is SIGKILLed while a long
/// `shellCommand` runs (1 cycle short, 5 full): `record` commands run before it, more are sent
/// while the receiver is dead, and it is restarted. Must hold: the long command is reported as
/// unknown and never run again (its marker file has exactly one line); every `record` runs
/// exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_receiver_sigkill_mid_command() {
    let start = Instant::now();
    let cycles = scale(1, 5);
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path()).to_owned();
    let url = server.url();
    let serve = ["serve", "ship1", url.as_str(), d.as_str()];
    let mut ship = NodeProc::spawn(&serve, &[]);
    ship.wait_line(Duration::from_secs(30), |l| l == "ready")
        .await
        .expect("ship1 ready");
    let central = test_node("central", std::slice::from_ref(&url), dir.path())
        .start()
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut record_ids = Vec::new();
    let mut completed_records = 0;
    let mut long_ids = Vec::new();
    let mut markers = Vec::new();
    for c in 0..cycles {
        let prefix = format!("c{c}");
        expected.extend(ids(&prefix, 0..20));
        let before: Vec<String> = central
            .send_batch(record_msgs("ship1", &prefix, 0..10))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        completed_records += count_ok(&central, &before).await;
        let marker = dir.path().join(format!("long-{c}.txt"));
        let script = format!("echo run >> {}; sleep 5", marker.display());
        let long = central
            .send(
                Message::command("ship1", "shellCommand", ["bash", "-c", &script])
                    .with_id(format!("long-{c}")),
            )
            .await
            .unwrap();
        assert!(
            wait_until_async(Duration::from_secs(30), || marker.exists()).await,
            "the long command never started"
        );
        ship.sigkill();
        // Sent while the receiver is dead; they run after its restart.
        for m in record_msgs("ship1", &prefix, 10..20) {
            record_ids.push(central.send(m).await.unwrap().id);
        }
        ship = NodeProc::spawn(&serve, &[]);
        long_ids.push(long.id);
        markers.push(marker);
    }
    completed_records += count_ok(&central, &record_ids).await;
    let unknown = count_final(&central, &long_ids, ResultStatus::Unknown, drain_limit()).await;
    for id in &long_ids {
        let st = central.message(id).await.unwrap().unwrap();
        let err = st.result.and_then(|r| r.error).unwrap_or_default();
        assert!(err.contains("not run again"), "{id}: {err}");
    }
    // The orphaned first runs may still be sleeping; none may have been started again.
    let runs: Vec<usize> = markers
        .iter()
        .map(|m| {
            std::fs::read_to_string(m)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .collect();
    let executed = read_record_log(&dir.path().join("ship1").join("record.log"));
    let mut t = Tally::single("4 receiver SIGKILLed mid-command", &expected, &executed);
    t.sent += long_ids.len();
    t.twice += runs.iter().map(|r| r.saturating_sub(1)).sum::<usize>();
    t.lost += runs.iter().filter(|r| **r == 0).count();
    let t = t
        .completed(completed_records + unknown)
        .since(start)
        .note(format!(
            "{cycles} kill(s); {unknown} long command(s) reported unknown, not rerun"
        ));
    t.print();
    t.assert_clean();
    ship.sigkill();
    central.stop().await;
}

// ---------------------------------------------------------------------------
// 5. nats-server SIGKILL + restart, then SIGSTOP
// ---------------------------------------------------------------------------

/// Scenario 5. During a paced stream (10,000 commands full, 2,000 short) the nats-server is
/// SIGKILLed and restarted on the same port, then SIGSTOPped for 30 s (3 s short) and
/// continued. Must hold: every message runs exactly once, in order, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_server_killed_and_stopped_during_stream() {
    let start = Instant::now();
    let n = scale(2000, 10_000);
    let stop_for = scale(Duration::from_secs(3), Duration::from_secs(30));
    let down_for = scale(Duration::from_secs(1), Duration::from_secs(5));
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &urls, dir.path(), &rec).await;
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let stream = Stream::start(
        &central,
        record_msgs("ship1", "m", 0..n),
        10,
        scale(Duration::from_millis(20), Duration::from_millis(40)),
    );
    stream.wait_accepted(n / 5).await;
    server.kill();
    let killed_at = stream.accepted();
    tokio::time::sleep(down_for).await;
    server.restart();
    stream.wait_accepted(n / 2).await;
    server.pause();
    let stopped_at = stream.accepted();
    tokio::time::sleep(stop_for).await;
    server.resume();
    let sent = stream.finish().await;
    let completed = count_ok(&central, &sent).await;
    let t = Tally::single(
        "5 server SIGKILL+restart, SIGSTOP",
        &ids("m", 0..n),
        &rec.seen(),
    )
    .completed(completed)
    .since(start)
    .note(format!(
        "killed at {killed_at} for {down_for:?}, stopped at {stopped_at} for {stop_for:?}"
    ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 6. Three-server cluster, rolling kills
// ---------------------------------------------------------------------------

/// Index of the cluster server the node `name` is connected to (from each server's `connz`).
fn placement(cluster: &NatsCluster, name: &str) -> Option<usize> {
    let want = format!("steward-{name}");
    (0..cluster.len()).find(|&i| {
        cluster
            .server(i)
            .monitor_json("connz")
            .ok()
            .and_then(|v| v["connections"].as_array().cloned())
            .is_some_and(|conns| conns.iter().any(|c| c["name"] == want.as_str()))
    })
}

/// Starts a node with every cluster URL until it lands on a server not in `taken`.
async fn start_on_free_server(
    cluster: &NatsCluster,
    taken: &mut Vec<usize>,
    start: impl Fn() -> futures::future::BoxFuture<'static, Node>,
    name: &str,
) -> Node {
    for _ in 0..30 {
        let node = start().await;
        let mut at = None;
        wait_until_async(Duration::from_secs(10), || {
            at = placement(cluster, name);
            at.is_some()
        })
        .await;
        let at = at.unwrap_or_else(|| panic!("{name} never showed up in any server's connz"));
        if !taken.contains(&at) {
            taken.push(at);
            return node;
        }
        node.stop().await;
    }
    panic!("{name} kept landing on servers {taken:?}");
}

/// Scenario 6 with every node given all three cluster URLs (the documented way). Must hold:
/// see [`cluster_scenario`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn s06_cluster_failover_rolling() {
    cluster_scenario("6 cluster: kill one, then rolling", true).await;
}

/// Scenario 6 with every node given one seed URL (its own server) and the rest discovered
/// from the cluster's INFO, as async-nats does by default. Must hold: see [`cluster_scenario`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06b_cluster_failover_rolling_seed_url() {
    cluster_scenario("6b cluster (seed URL): kill one, rolling", false).await;
}

/// Scenario 6. A three-server NATS cluster on loopback; central, ship1 and ship2 are
/// connected to three different servers. During a paced stream to both ships, one server is
/// SIGKILLed and restarted, then each server in turn (rolling). Must hold: nodes fail over to
/// the surviving servers, and every message runs exactly once, in order per ship.
async fn cluster_scenario(scenario: &str, all_urls: bool) {
    let start = Instant::now();
    let n = scale(600, 3000);
    let down_for = scale(Duration::from_millis(700), Duration::from_secs(5));
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (rec1, rec2) = (Recorder::default(), Recorder::default());
    let mut taken = Vec::new();
    let mut nodes = Vec::new();
    for (i, (name, rec)) in [
        ("central", None),
        ("ship1", Some(rec1.clone())),
        ("ship2", Some(rec2.clone())),
    ]
    .into_iter()
    .enumerate()
    {
        let urls = if all_urls {
            cluster.urls()
        } else {
            vec![cluster.server(i).url()]
        };
        let path = path.clone();
        let start_fn = move || -> futures::future::BoxFuture<'static, Node> {
            let urls = urls.clone();
            let path = path.clone();
            let rec = rec.clone();
            Box::pin(async move {
                match rec {
                    Some(rec) => recorder_node(name, &urls, &path, &rec).await,
                    None => test_node(name, &urls, &path).start().await.unwrap(),
                }
            })
        };
        nodes.push(start_on_free_server(&cluster, &mut taken, start_fn, name).await);
    }
    let placed = taken.clone();
    let central = nodes[0].clone();
    let mut msgs = Vec::new();
    for i in 0..n {
        msgs.extend(record_msgs("ship1", "a", i..i + 1));
        msgs.extend(record_msgs("ship2", "b", i..i + 1));
    }
    let stream = Stream::start(
        &central,
        msgs,
        10,
        scale(Duration::from_millis(20), Duration::from_millis(40)),
    );
    // One server killed, then each in turn.
    let order = [placed[0], 0, 1, 2];
    for (step, &i) in order.iter().enumerate() {
        stream.wait_accepted((step + 1) * 2 * n / 6).await;
        cluster.kill(i);
        tokio::time::sleep(down_for).await;
        cluster.restart(i);
    }
    let sent = stream.finish().await;
    let completed = count_ok(&central, &sent).await;
    let t = Tally::streams(
        scenario,
        &[(ids("a", 0..n), rec1.seen()), (ids("b", 0..n), rec2.seen())],
    )
    .completed(completed)
    .since(start)
    .note(format!(
        "central/ship1/ship2 on servers {placed:?}; killed {order:?}, {down_for:?} each"
    ));
    t.print();
    t.assert_clean();
    for node in nodes {
        node.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 7. Leaf node cut from its hub
// ---------------------------------------------------------------------------

/// Scenario 7. The edge node is attached to a NATS leaf server whose leaf link to the hub
/// runs through the TCP proxy; central is on the hub. The leaf link is cut for a minute (3 s
/// short) while central sends. Must hold: every message runs exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_leaf_link_cut() {
    let start = Instant::now();
    let n = scale(300, 1000);
    let cut_for = scale(Duration::from_secs(3), Duration::from_secs(60));
    let leaf_port = free_port();
    let hub = NatsServer::builder()
        .extra_config(format!(
            "leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n}}"
        ))
        .start();
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], leaf_port)));
    let leaf = NatsServer::builder()
        .extra_config(format!(
            "leafnodes {{\n  reconnect: 1\n  remotes: [ {{ url: \"nats-leaf://127.0.0.1:{}\" }} ]\n}}",
            proxy.port()
        ))
        .start();
    let leaf_up = || {
        hub.monitor_json("leafz")
            .ok()
            .and_then(|v| v["leafnodes"].as_u64())
            .is_some_and(|n| n >= 1)
    };
    assert!(
        wait_until(Duration::from_secs(20), leaf_up),
        "the leaf server never connected to the hub"
    );
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &[leaf.url()], dir.path(), &rec).await;
    let central = test_node("central", &[hub.url()], dir.path())
        .start()
        .await
        .unwrap();
    let third = n / 3;
    let mut sent = Vec::new();
    for m in record_msgs("ship1", "m", 0..third) {
        sent.push(central.send(m).await.unwrap().id);
    }
    assert!(
        wait_until_async(Duration::from_secs(20), || !rec.is_empty()).await,
        "nothing crossed the leaf link before the cut"
    );
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(10), || !leaf_up()),
        "the hub still sees the leaf"
    );
    let during = record_msgs("ship1", "m", third..2 * third);
    let gap = cut_for / during.len() as u32;
    let cut_at = Instant::now();
    for m in during {
        sent.push(central.send(m).await.unwrap().id);
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(cut_for.saturating_sub(cut_at.elapsed())).await;
    let before_restore = rec.len();
    proxy.restore();
    for m in record_msgs("ship1", "m", 2 * third..n) {
        sent.push(central.send(m).await.unwrap().id);
    }
    let completed = count_ok(&central, &sent).await;
    let t = Tally::single("7 leaf link to hub cut", &ids("m", 0..n), &rec.seen())
        .completed(completed)
        .since(start)
        .note(format!(
            "cut {cut_for:?}; {before_restore} ran before the link came back"
        ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 8. Slow, lossy, reordering link
// ---------------------------------------------------------------------------

/// Scenario 8. Both nodes reach the broker through shaping proxies (not `tc netem`: this
/// machine's kernel lacks the netem qdisc, so the harness proxy does it): 30 ms latency with
/// up to 40 ms jitter per chunk, the edge link throttled (64 KB/s short, 32 KB/s full), and
/// connections reset at random every 0.3-1.5 s. TCP itself never reorders or drops bytes, so
/// loss and reordering happen where they do on a real flaky link: data in flight when a
/// connection resets is lost, and resends after reconnecting overtake messages that were
/// still queued. Must hold: every message runs exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_slow_lossy_link() {
    let start = Instant::now();
    let n = scale(400, 3000);
    let chaos_for = scale(Duration::from_secs(8), Duration::from_secs(90));
    let mut rng = Rng::from_env("s08");
    let server = NatsServer::start();
    let edge = TcpProxy::start(server.addr());
    let home = TcpProxy::start(server.addr());
    let jittery = LinkShape {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(40),
        bytes_per_sec: None,
    };
    home.set_shape(jittery);
    edge.set_shape(LinkShape {
        bytes_per_sec: Some(scale(64_000, 32_000)),
        ..jittery
    });
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &[edge.url()], dir.path(), &rec).await;
    let central = test_node("central", &[home.url()], dir.path())
        .start()
        .await
        .unwrap();
    let every = chaos_for / (n / 10) as u32;
    let stream = Stream::start(&central, record_msgs("ship1", "m", 0..n), 10, every);
    let chaos_end = Instant::now() + chaos_for;
    let mut resets = 0;
    while Instant::now() < chaos_end {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
        if rng.chance(0.5) {
            edge.reset_connections();
        } else {
            home.reset_connections();
        }
        resets += 1;
    }
    let sent = stream.finish().await;
    let completed = count_ok(&central, &sent).await;
    let t = Tally::single(
        "8 slow, lossy, reordering link (proxy)",
        &ids("m", 0..n),
        &rec.seen(),
    )
    .completed(completed)
    .since(start)
    .note(format!(
        "30+0..40 ms, edge {} B/s, {resets} random resets",
        scale(64_000, 32_000)
    ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

// ---------------------------------------------------------------------------
// 9. Central's error log unreachable
// ---------------------------------------------------------------------------

/// Scenario 9. Central is stopped while ship2 sends commands to ship1: most are allowed
/// (`record`), some are refused by ship1's access list, and each refusal is an error ship2
/// must report to central's `errorLog`. Must hold: the allowed commands complete while
/// central is down (not blocked by the unreachable error log); when central returns, every
/// error report arrives in its `errors.log` exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_central_error_log_unreachable() {
    let start = Instant::now();
    let good_n = scale(200, 2000);
    let bad_n = scale(20, 200);
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let rec = Recorder::default();
    let ship1 = test_node("ship1", &urls, dir.path())
        .method("record", rec.method(Kind::Command))
        .allow("ship2", "record")
        .start()
        .await
        .unwrap();
    let ship2 = test_node("ship2", &urls, dir.path()).start().await.unwrap();
    central.stop().await;
    drop(central);
    let down_at = Instant::now();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..good_n {
        good.push(
            ship2
                .send(record_msgs("ship1", "g", i..i + 1).remove(0))
                .await
                .unwrap()
                .id,
        );
        if i % (good_n / bad_n) == 0 && bad.len() < bad_n {
            let id = format!("bad-{}", bad.len());
            let m = Message::command("ship1", "shellCommand", ["true"]).with_id(id.clone());
            bad.push(ship2.send(m).await.unwrap().id);
        }
    }
    let completed_good = count_ok(&ship2, &good).await;
    let good_took = down_at.elapsed();
    let mut rejected = 0;
    for id in &bad {
        let st = ship2.wait(id).await.unwrap();
        if st.state == MessageState::Rejected {
            rejected += 1;
        }
    }
    // The reports wait in ship2's outbox while central is away.
    let pending_reports = ship2
        .destinations()
        .unwrap()
        .into_iter()
        .find(|d| d.node == "central")
        .map(|d| d.pending)
        .unwrap_or(0);
    tokio::time::sleep(scale(Duration::from_secs(1), Duration::from_secs(10))).await;
    let errors_log = dir.path().join("central").join(steward::ERRORS_LOG);
    assert!(
        !errors_log.exists() || std::fs::read_to_string(&errors_log).unwrap().is_empty(),
        "errors.log written while central was down"
    );
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    // Every report delivered: ship2's outbox towards central drains.
    let drained = steward_tests::wait_until_future(drain_limit(), || {
        let s2 = ship2.clone();
        async move {
            s2.destinations()
                .unwrap()
                .iter()
                .filter(|d| d.node == "central")
                .all(|d| d.pending == 0)
        }
    })
    .await;
    assert!(drained, "ship2's error reports never drained to central");
    let logged: Vec<String> = std::fs::read_to_string(&errors_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["node"] == "ship2" && v["kind"] == "rejected")
        .filter_map(|v| v["messageId"].as_str().map(str::to_owned))
        .collect();
    let t = Tally::streams(
        "9 central error log unreachable",
        &[(good.clone(), rec.seen()), (bad.clone(), logged)],
    )
    .completed(completed_good + rejected)
    .since(start)
    .note(format!(
        "{good_n} commands done in {good_took:.1?} with central down; {bad_n} refusals, {pending_reports} reports waited"
    ));
    t.print();
    t.assert_clean();
    assert!(pending_reports >= 1, "no error report waited for central");
    for n in [central, ship1, ship2] {
        n.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 10. Damaged store, failing writes, full disk
// ---------------------------------------------------------------------------

/// A `record` method that keeps the whole data of every execution (to spot altered commands).
fn full_recorder() -> (Method, Arc<Mutex<Vec<Vec<String>>>>) {
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s2 = seen.clone();
    let m = Method::new(Kind::Command, move |req: steward::Request| {
        let s = s2.clone();
        async move {
            s.lock().unwrap().push(req.data.clone());
            MethodResult::ok("")
        }
    });
    (m, seen)
}

/// How a damaged store was handled at the next start.
enum DamageOutcome {
    /// The start failed with this error.
    Refused(steward::Error),
    /// The node started; these executions happened (whole data), these ids completed OK.
    Started {
        executed: Vec<Vec<String>>,
        completed: usize,
    },
}

/// Queues `q` commands (`q-<i>`, data `[id, "payload-of-<id>"]`) at central for an offline
/// ship1, stops central, applies `damage` to `steward.redb`, starts central again and, if
/// that works, lets ship1 come up and waits for the queued messages' fates.
async fn damage_case(q: usize, damage: impl FnOnce(&Path)) -> DamageOutcome {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..q)
        .map(|i| {
            let id = format!("q-{i}");
            Message::command("ship1", "record", [id.clone(), format!("payload-of-{id}")])
                .with_id(id)
        })
        .collect();
    central.send_batch(msgs).await.unwrap();
    central.stop().await;
    drop(central);
    damage(&dir.path().join("central").join("steward.redb"));
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        test_node("central", &urls, dir.path()).start(),
    )
    .await
    .expect("start after damage must not hang");
    let central = match started {
        Err(e) => return DamageOutcome::Refused(e),
        Ok(n) => n,
    };
    let (method, seen) = full_recorder();
    let ship1 = test_node("ship1", &urls, dir.path())
        .method("record", method)
        .start()
        .await
        .unwrap();
    let all = ids("q", 0..q);
    let completed = count_final(&central, &all, ResultStatus::Ok, Duration::from_secs(30)).await;
    let executed = seen.lock().unwrap().clone();
    central.stop().await;
    ship1.stop().await;
    DamageOutcome::Started {
        executed,
        completed,
    }
}

/// Judges a [`DamageOutcome`]: a refusal must be a Storage error naming the file; a start
/// must never run an altered command nor anything twice, and what ran must be in order.
fn judge_damage(scenario: &str, q: usize, outcome: DamageOutcome, start: Instant) {
    match outcome {
        DamageOutcome::Refused(e) => {
            let msg = e.to_string();
            let t = Tally::single(scenario, &[], &[])
                .sent(q)
                .since(start)
                .note(format!("start refused: {msg}"));
            t.print();
            assert_eq!(e.kind(), ErrorKind::Storage, "{msg}");
            assert!(
                msg.contains("steward.redb"),
                "the error must name the damaged file: {msg}"
            );
        }
        DamageOutcome::Started {
            executed,
            completed,
        } => {
            let originals: std::collections::HashMap<String, Vec<String>> = (0..q)
                .map(|i| {
                    let id = format!("q-{i}");
                    (id.clone(), vec![id.clone(), format!("payload-of-{id}")])
                })
                .collect();
            let altered: Vec<&Vec<String>> = executed
                .iter()
                .filter(|d| d.first().and_then(|id| originals.get(id)) != Some(*d))
                .collect();
            let ran: Vec<String> = executed
                .iter()
                .filter(|d| d.first().and_then(|id| originals.get(id)) == Some(*d))
                .map(|d| d[0].clone())
                .collect();
            // What ran must be a subset of the originals, once each, in order; whatever did
            // not run must have been reported (not silently kept forever).
            let expected: Vec<String> = ids("q", 0..q)
                .into_iter()
                .filter(|id| ran.contains(id))
                .collect();
            let mut t = Tally::single(scenario, &expected, &ran)
                .sent(q)
                .completed(completed)
                .since(start)
                .note(format!(
                    "started; {} ran intact, {} altered, {} not run (reported failed)",
                    ran.len(),
                    altered.len(),
                    q - ran.len()
                ));
            t.unexpected += altered.len();
            t.print();
            assert!(
                altered.is_empty(),
                "{scenario}: a damaged command ran: {:?}",
                altered
                    .iter()
                    .map(|d| d.join(" ").chars().take(80).collect::<String>())
                    .collect::<Vec<_>>()
            );
            t.assert_no_loss_dup_reorder();
        }
    }
}

/// Scenario 10a. The store file loses its tail (truncated to 3/4, as after a failed copy or a
/// full disk during an external backup restore). Must hold: the next start either fails with
/// a Storage error naming the file, or recovers what is intact — never running anything
/// twice, out of order, or altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10a_store_tail_truncated() {
    let start = Instant::now();
    let q = 200;
    let outcome = damage_case(q, |path| {
        let len = std::fs::metadata(path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len * 3 / 4).unwrap();
    })
    .await;
    judge_damage("10a store tail truncated", q, outcome, start);
}

/// Scenario 10b. A byte flips inside a stored command (every copy of one command's payload
/// in the store file gets one bit changed, so the JSON stays valid but the command differs).
/// Must hold: the damaged command never runs — the start fails with a Storage error, or the
/// damage is detected when the record is read; intact neighbours still run once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn s10b_byte_flipped_in_stored_command() {
    let start = Instant::now();
    let q = 200;
    let outcome = damage_case(q, |path| {
        let mut bytes = std::fs::read(path).unwrap();
        let needle = b"payload-of-q-100";
        let mut hits = 0;
        let mut i = 0;
        while i + needle.len() <= bytes.len() {
            if &bytes[i..i + needle.len()] == needle {
                bytes[i] ^= 0x01; // 'p' -> 'q': still valid JSON, a different command
                hits += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        assert!(hits > 0, "the payload was not found in the store file");
        std::fs::write(path, bytes).unwrap();
    })
    .await;
    judge_damage("10b byte flipped in a stored command", q, outcome, start);
}

/// Scenario 10c. Single bytes flipped at spread-out positions in the middle of the store
/// file (structure, free space or data alike). Must hold: as 10a — a clear Storage error, or
/// a start that never runs anything altered, twice or out of order, and does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10c_byte_flipped_in_store_structure() {
    let start = Instant::now();
    let q = 50;
    let mut rng = Rng::from_env("s10c");
    let seed = rng.next_u64();
    let outcome = damage_case(q, move |path| {
        let mut bytes = std::fs::read(path).unwrap();
        let mut r = Rng::new(seed);
        let len = bytes.len() as u64;
        let pos = r.range(len / 4, 3 * len / 4) as usize;
        bytes[pos] ^= 0x5a;
        eprintln!("s10c: flipped byte {pos} of {len}");
        std::fs::write(path, bytes).unwrap();
    })
    .await;
    judge_damage("10c byte flipped mid-file", q, outcome, start);
}

/// Runs `steward-test-node fill` (central sending 16 KiB commands to an offline ship1) with
/// its data dir in `root`, until a send fails. Returns (accepted ids, the error lines).
async fn fill_until_failure(url: &str, root: &Path, limit: u64) -> (Vec<String>, Vec<String>) {
    let limit = limit.to_string();
    let mut p = NodeProc::spawn(&["fill", "central", url, s(root), "ship1", &limit], &[]);
    let stopped = p
        .wait_line(Duration::from_secs(120), |l| l == "stopped")
        .await;
    let lines = p.lines();
    assert!(
        stopped.is_some(),
        "the filling sender did not stop cleanly: {:?}",
        lines.iter().rev().take(5).collect::<Vec<_>>()
    );
    assert!(p.wait_exit(Duration::from_secs(20)).await);
    let accepted = lines
        .iter()
        .filter_map(|l| l.strip_prefix("accepted "))
        .map(|i| format!("f-{i}"))
        .collect();
    let errors = lines
        .iter()
        .filter(|l| l.starts_with("error "))
        .cloned()
        .collect();
    (accepted, errors)
}

/// After a fill: restarts central without limits (`serve`), brings ship1 up, and checks that
/// exactly the accepted messages run, once each, in order.
async fn judge_fill(
    scenario: &str,
    url: &str,
    root: &Path,
    accepted: &[String],
    errors: &[String],
    start: Instant,
) {
    assert!(
        !accepted.is_empty(),
        "nothing was accepted before the failure"
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in errors {
        assert!(
            e.starts_with("error Storage "),
            "a failing write must reach the caller as a Storage error: {e}"
        );
        assert!(
            e.contains("disk space") || e.contains("too large") || e.contains("No space"),
            "the error must say what to check: {e}"
        );
    }
    let mut central = NodeProc::spawn(&["serve", "central", url, s(root)], &[]);
    central
        .wait_line(Duration::from_secs(30), |l| l == "ready")
        .await
        .expect("central restarts after the failed writes");
    let rec = Recorder::default();
    let ship1 = recorder_node("ship1", &[url.to_owned()], root, &rec).await;
    let n = accepted.len();
    wait_until_async(drain_limit(), || rec.len() >= n).await;
    // Anything beyond the accepted ones (the failed sends) would show up as unexpected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Tally::single(scenario, accepted, &rec.seen())
        .completed(rec.len().min(n))
        .since(start)
        .note(errors[0].chars().take(110).collect::<String>());
    t.print();
    t.assert_clean();
    central.sigkill();
    ship1.stop().await;
}

/// Scenario 10d. Failing writes: the sender's file sizes are limited with
/// `setrlimit(RLIMIT_FSIZE)` (SIGXFSZ ignored, so writes fail with EFBIG) while it accepts
/// 16 KiB commands. Must hold: the failing `send` returns a Storage error that says what to
/// check; after a restart without the limit, every message accepted before runs exactly once,
/// in order, and the refused ones never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10d_failing_writes_rlimit() {
    let start = Instant::now();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (accepted, errors) = fill_until_failure(&server.url(), dir.path(), 4 << 20).await;
    judge_fill(
        "10d failing writes (RLIMIT_FSIZE)",
        &server.url(),
        dir.path(),
        &accepted,
        &errors,
        start,
    )
    .await;
}

/// A small tmpfs mounted for a test (root only), unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Scenario 10e. A full disk: the sender's data directory is on an 8 MiB tmpfs (when this
/// process may mount one, i.e. as root; otherwise the same check runs with a 6 MiB
/// RLIMIT_FSIZE and says so). Must hold: as 10d — a clear Storage error to the caller of
/// `send`, nothing accepted before lost or duplicated once space is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10e_disk_full() {
    let start = Instant::now();
    let server = NatsServer::start();
    match Tmpfs::mount("8m") {
        Ok(fs) => {
            let (accepted, errors) = fill_until_failure(&server.url(), &fs.path, 0).await;
            // Make room again, as an operator would, before restarting.
            let big = fs.path.join("central").join("steward.redb");
            eprintln!(
                "s10e: store file at failure: {} bytes",
                std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0)
            );
            let roomy = tempfile::tempdir().unwrap();
            copy_dir(&fs.path, roomy.path());
            drop(fs);
            judge_fill(
                "10e disk full (8 MiB tmpfs)",
                &server.url(),
                roomy.path(),
                &accepted,
                &errors,
                start,
            )
            .await;
        }
        Err(why) => {
            eprintln!("s10e: cannot mount a tmpfs ({why}); using RLIMIT_FSIZE instead");
            let dir = tempfile::tempdir().unwrap();
            let (accepted, errors) = fill_until_failure(&server.url(), dir.path(), 6 << 20).await;
            judge_fill(
                "10e disk full (RLIMIT_FSIZE fallback)",
                &server.url(),
                dir.path(),
                &accepted,
                &errors,
                start,
            )
            .await;
        }
    }
}

/// Copies a directory tree (files and folders only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// 11. Clock skew
// ---------------------------------------------------------------------------

/// Publishes one hand-made envelope (the wire format of `steward/src/wire/envelope.rs`) from a
/// sender called `from` whose clock is `skew_ms` off, and returns the receiver's reply status.
async fn skewed_send(
    client: &async_nats::Client,
    from: &str,
    epoch: u64,
    seq: u64,
    id: &str,
    expires_ms: u64,
) -> String {
    let env = serde_json::json!({
        "id": id, "from": from, "to": "ship1", "kind": "command", "method": "record",
        "data": [id], "epoch": epoch, "seq": seq, "ack": true,
        "expires_ms": expires_ms, "method_timeout_ms": 10_000,
    });
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    for _ in 0..20 {
        client
            .publish_with_reply(
                "ship1.command.record",
                inbox.clone(),
                serde_json::to_vec(&env).unwrap().into(),
            )
            .await
            .unwrap();
        if let Ok(Some(msg)) = tokio::time::timeout(
            Duration::from_millis(500),
            futures::StreamExt::next(&mut sub),
        )
        .await
        {
            if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                // ship1 is still subscribing: publish again.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let reply: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            return reply["status"].as_str().unwrap_or_default().to_owned();
        }
    }
    panic!("no reply to {id}");
}

/// Scenario 11. Clock skew of ±10 minutes. The system clock cannot be changed in a test, so
/// skew is simulated where it matters — in the `expiresAt` a sender computes from its own
/// clock — against a receiver configured with `clock_skew` = 10 minutes:
/// * a sender 10 min AHEAD is a real node: `expiresAt = now + 10 min + ttl` (accepted, runs);
/// * a sender 10 min BEHIND cannot be a real node (it would refuse a message its own clock
///   calls expired), so a raw NATS client sends hand-made envelopes with
///   `expires_ms = now - 10 min + ttl` (within tolerance: accepted, runs) and
///   `expires_ms = now - 10 min - 1 min` / `now - 1 h` (truly expired: refused as expired);
/// * a real sender refuses an `expiresAt` its own clock says is past (InvalidMessage).
///
/// Must hold: accepted ones run exactly once, in order; expired ones are refused and never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_clock_skew() {
    let start = Instant::now();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let rec = Recorder::default();
    let tolerance = Duration::from_secs(600);
    let ship = test_node("ship1", &urls, dir.path())
        .clock_skew(tolerance)
        .method("record", rec.method(Kind::Command))
        .allow("*", "record")
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ten_min = Duration::from_secs(600);
    // Ahead by 10 minutes: a real node.
    let mut ahead_ids = Vec::new();
    for i in 0..5 {
        let id = format!("ahead-{i}");
        let at = SystemTime::now() + ten_min + Duration::from_secs(30);
        let m = Message::command("ship1", "record", [id.clone()])
            .with_id(id.clone())
            .with_expires_at(at);
        ahead_ids.push(central.send(m).await.unwrap().id);
    }
    let ahead_ok = count_ok(&central, &ahead_ids).await;
    // Behind by 10 minutes: hand-made envelopes from "skewed", one ordered stream.
    let client = async_nats::connect(server.url()).await.unwrap();
    let epoch = rand_epoch();
    let minute = 60_000u64;
    let cases: Vec<(String, u64, &str)> = vec![
        ("behind-0".into(), now_ms() - 10 * minute + minute, "run"),
        ("behind-1".into(), now_ms() - 10 * minute + 20_000, "run"),
        (
            "expired-0".into(),
            now_ms() - 10 * minute - minute,
            "expired",
        ),
        ("behind-2".into(), now_ms() - 9 * minute, "run"),
        ("expired-1".into(), now_ms() - 60 * minute, "expired"),
        (
            "behind-3".into(),
            now_ms() - 10 * minute + 2 * minute,
            "run",
        ),
    ];
    let mut right = 0;
    let mut statuses = Vec::new();
    for (seq, (id, exp, want)) in cases.iter().enumerate() {
        let status = skewed_send(&client, "skewed", epoch, seq as u64 + 1, id, *exp).await;
        let ok = match *want {
            "run" => status == "received" || status == "done",
            _ => status == "expired",
        };
        right += usize::from(ok);
        statuses.push(format!("{id}={status}"));
    }
    // A real sender refuses an expiresAt its own clock calls past.
    let refused = central
        .send(
            Message::command("ship1", "record", ["past"])
                .with_id("past")
                .with_expires_at(SystemTime::now() - Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidMessage, "{refused}");
    assert!(refused.to_string().contains("expiresAt"), "{refused}");
    let behind_run: Vec<String> = cases
        .iter()
        .filter(|c| c.2 == "run")
        .map(|c| c.0.clone())
        .collect();
    let n_run = ahead_ids.len() + behind_run.len();
    assert!(
        wait_until_async(Duration::from_secs(20), || rec.len() >= n_run).await,
        "only {} of {n_run} ran",
        rec.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = rec.seen();
    let ahead_seen: Vec<String> = seen
        .iter()
        .filter(|s| s.starts_with("ahead"))
        .cloned()
        .collect();
    let other_seen: Vec<String> = seen
        .iter()
        .filter(|s| !s.starts_with("ahead"))
        .cloned()
        .collect();
    let t = Tally::streams(
        "11 clock skew +-10 min",
        &[(ahead_ids.clone(), ahead_seen), (behind_run, other_seen)],
    )
    .sent(ahead_ids.len() + cases.len() + 1)
    .completed(ahead_ok + right + 1)
    .since(start)
    .note(format!(
        "tolerance 10 min; 2 truly expired refused, 1 refused at send; {}",
        statuses.join(" ")
    ));
    t.print();
    t.assert_clean();
    central.stop().await;
    ship.stop().await;
}

fn rand_epoch() -> u64 {
    Rng::new(now_ms()).next_u64() | 1
}

// ---------------------------------------------------------------------------
// 12. Backlog over a few KB/s
// ---------------------------------------------------------------------------

/// Scenario 12. A sender process (`steward-test-node backlog`) accepts a backlog of 10,000
/// commands (2,000 short) while its only link runs through a proxy throttled to 4 KB/s; its
/// resident memory (VmRSS) is sampled all along. Then the link is opened up and the backlog
/// drains. Must hold: memory stays bounded (under 100 MB, and not growing with the backlog:
/// at most 32 MB more at the end of the slow phase than after the first 10 % were accepted),
/// and every message runs exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_backlog_over_slow_link_memory_bounded() {
    let start = Instant::now();
    let n: usize = scale(2000, 10_000);
    let slow_for = scale(Duration::from_secs(8), Duration::from_secs(60));
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    proxy.set_shape(LinkShape::throttled(4_000));
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let ship = recorder_node("ship1", &[server.url()], dir.path(), &rec).await;
    let count = n.to_string();
    let url = proxy.url();
    let mut p = NodeProc::spawn(
        &["backlog", "central", &url, s(dir.path()), "ship1", &count],
        &[],
    );
    let pid = p.pid();
    let samples: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let samples = samples.clone();
        let sampling = sampling.clone();
        let lines = p.lines.clone();
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                let accepted = lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|l| l.strip_prefix("accepted ")?.parse::<i64>().ok())
                    .max()
                    .unwrap_or(0);
                if let Some(kib) = rss_kib(pid) {
                    samples.lock().unwrap().push((accepted, kib));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let all = format!("accepted {n}");
    assert!(
        p.wait_line(Duration::from_secs(120), |l| l == all)
            .await
            .is_some(),
        "the backlog was not accepted"
    );
    let accepted_at = Instant::now();
    tokio::time::sleep(slow_for).await;
    let ran_slow = rec.len();
    let through_slow = proxy.forwarded_bytes();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    proxy.clear_shape();
    let done = p.wait_line(drain_limit(), |l| l == "done").await;
    assert!(done.is_some(), "the backlog never drained");
    let completed = p
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("completed ")?.parse().ok())
        .unwrap_or(0);
    assert!(p.wait_exit(Duration::from_secs(20)).await);
    let samples = samples.lock().unwrap().clone();
    let max_kib = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let early_kib = samples
        .iter()
        .find(|s| s.0 >= (n / 10) as i64)
        .map(|s| s.1)
        .unwrap_or(max_kib);
    let end_kib = samples.last().map(|s| s.1).unwrap_or(0);
    let t = Tally::single("12 backlog over 4 KB/s, memory", &ids("m", 0..n), &rec.seen())
        .completed(completed)
        .since(start)
        .note(format!(
            "RSS {} MB after 10%, {} MB after {:.0?} slow, max {} MB; {ran_slow} ran over {through_slow} B while slow",
            early_kib / 1024,
            end_kib / 1024,
            accepted_at.elapsed().min(slow_for),
            max_kib / 1024
        ));
    t.print();
    t.assert_clean();
    assert!(!samples.is_empty(), "no memory samples");
    assert!(max_kib < 100 * 1024, "sender RSS reached {max_kib} KiB");
    assert!(
        end_kib.saturating_sub(early_kib) < 32 * 1024,
        "sender RSS grew from {early_kib} KiB to {end_kib} KiB with the backlog"
    );
    ship.stop().await;
}

/// The table printer and counting used by every scenario agree with a hand-made case (a
/// guard against a counting bug hiding a real failure).
#[test]
fn tally_counts_what_it_claims() {
    let sent = ids("m", 0..4);
    let executed: Vec<String> = ["m-0", "m-2", "m-1", "m-2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let t = Tally::single("self-check", &sent, &executed);
    assert_eq!((t.lost, t.twice, t.out_of_order), (1, 1, 1));
    assert!(faults::table(&[t]).contains("self-check"));
}
