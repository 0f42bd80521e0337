//! Structured logs: every line about a message carries its id as the `msg_id` field (on the
//! event itself, or on the span the method runs in), captured as JSON from two nodes on a real
//! nats-server.

use std::time::Duration;

use serde_json::Value;
use steward::{AccessList, ErrorKind, Kind, Message, Method, MethodResult};
use steward_tests::capture::Captured;
use steward_tests::nodes::test_node;
use steward_tests::NatsServer;

const WAIT: Duration = Duration::from_secs(30);

/// The captured log, one JSON object per line.
fn json_lines(captured: &Captured) -> Vec<Value> {
    captured
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The `msg_id` of a line: its own field, else its span's.
fn msg_id(line: &Value) -> Option<&str> {
    line["msg_id"]
        .as_str()
        .or_else(|| line["span"]["msg_id"].as_str())
}

/// Lines that mention `id` anywhere; each must carry it as `msg_id`.
fn lines_about<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(id))
        .collect();
    for l in &about {
        assert_eq!(msg_id(l), Some(id), "a line about {id} lacks msg_id: {l}");
    }
    about
}

fn messages(lines: &[&Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_about_a_message_carries_its_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter("steward=debug,logs=info")
        .with_writer(move || writer.clone())
        .init();

    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let chatty = Method::new(Kind::Command, |req: steward::Request| async move {
        // A method's own log line, with no id of its own: the span gives it one.
        tracing::info!(target: "logs", "working on {} item(s)", req.data.len());
        MethodResult::ok("done")
    });
    let ship1 = test_node("ship1", &urls, dir.path())
        .access(AccessList::empty().allow("central", "chatty"))
        .method("chatty", chatty)
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();

    let done = central
        .send(Message::command("ship1", "chatty", ["a", "b"]))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, done.result())
        .await
        .unwrap()
        .unwrap();
    let refused = central
        .send(Message::command("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, refused.result())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    central.stop().await;
    ship1.stop().await;

    let lines = json_lines(&captured);
    assert!(!lines.is_empty(), "nothing was logged");

    // The completed message: the receiver ran it (and the method's own line is in its span),
    // the sender recorded its final state.
    let about = lines_about(&lines, &done.id);
    let texts = messages(&about);
    assert!(
        texts.iter().any(|t| t == "working on 2 item(s)"),
        "the method's own line is missing: {texts:?}"
    );
    let method_line = about
        .iter()
        .find(|l| l["message"] == "working on 2 item(s)")
        .unwrap();
    assert_eq!(method_line["span"]["from"], "central");
    assert_eq!(method_line["span"]["method"], "chatty");
    let ran = about
        .iter()
        .find(|l| l["message"] == "ran")
        .expect("the receiver's line for the run");
    assert_eq!(ran["from"], "central");
    assert_eq!(ran["method"], "chatty");
    let finalized = about
        .iter()
        .find(|l| l["message"] == "finalize")
        .expect("the sender's line for the final state");
    assert_eq!(finalized["to"], "ship1");

    // The rejected message: refused at the receiver, reported at the sender.
    let about = lines_about(&lines, &refused.id);
    let texts = messages(&about);
    let refusal = about
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused: "))
        })
        .unwrap_or_else(|| panic!("no refusal line at the receiver: {texts:?}"));
    assert_eq!(refusal["from"], "central");
    assert_eq!(refusal["level"], "WARN");
    assert!(
        about
            .iter()
            .any(|l| l["level"] == "WARN" && l["kind"] == "Rejected"),
        "no rejection report at the sender: {texts:?}"
    );
}
