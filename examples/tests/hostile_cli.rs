//! Hostile input through the `steward send` command line: bad names, bad option values,
//! malformed `--json`, invalid UTF-8 arguments, oversized payloads, unknown methods, and shell
//! metacharacters / option strings that must reach the program literally (no shell).
//!
//! Each case: a clear error naming the problem and the documented exit status, nothing run
//! that should not be, a valid message afterwards still delivered, the nodes still up.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steward_tests::{nats_server_bin, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_steward");
const WAIT: Duration = Duration::from_secs(60);
/// `steward send` exit status for a message refused before sending.
const EXIT_INVALID: i32 = 64;
/// `steward send` exit status for a message the receiver rejected.
const EXIT_REJECTED: i32 = 67;
/// The broker's max_payload here.
const MAX_PAYLOAD: usize = 16 * 1024;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `steward ARGS` to completion.
fn steward<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env_remove("STEWARD_NODE")
        .env_remove("STEWARD_DATA_DIR")
        .env_remove("STEWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run steward");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `steward --node NAME` process, killed on drop.
struct NodeProc {
    child: Child,
    stderr: PathBuf,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- node stderr ---\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Starts `steward --node NAME` on `dir` and waits until `steward status` says it is connected.
fn start_node(name: &str, url: &str, dir: &Path) -> NodeProc {
    std::fs::create_dir_all(dir).unwrap();
    let stderr = dir.join("node.stderr");
    let child = Command::new(BIN)
        .args([
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
            // Hostile input, not enrolment: these nodes trust each other by name.
            "--signatures",
            "off",
        ])
        .env_remove("STEWARD_NODE")
        .env_remove("STEWARD_DATA_DIR")
        .env_remove("STEWARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn steward");
    let p = NodeProc { child, stderr };
    let deadline = Instant::now() + WAIT;
    loop {
        let r = steward(&["status", "--json", "--data-dir", s(dir)]);
        let up = r.code == 0
            && serde_json::from_str::<Value>(&r.stdout)
                .is_ok_and(|v| v["running"] == true && v["connected"] == true);
        if up {
            return p;
        }
        assert!(Instant::now() < deadline, "{name} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `steward send --data-dir DIR` + `args`.
fn send(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["send", "--data-dir", s(dir)];
    all.extend_from_slice(args);
    steward(&all)
}

#[test]
fn steward_send_refuses_hostile_input_with_clear_errors() {
    let tmp = tempfile::Builder::new().prefix("stwh").tempdir().unwrap();
    let nats = NatsServer::builder().max_payload(MAX_PAYLOAD).start();
    let url = nats.url();
    let central = tmp.path().join("central");
    let _c = start_node("central", &url, &central);
    let _s1 = start_node("ship1", &url, &tmp.path().join("ship1"));
    let canary = tmp.path().join("canary");
    let c = canary.display().to_string();
    let mut cases = 0;

    // Names: refused before sending, exit 64, the field and the character named.
    let long = "x".repeat(65);
    for (to, needle) in [
        ("a.b", "'.'"),
        ("*", "wildcard"),
        (">", "wildcard"),
        ("ship 1", "space"),
        ("ship\t1", "tab"),
        ("a/b", "'/'"),
        ("..", "'.'"),
        ("$SYS", "'$'"),
        ("schiff\u{e4}", "non-ASCII"),
        (long.as_str(), "65 characters"),
        ("", "empty"),
    ] {
        let r = send(&central, &["--to", to, "--", "touch", &c]);
        assert_eq!(r.code, EXIT_INVALID, "--to {to:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("toNode") && r.stderr.contains(needle),
            "--to {to:?}: {}",
            r.stderr
        );
        cases += 1;
    }
    for (args, field, needle) in [
        (&["--method", "a.b"][..], "method", "'.'"),
        (&["--method", "_result"][..], "method", "reserved"),
        (&["--id", "../x"][..], "id", "'.'"),
        (
            &["--method-timeout", "0"][..],
            "methodTimeout",
            "more than 0",
        ),
        (&["--ack-timeout", "2d"][..], "ackTimeout", "maximum"),
    ] {
        let mut a = vec!["--to", "ship1"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "touch", &c]);
        let r = send(&central, &a);
        assert_eq!(r.code, EXIT_INVALID, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(field) && r.stderr.contains(needle),
            "{args:?}: {}",
            r.stderr
        );
        cases += 1;
    }
    // Option values the command line itself refuses (clap: exit 2, the option named).
    for (arg, needle) in [
        ("--ack-timeout=-1", "0 or more"),
        ("--ack-timeout=1e400", "1e400"),
        ("--ttl=abc", "not a duration"),
        ("--retries=-1", "--retries"),
        ("--retry-wait=NaN", "NaN"),
    ] {
        let r = send(&central, &["--to", "ship1", arg, "--", "touch", &c]);
        assert_eq!(r.code, 2, "{arg}: {}", r.stderr);
        let option = arg.split('=').next().unwrap();
        assert!(
            r.stderr.contains(needle) && r.stderr.contains(option),
            "{arg}: {}",
            r.stderr
        );
        cases += 1;
    }
    // Malformed --json.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let forged = json!([{"toNode": "ship1", "fromNode": "central", "commandOrEvent": "command",
        "method": "shellCommand", "data": ["touch", c]}])
    .to_string();
    let unknown_field = json!([{"toNode": "ship1", "commandOrEvent": "command",
        "method": "shellCommand", "data": ["touch", c], "shell": true}])
    .to_string();
    for (text, needle) in [
        (r#"{"toNode": this is not json"#, "not valid JSON"),
        (r#"[{"toNode":"ship1","data":["touch""#, "not valid JSON"),
        (deep.as_str(), "nested"),
        (forged.as_str(), "fromNode"),
        (unknown_field.as_str(), "shell"),
        ("42", "expected a JSON array"),
    ] {
        let r = send(&central, &["--json", text]);
        assert_eq!(r.code, EXIT_INVALID, "{needle}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
        cases += 1;
    }
    // A bad element next to a good one: the good one runs, the bad one is named, exit 64.
    let mixed = json!([
        {"toNode": "ship1", "commandOrEvent": "command", "method": "echo", "data": ["neighbour"]},
        {"toNode": "ship1.command.x", "commandOrEvent": "command", "method": "shellCommand", "data": ["touch", c]}
    ])
    .to_string();
    let r = send(&central, &["--json", &mixed]);
    assert_eq!(r.code, EXIT_INVALID, "{}", r.stderr);
    assert!(
        r.stderr.contains("index 1") && r.stderr.contains("toNode"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout.trim(), "neighbour", "the valid neighbour runs");
    cases += 1;
    // Invalid UTF-8 in an argument: refused by the command line, nothing sent.
    let mut args: Vec<OsString> = ["send", "--data-dir", s(&central), "--to", "ship1", "--"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push("touch".into());
    args.push(OsString::from(&c));
    args.push(OsString::from_vec(vec![b'x', 0xff, 0xfe]));
    let r = steward(&args);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("UTF-8"), "{}", r.stderr);
    cases += 1;
    // Larger than the broker's max_payload.
    let big = "x".repeat(2 * MAX_PAYLOAD);
    let r = send(&central, &["--to", "ship1", "--method", "echo", "--", &big]);
    assert_eq!(r.code, EXIT_INVALID, "{}", r.stderr);
    assert!(r.stderr.contains("max_payload"), "{}", r.stderr);
    cases += 1;
    // Unknown method: rejected by the receiver.
    let r = send(
        &central,
        &["--to", "ship1", "--method", "noSuchMethod", "--", "x"],
    );
    assert_eq!(r.code, EXIT_REJECTED, "{}", r.stderr);
    assert!(r.stderr.contains("does not serve"), "{}", r.stderr);
    cases += 1;

    // Shell metacharacters and option strings arrive literally; no shell runs them.
    let literal = [
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("; touch {c}"),
        format!("| touch {c}"),
        format!("&& touch {c} &"),
        format!("-oProxyCommand=touch {c}"),
        "--help".to_string(),
        "$HOME".to_string(),
        "*".to_string(),
    ];
    let mut a = vec!["--to", "ship1", "--", "printf", "%s\\n"];
    a.extend(literal.iter().map(String::as_str));
    let r = send(&central, &a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want: String = literal.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(r.stdout, want);
    cases += literal.len();
    // An option string as the program: fails to start, clearly.
    let opt = format!("-oProxyCommand=touch {c}");
    let r = send(&central, &["--to", "ship1", "--", &opt]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("cannot start"), "{}", r.stderr);
    cases += 1;
    // Through --json too.
    let text = json!([{"toNode": "ship1", "commandOrEvent": "command", "method": "shellCommand",
        "data": ["printf", "%s", format!("$(touch {c})")]}])
    .to_string();
    let r = send(&central, &["--json", &text]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, format!("$(touch {c})"));
    cases += 1;

    assert!(!canary.exists(), "hostile input was run");
    // Still up: a valid message goes through.
    let r = send(
        &central,
        &["--to", "ship1", "--method", "echo", "--", "still", "here"],
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "still here"), "{}", r.stderr);
    eprintln!("hostile CLI: {cases} cases");
    assert!(cases >= 35);
}
