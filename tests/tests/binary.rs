//! Binary frames (wire version 2) against a real nats-server, on a default install (signatures
//! required, nodes joined with tokens): nodes move to binary after their first exchange, a node
//! that sends only JSON still talks to them, and an attacker on the broker who replays, alters,
//! moves or cuts real binary frames, or sends a version nobody reads, never makes anything run
//! and always gets an answer. What must hold: nothing refused runs, nothing runs twice, the
//! node goes on working in order, and an unreadable message is a clear error at both ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use steward::{Message, Node, NodeBuilder, WireFormat};
use steward_tests::nodes::{default_node, enrolled_node};
use steward_tests::{wait_until_async, NatsServer};

const WAIT: Duration = Duration::from_secs(20);
/// The binary format's version byte (`wire/frame.rs`).
const BINARY: u8 = 2;
/// Frame header flag (replies): the tag could not be checked, send signed JSON.
const SEND_SIGNED: u8 = 4;

/// A shell command appending `tag` to `file`.
fn witness(file: &Path, tag: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo {tag} >> {}", file.display()),
    ]
}

fn runs(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn run(central: &Node, to: &str, argv: Vec<String>) {
    let r = central
        .send(Message::command(to, "shellCommand", argv))
        .await
        .unwrap();
    let res = tokio::time::timeout(WAIT, r.result())
        .await
        .expect("no result in time")
        .unwrap();
    assert_eq!(res.exit_code, Some(0), "{res:?}");
}

/// Joins `builder`'s node to central and waits until central approved its key.
async fn join(central: &Node, name: &str, builder: NodeBuilder) -> Node {
    let token = central.join_token(None).await.unwrap();
    let node = builder.join(token).start().await.unwrap();
    let ok = wait_until_async(WAIT, || {
        central.keys().is_ok_and(|ks| {
            ks.iter()
                .any(|k| k.node == name && k.state == steward::KeyState::Approved)
        }) && node.trust_version() > 0
    })
    .await;
    assert!(ok, "{name} was not approved");
    node
}

/// Publishes `payload` on `subject` with a fresh inbox; returns the answer's payload.
async fn ask(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> Vec<u8> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, payload.into())
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("every message gets an answer, even one the node cannot read")
        .unwrap();
    msg.payload.to_vec()
}

/// The answer refuses the message: JSON `rejected` (or `retry`) with a reason, or a binary
/// answer asking for signed JSON, or a binary answer (tagged: its content is for the sender).
fn refused_or_redirected(answer: &[u8]) -> Result<(), String> {
    match answer.first() {
        Some(b'{') => {
            let v: serde_json::Value = serde_json::from_slice(answer).unwrap();
            let status = v["status"].as_str().unwrap_or_default();
            if matches!(status, "rejected" | "retry")
                && !v["reason"].as_str().unwrap_or_default().is_empty()
            {
                Ok(())
            } else {
                Err(format!("JSON answer {v}"))
            }
        }
        Some(&BINARY) => Ok(()),
        _ => Err(format!("answer {answer:?}")),
    }
}

struct Fleet {
    server: NatsServer,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    central: Node,
    client: async_nats::Client,
}

impl Fleet {
    async fn start() -> Fleet {
        let server = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let central = default_node("central", &[server.url()], &path)
            .start()
            .await
            .unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        Fleet {
            server,
            _dir: dir,
            dir: path,
            central,
            client,
        }
    }
}

/// Two default nodes speak binary after their first exchange; a node that sends only JSON gets
/// answers and commands it reads; both sides' commands all complete exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_nodes_move_to_binary_and_json_only_nodes_still_take_part() {
    let f = Fleet::start().await;
    let urls = [f.server.url()];
    let fast = enrolled_node(&f.central, "fast", &urls, &f.dir)
        .await
        .unwrap();
    let json_only = join(
        &f.central,
        "plain",
        default_node("plain", &urls, &f.dir).wire_format(WireFormat::Json),
    )
    .await;
    let mut seen = f.client.subscribe(">").await.unwrap();
    let (a, b) = (f.dir.join("a.txt"), f.dir.join("b.txt"));
    for i in 0..20 {
        run(&f.central, "fast", witness(&a, &format!("a{i}"))).await;
        run(&f.central, "plain", witness(&b, &format!("b{i}"))).await;
    }
    let want = |p: &str| (0..20).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    assert_eq!(runs(&a), want("a"), "each once, in order");
    assert_eq!(runs(&b), want("b"), "each once, in order");
    // What went over the broker: commands to `fast` moved to binary; everything `plain` sent
    // was JSON (its answers and hello), and it read the binary commands central sent it.
    let (mut to_fast, mut binary_to_fast) = (0, 0);
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), seen.next()).await {
        if m.subject.as_str() == "fast.command.shellCommand" {
            to_fast += 1;
            binary_to_fast += usize::from(m.payload.first() == Some(&BINARY));
        }
    }
    assert!(to_fast >= 20, "{to_fast}");
    assert!(
        binary_to_fast >= 19,
        "after the first exchange, commands travel binary: {binary_to_fast} of {to_fast}"
    );
    // The JSON-only node sends and gets its own answers too.
    let r = json_only
        .send(Message::event("central", "textLogging", ["from plain"]))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, r.wait()).await.unwrap().unwrap();
    assert_eq!(st.state, steward::MessageState::Completed, "{st:?}");
    fast.stop().await;
    json_only.stop().await;
    f.central.stop().await;
}

/// Real binary frames taken off the broker and replayed, altered byte by byte, moved to other
/// subjects, cut, or given a version nobody reads: each is answered, none runs, the node goes
/// on in order, and the unreadable version is reported to central.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_altered_moved_or_cut_binary_frames_never_run() {
    let f = Fleet::start().await;
    let ship = enrolled_node(&f.central, "ship1", &[f.server.url()], &f.dir)
        .await
        .unwrap();
    let file = f.dir.join("ran.txt");
    run(&f.central, "ship1", witness(&file, "w0")).await;
    let subject = "ship1.command.shellCommand";
    let mut sub = f.client.subscribe(subject).await.unwrap();
    run(&f.central, "ship1", witness(&file, "w1")).await;
    let frame = loop {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("the command crossed the broker")
            .unwrap();
        if m.payload.first() == Some(&BINARY) {
            break m.payload.to_vec();
        }
    };
    assert_eq!(runs(&file), ["w0", "w1"]);

    // Replayed as it was: answered from the record, never run again.
    let answer = ask(&f.client, subject, frame.clone()).await;
    assert_eq!(answer.first(), Some(&BINARY), "{answer:?}");

    // Every single-bit change anywhere in the frame.
    for i in 0..frame.len() {
        let mut m = frame.clone();
        m[i] ^= 0x01;
        if m[0] != BINARY {
            continue; // the version byte: below
        }
        let answer = ask(&f.client, subject, m).await;
        refused_or_redirected(&answer).unwrap_or_else(|e| panic!("byte {i}: {e}"));
        if i >= 3 && i < frame.len() - 16 && answer.first() == Some(&BINARY) {
            // A changed body (not the header) never holds its tag.
            assert!(
                answer.len() > 2 && answer[2] & SEND_SIGNED != 0,
                "byte {i}: {answer:?}"
            );
        }
    }
    // Moved to another method or kind, and cut short.
    for (to, m) in [
        ("ship1.command.echo", frame.clone()),
        ("ship1.event.shellCommand", frame.clone()),
        (subject, frame[..frame.len() / 2].to_vec()),
        (subject, frame[..3].to_vec()),
    ] {
        let answer = ask(&f.client, to, m).await;
        refused_or_redirected(&answer).unwrap_or_else(|e| panic!("{to}: {e}"));
    }
    // A version this node does not read: refused in JSON, with the reason, and reported.
    let mut v3 = frame.clone();
    v3[0] = 3;
    let answer = ask(&f.client, subject, v3).await;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["status"], "rejected", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("wire format version 3 is not known"),
        "{v}"
    );
    let log = f.dir.join("central").join(steward::ERRORS_LOG);
    let reported = wait_until_async(WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("wire format version 3"))
    })
    .await;
    assert!(reported, "central's {} says nothing", log.display());

    // Nothing of that ran; the node goes on, in order.
    run(&f.central, "ship1", witness(&file, "w2")).await;
    assert_eq!(runs(&file), ["w0", "w1", "w2"]);
    ship.stop().await;
    f.central.stop().await;
}
