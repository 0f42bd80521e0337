//! Floods from anyone on the broker: junk key registrations to central, malformed payloads,
//! refused messages and throw-away streams to a node. What an unknown or misbehaving party
//! sends must not crowd out real nodes, nor grow a node's disk, log or traffic without bound.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use steward::{AccessList, KeyState, Message, NodeBuilder, SignaturePolicy};
use steward_tests::nodes::test_node;
use steward_tests::{wait_until_async, NatsServer};

const WAIT: Duration = Duration::from_secs(30);

/// Total size of the files under `dir`, in bytes.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The wire format's canonical signing encoding (steward/src/security/signing.rs), rebuilt here so the
/// test can sign envelopes with keys no node has.
struct Canon(Vec<u8>);

impl Canon {
    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn flag(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
}

/// Signs `env` (an envelope as JSON, without results) with `key`, as a node would.
fn sign(env: &mut Value, key: &SigningKey) {
    let s = |f: &str| env[f].as_str().unwrap_or_default().to_owned();
    let mut c = Canon(Vec::new());
    c.str("steward/envelope/v1");
    for f in ["id", "from", "to", "kind", "method"] {
        c.str(&s(f));
    }
    let data: Vec<String> = env["data"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    c.u64(data.len() as u64);
    for d in &data {
        c.str(d);
    }
    c.u64(env["epoch"].as_u64().unwrap_or(0));
    c.u64(env["seq"].as_u64().unwrap_or(0));
    c.flag(env["ack"].as_bool().unwrap_or(false));
    match env["expires_ms"].as_u64() {
        Some(e) => {
            c.flag(true);
            c.u64(e);
        }
        None => c.flag(false),
    }
    c.u64(env["method_timeout_ms"].as_u64().unwrap_or(0));
    c.flag(false); // result_of
    c.flag(false); // result
    c.flag(false); // outcome
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = key.sign(&c.0);
    env["sig"] = json!({
        "key": b64.encode(key.verifying_key().to_bytes()),
        "sig": b64.encode(sig.to_bytes()),
    });
}

/// A key registration for `name`, signed by a fresh key, as `steward` nodes send them.
fn junk_registration(name: &str) -> Vec<u8> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut env = json!({
        "id": format!("reg-{name}"),
        "from": name,
        "to": "central",
        "kind": "event",
        "method": "_keyRegister",
        "data": [json!({"trustVersion": 0}).to_string()],
        "epoch": 1,
        "seq": 0,
        "ack": true,
        "expires_ms": now_ms() + 600_000,
        "method_timeout_ms": 0,
    });
    sign(&mut env, &key);
    serde_json::to_vec(&env).unwrap()
}

fn central_builder(urls: &[String], dir: &Path) -> NodeBuilder {
    test_node("central", urls, dir).signatures(SignaturePolicy::Required)
}

/// Finding 6. 100,000 key registrations from unknown parties (each validly signed by a fresh
/// key, published raw on the broker) must neither crowd out a real node — it still registers,
/// shows as pending, is approved, and then runs a command from central with signatures
/// required — nor grow central's data directory by more than 10 MB (before the fix: pending
/// keys capped at 1,024 refused the real node, and every junk name got a signed bundle queued
/// and retried forever, again on each approval). Pending keys stay at most 1,024, and
/// `purge_pending_keys` forgets them without touching the approved key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_registrations_neither_crowd_out_a_real_node_nor_grow_central() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = central_builder(&urls, dir.path()).start().await.unwrap();
    let central_dir = dir.path().join("central");
    let before = dir_size(&central_dir);

    let n: usize = std::env::var("STEWARD_FLOOD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = Instant::now();
    let client = async_nats::connect(server.url()).await.unwrap();
    for i in 0..n {
        client
            .publish(
                "central.event._keyRegister",
                junk_registration(&format!("junk{i}")).into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    println!(
        "published {n} junk registrations in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A real node registers after the flood.
    let ship = test_node("ship", &urls, dir.path())
        .signatures(SignaturePolicy::Required)
        .central_key(central.public_key())
        .access(AccessList::default_for("central"))
        .start()
        .await
        .unwrap();
    let pending =
        wait_until_async(Duration::from_secs(180), || {
            central.keys().unwrap().iter().any(|k| {
                k.node == "ship" && k.state == KeyState::Pending && k.key == ship.public_key()
            })
        })
        .await;
    let keys = central.keys().unwrap();
    let waiting = keys.iter().filter(|k| k.state == KeyState::Pending).count();
    println!(
        "ship pending after {:.1} s; {waiting} keys pending on central",
        t.elapsed().as_secs_f64()
    );
    assert!(pending, "the real node's key never showed as pending");
    assert!(waiting <= 1024, "{waiting} pending keys");

    let v = central.approve_key("ship", None).await.unwrap();
    assert!(
        wait_until_async(WAIT, || ship.trust_version() >= v).await,
        "ship never applied trust version {v}"
    );
    let r = central
        .send(Message::command(
            "ship",
            "shellCommand",
            ["echo", "enrolled"],
        ))
        .await
        .unwrap();
    let res = tokio::time::timeout(WAIT, r.result())
        .await
        .expect("no result from ship")
        .expect("the command failed");
    assert_eq!(res.stdout.trim(), "enrolled");
    assert!(
        central
            .recent_messages(10)
            .unwrap()
            .iter()
            .all(|m| m.to_node == "ship"),
        "central queued messages to other names: {:?}",
        central.recent_messages(10).unwrap()
    );

    let after = dir_size(&central_dir);
    println!(
        "central's data directory: {before} bytes before, {after} after ({:+} bytes)",
        after as i64 - before as i64
    );
    assert!(
        after < before + 10_000_000,
        "central's data directory grew by {} bytes",
        after - before
    );

    let purged = central.purge_pending_keys().await.unwrap();
    println!("purge_pending_keys forgot {purged} keys");
    let keys = central.keys().unwrap();
    assert!(
        keys.iter().all(|k| k.state != KeyState::Pending),
        "{keys:?}"
    );
    assert!(keys
        .iter()
        .any(|k| k.node == "ship" && k.state == KeyState::Approved));
    ship.stop().await;
    central.stop().await;
}

/// WARN lines written by every node in this test binary, for counting.
fn captured_warnings() -> &'static std::sync::Mutex<Vec<u8>> {
    static BUF: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    let buf = BUF.get_or_init(Default::default);
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                captured_warnings().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| W)
            .try_init()
            .expect("no other tracing subscriber (run without RUST_LOG)");
    });
    buf
}

/// An unsigned envelope as JSON, as a node with `signatures = off` sends it.
fn raw_envelope(from: &str, to: &str, method: &str, data: &[&str], epoch: u64, seq: u64) -> Value {
    json!({
        "id": format!("{from}-{epoch}-{method}-{seq}"),
        "from": from,
        "to": to,
        "kind": "command",
        "method": method,
        "data": data,
        "epoch": epoch,
        "seq": seq,
        "ack": true,
        "method_timeout_ms": 10_000,
    })
}

/// Sends `env` as a request and returns the receiver's answer.
async fn ask(client: &async_nats::Client, env: &Value) -> Value {
    let subject = format!(
        "{}.command.{}",
        env["to"].as_str().unwrap(),
        env["method"].as_str().unwrap()
    );
    let msg = tokio::time::timeout(
        WAIT,
        client.request(subject, serde_json::to_vec(env).unwrap().into()),
    )
    .await
    .expect("no answer")
    .expect("request failed");
    serde_json::from_slice(&msg.payload).unwrap()
}

/// Asks until the answer is no longer "received": a resend of a message still running (or whose
/// result is not committed yet) is answered "received", a resend of a finished one "done" from
/// its record — never run again.
async fn ask_until_finished(client: &async_nats::Client, env: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = ask(client, env).await;
        if a["status"] != "received" || tokio::time::Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finding 7 (log). 20,000 malformed payloads to a node write a bounded number of WARN lines:
/// at most 20 a minute per sender (here per subject, the sender being unreadable) and a
/// summary of how many were left out — before the fix, one WARN line each (20,000 lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_flood_writes_few_log_lines() {
    let warnings = captured_warnings();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let node = test_node("logship", &urls, dir.path())
        .access(AccessList::default_for("central").allow("tester", "echo"))
        .start()
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    for i in 0..20_000 {
        client
            .publish("logship.command.echo", format!("{{not json {i}").into())
            .await
            .unwrap();
    }
    // Answered after every junk payload before it (one connection, one subscription, in order).
    let ok = ask(
        &client,
        &raw_envelope("tester", "logship", "echo", &["after"], 7, 1),
    )
    .await;
    assert_eq!(ok["status"], "done", "{ok}");
    let text = String::from_utf8_lossy(&warnings.lock().unwrap()).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("logship.command.echo"))
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "20000 malformed payloads: {} WARN lines ({bytes} bytes)",
        lines.len()
    );
    assert!(
        lines.len() <= 25,
        "{} WARN lines for 20,000 malformed payloads",
        lines.len()
    );
    node.stop().await;
}

/// Finding 7 (store). 20,000 refused messages (shellCommand from a sender allowed only echo)
/// grow the receiver's store by less than 1 MB — before the fix a full refused record each was
/// kept for 7 days (+7.5 MB) — and a resend of a refused message is still answered rejected
/// and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_flood_does_not_grow_the_store_and_resends_stay_refused() {
    let _ = captured_warnings();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let node = test_node("refship", &urls, dir.path())
        .access(AccessList::default_for("central").allow("tester", "echo"))
        .start()
        .await
        .unwrap();
    let db = dir.path().join("refship").join("steward.redb");
    let before = std::fs::metadata(&db).unwrap().len();
    let ran = dir.path().join("ran.txt");
    let cmd = format!("echo ran >> {}", ran.display());
    let client = async_nats::connect(server.url()).await.unwrap();
    let n = 20_000;
    for seq in 1..=n {
        let env = raw_envelope(
            "tester",
            "refship",
            "shellCommand",
            &["sh", "-c", &cmd],
            7,
            seq,
        );
        client
            .publish(
                "refship.command.shellCommand",
                serde_json::to_vec(&env).unwrap().into(),
            )
            .await
            .unwrap();
    }
    let ok = ask(
        &client,
        &raw_envelope("tester", "refship", "echo", &["after"], 7, 1),
    )
    .await;
    assert_eq!(ok["status"], "done", "{ok}");
    let after = std::fs::metadata(&db).unwrap().len();
    println!(
        "{n} refused messages: store {before} -> {after} bytes ({:+})",
        after as i64 - before as i64
    );
    assert!(
        after < before + 1_000_000,
        "the store grew by {} bytes",
        after - before
    );
    let again = ask(
        &client,
        &raw_envelope(
            "tester",
            "refship",
            "shellCommand",
            &["sh", "-c", &cmd],
            7,
            5,
        ),
    )
    .await;
    assert_eq!(again["status"], "rejected", "{again}");
    assert!(
        again["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("tester"),
        "{again}"
    );
    // The last one was decided too (a message past the stream's position would get "gap").
    let last = ask(
        &client,
        &raw_envelope(
            "tester",
            "refship",
            "shellCommand",
            &["sh", "-c", &cmd],
            7,
            n,
        ),
    )
    .await;
    assert_eq!(last["status"], "rejected", "{last}");
    assert!(!ran.exists(), "a refused command ran");
    node.stop().await;
}

/// A time-based epoch as a store made at `ms` has (steward/src/store/mod.rs: tag bit 62, the time
/// in ms from bit 16).
fn epoch_at(ms: u64) -> u64 {
    (1 << 62) | (ms << 16) | 0x5a5a
}

/// How many stream positions a stopped node's store keeps for `from`.
fn positions_of(db: &Path, from: &str) -> usize {
    use redb::ReadableDatabase;
    let db = redb::Database::open(db).unwrap();
    let t = db.begin_read().unwrap();
    let table = t
        .open_table(redb::TableDefinition::<&str, u64>::new("inbox_streams"))
        .unwrap();
    let (lo, hi) = (format!("{from}/"), format!("{from}0"));
    table.range(lo.as_str()..hi.as_str()).unwrap().count()
}

/// Finding 7 (stream positions). 20,000 (5,000 in the short suite) echoes each from a new store (epoch) of the same sender
/// left 20,000 stream positions, kept forever (+9 MB). Epochs are now the store's creation
/// time: a receiver forgets the positions of a sender's earlier stores once a newer one sends,
/// and refuses anything from an earlier store — so deduplication holds: a captured command of
/// an old store never runs, and the current store's stream still refuses replays.
/// Within one store, at most 1,024 streams (subjects) per sender are kept; a new one beyond is
/// refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_positions_stay_bounded_without_weakening_deduplication() {
    let _ = captured_warnings();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let node = test_node("epship", &urls, dir.path())
        .access(
            AccessList::default_for("central")
                .allow("tester", "echo")
                .allow("tester", "shellCommand"),
        )
        .start()
        .await
        .unwrap();
    let db = dir.path().join("epship").join("steward.redb");
    let ran = dir.path().join("ran.txt");
    let cmd = |tag: &str| format!("echo {tag} >> {}", ran.display());
    let client = async_nats::connect(server.url()).await.unwrap();
    let base = now_ms() - 3_600_000;
    let n = steward_tests::faults::scale(5_000, 20_000);
    // A command from the first store, to replay later.
    let first = raw_envelope(
        "tester",
        "epship",
        "shellCommand",
        &["sh", "-c", &cmd("first")],
        epoch_at(base),
        1,
    );
    // Under load the run may outlast the 20 ms in which the answer carries the result.
    assert_eq!(ask_until_finished(&client, &first).await["status"], "done");
    for i in 1..=n {
        let env = raw_envelope("tester", "epship", "echo", &["x"], epoch_at(base + i), 1);
        client
            .publish(
                "epship.command.echo",
                serde_json::to_vec(&env).unwrap().into(),
            )
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let newest = epoch_at(base + n + 1);
    let now = raw_envelope(
        "tester",
        "epship",
        "shellCommand",
        &["sh", "-c", &cmd("newest")],
        newest,
        1,
    );
    // Answered after the flood (one connection, in order); the flood may take longer than
    // one request's timeout on a slow machine, so ask again until then.
    let answer = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            client.request(
                "epship.command.shellCommand",
                serde_json::to_vec(&now).unwrap().into(),
            ),
        )
        .await
        {
            Ok(Ok(m)) => break serde_json::from_slice::<Value>(&m.payload).unwrap(),
            _ if started.elapsed() < Duration::from_secs(120) => continue,
            _ => panic!("no answer within 120 s of the flood"),
        }
    };
    assert!(
        answer["status"] == "done" || answer["status"] == "received",
        "{answer}"
    );
    println!("{n} messages from as many stores: {:?}", started.elapsed());
    let newest_ran = steward_tests::wait_until_async(WAIT, || {
        std::fs::read_to_string(&ran).is_ok_and(|t| t.contains("newest"))
    })
    .await;
    assert!(newest_ran);

    // Replays: the first store's command is refused (its positions are gone, it still never
    // runs); the newest store's command is answered from its record, not run again.
    let replay = ask(&client, &first).await;
    assert_eq!(replay["status"], "rejected", "{replay}");
    assert!(
        replay["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("earlier store"),
        "{replay}"
    );
    let again = ask_until_finished(&client, &now).await;
    assert_eq!(again["status"], "done", "{again}");
    let ran_lines = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(
        ran_lines.lines().collect::<Vec<_>>(),
        vec!["first", "newest"]
    );

    // Many subjects within one store: at most 1,024 positions, then a clear refusal.
    let mut refused = None;
    for i in 0..1_100u64 {
        let env = raw_envelope("tester", "epship", &format!("m{i}"), &[], newest, 1);
        let a = ask(&client, &env).await;
        if a["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stream positions")
        {
            refused = Some((i, a));
            break;
        }
    }
    let (at, answer) = refused.expect("a sender opened more than 1,100 streams");
    assert_eq!(answer["status"], "rejected", "{answer}");
    node.stop().await;
    let kept = positions_of(&db, "tester");
    println!("{n} stores of one sender, then {at} subjects: {kept} stream positions kept");
    assert!(kept <= 1_024, "{kept} positions kept");
    assert!(at >= 1_000, "refused already at subject {at}");
}
