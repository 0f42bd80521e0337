//! Upgrades lose nothing (issue 14 item 6): a node of an earlier release and a node of this
//! version, on one real nats-server, with steward's default security (signatures required,
//! nodes joined to central with a join token).
//!
//! The earlier release is its `steward` command, given as `STEWARD_OLD_BIN` (built by
//! `scripts/old-steward.sh`; `bash scripts/mixed-versions.sh` builds it and runs this file).
//! It runs as a node exactly as its README says (`steward --node NAME --data-dir DIR
//! --broker-address URL [--join-file FILE]`), is sent messages through its `inmsg.txt`, is
//! asked for a join token with `steward keys token` and for its state with `steward status
//! --json` / `steward keys list --json`, and is stopped with SIGTERM (or SIGKILLed). This
//! version's node runs in this process, through the library.
//!
//! a. A mixed pair, either version as central: each sends the other echo and shell commands
//!    and textLogging events; each completes once with its result and runs once, in order.
//! b. Upgrade in place: what the old central queued for a node that is down (stopped with
//!    SIGTERM or SIGKILL), and what was appended to its `inmsg.txt` meanwhile, this version
//!    delivers from the same data directory, once and in order, to a new or an old node.
//! c. Upgrade in the middle of a stream, of the sender (SIGKILL) and of the receiver.
//!
//! Throughout, what is published to an old node is watched on the broker: JSON only.
//! Without `STEWARD_OLD_BIN` every test says on stderr that it was skipped, and passes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steward::{
    JoinToken, KeyState, Kind, MessageState, Method, MethodResult, Node, NodeBuilder, Request,
    ResultStatus,
};
use steward_tests::nodes::{default_node, init_tracing};
use steward_tests::recorder::Recorder;
use steward_tests::NatsServer;

/// Upper bound for anything a test waits for (generous: two cores, other builds running).
const WAIT: Duration = Duration::from_secs(120);
/// Between two looks at the state of an old node (each may start a `steward` process).
const POLL: Duration = Duration::from_millis(50);
/// Messages of each kind each side of the mixed pair sends the other.
const N: usize = 50;
/// Commands the old node queues before the upgrade.
const QUEUED: usize = 100;
/// Commands appended to `inmsg.txt` while no node runs, read by the new version.
const APPENDED_WHILE_STOPPED: usize = 20;

/// Delivery tuning for every node of this file, old and new alike (the harness's test
/// values): short ACK timeouts and backoff, so a destination that comes up is reached fast.
const TUNING: [&str; 6] = [
    "--ack-timeout",
    "500ms",
    "--retry-wait",
    "50ms",
    "--retry-wait-max",
    "400ms",
];

/// The old `steward` binary, or `None` after saying on stderr why the test is skipped.
fn old_bin(test: &str) -> Option<PathBuf> {
    match std::env::var_os("STEWARD_OLD_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "STEWARD_OLD_BIN={} is not a file; build it with scripts/old-steward.sh",
                bin.display()
            );
            Some(bin)
        }
        None => {
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\nmixed_versions::{test}: SKIPPED: STEWARD_OLD_BIN is not set (the `steward` \
                 binary of the release to interoperate with); run `bash scripts/mixed-versions.sh`, \
                 which builds it with scripts/old-steward.sh and runs these tests"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The old version: its `steward` command as a node and as a client
// ---------------------------------------------------------------------------

/// A node of the old version: `OLD --node NAME --data-dir DIR --broker-address URL ...`,
/// stdout and stderr appended to files beside the data directory.
struct OldNode {
    bin: PathBuf,
    name: String,
    dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

impl OldNode {
    /// Starts the node and returns once its control socket answers (it is running).
    async fn start(bin: &Path, name: &str, dir: &Path, url: &str, extra: &[&str]) -> OldNode {
        let parent = dir.parent().expect("a data dir inside the test's tempdir");
        let stdout = parent.join(format!("{name}.old.stdout"));
        let stderr = parent.join(format!("{name}.old.stderr"));
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("open an old node's log file")
        };
        let mut cmd = Command::new(bin);
        cmd.args(["--node", name, "--data-dir"])
            .arg(dir)
            .args(["--broker-address", url])
            .args(TUNING)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(append(&stdout))
            .stderr(append(&stderr));
        clean_env(&mut cmd);
        let child = cmd.spawn().expect("spawn the old steward binary");
        let mut node = OldNode {
            bin: bin.to_owned(),
            name: name.to_owned(),
            dir: dir.to_owned(),
            stdout,
            stderr,
            child: Some(child),
        };
        let sock = dir.join("steward.sock");
        let ready = poll(WAIT, || {
            if let Some(st) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "old node {name} exited at start with {st}; stderr:\n{}",
                    node.stderr_text()
                );
            }
            let up = UnixStream::connect(&sock).is_ok();
            async move { up }
        })
        .await;
        assert!(ready, "old node {name}: no control socket within {WAIT:?}");
        node
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `OLD ARGS --data-dir DIR`, e.g. `keys token`: its stdout, or a panic with its output.
    async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        clean_env(cmd.as_std_mut());
        let out = tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("old `steward {}` did not finish", args.join(" ")))
            .expect("run the old steward binary");
        assert!(
            out.status.success(),
            "old `steward {}` on {}: {}; stderr:\n{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `steward keys token` on this (central) node: a join token for a new node.
    async fn join_token(&self) -> String {
        let token = self.cli(&["keys", "token"]).await.trim().to_owned();
        assert!(token.starts_with("sjt1."), "not a join token: {token:?}");
        token
    }

    /// State of `node`'s keys in this central's registry (`steward keys list --json`).
    async fn key_states(&self, node: &str) -> Vec<String> {
        let list: Value = serde_json::from_str(&self.cli(&["keys", "list", "--json"]).await)
            .expect("`steward keys list --json` prints JSON");
        list["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| k["node"] == node)
            .map(|k| k["state"].as_str().unwrap_or_default().to_ascii_lowercase())
            .collect()
    }

    /// Messages accepted for `to` and not final yet, and the send attempts of the message
    /// `id` so far (`steward status --json`).
    async fn pending_and_attempts(&self, to: &str, id: &str) -> (u64, u64) {
        let status: Value =
            serde_json::from_str(&self.cli(&["status", "--json", "--limit", "1000"]).await)
                .expect("`steward status --json` prints JSON");
        let find = |list: &str, key: &str, value: &str| {
            status[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d[key] == value)
                .cloned()
                .unwrap_or_default()
        };
        let pending = find("destinations", "node", to)["pending"].as_u64();
        let attempts = find("messages", "id", id)["attempts"].as_u64();
        (pending.unwrap_or(0), attempts.unwrap_or(0))
    }

    /// SIGTERM, then the exit status (a graceful stop: 0).
    fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("old node still running");
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait on the old node") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "old node {} did not exit after SIGTERM; stderr:\n{}",
                self.name,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and the process reaped.
    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("old node still running");
        signal(&child, libc::SIGKILL);
        child.wait().expect("reap the killed old node");
    }
}

impl Drop for OldNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let err = self.stderr_text();
            let lines: Vec<&str> = err.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- old node {} stderr (last lines) ----\n{}\n---- stdout: {} ----",
                self.name,
                tail.join("\n"),
                self.stdout.display()
            );
        }
    }
}

/// No `STEWARD_*` setting of the test's environment reaches an old process.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STEWARD_") {
            cmd.env_remove(k);
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Appends `messages` to `<dir>/inmsg.txt` as one JSON array, as `cat msg.json >> inmsg.txt`.
fn append_inmsg(dir: &Path, messages: &[Value]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("inmsg.txt"))
        .expect("open inmsg.txt");
    f.write_all(Value::Array(messages.to_vec()).to_string().as_bytes())
        .expect("append to inmsg.txt");
}

// ---------------------------------------------------------------------------
// This version
// ---------------------------------------------------------------------------

/// This version's node as the `steward` command builds it (hello every 60 s, `inmsg.txt`
/// watched, control socket, the default access list and signatures), with [`TUNING`].
fn new_like_cli(name: &str, url: &str, dir: &Path) -> NodeBuilder {
    init_tracing();
    Node::builder(name)
        .brokers([url])
        .data_dir(dir)
        .hello_interval(Some(Duration::from_secs(60)))
        .watch_inmsg(true)
        .control_socket(true)
        .ack_timeout(Duration::from_millis(500))
        .retry_wait(Duration::from_millis(50))
        .retry_wait_max(Duration::from_millis(400))
}

/// Watches what is published on `<node>.>` — what the old node `node` is sent — and keeps
/// each message that is not a JSON object: the old version reads nothing else. (Answers to
/// the old node's own messages go to its reply inbox, which is not watched: it could not
/// read those either, and its messages would not complete.)
struct JsonTap {
    node: String,
    seen: Arc<Mutex<(usize, Vec<String>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl JsonTap {
    async fn start(url: &str, node: &str) -> JsonTap {
        use futures::StreamExt;
        let client = async_nats::connect(url).await.expect("the tap connects");
        let mut sub = client
            .subscribe(format!("{node}.>"))
            .await
            .expect("the tap subscribes");
        client.flush().await.expect("the tap's subscription is in");
        let seen = Arc::new(Mutex::new((0, Vec::new())));
        let keep = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let json = matches!(
                    serde_json::from_slice::<Value>(&m.payload),
                    Ok(Value::Object(_))
                );
                let mut seen = keep.lock().unwrap_or_else(|p| p.into_inner());
                seen.0 += 1;
                if !json {
                    let head = &m.payload[..m.payload.len().min(16)];
                    seen.1.push(format!(
                        "{} ({} bytes: {head:02x?}...)",
                        m.subject,
                        m.payload.len()
                    ));
                }
            }
        });
        JsonTap {
            node: node.to_owned(),
            seen,
            task,
        }
    }

    /// Asserts that the old node was sent something, and only JSON.
    fn assert_only_json(&self) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(seen.0 > 0, "nothing was published to {}", self.node);
        assert!(
            seen.1.is_empty(),
            "{} of {} messages sent to the old {} were not JSON, which it cannot read: {:?}",
            seen.1.len(),
            seen.0,
            self.node,
            &seen.1[..seen.1.len().min(5)]
        );
    }
}

impl Drop for JsonTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Looks at `get` every [`POLL`] until `done` holds for what it gives, or `timeout` passed;
/// returns the last value (check `done` on it again).
async fn poll_for<T, F, Fut>(timeout: Duration, mut get: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let value = get().await;
        if done(&value) || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` every [`POLL`] until it holds (true) or `timeout` passed (false).
async fn poll<F, Fut>(timeout: Duration, cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_for(timeout, cond, |ok| *ok).await
}

/// The lines of a file (none if it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The lines of `<dir>/audit.log` (one per message the node finished), by message id.
fn audit(dir: &Path) -> HashMap<String, Vec<Value>> {
    let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
    for line in lines(&dir.join("audit.log")) {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("audit.log line is not JSON ({e}): {line}"));
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        by_id.entry(id).or_default().push(v);
    }
    by_id
}

/// Waits until the audit log in `dir` has a line for every id of `expected`, then asserts:
/// each has exactly one line, completed, with an OK result from `ran_at` whose output is the
/// expected one (`None`: any output).
async fn assert_audited_once(dir: &Path, ran_at: &str, expected: &[(String, Option<String>)]) {
    assert_audited(dir, ran_at, expected, true).await;
}

/// [`assert_audited_once`], where `once: false` allows a message more than one line (all
/// alike): after a SIGKILL the audit log may repeat a line, never lose one.
async fn assert_audited(
    dir: &Path,
    ran_at: &str,
    expected: &[(String, Option<String>)],
    once: bool,
) {
    let all_in = poll(WAIT, || {
        let a = audit(dir);
        let done = expected.iter().all(|(id, _)| a.contains_key(id));
        async move { done }
    })
    .await;
    let a = audit(dir);
    let missing: Vec<&String> = expected
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !a.contains_key(*id))
        .collect();
    assert!(
        all_in,
        "{}: {} of {} messages never finished, e.g. {:?}",
        dir.display(),
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, out) in expected {
        let entries = &a[id];
        assert!(
            !once || entries.len() == 1,
            "{id} finished {} times in {}: {entries:?}",
            entries.len(),
            dir.display()
        );
        for e in entries {
            assert_eq!(e["outcome"], "completed", "{id}: {e}");
            assert_eq!(e["result"]["status"], "ok", "{id}: {e}");
            assert_eq!(e["result"]["node"], ran_at, "{id}: {e}");
            if let Some(out) = out {
                assert_eq!(
                    e["result"]["stdout"].as_str(),
                    Some(out.as_str()),
                    "{id}: {e}"
                );
            }
        }
    }
}

/// Asserts `seen` is `expected`: nothing twice, nothing missing, in order.
fn assert_exactly_once_in_order(what: &str, seen: &[String], expected: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in seen {
        *counts.entry(s).or_default() += 1;
    }
    let twice: Vec<&str> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(twice.is_empty(), "{what}: ran more than once: {twice:?}");
    let lost: Vec<&String> = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: never ran ({} of {}): {:?}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(seen, expected, "{what}: ran out of order");
}

// ---------------------------------------------------------------------------
// a. A mixed pair: each version sends the other commands and events
// ---------------------------------------------------------------------------

/// A shell command that appends `tag` to `log` and prints it.
fn witness(tag: &str, log: &Path) -> Value {
    json!([
        "sh",
        "-c",
        "printf '%s\\n' \"$0\" >> \"$1\" && printf '%s' \"$0\"",
        tag,
        log.display().to_string()
    ])
}

/// What one side of the pair sends the other (`prefix`: `o2n` old to new, `n2o`), in the
/// original JSON format with explicit ids: `N` echo commands (`<prefix>-e-<i>`), `N`
/// shellCommands appending their tag to `exec_log` at the receiver (`<prefix>-c-<i>`), `N`
/// textLogging events (`<prefix>-t-<i>`), interleaved.
fn pair_messages(prefix: &str, to: &str, exec_log: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..N {
        let (e, c, t) = (
            format!("{prefix}-e-{i}"),
            format!("{prefix}-c-{i}"),
            format!("{prefix}-t-{i}"),
        );
        out.push(json!({"id": e, "toNode": to, "commandOrEvent": "command",
                        "method": "echo", "data": [e]}));
        out.push(json!({"id": c, "toNode": to, "commandOrEvent": "command",
                        "method": "shellCommand", "data": witness(&c, exec_log)}));
        out.push(json!({"id": t, "toNode": to, "commandOrEvent": "event",
                        "method": "textLogging", "data": [t]}));
    }
    out
}

/// The ids of [`pair_messages`] with the output each result must carry (echo and
/// shellCommand print their tag; textLogging says how many lines it logged).
fn pair_results(prefix: &str) -> Vec<(String, Option<String>)> {
    (0..N)
        .flat_map(|i| {
            let e = format!("{prefix}-e-{i}");
            let c = format!("{prefix}-c-{i}");
            [
                (e.clone(), Some(e)),
                (c.clone(), Some(c)),
                (format!("{prefix}-t-{i}"), None),
            ]
        })
        .collect()
}

fn tags(prefix: &str, kind: &str) -> Vec<String> {
    (0..N).map(|i| format!("{prefix}-{kind}-{i}")).collect()
}

/// Sends the pair's messages both ways at once — the old node through its `inmsg.txt`, the
/// new one through the library — and checks what must hold:
/// * at each sender, every message completed exactly once (one `audit.log` line each,
///   outcome completed, an OK result), and the results came back: echo and the shell
///   commands return their tag; the new sender's receipts give the same results;
/// * at each receiver, every shell command and every textLogging event ran exactly once, in
///   the order sent (the order steward keeps: per sender and subject);
/// * (checked by the callers' [`JsonTap`]) the old node is sent nothing but JSON.
async fn exchange(old: &OldNode, new: &Node, tmp: &Path) {
    let old_name = old.name.clone();
    let new_name = new.name().to_owned();
    let new_dir = new.config().data_dir.clone();
    let exec_at_new = tmp.join("exec-at-new.log");
    let exec_at_old = tmp.join("exec-at-old.log");

    append_inmsg(&old.dir, &pair_messages("o2n", &new_name, &exec_at_new));
    let report = new
        .send_json(&Value::Array(pair_messages("n2o", &old_name, &exec_at_old)).to_string())
        .await
        .expect("the new node accepts its messages");
    assert!(report.rejected.is_empty(), "refused: {:?}", report.rejected);
    assert_eq!(report.accepted.len(), 3 * N);

    for (_, receipt) in &report.accepted {
        let st = match tokio::time::timeout(WAIT, receipt.wait()).await {
            Ok(st) => st.expect("wait for a final state"),
            Err(_) => panic!(
                "{}: not final within {WAIT:?}: {:?}",
                receipt.id,
                receipt.status().await
            ),
        };
        assert_eq!(st.state, MessageState::Completed, "{}: {st:?}", receipt.id);
        let result = st
            .result
            .as_ref()
            .expect("a completed message has a result");
        assert_eq!(
            result.status,
            ResultStatus::Ok,
            "{}: {result:?}",
            receipt.id
        );
        assert_eq!(result.node, old_name, "{}: run elsewhere", receipt.id);
        if !receipt.id.contains("-t-") {
            assert_eq!(result.stdout, receipt.id, "{}: wrong result", receipt.id);
        }
    }
    assert_audited_once(&new_dir, &old_name, &pair_results("n2o")).await;
    assert_audited_once(&old.dir, &new_name, &pair_results("o2n")).await;

    // Everything is final at both senders: what ran is in the receivers' records now.
    assert_exactly_once_in_order(
        "shell commands at the old node",
        &lines(&exec_at_old),
        &tags("n2o", "c"),
    );
    assert_exactly_once_in_order(
        "textLogging at the old node",
        &lines(&old.dir.join(format!("textlogging/{new_name}.log"))),
        &tags("n2o", "t"),
    );
    assert_exactly_once_in_order(
        "shell commands at the new node",
        &lines(&exec_at_new),
        &tags("o2n", "c"),
    );
    assert_exactly_once_in_order(
        "textLogging at the new node",
        &lines(&new_dir.join(format!("textlogging/{old_name}.log"))),
        &tags("o2n", "t"),
    );
}

/// Waits until the old `central` approved the new `ship`'s key and `ship` applied a trust
/// bundle from it.
async fn enrolled_with_old_central(central: &OldNode, ship: &Node) {
    let name = ship.name();
    let (states, version) = poll_for(
        WAIT,
        || async move { (central.key_states(name).await, ship.trust_version()) },
        |(states, version)| states == &["approved"] && *version > 0,
    )
    .await;
    assert!(
        states == ["approved"] && version > 0,
        "{name} not enrolled: its keys at the old central {states:?}, its trust version {version}"
    );
}

/// Waits until the new `central` approved the old `ship`'s key and `ship` applied a trust
/// bundle from it (its `trust.json`).
async fn enrolled_with_new_central(central: &Node, ship: &OldNode) {
    let trust_file = ship.dir.join("trust.json");
    let enrolled = poll(WAIT, || {
        let approved = central.keys().is_ok_and(|ks| {
            ks.iter()
                .any(|k| k.node == ship.name && k.state == KeyState::Approved)
        });
        let bundle = trust_file.exists();
        async move { approved && bundle }
    })
    .await;
    assert!(
        enrolled,
        "old {} not enrolled: keys at the new central {:?}, its trust.json there: {}",
        ship.name,
        central.keys(),
        trust_file.exists()
    );
}

/// An old central and a new ship1 joined to it with `steward keys token` from the old
/// central. Must hold: the new node's key is approved and it gets the old central's trust
/// bundle; then everything of [`exchange`] (50 echo commands, 50 shell commands, 50 events
/// each way: each completes exactly once with its result, runs once, in order); the old
/// central stops gracefully (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_central_and_new_node_exchange_messages() {
    let Some(bin) = old_bin("old_central_and_new_node_exchange_messages") else {
        return;
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tap = JsonTap::start(&url, "central").await;
    // Central lets ship1 call echo and shellCommand (it accepts textLogging from every node).
    let mut central = OldNode::start(
        &bin,
        "central",
        &tmp.path().join("central"),
        &url,
        &["--allow", "ship1:echo", "--allow", "ship1:shellCommand"],
    )
    .await;
    let token = JoinToken::parse(&central.join_token().await).expect("the old token parses");
    let ship = default_node("ship1", &[url], tmp.path())
        .join(token)
        .start()
        .await
        .expect("the new ship1 starts with the old central's token");
    enrolled_with_old_central(&central, &ship).await;

    exchange(&central, &ship, tmp.path()).await;
    tap.assert_only_json();

    ship.stop().await;
    let st = central.sigterm();
    assert!(st.success(), "the old central exited with {st}");
}

/// A new central and an old ship1 joined to it with a token from the new central
/// (`--join-file`, as the old README says). Must hold: the old node's key is approved and
/// it applies the new central's trust bundle (its `trust.json`); then everything of
/// [`exchange`]; the old ship1 stops gracefully (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_central_and_old_node_exchange_messages() {
    let Some(bin) = old_bin("new_central_and_old_node_exchange_messages") else {
        return;
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tap = JsonTap::start(&url, "ship1").await;
    let central = default_node("central", std::slice::from_ref(&url), tmp.path())
        .allow("ship1", "echo")
        .allow("ship1", "shellCommand")
        .start()
        .await
        .expect("the new central starts");
    let token_file = tmp.path().join("join.token");
    let token = central.join_token(None).await.expect("a join token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_arg = token_file.display().to_string();
    let mut ship = OldNode::start(
        &bin,
        "ship1",
        &tmp.path().join("ship1"),
        &url,
        &["--join-file", &token_arg],
    )
    .await;
    enrolled_with_new_central(&central, &ship).await;

    exchange(&ship, &central, tmp.path()).await;
    tap.assert_only_json();

    let st = ship.sigterm();
    assert!(st.success(), "the old ship1 exited with {st}");
    central.stop().await;
}

// ---------------------------------------------------------------------------
// b. Upgrade in place: what the old version queued, the new one delivers
// ---------------------------------------------------------------------------

/// How the old node is stopped before the upgrade.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Which version the destination runs.
#[derive(Clone, Copy, Debug)]
enum Destination {
    /// This version in-process, serving `record` (a command that records its data).
    New,
    /// The old `steward` command; the commands are shell commands appending to a file.
    Old,
}

/// The upgrade of central from the old version to this one on the same data directory.
///
/// 1. The old central runs (closed by default), makes a join token, and is given
///    [`QUEUED`] commands for ship1 through its `inmsg.txt` (ids `m-0`…); ship1 is not
///    running. Once `steward status` shows all of them pending and the first one tried,
///    central is stopped (`stop`).
/// 2. While no node runs, [`APPENDED_WHILE_STOPPED`] more are appended to `inmsg.txt`.
/// 3. This version starts on the same data directory (store, keys, trust registry with the
///    old token, `inmsg.offset`), then ship1 starts (`destination`) and joins with the old
///    central's token.
///
/// Must hold: every message — the queued ones and the appended ones — completes exactly
/// once at the new central with an OK result (one `audit.log` line each), and ship1 ran each
/// exactly once, in the order sent (nothing lost, nothing twice, nothing reordered); an old
/// ship1 is sent nothing but JSON by the upgraded central. With SIGTERM the old central
/// exits 0.
async fn upgrade_in_place(test: &str, stop: Stop, destination: Destination) {
    let Some(bin) = old_bin(test) else {
        return;
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tap = JsonTap::start(&url, "ship1").await;
    let central_dir = tmp.path().join("central");
    let exec_log = tmp.path().join("exec-at-ship1.log");
    let message = |i: usize| {
        let id = format!("m-{i}");
        let (method, data) = match destination {
            Destination::New => ("record", json!([id])),
            Destination::Old => ("shellCommand", witness(&id, &exec_log)),
        };
        json!({"id": id, "toNode": "ship1", "commandOrEvent": "command",
               "method": method, "data": data})
    };
    let total = QUEUED + APPENDED_WHILE_STOPPED;
    let expected: Vec<String> = (0..total).map(|i| format!("m-{i}")).collect();

    // 1. The old version queues.
    let mut old = OldNode::start(&bin, "central", &central_dir, &url, &[]).await;
    let token = old.join_token().await;
    append_inmsg(&central_dir, &(0..QUEUED).map(message).collect::<Vec<_>>());
    // All accepted, and the first one tried (ship1 does not answer: a failed attempt, stored).
    let o = &old;
    let (pending, attempts) = poll_for(
        WAIT,
        || async move { o.pending_and_attempts("ship1", "m-0").await },
        |&(pending, attempts)| pending == QUEUED as u64 && attempts > 0,
    )
    .await;
    assert!(
        pending == QUEUED as u64 && attempts > 0,
        "the old central: {pending} of {QUEUED} pending, {attempts} attempts to send m-0"
    );
    match stop {
        Stop::Term => {
            let st = old.sigterm();
            assert!(st.success(), "the old central exited with {st}");
        }
        Stop::Kill => old.sigkill(),
    }

    // 2. More arrive while nothing runs.
    append_inmsg(
        &central_dir,
        &(QUEUED..total).map(message).collect::<Vec<_>>(),
    );

    // 3. The new version on the same data directory, then the destination.
    let central = new_like_cli("central", &url, &central_dir)
        .start()
        .await
        .expect("the new version opens the old version's data directory");
    let token_file = tmp.path().join("join.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let recorder = Recorder::default();
    let mut ship_new = None;
    let mut ship_old = None;
    match destination {
        Destination::New => {
            let ship = default_node("ship1", std::slice::from_ref(&url), tmp.path())
                .join(JoinToken::parse(&token).unwrap())
                .method("record", recorder.method(steward::Kind::Command))
                .start()
                .await
                .expect("ship1 starts with the old central's token");
            ship_new = Some(ship);
        }
        Destination::Old => {
            let token_arg = token_file.display().to_string();
            let ship = OldNode::start(
                &bin,
                "ship1",
                &tmp.path().join("ship1"),
                &url,
                &["--join-file", &token_arg],
            )
            .await;
            ship_old = Some(ship);
        }
    }

    for id in &expected {
        let st = match tokio::time::timeout(WAIT, central.wait(id)).await {
            Ok(st) => st.unwrap_or_else(|e| panic!("{id}: {e}")),
            Err(_) => panic!(
                "{id}: not final within {WAIT:?} after the upgrade: {:?}; destinations {:?}; \
                 keys {:?}",
                central.message(id).await,
                central.destinations(),
                central.keys()
            ),
        };
        assert_eq!(st.state, MessageState::Completed, "{id}: {st:?}");
        let result = st
            .result
            .as_ref()
            .expect("a completed message has a result");
        assert_eq!(result.status, ResultStatus::Ok, "{id}: {result:?}");
    }
    let results: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|id| {
            let out = match destination {
                Destination::New => String::new(),
                Destination::Old => id.clone(),
            };
            (id.clone(), Some(out))
        })
        .collect();
    assert_audited_once(&central_dir, "ship1", &results).await;

    // Everything is final at central: what ship1 ran is in its record now.
    central.stop().await;
    let seen = match destination {
        Destination::New => {
            let ship = ship_new.take().expect("new ship1");
            ship.stop().await;
            recorder.seen()
        }
        Destination::Old => {
            let mut ship = ship_old.take().expect("old ship1");
            let st = ship.sigterm();
            assert!(st.success(), "the old ship1 exited with {st}");
            tap.assert_only_json();
            lines(&exec_log)
        }
    };
    assert_exactly_once_in_order(
        &format!("commands at ship1 ({destination:?} version)"),
        &seen,
        &expected,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_after_sigterm_delivers_to_a_new_node() {
    upgrade_in_place(
        "upgrade_after_sigterm_delivers_to_a_new_node",
        Stop::Term,
        Destination::New,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_after_sigkill_delivers_to_a_new_node() {
    upgrade_in_place(
        "upgrade_after_sigkill_delivers_to_a_new_node",
        Stop::Kill,
        Destination::New,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_after_sigterm_delivers_to_an_old_node() {
    upgrade_in_place(
        "upgrade_after_sigterm_delivers_to_an_old_node",
        Stop::Term,
        Destination::Old,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_after_sigkill_delivers_to_an_old_node() {
    upgrade_in_place(
        "upgrade_after_sigkill_delivers_to_an_old_node",
        Stop::Kill,
        Destination::Old,
    )
    .await;
}

// ---------------------------------------------------------------------------
// c. Rolling upgrade in the middle of a stream
// ---------------------------------------------------------------------------

/// Commands in each stream cut by an upgrade.
const STREAM: usize = 200;

/// A `record` command that records its `data[0]` in `ran` after `delay` of work, so that a
/// stream of them is still running when a test cuts it.
fn slow_record(ran: Arc<Mutex<Vec<String>>>, delay: Duration) -> Method {
    Method::new(Kind::Command, move |req: Request| {
        let ran = Arc::clone(&ran);
        async move {
            tokio::time::sleep(delay).await;
            ran.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req.data.first().cloned().unwrap_or_default());
            MethodResult::ok("")
        }
    })
}

fn stream_ids() -> Vec<String> {
    (0..STREAM).map(|i| format!("m-{i}")).collect()
}

/// The sender is upgraded in the middle of a stream to a running node of this version: the
/// old central streams [`STREAM`] `record` commands (through its `inmsg.txt`) to ship1 (this
/// version, joined with the old central's token); once ship1 ran a quarter of them the old
/// central is SIGKILLed and this version starts on its data directory.
///
/// Must hold: ship1 sends the old central only JSON; every command completes at the new
/// central with an OK result from ship1 (and has completed lines in `audit.log`, repeats
/// allowed after a SIGKILL); ship1 ran each exactly once, in the order sent — the resends of the new version (whatever format it
/// then speaks to ship1) are recognised as what the old one already delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_upgraded_mid_stream_after_sigkill() {
    let Some(bin) = old_bin("sender_upgraded_mid_stream_after_sigkill") else {
        return;
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tap = JsonTap::start(&url, "central").await;
    let central_dir = tmp.path().join("central");
    let mut old = OldNode::start(&bin, "central", &central_dir, &url, &[]).await;
    let token = JoinToken::parse(&old.join_token().await).expect("the old token parses");
    let ran = Arc::new(Mutex::new(Vec::new()));
    let ship = default_node("ship1", std::slice::from_ref(&url), tmp.path())
        .join(token)
        .method(
            "record",
            slow_record(Arc::clone(&ran), Duration::from_millis(10)),
        )
        .start()
        .await
        .expect("ship1 starts with the old central's token");
    enrolled_with_old_central(&old, &ship).await;

    let ids = stream_ids();
    let messages: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "toNode": "ship1", "commandOrEvent": "command",
                   "method": "record", "data": [id]})
        })
        .collect();
    append_inmsg(&central_dir, &messages);
    let count = || ran.lock().unwrap_or_else(|p| p.into_inner()).len();
    let cut = poll(WAIT, || {
        let n = count();
        async move { n >= STREAM / 4 }
    })
    .await;
    assert!(
        cut,
        "ship1 ran {} of {STREAM} from the old central",
        count()
    );
    old.sigkill();
    let before = count();
    assert!(
        before < STREAM,
        "the stream ended before the old central was killed: nothing was cut"
    );
    // Until this version runs central, ship1 sends it JSON only (results going home).
    tap.assert_only_json();

    let central = new_like_cli("central", &url, &central_dir)
        .start()
        .await
        .expect("the new version opens the killed old version's data directory");
    for id in &ids {
        let st = match tokio::time::timeout(WAIT, central.wait(id)).await {
            Ok(st) => st.unwrap_or_else(|e| panic!("{id}: {e}")),
            Err(_) => panic!(
                "{id}: not final within {WAIT:?} after the upgrade: {:?}",
                central.message(id).await
            ),
        };
        assert_eq!(st.state, MessageState::Completed, "{id}: {st:?}");
        let result = st
            .result
            .as_ref()
            .expect("a completed message has a result");
        assert_eq!(result.status, ResultStatus::Ok, "{id}: {result:?}");
    }
    let results: Vec<(String, Option<String>)> = ids
        .iter()
        .map(|id| (id.clone(), Some(String::new())))
        .collect();
    assert_audited(&central_dir, "ship1", &results, false).await;

    central.stop().await;
    ship.stop().await;
    let seen = ran.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_exactly_once_in_order(
        &format!("record at ship1 ({before} ran before the kill)"),
        &seen,
        &ids,
    );
}

/// The receiver is upgraded in the middle of a stream: the new central streams [`STREAM`]
/// shell commands (each appends its tag to a file) to an old ship1 joined with its token;
/// once ship1 ran a quarter of them it is stopped with SIGTERM (exit 0) and this version
/// starts on ship1's data directory (its key, the pinned `central.pub`, `trust.json`, the
/// records of what it received).
///
/// Must hold: central sends the old ship1 only JSON; every command completes at central
/// with an OK result from ship1 that prints its tag; the shell commands ran exactly once, in the order sent — what the old ship1
/// received before it stopped is answered from its records by the new one, never run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_upgraded_mid_stream_after_sigterm() {
    let Some(bin) = old_bin("receiver_upgraded_mid_stream_after_sigterm") else {
        return;
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let tap = JsonTap::start(&url, "ship1").await;
    let central = default_node("central", std::slice::from_ref(&url), tmp.path())
        .start()
        .await
        .expect("the new central starts");
    let token_file = tmp.path().join("join.token");
    let token = central.join_token(None).await.expect("a join token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_arg = token_file.display().to_string();
    let ship_dir = tmp.path().join("ship1");
    let mut ship =
        OldNode::start(&bin, "ship1", &ship_dir, &url, &["--join-file", &token_arg]).await;
    enrolled_with_new_central(&central, &ship).await;

    let exec_log = tmp.path().join("exec-at-ship1.log");
    let ids = stream_ids();
    let messages: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "toNode": "ship1", "commandOrEvent": "command",
                   "method": "shellCommand", "data": witness(id, &exec_log)})
        })
        .collect();
    let report = central
        .send_json(&Value::Array(messages).to_string())
        .await
        .expect("central accepts the stream");
    assert!(report.rejected.is_empty(), "refused: {:?}", report.rejected);
    let cut = poll(WAIT, || {
        let n = lines(&exec_log).len();
        async move { n >= STREAM / 4 }
    })
    .await;
    assert!(
        cut,
        "the old ship1 ran {} of {STREAM}",
        lines(&exec_log).len()
    );
    let st = ship.sigterm();
    assert!(st.success(), "the old ship1 exited with {st}");
    let before = lines(&exec_log).len();
    assert!(
        before < STREAM,
        "the stream ended before the old ship1 stopped: nothing was cut"
    );
    tap.assert_only_json();

    let new_ship = new_like_cli("ship1", &url, &ship_dir)
        .start()
        .await
        .expect("the new version opens the old ship1's data directory");
    for (_, receipt) in &report.accepted {
        let st = match tokio::time::timeout(WAIT, receipt.wait()).await {
            Ok(st) => st.expect("wait for a final state"),
            Err(_) => panic!(
                "{}: not final within {WAIT:?} after the upgrade: {:?}",
                receipt.id,
                receipt.status().await
            ),
        };
        assert_eq!(st.state, MessageState::Completed, "{}: {st:?}", receipt.id);
        let result = st
            .result
            .as_ref()
            .expect("a completed message has a result");
        assert_eq!(
            result.status,
            ResultStatus::Ok,
            "{}: {result:?}",
            receipt.id
        );
        assert_eq!(result.node, "ship1", "{}: {result:?}", receipt.id);
        assert_eq!(result.stdout, receipt.id, "{}: wrong result", receipt.id);
    }

    central.stop().await;
    new_ship.stop().await;
    assert_exactly_once_in_order(
        &format!("shell commands at ship1 ({before} ran before the upgrade)"),
        &lines(&exec_log),
        &ids,
    );
}
