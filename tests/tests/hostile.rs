//! Hostile input through the Rust API, `inmsg.txt` and the wire: malformed and truncated JSON,
//! wrong types, unknown and missing fields, bad names, out-of-range options, oversized
//! payloads, a 100 MB file, deep nesting, shell metacharacters and option strings, invalid
//! UTF-8, hand-made envelopes and a flood of 100,000 messages. (The `steward` CLI's cases are in
//! `examples/tests/hostile_cli.rs`.)
//!
//! Each case must give a clear error naming the problem, run nothing that should not run,
//! leave valid neighbours delivered, and never crash the node.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use steward::{ErrorKind, Kind, Message, MessageState, Node, ResultStatus};
use steward_tests::faults::{rss_kib, scale};
use steward_tests::nodes::test_node;
use steward_tests::recorder::Recorder;
use steward_tests::{wait_until_async, NatsServer};

/// The broker's max_payload in these tests, so "larger than the broker allows" is cheap.
const MAX_PAYLOAD: usize = 16 * 1024;

fn server() -> NatsServer {
    NatsServer::builder().max_payload(MAX_PAYLOAD).start()
}

/// A valid `record` command to ship1 with this id.
fn good(id: &str) -> Value {
    json!({"id": id, "toNode": "ship1", "data": [id], "commandOrEvent": "command", "method": "record"})
}

/// A `record` command to ship1 with `field` replaced (or removed when `value` is None).
fn bad_field(field: &str, value: Option<Value>) -> Value {
    let mut v = json!({"toNode": "ship1", "data": ["must-not-run"], "commandOrEvent": "command", "method": "record"});
    let o = v.as_object_mut().unwrap();
    match value {
        Some(x) => {
            o.insert(field.into(), x);
        }
        None => {
            o.remove(field);
        }
    }
    v
}

/// One hostile array element, sent next to a valid neighbour; `needles` must all appear in
/// the error.
struct Case {
    name: &'static str,
    element: Value,
    needles: &'static [&'static str],
}

fn element_cases() -> Vec<Case> {
    let long = "x".repeat(65);
    let c = |name, element, needles| Case {
        name,
        element,
        needles,
    };
    vec![
        c(
            "toNode number",
            bad_field("toNode", Some(json!(5))),
            &["toNode", "expected a string"],
        ),
        c(
            "data a string",
            bad_field("data", Some(json!("echo hi"))),
            &["data", "array"],
        ),
        c(
            "data element number",
            bad_field("data", Some(json!(["a", 1]))),
            &["data", "element 1"],
        ),
        c(
            "data element null",
            bad_field("data", Some(json!([null]))),
            &["data", "element 0"],
        ),
        c(
            "commandOrEvent unknown",
            bad_field("commandOrEvent", Some(json!("query"))),
            &["commandOrEvent", "query"],
        ),
        c(
            "method an array",
            bad_field("method", Some(json!(["record"]))),
            &["method", "expected a string"],
        ),
        c(
            "unknown field",
            bad_field("bogus", Some(json!(1))),
            &["bogus", "unknown field"],
        ),
        c(
            "forged fromNode",
            bad_field("fromNode", Some(json!("central"))),
            &["fromNode"],
        ),
        c(
            "missing method",
            bad_field("method", None),
            &["method", "missing"],
        ),
        c(
            "missing commandOrEvent",
            bad_field("commandOrEvent", None),
            &["commandOrEvent", "missing"],
        ),
        c(
            "missing toNode",
            bad_field("toNode", None),
            &["toNode", "missing"],
        ),
        c(
            "toNode with '.'",
            bad_field("toNode", Some(json!("ship1.command.x"))),
            &["toNode", "'.'"],
        ),
        c(
            "toNode '*'",
            bad_field("toNode", Some(json!("*"))),
            &["toNode", "wildcard"],
        ),
        c(
            "toNode '>'",
            bad_field("toNode", Some(json!(">"))),
            &["toNode", "wildcard"],
        ),
        c(
            "toNode with space",
            bad_field("toNode", Some(json!("ship 1"))),
            &["toNode", "space"],
        ),
        c(
            "toNode with tab",
            bad_field("toNode", Some(json!("ship\t1"))),
            &["toNode", "tab"],
        ),
        c(
            "toNode with '/'",
            bad_field("toNode", Some(json!("a/b"))),
            &["toNode", "'/'"],
        ),
        c(
            "toNode '..'",
            bad_field("toNode", Some(json!(".."))),
            &["toNode", "'.'"],
        ),
        c(
            "toNode '$SYS'",
            bad_field("toNode", Some(json!("$SYS"))),
            &["toNode", "'$'"],
        ),
        c(
            "toNode with NUL",
            bad_field("toNode", Some(json!("ship\u{0}1"))),
            &["toNode", "NUL"],
        ),
        c(
            "toNode non-ASCII",
            bad_field("toNode", Some(json!("schiff\u{e4}"))),
            &["toNode", "non-ASCII"],
        ),
        c(
            "toNode 65 characters",
            bad_field("toNode", Some(json!(long))),
            &["toNode", "65 characters"],
        ),
        c(
            "toNode empty",
            bad_field("toNode", Some(json!(""))),
            &["toNode", "empty"],
        ),
        c(
            "method with '.'",
            bad_field("method", Some(json!("shell.Command"))),
            &["method", "'.'"],
        ),
        c(
            "method reserved '_result'",
            bad_field("method", Some(json!("_result"))),
            &["method", "reserved"],
        ),
        c(
            "id '../etc'",
            bad_field("id", Some(json!("../etc"))),
            &["id", "'.'"],
        ),
        c(
            "id 65 characters",
            bad_field("id", Some(json!(long))),
            &["id", "65 characters"],
        ),
        c(
            "ackTimeout negative",
            bad_field("ackTimeout", Some(json!(-1))),
            &["ackTimeout", ">= 0"],
        ),
        c(
            "ackTimeout huge",
            bad_field("ackTimeout", Some(json!(1e30))),
            &["ackTimeout"],
        ),
        c(
            "ackTimeout a string",
            bad_field("ackTimeout", Some(json!("5"))),
            &["ackTimeout", "number of seconds"],
        ),
        c(
            "ttl beyond 10 years",
            bad_field("ttl", Some(json!(1e12))),
            &["ttl", "maximum"],
        ),
        c(
            "retries negative",
            bad_field("retries", Some(json!(-1))),
            &["retries"],
        ),
        c(
            "retries fractional",
            bad_field("retries", Some(json!(1.5))),
            &["retries"],
        ),
        c(
            "retries huge",
            bad_field("retries", Some(json!(1e20))),
            &["retries"],
        ),
        c(
            "retryWait huge",
            bad_field("retryWait", Some(json!(1e10))),
            &["retryWait", "maximum"],
        ),
        c(
            "methodTimeout zero",
            bad_field("methodTimeout", Some(json!(0))),
            &["methodTimeout", "more than 0"],
        ),
        c(
            "methodTimeout beyond 7 days",
            bad_field("methodTimeout", Some(json!(1e9))),
            &["methodTimeout", "maximum"],
        ),
        c(
            "ttl and expiresAt",
            {
                let mut v = bad_field("ttl", Some(json!(5)));
                v["expiresAt"] = json!(4e9);
                v
            },
            &["expiresAt", "not both"],
        ),
        c(
            "expiresAt in the past",
            bad_field("expiresAt", Some(json!(1000))),
            &["expiresAt", "past"],
        ),
        c(
            "element not an object",
            json!(42),
            &["expected a message object"],
        ),
        c(
            "toNodes with a number",
            bad_field("toNodes", Some(json!(["ship1", 7]))),
            &["toNodes", "element 1"],
        ),
        c(
            "id with several toNodes",
            {
                let mut v = bad_field("toNode", None);
                v["toNodes"] = json!(["ship1", "ship2"]);
                v["id"] = json!("shared");
                v
            },
            &["id", "several toNodes"],
        ),
        c(
            "payload over max_payload",
            bad_field("data", Some(json!(["x".repeat(2 * MAX_PAYLOAD)]))),
            &["data", "max_payload"],
        ),
    ]
}

/// A whole hostile JSON text (no neighbour inside it).
struct Doc {
    name: &'static str,
    text: String,
    needles: &'static [&'static str],
}

fn document_cases() -> Vec<Doc> {
    let d = |name, text: String, needles| Doc {
        name,
        text,
        needles,
    };
    vec![
        d(
            "not JSON",
            r#"{"toNode": this is not json"#.into(),
            &["not valid JSON"],
        ),
        d(
            "truncated JSON",
            r#"[{"toNode":"ship1","data":["a""#.into(),
            &["not valid JSON"],
        ),
        d(
            "top-level string",
            r#""hello""#.into(),
            &["expected a JSON array", "a string"],
        ),
        d(
            "top-level number",
            "42".into(),
            &["expected a JSON array", "a number"],
        ),
        d(
            "top-level null",
            "null".into(),
            &["expected a JSON array", "null"],
        ),
        d(
            "10,000 nested arrays",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            &["nested"],
        ),
        d(
            "100 nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100)),
            &["nested"],
        ),
        d("empty object", "{}".into(), &["method", "missing"]),
        d(
            "byte-order mark",
            format!("\u{feff}{}", json!([good("bom-never")])),
            &["not valid JSON"],
        ),
    ]
}

/// Nodes for one test: central (watching inmsg.txt; errors land in its own errors.log) and
/// ship1 serving `record` into a recorder.
struct Pair {
    server: NatsServer,
    dir: tempfile::TempDir,
    central: Node,
    ship1: Node,
    rec: Recorder,
}

impl Pair {
    async fn start() -> Pair {
        let server = server();
        let dir = tempfile::tempdir().unwrap();
        let urls = vec![server.url()];
        let rec = Recorder::default();
        let ship1 = test_node("ship1", &urls, dir.path())
            .method("record", rec.method(Kind::Command))
            .start()
            .await
            .unwrap();
        let central = test_node("central", &urls, dir.path())
            .watch_inmsg(true)
            .start()
            .await
            .unwrap();
        // Connected, so the broker's max_payload is known to the sender.
        assert!(wait_until_async(Duration::from_secs(10), || central.is_connected()).await);
        Pair {
            server,
            dir,
            central,
            ship1,
            rec,
        }
    }

    fn central_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("central")
    }

    /// Appends raw bytes to central's inmsg.txt in one write, as `cat x >> inmsg.txt` does.
    fn append(&self, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.central_dir().join(steward::INMSG))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn errors_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.central_dir().join(steward::ERRORS_LOG))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn bad_input_reasons(&self) -> Vec<String> {
        self.errors_log()
            .into_iter()
            .filter(|v| v["kind"] == "badInput")
            .filter_map(|v| v["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until these ids have run at ship1.
    async fn wait_ran(&self, ids: &[String]) {
        let rec = self.rec.clone();
        let ok = wait_until_async(Duration::from_secs(60), || {
            let seen = rec.seen();
            ids.iter().all(|id| seen.contains(id))
        })
        .await;
        let seen = self.rec.seen();
        assert!(
            ok,
            "valid neighbours never ran: {:?}",
            ids.iter().filter(|i| !seen.contains(i)).collect::<Vec<_>>()
        );
    }

    async fn stop(self) {
        self.central.stop().await;
        self.ship1.stop().await;
        drop(self.server);
    }
}

/// Everything the recorder ran that is not a valid neighbour (`ok-…`) must not have run.
fn assert_only_valid_ran(rec: &Recorder, allowed: &[String]) {
    let stray: Vec<String> = rec
        .seen()
        .into_iter()
        .filter(|s| !allowed.contains(s))
        .collect();
    assert!(stray.is_empty(), "hostile input ran: {stray:?}");
}

/// Through the Rust API: every hostile element is refused with an error naming its field
/// and problem, while its valid neighbour in the same array is accepted and runs; every
/// hostile document is refused as a whole with an InvalidMessage error naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_each_hostile_element_and_keeps_neighbours() {
    let p = Pair::start().await;
    let cases = element_cases();
    let mut neighbours = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let id = format!("ok-api-{k}");
        let text = json!([good(&id), case.element]).to_string();
        let report = p.central.send_json(&text).await.unwrap();
        assert_eq!(
            report.accepted.len(),
            1,
            "{}: {:?}",
            case.name,
            report.rejected
        );
        assert_eq!(report.rejected.len(), 1, "{}: nothing refused", case.name);
        let e = &report.rejected[0];
        assert_eq!(e.kind(), ErrorKind::InvalidMessage, "{}: {e}", case.name);
        let msg = e.to_string();
        assert!(msg.contains("index 1"), "{}: {msg}", case.name);
        for n in case.needles {
            assert!(msg.contains(n), "{}: {msg:?} lacks {n:?}", case.name);
        }
        neighbours.push(id);
    }
    // The same id twice in one batch: the first is kept, the second refused.
    let dup = json!([good("ok-api-dup"), good("ok-api-dup")]).to_string();
    let report = p.central.send_json(&dup).await.unwrap();
    assert_eq!(report.accepted.len(), 1);
    assert!(report.rejected[0].to_string().contains("used twice"));
    neighbours.push("ok-api-dup".into());
    for doc in document_cases() {
        let e = p.central.send_json(&doc.text).await;
        let msg = match e {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidMessage, "{}: {e}", doc.name);
                e.to_string()
            }
            // A parsable non-array gives a report with one refusal.
            Ok(r) => {
                assert!(r.accepted.is_empty(), "{}: accepted something", doc.name);
                assert_eq!(r.rejected.len(), 1, "{}", doc.name);
                r.rejected[0].to_string()
            }
        };
        for n in doc.needles {
            assert!(msg.contains(n), "{}: {msg:?} lacks {n:?}", doc.name);
        }
    }
    // Built in code: the same checks apply to Message values.
    for (name, m, needle) in [
        (
            "to_node '*'",
            Message::command("*", "record", ["x"]),
            "toNode",
        ),
        (
            "method '>'",
            Message::command("ship1", ">", ["x"]),
            "method",
        ),
        (
            "id with NUL",
            Message::command("ship1", "record", ["x"]).with_id("a\0b"),
            "NUL",
        ),
        (
            "ack_timeout 2 days",
            Message::command("ship1", "record", ["x"])
                .with_ack_timeout(Duration::from_secs(2 * 86_400)),
            "ackTimeout",
        ),
        (
            "method_timeout zero",
            Message::command("ship1", "record", ["x"]).with_method_timeout(Duration::ZERO),
            "methodTimeout",
        ),
        (
            "ttl 20 years",
            Message::command("ship1", "record", ["x"])
                .with_ttl(Duration::from_secs(20 * 365 * 86_400)),
            "ttl",
        ),
    ] {
        let e = p.central.send(m).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidMessage, "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    p.wait_ran(&neighbours).await;
    assert_only_valid_ran(&p.rec, &neighbours);
    eprintln!(
        "hostile API: {} element cases, 1 duplicate id, {} documents, 6 built messages",
        cases.len(),
        document_cases().len()
    );
    p.stop().await;
}

/// Through `inmsg.txt`: all hostile elements (each next to a valid neighbour) and documents
/// appended in one go. Must hold: every valid neighbour runs, nothing hostile runs, every
/// refusal is in central's errors.log in file order with an error naming the problem,
/// unparsable stretches are kept in `inmsg.rejected/` with their error, and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inmsg_refuses_each_hostile_case_and_keeps_neighbours() {
    let p = Pair::start().await;
    let mut text = String::new();
    let mut expected: Vec<(String, &'static [&'static str])> = Vec::new();
    let mut neighbours = Vec::new();
    for (k, case) in element_cases().into_iter().enumerate() {
        let id = format!("ok-file-{k}");
        text.push_str(&json!([good(&id), case.element]).to_string());
        text.push('\n');
        expected.push((case.name.to_owned(), case.needles));
        neighbours.push(id);
    }
    for (k, doc) in document_cases().into_iter().enumerate() {
        text.push_str(&doc.text);
        text.push('\n');
        // Documents that fail to parse are reported as "not valid JSON" / "nested" by the
        // file reader; parsable ones like the element cases.
        let needles: &'static [&'static str] = match doc.name {
            "not JSON" | "truncated JSON" | "byte-order mark" => &["not valid JSON"],
            n if n.contains("nested") => &["nested"],
            _ => doc.needles,
        };
        expected.push((doc.name.to_owned(), needles));
        let id = format!("ok-doc-{k}");
        text.push_str(&json!([good(&id)]).to_string());
        text.push('\n');
        neighbours.push(id);
    }
    p.append(text.as_bytes());
    p.wait_ran(&neighbours).await;
    let reasons = {
        let mut r = Vec::new();
        wait_until_async(Duration::from_secs(30), || {
            r = p.bad_input_reasons();
            r.len() >= expected.len()
        })
        .await;
        r
    };
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for ((name, needles), reason) in expected.iter().zip(&reasons) {
        for n in needles.iter() {
            assert!(reason.contains(n), "{name}: {reason:?} lacks {n:?}");
        }
    }
    let rejected_dir = p.central_dir().join(steward::REJECTED_DIR);
    let kept: Vec<String> = std::fs::read_dir(&rejected_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().filter(|f| f.ends_with(".error.txt")).count() >= 4,
        "unparsable stretches must be kept with their error: {kept:?}"
    );
    assert_only_valid_ran(&p.rec, &neighbours);
    // Still alive and sending.
    p.append(json!([good("ok-after")]).to_string().as_bytes());
    p.wait_ran(&["ok-after".to_string()]).await;
    eprintln!(
        "hostile inmsg.txt: {} cases refused, each with its reason",
        expected.len()
    );
    p.stop().await;
}

/// A 100 MB `inmsg.txt` (sparse, all NUL bytes; the limit is 64 MiB) is moved to
/// `inmsg.rejected/` whole with an error naming the limit, and a valid append after it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inmsg_of_100_mb_is_moved_aside_whole() {
    let p = Pair::start().await;
    let big = p.central_dir().join("big.tmp");
    let size = 100u64 << 20;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    std::fs::rename(&big, p.central_dir().join(steward::INMSG)).unwrap();
    let limit_named = wait_until_async(Duration::from_secs(30), || {
        p.bad_input_reasons()
            .iter()
            .any(|r| r.contains("more than the limit") && r.contains(&size.to_string()))
    })
    .await;
    assert!(limit_named, "{:?}", p.bad_input_reasons());
    let rejected_dir = p.central_dir().join(steward::REJECTED_DIR);
    let moved: Vec<u64> = std::fs::read_dir(&rejected_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .collect();
    assert!(
        moved.contains(&size),
        "the file must be kept whole: {moved:?}"
    );
    p.append(json!([good("ok-after-big")]).to_string().as_bytes());
    p.wait_ran(&["ok-after-big".to_string()]).await;
    assert_only_valid_ran(&p.rec, &["ok-after-big".to_string()]);
    p.stop().await;
}

/// Invalid UTF-8 inside a message of `inmsg.txt` (bytes 0xFF 0xFE in a data string). Must hold:
/// that message is refused with an error naming invalid UTF-8 and never runs — in particular
/// not with its bytes silently replaced (which would run a different command) — while the
/// valid neighbours before and after it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn inmsg_invalid_utf8_is_refused_not_altered() {
    let p = Pair::start().await;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(json!([good("ok-utf8-before")]).to_string().as_bytes());
    bytes.extend_from_slice(b"\n[{\"id\":\"utf8-bad\",\"toNode\":\"ship1\",\"data\":[\"utf8-bad\",\"\xff\xfe\"],\"commandOrEvent\":\"command\",\"method\":\"record\"}]\n");
    bytes.extend_from_slice(json!([good("ok-utf8-after")]).to_string().as_bytes());
    bytes.push(b'\n');
    p.append(&bytes);
    let ok = ["ok-utf8-before".to_string(), "ok-utf8-after".to_string()];
    p.wait_ran(&ok).await;
    let named = wait_until_async(Duration::from_secs(10), || {
        p.bad_input_reasons().iter().any(|r| r.contains("UTF-8"))
    })
    .await;
    assert_only_valid_ran(&p.rec, &ok);
    assert!(
        named,
        "no error naming invalid UTF-8: {:?}",
        p.bad_input_reasons()
    );
    p.stop().await;
}

/// Invalid UTF-8 in a node name field of `inmsg.txt` is refused (never sent anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inmsg_invalid_utf8_in_a_name_is_refused() {
    let p = Pair::start().await;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"[{\"id\":\"utf8-name\",\"toNode\":\"ship\xff1\",\"data\":[\"x\"],\"commandOrEvent\":\"command\",\"method\":\"record\"}]\n");
    bytes.extend_from_slice(json!([good("ok-utf8-name")]).to_string().as_bytes());
    p.append(&bytes);
    p.wait_ran(&["ok-utf8-name".to_string()]).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || p
            .bad_input_reasons()
            .iter()
            .any(|r| r.contains("UTF-8")))
        .await,
        "{:?}",
        p.bad_input_reasons()
    );
    assert!(p.central.message("utf8-name").await.unwrap().is_none());
    assert_only_valid_ran(&p.rec, &["ok-utf8-name".to_string()]);
    p.stop().await;
}

/// Shell metacharacters and option-like strings in `shellCommand` data are passed to the
/// program literally as argv — no shell runs them: `printf '%s\n'` prints each one back
/// unchanged and `$(touch FILE)` & co. create nothing. An option string as the program name
/// fails to start with a clear error; so do empty data and a NUL byte. `echo` returns `-n -e`
/// literally. Valid neighbours (through the same node) run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_and_option_strings_stay_literal() {
    let p = Pair::start().await;
    let canary = p.dir.path().join("canary");
    let c = canary.display().to_string();
    let args: Vec<String> = vec![
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("; touch {c}"),
        format!("| touch {c}"),
        format!("&& touch {c}"),
        format!("> {c}"),
        format!("-oProxyCommand=touch {c}"),
        "--help".into(),
        "-e".into(),
        "$HOME".into(),
        "*".into(),
        "\u{1b}[31mred\u{1b}[0m".into(),
        "line\nbreak".into(),
        "'quoted' \"double\"".into(),
    ];
    let mut data = vec!["printf".to_string(), "%s\\n".to_string()];
    data.extend(args.iter().cloned());
    let r = p
        .central
        .send(Message::command("ship1", "shellCommand", data))
        .await
        .unwrap();
    let res = r.result().await.unwrap();
    assert_eq!(res.status, ResultStatus::Ok, "{res:?}");
    let want: String = args.iter().map(|a| format!("{a}\n")).collect();
    assert_eq!(res.stdout, want, "arguments must arrive literally");
    // Through the original JSON format too.
    let text = json!([{"toNode": "ship1", "commandOrEvent": "command", "method": "shellCommand",
        "data": ["printf", "%s", format!("$(touch {c})")]}])
    .to_string();
    let report = p.central.send_json(&text).await.unwrap();
    let res = report.accepted[0].1.result().await.unwrap();
    assert_eq!(res.stdout, format!("$(touch {c})"));
    // Failures with a clear reason, nothing started.
    for (data, needle) in [
        (vec![format!("-oProxyCommand=touch {c}")], "cannot start"),
        (vec![], "data is empty"),
        (vec!["printf".into(), "a\0b".into()], "NUL"),
        (vec!["/no/such/program".into()], "cannot start"),
    ] {
        let r = p
            .central
            .send(Message::command("ship1", "shellCommand", data.clone()))
            .await
            .unwrap();
        let res = r.result().await.unwrap();
        assert_eq!(res.status, ResultStatus::Failed, "{data:?}: {res:?}");
        let err = res.error.unwrap_or_default();
        assert!(err.contains(needle), "{data:?}: {err}");
    }
    let r = p
        .central
        .send(Message::command(
            "ship1",
            "echo",
            ["-n", "-e", "a\\tb", "$(id)"],
        ))
        .await
        .unwrap();
    assert_eq!(r.result().await.unwrap().stdout, "-n -e a\\tb $(id)");
    assert!(!canary.exists(), "a shell ran hostile input");
    p.central
        .send_json(&json!([good("ok-shell")]).to_string())
        .await
        .unwrap();
    p.wait_ran(&["ok-shell".to_string()]).await;
    p.stop().await;
}

/// Messages valid for the sender but refused by the receiver: an unknown method, an event to
/// a command method, a method the sender may not call. Each ends Rejected with the receiver's
/// reason, nothing runs, and a valid neighbour behind them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_refusals_name_the_reason() {
    let p = Pair::start().await;
    let ship2 = test_node("ship2", &[p.server.url()], p.dir.path())
        .start()
        .await
        .unwrap();
    for (node, m, needle) in [
        (
            &p.central,
            Message::command("ship1", "noSuchMethod", ["x"]),
            "does not serve",
        ),
        (
            &p.central,
            Message::event("ship1", "record", ["x"]),
            "served as a command",
        ),
        (
            &ship2,
            Message::command("ship1", "record", ["x"]),
            "access list",
        ),
    ] {
        let r = node.send(m).await.unwrap();
        let e = r.result().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(r.status().await.unwrap().state, MessageState::Rejected);
    }
    p.central
        .send_json(&json!([good("ok-after-refusals")]).to_string())
        .await
        .unwrap();
    p.wait_ran(&["ok-after-refusals".to_string()]).await;
    assert_only_valid_ran(&p.rec, &["ok-after-refusals".to_string()]);
    ship2.stop().await;
    p.stop().await;
}

/// Publishes a raw payload on a subject with a reply inbox and returns the reply JSON
/// (publishing again while the broker answers "no responders": the node may still be
/// subscribing).
async fn raw_request(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> Value {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        client
            .publish_with_reply(subject.to_owned(), inbox.clone(), payload.clone().into())
            .await
            .unwrap();
        let msg = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut sub))
            .await
            .expect("a reply")
            .unwrap();
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
            panic!(
                "{subject}: unparsable reply {:?} (status {:?}): {e}",
                String::from_utf8_lossy(&msg.payload),
                msg.status
            )
        });
    }
}

/// Hostile envelopes straight on the wire (a raw NATS client on ship1's subjects): garbage,
/// missing fields, a wrong addressee, a bad method or sender name, a sequence number from
/// nowhere, a forged result. Each is refused with a reason (or told the gap), nothing runs,
/// and a real message afterwards runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_envelopes_on_the_wire_are_refused() {
    let p = Pair::start().await;
    let client = async_nats::connect(p.server.url()).await.unwrap();
    let env = |over: Value| {
        let mut e = json!({"id": "wire-1", "from": "central", "to": "ship1", "kind": "command",
            "method": "record", "data": ["wire-must-not-run"], "epoch": 7, "seq": 0, "ack": true,
            "method_timeout_ms": 1000});
        for (k, v) in over.as_object().unwrap() {
            e[k] = v.clone();
        }
        serde_json::to_vec(&e).unwrap()
    };
    let cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            "garbage",
            "ship1.command.record",
            b"\x00\xffnot json".to_vec(),
            "rejected",
            "malformed envelope",
        ),
        (
            "missing fields",
            "ship1.command.record",
            br#"{"id":"x"}"#.to_vec(),
            "rejected",
            "malformed envelope",
        ),
        (
            "wrong addressee",
            "ship1.command.record",
            env(json!({"id": "wire-2", "to": "ship2"})),
            "rejected",
            "addressed to ship2",
        ),
        (
            "method with '.'",
            "ship1.command.record",
            env(json!({"id": "wire-3", "method": "a.b"})),
            "rejected",
            "method",
        ),
        (
            "bad sender name",
            "ship1.command.record",
            env(json!({"id": "wire-4", "from": "bad name"})),
            "rejected",
            "bad sender",
        ),
        (
            "sequence from nowhere",
            "ship1.command.record",
            env(json!({"id": "wire-5", "seq": 1_000_000u64})),
            "gap",
            "",
        ),
        (
            "forged result",
            "ship1.event._result",
            env(
                json!({"id": "wire-6", "kind": "result", "method": "_result", "result_of": "never-sent"}),
            ),
            "rejected",
            "no message never-sent",
        ),
    ];
    for (name, subject, payload, status, needle) in cases {
        let reply = raw_request(&client, subject, payload).await;
        assert_eq!(reply["status"], status, "{name}: {reply}");
        let reason = reply["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{name}: {reply}");
    }
    p.central
        .send_json(&json!([good("ok-after-wire")]).to_string())
        .await
        .unwrap();
    p.wait_ran(&["ok-after-wire".to_string()]).await;
    assert_only_valid_ran(&p.rec, &["ok-after-wire".to_string()]);
    p.stop().await;
}

/// A flood of 100,000 messages appended to `inmsg.txt` at once, taken by a node in its own
/// process (`steward-test-node watch`) so its memory can be measured, for a destination that
/// is offline. Must hold: all 100,000 are durably accepted (counted in the outbox after the
/// process is SIGKILLed and the store reopened), the process's RSS stays under 1 GiB (the
/// file itself is 14 MB; parsing holds it, its JSON tree and the messages at once), and in
/// the full version all 100,000 are then delivered exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_100000_messages_at_once() {
    const N: usize = 100_000;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let root = dir.path().to_str().unwrap().to_owned();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_steward-test-node"))
        .args(["watch", "central", &url, &root])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let central_dir = dir.path().join("central");
    let mut text = String::with_capacity(N * 140);
    text.push('[');
    for i in 0..N {
        if i > 0 {
            text.push(',');
        }
        let id = format!("fl-{i}");
        text.push_str(
            &json!({"id": id, "toNode": "ship9", "data": [id], "commandOrEvent": "command", "method": "record"})
                .to_string(),
        );
    }
    text.push_str("]\n");
    let pid = child.id();
    let peak = Arc::new(Mutex::new(0u64));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                if let Some(kib) = rss_kib(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kib);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = std::time::Instant::now();
    let tmp = central_dir.join("flood.tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, central_dir.join(steward::INMSG)).unwrap();
    // Taken and fully accepted: inmsg.txt erased (empty).
    let busy = |d: &Path| std::fs::metadata(d.join(steward::INMSG)).is_ok_and(|m| m.len() > 0);
    assert!(
        wait_until_async(Duration::from_secs(300), || !busy(&central_dir)).await,
        "the flood was never fully taken"
    );
    let took = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak_kib = *peak.lock().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Reopen the store: every message must be there, waiting for ship9.
    let central = test_node("central", std::slice::from_ref(&url), dir.path())
        .start()
        .await
        .unwrap();
    let pending = central
        .destinations()
        .unwrap()
        .into_iter()
        .find(|d| d.node == "ship9")
        .map(|d| d.pending)
        .unwrap_or(0);
    eprintln!(
        "flood: {N} messages ({} bytes) accepted in {took:.1?}, peak RSS {} MB, {pending} pending after SIGKILL",
        text.len(),
        peak_kib / 1024
    );
    assert_eq!(pending as usize, N);
    assert!(central.message("fl-99999").await.unwrap().is_some());
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
    if scale(false, true) {
        let rec = Recorder::default();
        let ship9 = test_node("ship9", std::slice::from_ref(&url), dir.path())
            .method("record", rec.method(Kind::Command))
            .start()
            .await
            .unwrap();
        let all: Vec<String> = (0..N).map(|i| format!("fl-{i}")).collect();
        assert!(
            wait_until_async(Duration::from_secs(900), || rec.len() >= N).await,
            "only {} of {N} delivered",
            rec.len()
        );
        rec.assert_exactly_once_in_order(&all);
        ship9.stop().await;
    }
    central.stop().await;
}

/// A message larger than the broker's max_payload accepted while the broker was unreachable
/// (the limit unknown yet). Must hold: once connected it is not retried forever nor lost
/// silently: it ends failed with a reason naming max_payload, and a valid neighbour behind it
/// on the same subject is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn oversized_message_accepted_while_offline_fails_clearly() {
    let port = steward_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let central = test_node("central", std::slice::from_ref(&url), dir.path())
        .start()
        .await
        .unwrap();
    let big = central
        .send(Message::command("ship1", "record", ["x".repeat(2 * MAX_PAYLOAD)]).with_id("big"))
        .await;
    let Ok(big) = big else {
        // Refused up front: also fine (nothing to deliver).
        return central.stop().await;
    };
    let next = central
        .send(Message::command("ship1", "record", ["ok-next"]).with_id("ok-next"))
        .await
        .unwrap();
    let server = NatsServer::builder()
        .port(port)
        .max_payload(MAX_PAYLOAD)
        .start();
    let rec = Recorder::default();
    let ship1 = test_node("ship1", &[server.url()], dir.path())
        .method("record", rec.method(Kind::Command))
        .start()
        .await
        .unwrap();
    let st = match tokio::time::timeout(Duration::from_secs(30), big.wait()).await {
        Ok(st) => st.unwrap(),
        Err(_) => {
            let (b, n) = (big.status().await.unwrap(), next.status().await.unwrap());
            panic!(
                "the oversized message never reached a final state: {:?} after {} attempts; \
                 the one behind it on the same subject: {:?}",
                b.state, b.attempts, n.state
            )
        }
    };
    eprintln!("oversized: {:?} {:?}", st.state, st.reason);
    assert_ne!(st.state, MessageState::Completed);
    assert!(st.reason.unwrap_or_default().contains("max_payload"));
    next.result().await.unwrap();
    assert_eq!(rec.seen(), vec!["ok-next".to_string()]);
    central.stop().await;
    ship1.stop().await;
}
