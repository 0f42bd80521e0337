//! Closed by default, and enrolment in one step: nodes started with the defaults run nothing an
//! unapproved party published; a join token from central pins central's key on the node and
//! has its key approved at once; a token that does not hold leaves the key pending, never
//! replaces an approved key and never brings back a revoked one.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use steward::{ErrorKind, KeyState, Message, MessageState, Node, NodeBuilder};
use steward_tests::nodes::{default_node, enrolled_node};
use steward_tests::{wait_until_async, NatsServer};

const WAIT: Duration = Duration::from_secs(20);

/// A shell command that appends `tag` to `file`.
fn witness(file: &Path, tag: &str) -> Vec<String> {
    vec![
        "bash".into(),
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

fn key_state(central: &Node, node: &str) -> Vec<KeyState> {
    central
        .keys()
        .unwrap()
        .into_iter()
        .filter(|k| k.node == node)
        .map(|k| k.state)
        .collect()
}

async fn started(b: NodeBuilder) -> Node {
    b.start().await.expect("node start")
}

/// A broker, a data directory and a default (closed) central on it.
struct Lab {
    _nats: NatsServer,
    urls: Vec<String>,
    dir: tempfile::TempDir,
    central: Node,
}

impl Lab {
    /// `central` is given the default builder, to change it (e.g. `auto_approve`).
    async fn start(central: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Lab {
        let nats = NatsServer::start();
        let urls = vec![nats.url()];
        let dir = tempfile::tempdir().unwrap();
        let central = started(central(default_node("central", &urls, dir.path()))).await;
        Lab {
            _nats: nats,
            urls,
            dir,
            central,
        }
    }
}

/// Sends `m` from `from` and waits for its result.
async fn result_of(from: &Node, m: Message) -> steward::MethodResult {
    let r = from.send(m).await.unwrap();
    tokio::time::timeout(WAIT, r.result())
        .await
        .expect("no result in time")
        .unwrap()
}

/// Publishes `env` on `subject` with a reply inbox until a node answers; returns the answer.
async fn request(client: &async_nats::Client, subject: &str, env: &Value) -> Value {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        client
            .publish_with_reply(
                subject.to_owned(),
                inbox.clone(),
                serde_json::to_vec(env).unwrap().into(),
            )
            .await
            .unwrap();
        let attempt = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        match tokio::time::timeout_at(attempt, sub.next()).await {
            Ok(Some(m)) if m.status != Some(async_nats::StatusCode::NO_RESPONDERS) => {
                return serde_json::from_slice(&m.payload).unwrap()
            }
            _ if attempt < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("no answer on {subject} within {WAIT:?}"),
        }
    }
}

/// The finding: with default settings a node ran a forged, unsigned command claiming
/// to come from central, published by any client of the broker. Now a default node runs
/// nothing that an unapproved party published — a forged envelope, nor central's own command
/// before the node joined — and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_node_runs_nothing_an_unapproved_party_published() {
    let lab = Lab::start(|b| b).await;
    let (urls, dir, central) = (&lab.urls, &lab.dir, lab.central.clone());
    let file = dir.path().join("ran.txt");
    let ship1 =
        started(default_node("ship1", urls, dir.path()).ack_timeout(Duration::from_secs(1))).await;

    // Any client of the broker, forging central's name without a signature.
    let attacker = async_nats::connect(urls[0].as_str()).await.unwrap();
    let forged = json!({
        "id": "forged-1", "from": "central", "to": "ship1", "kind": "command",
        "method": "shellCommand", "data": witness(&file, "forged"),
        "epoch": 1, "seq": 1, "ack": true, "method_timeout_ms": 10000
    });
    let answer = request(&attacker, "ship1.command.shellCommand", &forged).await;
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("unsigned message"),
        "{answer}"
    );

    // Central's own signed command: ship1 has not joined, so it does not trust central's key.
    let r = central
        .send(Message::command("ship1", "shellCommand", witness(&file, "central")).with_retries(1))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, r.wait()).await.unwrap().unwrap();
    assert_ne!(st.state, MessageState::Completed, "{st:?}");
    assert!(runs(&file).is_empty(), "ran: {:?}", runs(&file));
    ship1.stop().await;
    central.stop().await;
}

/// One step: a token from central, a node started with it. Central's commands run there and
/// its results come back; the node's events reach central; the token counts the approval;
/// and the pinned key stays in `central.pub`, so a restart without the token still trusts
/// central.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrols_a_node_in_one_step() {
    let lab = Lab::start(|b| b).await;
    let (urls, dir, central) = (&lab.urls, &lab.dir, lab.central.clone());
    let file = dir.path().join("ran.txt");
    let ship1 = enrolled_node(&central, "ship1", urls, dir.path())
        .await
        .unwrap();
    assert_eq!(key_state(&central, "ship1"), vec![KeyState::Approved]);
    let tokens = central.join_tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].approved, 1);

    let res = result_of(
        &central,
        Message::command("ship1", "shellCommand", witness(&file, "one")),
    )
    .await;
    assert_eq!(res.exit_code, Some(0), "{res:?}");
    let ev = ship1
        .send(Message::event("central", "textLogging", ["from ship1"]))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, ev.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Completed, "{st:?}");
    let logged = std::fs::read_to_string(
        dir.path()
            .join("central")
            .join("textlogging")
            .join("ship1.log"),
    )
    .unwrap();
    assert!(logged.contains("from ship1"), "{logged:?}");

    let pinned =
        std::fs::read_to_string(dir.path().join("ship1").join(steward::CENTRAL_KEY_FILE)).unwrap();
    assert_eq!(pinned.trim(), central.public_key().to_string());
    ship1.stop().await;
    let again = started(default_node("ship1", urls, dir.path())).await;
    let res = result_of(
        &central,
        Message::command("ship1", "shellCommand", witness(&file, "two")),
    )
    .await;
    assert_eq!(res.exit_code, Some(0), "{res:?}");
    assert_eq!(runs(&file), vec!["one", "two"]);
    again.stop().await;
    central.stop().await;
}

/// A token that does not hold leaves the key pending with the reason: a revoked token, a token
/// of another central (same name, another key: refused already at start, since the node would
/// pin the wrong key — here it registers with the real central's key pinned by hand). A token
/// never replaces a node's approved key, and a revoked key never comes back by replaying the
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_do_not_hold_leave_the_key_pending() {
    let lab = Lab::start(|b| b).await;
    let (urls, dir, central) = (&lab.urls, &lab.dir, lab.central.clone());

    // Revoked before use.
    let revoked = central.join_token(None).await.unwrap();
    central.revoke_join_token(&revoked.id()).await.unwrap();
    assert_eq!(
        central
            .revoke_join_token(&revoked.id())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let ship1 = started(default_node("ship1", urls, dir.path()).join(revoked)).await;
    let pending = wait_until_async(WAIT, || {
        key_state(&central, "ship1") == vec![KeyState::Pending]
    })
    .await;
    assert!(pending, "{:?}", central.keys());
    ship1.stop().await;

    // A valid token approves the same node now.
    let good = central
        .join_token(Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let ship1 = started(default_node("ship1", urls, dir.path()).join(good.clone())).await;
    let approved = wait_until_async(WAIT, || {
        key_state(&central, "ship1") == vec![KeyState::Approved]
    })
    .await;
    assert!(approved, "{:?}", central.keys());
    let first_key = ship1.public_key();
    ship1.stop().await;

    // Another machine claims the name ship1 with the same (valid) token: its key stays pending,
    // the approved key stays.
    let other_dir = dir.path().join("elsewhere");
    let impostor = started(default_node("ship1", urls, &other_dir).join(good.clone())).await;
    let pending = wait_until_async(WAIT, || {
        central.keys().unwrap().iter().any(|k| {
            k.node == "ship1" && k.key == impostor.public_key() && k.state == KeyState::Pending
        })
    })
    .await;
    assert!(pending, "{:?}", central.keys());
    assert!(central
        .keys()
        .unwrap()
        .iter()
        .any(|k| k.key == first_key && k.state == KeyState::Approved));
    impostor.stop().await;

    // Revoked by the operator: the token (still valid) does not bring the key back.
    central.revoke_key("ship1", Some(first_key)).await.unwrap();
    let ship1 = started(default_node("ship1", urls, dir.path()).join(good)).await;
    let registered =
        wait_until_async(WAIT, || ship1.trust_version() >= central.trust_version()).await;
    assert!(registered);
    assert!(central
        .keys()
        .unwrap()
        .iter()
        .all(|k| k.key != first_key || k.state == KeyState::Revoked));
    ship1.stop().await;
    central.stop().await;
}

/// `auto_approve` (labs): a node given only central's key is approved when it registers; the
/// setting is refused on a node that is not central; a token for another central is refused at
/// start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approve_enrols_without_a_token_and_only_on_central() {
    let lab = Lab::start(|b| b.auto_approve(true)).await;
    let (urls, dir, central) = (&lab.urls, &lab.dir, lab.central.clone());
    let ship1 =
        started(default_node("ship1", urls, dir.path()).central_key(central.public_key())).await;
    let approved = wait_until_async(WAIT, || {
        key_state(&central, "ship1") == vec![KeyState::Approved]
    })
    .await;
    assert!(approved, "{:?}", central.keys());
    let res = result_of(&central, Message::command("ship1", "echo", ["hi"])).await;
    assert_eq!(res.stdout, "hi");

    let e = default_node("ship2", urls, dir.path())
        .auto_approve(true)
        .start()
        .await
        .err()
        .expect("the start must fail");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("auto_approve is a setting of central"),
        "{e}"
    );

    let token = central.join_token(None).await.unwrap();
    let e = default_node("ship3", urls, dir.path())
        .join(token)
        .central_key(ship1.public_key())
        .start()
        .await
        .err()
        .expect("the start must fail");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string().contains("join token names central's key"),
        "{e}"
    );
    ship1.stop().await;
    central.stop().await;
}
