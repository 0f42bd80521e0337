//! Signed messages against a real nats-server, attacked from the wire: a raw NATS client
//! captures real signed envelopes and republishes them changed, replayed, retargeted or
//! unsigned. Every refusal must carry a clear reason, and nothing refused may run — checked on
//! a file that each accepted shell command appends one line to.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use steward::{
    AccessList, Argv, ErrorKind, KeyState, Message, MessageState, Node, NodeBuilder, PublicKey,
    SignaturePolicy, WireFormat,
};
use steward_tests::nodes::test_node;
use steward_tests::{wait_until_async, NatsServer};

const WAIT: Duration = Duration::from_secs(20);

///
/// The nodes here send JSON only: these attacks take signed JSON envelopes off the broker and
/// change, replay or forge them, and every node still reads JSON from anyone. The same attacks
/// on binary frames are in `binary.rs`.
fn central_builder(urls: &[String], dir: &Path) -> NodeBuilder {
    test_node("central", urls, dir)
        .signatures(SignaturePolicy::Required)
        .wire_format(WireFormat::Json)
}

/// A ship that requires signatures, pins central's key, lets central call everything and ship2
/// call `echo`, and checks expiry without clock-skew allowance.
fn ship_builder(name: &str, urls: &[String], dir: &Path, central_key: PublicKey) -> NodeBuilder {
    test_node(name, urls, dir)
        .signatures(SignaturePolicy::Required)
        .wire_format(WireFormat::Json)
        .central_key(central_key)
        .access(AccessList::default_for("central").allow("ship2", "echo"))
        .clock_skew(Duration::ZERO)
}

/// Waits until `node`'s key is pending on central, approves it, and waits until every node in
/// `apply` has the new trust version.
async fn approve(central: &Node, node: &str, apply: &[&Node]) -> u64 {
    let pending = wait_until_async(WAIT, || {
        central
            .keys()
            .unwrap()
            .iter()
            .any(|k| k.node == node && k.state == KeyState::Pending)
    })
    .await;
    assert!(
        pending,
        "{node} never registered its key: {:?}",
        central.keys()
    );
    let v = central.approve_key(node, None).await.unwrap();
    for n in apply {
        let ok = wait_until_async(WAIT, || n.trust_version() >= v).await;
        assert!(ok, "{} never applied trust version {v}", n.name());
    }
    v
}

/// A central and ship1 with approved keys, a raw client, and a file shell commands append to.
struct Fleet {
    server: NatsServer,
    dir: tempfile::TempDir,
    central: Node,
    ship1: Node,
    client: async_nats::Client,
    ran: PathBuf,
}

impl Fleet {
    async fn start() -> Fleet {
        let server = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let urls = vec![server.url()];
        let central = central_builder(&urls, dir.path()).start().await.unwrap();
        let ship1 = ship_builder("ship1", &urls, dir.path(), central.public_key())
            .start()
            .await
            .unwrap();
        approve(&central, "ship1", &[&ship1]).await;
        let client = async_nats::connect(server.url()).await.unwrap();
        let ran = dir.path().join("ran.txt");
        Fleet {
            server,
            dir,
            central,
            ship1,
            client,
            ran,
        }
    }

    fn urls(&self) -> Vec<String> {
        vec![self.server.url()]
    }

    /// Starts another strict ship pinned to central's key (its key waits for approval).
    async fn ship(&self, name: &str) -> Node {
        ship_builder(
            name,
            &self.urls(),
            self.dir.path(),
            self.central.public_key(),
        )
        .start()
        .await
        .unwrap()
    }

    /// A shell command appending `tag` to the witness file.
    fn witness(&self, tag: &str) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo {tag} >> {}", self.ran.display()),
        ]
    }

    /// Sends central → ship1 a shell command that appends `tag` to the witness file, and waits
    /// for its result.
    async fn run_witness(&self, tag: &str) -> steward::Receipt {
        let r = self
            .central
            .send(Message::command("ship1", "shellCommand", self.witness(tag)))
            .await
            .unwrap();
        tokio::time::timeout(WAIT, r.result())
            .await
            .unwrap()
            .unwrap();
        r
    }

    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ran)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn errors_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("central").join(steward::ERRORS_LOG))
            .unwrap_or_default()
    }

    async fn restart_ship1(&mut self, central_key: PublicKey) {
        self.ship1.stop().await;
        self.ship1 = ship_builder("ship1", &self.urls(), self.dir.path(), central_key)
            .start()
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.ship1.stop().await;
        self.central.stop().await;
        drop(self.server);
    }
}

/// Waits for the first envelope on the subscription whose JSON satisfies `pred`.
async fn capture(sub: &mut async_nats::Subscriber, pred: impl Fn(&Value) -> bool) -> Value {
    capture_with_headers(sub, pred).await.0
}

/// Like [`capture`], with the headers it was published with (the sender's signed floor).
async fn capture_with_headers(
    sub: &mut async_nats::Subscriber,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Option<async_nats::HeaderMap>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("the envelope was never published")
            .unwrap();
        if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
            if pred(&v) {
                return (v, msg.headers);
            }
        }
    }
}

/// Publishes `env` on `subject` with a reply inbox (and optional headers); returns the reply.
async fn request(
    client: &async_nats::Client,
    subject: &str,
    env: &Value,
    headers: Option<async_nats::HeaderMap>,
) -> Value {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let payload = bytes::Bytes::from(serde_json::to_vec(env).unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match &headers {
            Some(h) => client
                .publish_with_reply_and_headers(
                    subject.to_owned(),
                    inbox.clone(),
                    h.clone(),
                    payload.clone(),
                )
                .await
                .unwrap(),
            None => client
                .publish_with_reply(subject.to_owned(), inbox.clone(), payload.clone())
                .await
                .unwrap(),
        }
        // A node that just started may not be subscribed yet (and the test's own capturing
        // subscription hides "no responders"): publish again after a moment without a reply.
        let attempt = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        let msg = match tokio::time::timeout_at(attempt, sub.next()).await {
            Ok(m) => m.unwrap(),
            Err(_) if attempt < deadline => continue,
            Err(_) => panic!("no reply on {subject} within {WAIT:?}"),
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return serde_json::from_slice(&msg.payload).unwrap();
    }
}

fn reason(reply: &Value) -> &str {
    reply["reason"].as_str().unwrap_or_default()
}

#[track_caller]
fn assert_refused(what: &str, reply: &Value, needle: &str) {
    assert_eq!(reply["status"], "rejected", "{what}: {reply}");
    assert!(reason(reply).contains(needle), "{what}: {reply}");
}

/// The fleet works signed end to end (registration, approval, commands, results, error
/// reports); then every changed copy of a captured command is refused with its reason and
/// nothing but the original ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_messages_are_refused_and_never_run() {
    let f = Fleet::start().await;
    let urls = f.urls();
    // ship2 also says hello (fire-and-forget, signed, no stream position but an expiry).
    let ship2 = ship_builder("ship2", &urls, f.dir.path(), f.central.public_key())
        .hello_interval(Some(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    approve(&f.central, "ship2", &[&f.ship1, &ship2]).await;

    let mut sub = f
        .client
        .subscribe("ship1.command.shellCommand")
        .await
        .unwrap();
    let r = f
        .central
        .send(
            Message::command("ship1", "shellCommand", f.witness("original"))
                .with_ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let res = tokio::time::timeout(WAIT, r.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.exit_code, Some(0), "{res:?}");
    let orig = capture(&mut sub, |v| v["id"] == r.id.as_str()).await;
    assert!(
        orig["sig"]["key"].is_string() && orig["sig"]["sig"].is_string(),
        "{orig}"
    );
    assert_eq!(f.runs(), ["original"]);

    let subject = "ship1.command.shellCommand";
    let changed = |field: &str, v: Value| {
        let mut e = orig.clone();
        e[field] = v;
        // A fresh id, so no dedup record could answer it: only the signature stops it.
        if field != "id" {
            e["id"] = json!(format!("forged-{field}"));
        }
        e
    };
    let bad_sig = "bad signature";
    let cases: Vec<(&str, Value)> = vec![
        ("id", changed("id", json!("forged-id"))),
        ("destination", changed("to", json!("ship2"))),
        ("method", changed("method", json!("echo"))),
        ("kind", changed("kind", json!("event"))),
        ("data", changed("data", json!(f.witness("pwned-data")))),
        (
            "re-split data",
            changed(
                "data",
                json!(["sh -c", format!("echo original >> {}", f.ran.display())]),
            ),
        ),
        (
            "joined data",
            changed(
                "data",
                json!([format!("sh -c echo original >> {}", f.ran.display())]),
            ),
        ),
        (
            "expiry moved",
            changed("expires_ms", json!(9_999_999_999_999u64)),
        ),
        ("expiry removed", {
            let mut e = changed("expires_ms", json!(0));
            e.as_object_mut().unwrap().remove("expires_ms");
            e
        }),
        (
            "seq",
            changed("seq", json!(orig["seq"].as_u64().unwrap() + 1)),
        ),
        (
            "epoch",
            changed("epoch", json!(orig["epoch"].as_u64().unwrap() ^ 1)),
        ),
        ("method timeout", changed("method_timeout_ms", json!(1))),
    ];
    for (what, env) in &cases {
        let subj = if env["method"] == "echo" {
            "ship1.command.echo"
        } else if env["kind"] == "event" {
            "ship1.event.shellCommand"
        } else {
            subject
        };
        let reply = request(&f.client, subj, env, None).await;
        // A changed destination is refused for the signature before the addressee is checked.
        assert_refused(what, &reply, bad_sig);
    }
    // Unsigned, and the signature of another message.
    let mut unsigned = changed("id", json!("forged-unsigned"));
    unsigned.as_object_mut().unwrap().remove("sig");
    assert_refused(
        "unsigned",
        &request(&f.client, subject, &unsigned, None).await,
        "unsigned message",
    );
    let mut garbled = changed("id", json!("forged-garbled"));
    garbled["sig"]["sig"] = json!("!!");
    assert_refused(
        "garbled signature",
        &request(&f.client, subject, &garbled, None).await,
        "malformed signature",
    );
    // Retargeting the untouched envelope: ship2 verifies it, and it is not addressed to ship2.
    let reply = request(&f.client, "ship2.command.shellCommand", &orig, None).await;
    assert_refused(
        "retargeted",
        &reply,
        "addressed to ship1, but this is ship2",
    );

    assert_eq!(f.runs(), ["original"], "a refused message ran");
    // Refusals are reported to central with the reason.
    let reported = wait_until_async(WAIT, || {
        let log = f.errors_log();
        log.contains("bad signature")
            && log.contains("unsigned message")
            && log.contains("ship2 refused message")
            && log.contains("addressed to ship1, but this is ship2")
    })
    .await;
    assert!(reported, "errors.log: {}", f.errors_log());
    // And the fleet goes on.
    f.run_witness("after").await;
    assert_eq!(f.runs(), ["original", "after"]);
    // Hellos sent before ship2's key was approved are refused (unknown key); once approved,
    // its signed hellos are accepted: central hears two more, and no new refusal appears.
    let hello_refusals = || f.errors_log().matches("central.event.hello").count();
    let before = hello_refusals();
    let last_seen = || {
        f.central
            .destinations()
            .unwrap()
            .iter()
            .find(|d| d.node == "ship2")
            .and_then(|d| d.last_seen_ms)
            .unwrap_or(0)
    };
    for _ in 0..2 {
        let s0 = last_seen();
        assert!(
            wait_until_async(WAIT, || last_seen() > s0).await,
            "central no longer hears ship2's signed hellos"
        );
    }
    assert_eq!(
        hello_refusals(),
        before,
        "signed hellos were refused after approval: {}",
        f.errors_log()
    );
    ship2.stop().await;
    f.stop().await;
}

/// A captured command (with ACK) and a captured fire-and-forget command replayed as they are,
/// with a forged floor header, after the receiver restarted, and after its dedup records were
/// pruned: answered from the record or as stale, never run again. An expired signed message
/// never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_never_run_before_or_after_a_restart() {
    let mut f = Fleet::start().await;
    let ck = f.central.public_key();
    let mut sub = f
        .client
        .subscribe("ship1.command.shellCommand")
        .await
        .unwrap();
    let acked = f.run_witness("acked").await;
    let acked_env = capture(&mut sub, |v| v["id"] == acked.id.as_str()).await;
    let unacked = f
        .central
        .send(
            Message::command("ship1", "shellCommand", f.witness("unacked"))
                .with_ack_timeout(Duration::ZERO),
        )
        .await
        .unwrap();
    let unacked_env = capture(&mut sub, |v| v["id"] == unacked.id.as_str()).await;
    assert!(
        unacked_env["seq"].as_u64().unwrap() > 0,
        "fire-and-forget messages carry their stream position: {unacked_env}"
    );
    assert!(wait_until_async(WAIT, || f.runs().len() == 2).await);
    assert_eq!(f.runs(), ["acked", "unacked"]);

    let subject = "ship1.command.shellCommand";
    let mut floor = async_nats::HeaderMap::new();
    floor.insert("Steward-Floor", acked_env["seq"].to_string().as_str());
    let client = f.client.clone();
    let replay_all = |round: &'static str| {
        let (client, a, u, floor) = (
            client.clone(),
            acked_env.clone(),
            unacked_env.clone(),
            floor.clone(),
        );
        async move {
            let r = request(&client, subject, &a, None).await;
            assert!(
                r["status"] == "done" || r["status"] == "stale",
                "{round}: {r}"
            );
            let r = request(&client, subject, &a, Some(floor)).await;
            assert!(
                r["status"] == "done" || r["status"] == "stale",
                "{round}: {r}"
            );
            let r = request(&client, subject, &u, None).await;
            assert_eq!(r["status"], "stale", "{round}: {r}");
            assert!(reason(&r).contains("replay never runs"), "{round}: {r}");
        }
    };
    replay_all("before restart").await;
    assert_eq!(f.runs(), ["acked", "unacked"]);

    f.restart_ship1(ck).await;
    replay_all("after restart").await;
    assert_eq!(f.runs(), ["acked", "unacked"]);

    // Dedup records pruned (retention 0): sequence numbers still recognise both.
    f.ship1.stop().await;
    f.ship1 = ship_builder("ship1", &f.urls(), f.dir.path(), ck)
        .retention(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let (inbox, _) = f.ship1.prune().await.unwrap();
    assert!(inbox >= 1, "nothing was pruned");
    replay_all("after pruning").await;
    assert_eq!(f.runs(), ["acked", "unacked"]);

    // An expired message: sent while ship1 is down, captured, replayed after its expiry.
    f.ship1.stop().await;
    let short = f
        .central
        .send(
            Message::command("ship1", "shellCommand", f.witness("expired"))
                .with_ttl(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    let (short_env, short_headers) =
        capture_with_headers(&mut sub, |v| v["id"] == short.id.as_str()).await;
    let st = tokio::time::timeout(WAIT, short.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Expired);
    f.ship1 = ship_builder("ship1", &f.urls(), f.dir.path(), ck)
        .start()
        .await
        .unwrap();
    // Replayed with the sender's own (signed) floor header, as captured: refused as expired,
    // or as stale (central confirms a floor past it, since it expired there too).
    let r = request(&f.client, subject, &short_env, short_headers).await;
    assert!(r["status"] == "expired" || r["status"] == "stale", "{r}");
    assert_eq!(f.runs(), ["acked", "unacked"]);
    f.stop().await;
}

/// Keys: a node whose key is pending (unknown to ship1) is refused; approved, it runs; revoked,
/// its messages — new ones and captured ones — are refused as revoked; a message claiming
/// another sender than its key's node is refused as a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_revoked_and_mismatched_keys_are_refused() {
    let f = Fleet::start().await;
    let ship2 = f.ship("ship2").await;
    // Pending: neither ship1 nor central trusts ship2 yet.
    assert!(
        wait_until_async(WAIT, || f
            .central
            .keys()
            .unwrap()
            .iter()
            .any(|k| k.node == "ship2" && k.state == KeyState::Pending))
        .await
    );
    let pending = ship2
        .send(Message::command("ship1", "echo", ["pending"]))
        .await
        .unwrap();
    let e = pending.result().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert_eq!(
        pending.status().await.unwrap().refusal,
        Some(steward::Refusal::Untrusted)
    );
    assert!(e.to_string().contains("does not trust for ship2"), "{e}");
    assert!(e.to_string().contains("steward keys approve ship2"), "{e}");

    approve(&f.central, "ship2", &[&f.ship1, &ship2]).await;
    let mut sub = f.client.subscribe("ship1.command.echo").await.unwrap();
    let ok = ship2
        .send(Message::command("ship1", "echo", ["approved"]))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, ok.result())
            .await
            .unwrap()
            .unwrap()
            .stdout,
        "approved"
    );
    let captured = capture(&mut sub, |v| v["id"] == ok.id.as_str()).await;

    // The same key claiming to be central.
    let mut claim = captured.clone();
    claim["from"] = json!("central");
    claim["id"] = json!("claims-central");
    let r = request(&f.client, "ship1.command.echo", &claim, None).await;
    assert_refused(
        "mismatch",
        &r,
        "signed with ship2's key, but it claims to be from central",
    );
    // Someone else's key named as the signer of ship2's message.
    let mut other = captured.clone();
    other["id"] = json!("other-key");
    other["sig"]["key"] = json!(f.ship1.public_key().to_string());
    let r = request(&f.client, "ship1.command.echo", &other, None).await;
    assert_refused(
        "other key",
        &r,
        "signed with ship1's key, but it claims to be from ship2",
    );

    let v = f.central.revoke_key("ship2", None).await.unwrap();
    assert!(wait_until_async(WAIT, || f.ship1.trust_version() >= v).await);
    let e = ship2
        .send(Message::command("ship1", "echo", ["revoked"]))
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    let r = request(&f.client, "ship1.command.echo", &captured, None).await;
    // Already processed: answered from its record, never run again (and the key is revoked).
    assert!(r["status"] == "done" || r["status"] == "rejected", "{r}");
    let mut fresh = captured.clone();
    fresh["id"] = json!("revoked-fresh");
    let r = request(&f.client, "ship1.command.echo", &fresh, None).await;
    assert_refused("revoked key", &r, "revoked");
    let listed = f.central.keys().unwrap();
    assert!(listed
        .iter()
        .any(|k| k.node == "ship2" && k.state == KeyState::Revoked));
    ship2.stop().await;
    f.stop().await;
}

/// Trust updates: an older (captured) bundle is refused as stale, also after a restart; a
/// bundle that is unsigned or signed by a key other than the pinned central key is refused,
/// also by a node that does not require signed messages; a tampered trust.json stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_updates_must_be_signed_by_central_and_newer() {
    let mut f = Fleet::start().await;
    let ck = f.central.public_key();
    let urls = f.urls();
    // ship3 does not require signed messages, but still only takes bundles signed by central.
    let ship3 = test_node("ship3", &urls, f.dir.path())
        .central_key(ck)
        .start()
        .await
        .unwrap();
    let mut sub = f.client.subscribe("*.event._trustUpdate").await.unwrap();
    let v1 = approve(&f.central, "ship3", &[&f.ship1, &ship3]).await;
    let old = capture(&mut sub, |v| v["to"] == "ship1").await;
    let v2 = f
        .central
        .set_node_access("ship3", Some(AccessList::default_for("central")))
        .await
        .unwrap();
    assert!(v2 > v1);
    assert!(wait_until_async(WAIT, || f.ship1.trust_version() == v2).await);

    // The older bundle, replayed as central sent it (validly signed envelope and bundle).
    let r = request(&f.client, "ship1.event._trustUpdate", &old, None).await;
    assert_refused("stale bundle", &r, "stale");
    assert_eq!(f.ship1.trust_version(), v2);
    // The current one again: nothing changes.
    f.restart_ship1(ck).await;
    assert_eq!(
        f.ship1.trust_version(),
        v2,
        "the version survives a restart"
    );
    let r = request(&f.client, "ship1.event._trustUpdate", &old, None).await;
    assert_refused("stale bundle after restart", &r, "stale");

    // Forged bundles to ship3 (signatures off: only the bundle's own signature protects it).
    let bundle: Value = serde_json::from_str(old["data"][0].as_str().unwrap()).unwrap();
    let mut payload: Value = serde_json::from_str(bundle["payload"].as_str().unwrap()).unwrap();
    payload["version"] = json!(v2 + 1000);
    payload["keys"]["mallory"] = json!(f.ship1.public_key().to_string());
    let forge = |data: Value, id: &str| {
        let mut e = old.clone();
        e["to"] = json!("ship3");
        e["id"] = json!(id);
        e["data"] = json!([data.to_string()]);
        e
    };
    let t3 = ship3.trust_version();
    for (what, data, needle) in [
        (
            "unsigned bundle",
            payload.clone(),
            "not a signed trust bundle",
        ),
        (
            "altered payload",
            json!({"payload": payload.to_string(), "sig": bundle["sig"]}),
            "not signed by central's key",
        ),
        (
            "empty signature",
            json!({"payload": payload.to_string(), "sig": ""}),
            "malformed signature",
        ),
    ] {
        let r = request(
            &f.client,
            "ship3.event._trustUpdate",
            &forge(data, what),
            None,
        )
        .await;
        assert_refused(what, &r, needle);
    }
    // A bundle properly signed by another central (a rogue node named central elsewhere).
    let rogue_server = NatsServer::start();
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = test_node("central", &[rogue_server.url()], rogue_dir.path())
        .start()
        .await
        .unwrap();
    let rogue_client = async_nats::connect(rogue_server.url()).await.unwrap();
    let mut rogue_sub = rogue_client
        .subscribe("ship3.event._trustUpdate")
        .await
        .unwrap();
    rogue
        .approve_key("mallory", Some(f.ship1.public_key()))
        .await
        .unwrap();
    rogue
        .set_node_access("ship3", Some(AccessList::empty()))
        .await
        .unwrap();
    let rogue_env = capture(&mut rogue_sub, |_| true).await;
    let r = request(&f.client, "ship3.event._trustUpdate", &rogue_env, None).await;
    assert_refused("rogue central", &r, "not signed by central's key");
    assert_eq!(ship3.trust_version(), t3, "a refused bundle changed ship3");
    // ship1 (signatures required) refuses the rogue's envelope already: unknown key for central.
    let mut to1 = rogue_env.clone();
    to1["to"] = json!("ship1");
    let r = request(&f.client, "ship1.event._trustUpdate", &to1, None).await;
    assert_refused("rogue to ship1", &r, "does not trust for central");
    rogue.stop().await;

    // trust.json altered on disk: the node refuses to start rather than trust less than it did.
    f.ship1.stop().await;
    let path = f.dir.path().join("ship1").join(steward::TRUST_FILE);
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    stored["payload"] = json!(stored["payload"]
        .as_str()
        .unwrap()
        .replace("ship3", "shipX"));
    std::fs::write(&path, stored.to_string()).unwrap();
    let e = ship_builder("ship1", &urls, f.dir.path(), ck)
        .start()
        .await
        .err()
        .expect("a tampered trust.json must stop the start");
    assert!(e.to_string().contains("not a valid trust bundle"), "{e}");
    std::fs::remove_file(&path).unwrap();
    f.ship1 = ship_builder("ship1", &urls, f.dir.path(), ck)
        .start()
        .await
        .unwrap();
    // On its next registration, central sends it the current bundle again.
    assert!(wait_until_async(WAIT, || f.ship1.trust_version() == v2).await);
    ship3.stop().await;
    f.stop().await;
}

/// Least privilege: central sets ship1's access list (argv prefix and exact argv); allowed
/// commands run, anything else — other argv, other methods — is refused and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_rules_from_central_allow_prefix_and_exact_and_deny_the_rest() {
    let f = Fleet::start().await;
    let w = f.ran.display().to_string();
    let list = AccessList::empty()
        .allow_argv(
            "central",
            "shellCommand",
            Argv::Prefix(vec![
                "sh".into(),
                "-c".into(),
                format!("echo prefix >> {w}"),
            ]),
        )
        .allow_argv(
            "central",
            "shellCommand",
            Argv::Exact(vec!["sh".into(), "-c".into(), format!("echo exact >> {w}")]),
        );
    let v = f
        .central
        .set_node_access("ship1", Some(list.clone()))
        .await
        .unwrap();
    assert!(wait_until_async(WAIT, || f.ship1.trust_version() >= v).await);
    assert_eq!(f.ship1.access_list(), list);

    let send = |data: Vec<String>, method: &'static str| {
        let c = f.central.clone();
        async move {
            let r = c
                .send(Message::command("ship1", method, data))
                .await
                .unwrap();
            tokio::time::timeout(WAIT, r.result()).await.unwrap()
        }
    };
    let sv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    send(
        sv(&["sh", "-c", &format!("echo prefix >> {w}"), "extra-arg"]),
        "shellCommand",
    )
    .await
    .unwrap();
    send(
        sv(&["sh", "-c", &format!("echo exact >> {w}")]),
        "shellCommand",
    )
    .await
    .unwrap();
    for (data, method, needle) in [
        (
            sv(&["sh", "-c", &format!("echo exact >> {w}"), "more"]),
            "shellCommand",
            "only with other arguments",
        ),
        (
            sv(&["sh", "-c", &format!("echo denied >> {w}")]),
            "shellCommand",
            "only with other arguments",
        ),
        (
            sv(&["sh -c", &format!("echo prefix >> {w}")]),
            "shellCommand",
            "only with other arguments",
        ),
        (sv(&["hello"]), "echo", "may not call echo"),
    ] {
        let e = send(data, method).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().contains("not in its access list"), "{e}");
    }
    assert_eq!(f.runs(), ["prefix", "exact"]);
    // Cleared: ship1 is back to its configured list.
    let v = f.central.set_node_access("ship1", None).await.unwrap();
    assert!(wait_until_async(WAIT, || f.ship1.trust_version() >= v).await);
    send(sv(&["hi"]), "echo").await.unwrap();
    f.stop().await;
}

/// The operator's view and mistakes: keys only on central, approving with nothing pending,
/// revoking an unknown node; a private key file others can read stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_errors_are_clear() {
    let f = Fleet::start().await;
    let e = f.ship1.keys().unwrap_err();
    assert!(e.to_string().contains("not central"), "{e}");
    let e = f.central.approve_key("nosuch", None).await.unwrap_err();
    assert!(e.to_string().contains("no key waiting for approval"), "{e}");
    let e = f
        .central
        .approve_key("ship7", Some(f.ship1.public_key()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("approved for ship1 already"), "{e}");
    let e = f
        .central
        .approve_key("central", Some(f.ship1.public_key()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pinned key"), "{e}");
    let e = f.central.revoke_key("nosuch", None).await.unwrap_err();
    assert!(e.to_string().contains("no key of nosuch"), "{e}");
    let pubfile = f.dir.path().join("ship1").join(steward::PUBLIC_KEY_FILE);
    assert_eq!(
        PublicKey::from_file(&pubfile).unwrap(),
        f.ship1.public_key()
    );
    f.ship1.stop().await;
    let key = f.dir.path().join("ship1").join(steward::KEY_FILE);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = ship_builder("ship1", &f.urls(), f.dir.path(), f.central.public_key())
        .start()
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    f.central.stop().await;
}

/// The floor header lets a receiver skip messages its sender gave up on, so it is signed: a
/// captured later message replayed with a forged floor (before the earlier ones arrived) does
/// not run out of order — while the sender is away it is held unanswered (the sender cannot
/// confirm the stream's position), and once the sender confirms it is told "gap" — and the
/// earlier messages still run first, then it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_floor_cannot_make_a_receiver_skip_messages() {
    let mut f = Fleet::start().await;
    let ck = f.central.public_key();
    f.ship1.stop().await;
    let mut sub = f
        .client
        .subscribe("ship1.command.shellCommand")
        .await
        .unwrap();
    let a = f
        .central
        .send(Message::command(
            "ship1",
            "shellCommand",
            f.witness("first"),
        ))
        .await
        .unwrap();
    let b = f
        .central
        .send(Message::command(
            "ship1",
            "shellCommand",
            f.witness("second"),
        ))
        .await
        .unwrap();
    let (b_env, b_headers) = capture_with_headers(&mut sub, |v| v["id"] == b.id.as_str()).await;
    let b_headers = b_headers.expect("the sender's floor headers");
    assert_eq!(b_env["seq"], 2, "{b_env}");
    assert_eq!(b_headers.get("Steward-Floor").unwrap().as_str(), "1");
    // The sender is away now; ship1 comes back and sees only the attacker's copies.
    f.central.stop().await;
    f.ship1 = ship_builder("ship1", &f.urls(), f.dir.path(), ck)
        .start()
        .await
        .unwrap();
    let subject = "ship1.command.shellCommand";
    let mut unsigned = async_nats::HeaderMap::new();
    unsigned.insert("Steward-Floor", "2");
    let mut resigned = b_headers.clone();
    resigned.insert("Steward-Floor", "2");
    let mut answers = f.client.subscribe("forged.replies").await.unwrap();
    for h in [None, Some(unsigned), Some(resigned), Some(b_headers)] {
        let payload = bytes::Bytes::from(serde_json::to_vec(&b_env).unwrap());
        f.client
            .publish_with_reply_and_headers(
                subject,
                "forged.replies",
                h.unwrap_or_default(),
                payload,
            )
            .await
            .unwrap();
    }
    f.client.flush().await.unwrap();
    assert!(f.runs().is_empty(), "ran out of order: {:?}", f.runs());
    // The real sender returns: both run, in order; an answer the copies got is "gap".
    f.central = central_builder(&f.urls(), f.dir.path())
        .start()
        .await
        .unwrap();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), answers.next()).await {
        let r: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        assert_eq!(r["status"], "gap", "{r}");
    }
    for r in [&a, &b] {
        let st = tokio::time::timeout(WAIT, f.central.wait(&r.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.state, MessageState::Completed, "{st:?}");
    }
    assert_eq!(f.runs(), ["first", "second"]);
    f.stop().await;
}

/// `signatures = unsigned`: the node signs nothing (no `sig` on the wire). A receiver that does
/// not check accepts its messages; one that requires signatures refuses them as unsigned and
/// runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_senders_work_with_lenient_receivers_and_are_refused_by_strict_ones() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .signatures(SignaturePolicy::Unsigned)
        .start()
        .await
        .unwrap();
    let lenient = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    let strict = test_node("ship2", &urls, dir.path())
        .signatures(SignaturePolicy::Required)
        .start()
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut wire = client.subscribe("ship1.command.echo").await.unwrap();
    client.flush().await.unwrap();

    let r = central
        .send(Message::command("ship1", "echo", ["hi"]))
        .await
        .unwrap();
    assert_eq!(r.result().await.unwrap().stdout, "hi");
    let seen = tokio::time::timeout(WAIT, wire.next())
        .await
        .unwrap()
        .unwrap();
    let env: Value = serde_json::from_slice(&seen.payload).unwrap();
    assert!(env.get("sig").is_none_or(Value::is_null), "{env}");

    let r = central
        .send(Message::command("ship2", "echo", ["hi"]))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, r.wait()).await.unwrap().unwrap();
    assert_eq!(st.state, MessageState::Rejected, "{st:?}");
    assert!(
        st.reason.as_deref().unwrap_or("").contains("unsigned"),
        "{st:?}"
    );
    central.stop().await;
    lenient.stop().await;
    strict.stop().await;
}

/// Answers are signed too: with signatures required, a sender takes an answer only when it is
/// signed by the destination's trusted key, for that very message and reply subject. Must
/// hold: while ship1 is down, a forger answering on its subject — unsigned "done" with a made-up
/// result, unsigned "received", a real signed answer replayed for another message, the same
/// answer re-addressed — changes nothing (the message is neither completed nor parked as
/// received); once ship1 is back, the real result arrives and the command ran exactly once.
/// And a receiver that does not sign (signatures = unsigned) gets a clear failure reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_answers_are_ignored() {
    let mut f = Fleet::start().await;
    // A real signed answer, seen on the wire.
    let mut answers = f.client.subscribe("_INBOX.>").await.unwrap();
    let real = f
        .central
        .send(Message::command("ship1", "echo", ["real"]))
        .await
        .unwrap();
    assert_eq!(real.result().await.unwrap().stdout, "real");
    let captured = capture(&mut answers, |v| {
        v["id"] == real.id.as_str() && v["status"] == "done"
    })
    .await;
    assert!(
        captured["sig"].is_object(),
        "answers are signed: {captured}"
    );

    f.ship1.stop().await;
    let mut forger_sub = f.client.subscribe("ship1.command.>").await.unwrap();
    let forger_client = f.client.clone();
    let forged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = forged.clone();
    let forger = tokio::spawn(async move {
        while let Some(m) = forger_sub.next().await {
            let Some(reply) = m.reply.clone() else {
                continue;
            };
            let env: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            let id = env["id"].clone();
            let mut replayed = captured.clone();
            replayed["id"] = id.clone();
            let answers = [
                json!({"id": id, "status": "done", "result": {"status": "ok", "stdout": "forged",
                    "stderr": "", "truncated": false, "duration_ms": 1, "node": "ship1"}}),
                json!({"id": id, "status": "received"}),
                replayed,
                captured.clone(),
            ];
            for a in answers {
                forger_client
                    .publish(reply.clone(), serde_json::to_vec(&a).unwrap().into())
                    .await
                    .unwrap();
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let cmd = f
        .central
        .send(Message::command("ship1", "shellCommand", f.witness("once")))
        .await
        .unwrap();
    assert!(
        wait_until_async(WAIT, || forged.load(std::sync::atomic::Ordering::SeqCst)
            >= 3)
        .await,
        "the forger saw fewer than 3 attempts (was a forged answer taken?)"
    );
    let st = cmd.status().await.unwrap();
    assert!(
        matches!(st.state, MessageState::Queued | MessageState::Sent),
        "forged answers must change nothing: {st:?}"
    );
    forger.abort();
    f.restart_ship1(f.central.public_key()).await;
    let res = tokio::time::timeout(WAIT, cmd.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status, steward::ResultStatus::Ok, "{res:?}");
    assert_eq!(
        res.stdout, "",
        "the real (empty) output, not the forged one"
    );
    assert_eq!(f.runs(), vec!["once".to_owned()]);

    // A receiver that does not sign its answers: the strict sender says why it gives up.
    let lax = test_node("ship3", &f.urls(), f.dir.path())
        .signatures(SignaturePolicy::Unsigned)
        .start()
        .await
        .unwrap();
    let e = f
        .central
        .send(
            Message::command("ship3", "echo", ["x"])
                .with_retries(1)
                .with_ack_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeliveryFailed, "{e}");
    assert!(e.to_string().contains("is not signed"), "{e}");
    lax.stop().await;
    f.stop().await;
}

/// Must hold: trust updates for a node that is offline do not pile up at central. Each newer
/// bundle cancels the older one still queued for that node ("superseded by trust version N"),
/// so one waits per node; when the node comes back it gets the newest and applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_trust_updates_are_superseded_by_newer_ones() {
    let f = Fleet::start().await;
    let ship2 = f.ship("ship2").await;
    approve(&f.central, "ship2", &[&ship2]).await;
    ship2.stop().await;
    let mut newest = 0;
    for i in 0..4 {
        let access = steward::AccessList::default_for("central").allow("ship1", &format!("m{i}"));
        newest = f
            .central
            .set_node_access("ship2", Some(access))
            .await
            .unwrap();
    }
    let updates: Vec<_> = f
        .central
        .recent_messages(1000)
        .unwrap()
        .into_iter()
        .filter(|m| m.to_node == "ship2" && m.subject.ends_with("._trustUpdate"))
        .collect();
    let waiting = updates.iter().filter(|m| !m.state.is_final()).count();
    assert_eq!(waiting, 1, "one bundle waits for ship2: {updates:#?}");
    let superseded: Vec<_> = updates
        .iter()
        .filter(|m| m.state == MessageState::Cancelled)
        .collect();
    assert!(superseded.len() >= 3, "{updates:#?}");
    for m in superseded {
        let reason = m.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("superseded by trust version"), "{reason}");
    }
    let ship2 = f.ship("ship2").await;
    assert!(
        wait_until_async(WAIT, || ship2.trust_version() >= newest).await,
        "ship2 never got trust version {newest}"
    );
    ship2.stop().await;
    f.stop().await;
}

/// A message its sender cancelled, or gave up on after its retries, never runs afterwards —
/// even when an attacker on the broker replays the captured envelope (with the sender's own
/// signed floor header) over and over from the very moment the receiver comes back, before the
/// sender has sent it anything newer. Must hold: neither replay runs, central keeps showing
/// *cancelled* and *failed*, and a new command on the same stream still runs once, in order.
/// Before the fix the receiver's expected position still pointed at the cancelled message, so
/// its replay ran as "the next one".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_or_given_up_commands_never_run_on_replay_at_reconnect() {
    let mut f = Fleet::start().await;
    let ck = f.central.public_key();
    let subject = "ship1.command.shellCommand";
    let mut sub = f.client.subscribe(subject).await.unwrap();
    f.run_witness("warm").await;
    f.ship1.stop().await;

    let cancelled = f
        .central
        .send(Message::command(
            "ship1",
            "shellCommand",
            f.witness("cancelled"),
        ))
        .await
        .unwrap();
    let (cancelled_env, cancelled_headers) =
        capture_with_headers(&mut sub, |v| v["id"] == cancelled.id.as_str()).await;
    assert!(f.central.cancel(&cancelled.id).await.unwrap());
    let given_up = f
        .central
        .send(
            Message::command("ship1", "shellCommand", f.witness("given-up"))
                .with_retries(0)
                .with_ack_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let (given_up_env, given_up_headers) =
        capture_with_headers(&mut sub, |v| v["id"] == given_up.id.as_str()).await;
    let st = tokio::time::timeout(WAIT, given_up.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.state, MessageState::Failed, "{st:?}");

    // The attacker replays both, as captured, every few milliseconds from before ship1 starts
    // until well after it is up.
    let replaying = Arc::new(AtomicBool::new(true));
    let attacker = {
        let (client, replaying) = (f.client.clone(), replaying.clone());
        let copies = [
            (cancelled_env.clone(), cancelled_headers.clone()),
            (given_up_env.clone(), given_up_headers.clone()),
        ];
        tokio::spawn(async move {
            let inbox = client.new_inbox();
            while replaying.load(Ordering::SeqCst) {
                for (env, headers) in &copies {
                    let payload = bytes::Bytes::from(serde_json::to_vec(env).unwrap());
                    let _ = client
                        .publish_with_reply_and_headers(
                            subject,
                            inbox.clone(),
                            headers.clone().unwrap_or_default(),
                            payload,
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    f.ship1 = ship_builder("ship1", &f.urls(), f.dir.path(), ck)
        .start()
        .await
        .unwrap();
    // A new command on the same stream: it runs, after the replays had every chance.
    f.run_witness("after").await;
    replaying.store(false, Ordering::SeqCst);
    attacker.await.unwrap();
    // Replays after the sender spoke again are refused as before (stale, or answered from the
    // record).
    let r = request(
        &f.client,
        subject,
        &cancelled_env,
        cancelled_headers.clone(),
    )
    .await;
    assert!(
        r["status"] == "stale" || r["status"] == "done",
        "a replay of the cancelled message: {r}"
    );
    assert_eq!(
        f.runs(),
        ["warm", "after"],
        "a cancelled or given-up command ran"
    );
    let state = |id: &str| {
        let (c, id) = (&f.central, id.to_owned());
        async move { c.message(&id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(&cancelled.id).await, MessageState::Cancelled);
    assert_eq!(state(&given_up.id).await, MessageState::Failed);
    f.stop().await;
}
