//! The core promises under failure: links cut, servers killed, ACKs lost, processes SIGKILLed.
//! Every test states what must hold and fails if it breaks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use steward::{Kind, Message, MessageState, ResultStatus};
use steward_tests::nodes::test_node;
use steward_tests::recorder::recording_node;
use steward_tests::recorder::Recorder;
use steward_tests::{wait_until_async, Direction, NatsServer, TcpProxy};

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m-{i}")).collect()
}

fn record_msgs(to: &str, range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| Message::command(to, "record", [format!("m-{i}")]))
        .collect()
}

async fn all_results(receipts: &[steward::Receipt], within: Duration) {
    for r in receipts {
        let res = tokio::time::timeout(within, r.result())
            .await
            .expect("result in time")
            .expect("result");
        assert_eq!(res.status, ResultStatus::Ok);
    }
}

/// Must hold: messages sent while the receiver's link is cut arrive after it is restored,
/// each executed exactly once, in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_and_restored_loses_nothing() {
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let (ship, rec) = recording_node(
        test_node("ship1", &[proxy.url()], dir.path()),
        Kind::Command,
    )
    .await;
    let central = test_node("central", &[server.url()], dir.path())
        .start()
        .await
        .unwrap();
    let mut receipts = central
        .send_batch(record_msgs("ship1", 0..100))
        .await
        .unwrap();
    all_results(&receipts, Duration::from_secs(20)).await;
    proxy.cut();
    assert!(wait_until_async(Duration::from_secs(5), || !ship.is_connected()).await);
    receipts.extend(
        central
            .send_batch(record_msgs("ship1", 100..300))
            .await
            .unwrap(),
    );
    // While cut, nothing new can run.
    let id = receipts[150].id.clone();
    assert!(
        steward_tests::wait_until_future(Duration::from_secs(5), || {
            let c = central.clone();
            let id = id.clone();
            async move { c.message(&id).await.unwrap().unwrap().attempts >= 1 }
        })
        .await
    );
    assert_eq!(rec.len(), 100);
    proxy.restore();
    all_results(&receipts, Duration::from_secs(30)).await;
    rec.assert_exactly_once_in_order(&ids(0..300));
    central.stop().await;
    ship.stop().await;
}

/// Must hold: a broker killed and restarted mid-stream loses nothing; sends while it is down
/// are accepted durably and delivered once it is back, exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let urls = vec![server.url()];
    let ship = test_node("ship1", &urls, dir.path())
        .method("record", rec.method(Kind::Event))
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let evs = |r: std::ops::Range<usize>| -> Vec<Message> {
        r.map(|i| Message::event("ship1", "record", [format!("m-{i}")]))
            .collect()
    };
    let mut receipts = central.send_batch(evs(0..200)).await.unwrap();
    server.kill();
    receipts.extend(central.send_batch(evs(200..400)).await.unwrap());
    server.restart();
    receipts.extend(central.send_batch(evs(400..500)).await.unwrap());
    all_results(&receipts, Duration::from_secs(30)).await;
    rec.assert_exactly_once_in_order(&ids(0..500));
    central.stop().await;
    ship.stop().await;
}

/// Must hold: when only the ACK direction is lost, the receiver has run the commands and the
/// sender's resends are answered from the receiver's record — nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_never_run_twice() {
    let server = NatsServer::start();
    let proxy = TcpProxy::start(server.addr());
    let dir = tempfile::tempdir().unwrap();
    let (ship, rec) = recording_node(
        test_node("ship1", &[server.url()], dir.path()),
        Kind::Command,
    )
    .await;
    let central = test_node("central", &[proxy.url()], dir.path())
        .start()
        .await
        .unwrap();
    assert!(wait_until_async(Duration::from_secs(5), || central.is_connected()).await);
    proxy.block_direction(Direction::ServerToClient);
    let receipts = central
        .send_batch(record_msgs("ship1", 0..50))
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || rec.len() == 50).await,
        "receiver ran {}",
        rec.len()
    );
    // Let the sender time out and resend at least once while deaf.
    let first = receipts[0].id.clone();
    assert!(
        steward_tests::wait_until_future(Duration::from_secs(10), || {
            let c = central.clone();
            let id = first.clone();
            async move { c.message(&id).await.unwrap().unwrap().attempts >= 2 }
        })
        .await,
        "sender never resent"
    );
    proxy.unblock();
    all_results(&receipts, Duration::from_secs(30)).await;
    rec.assert_exactly_once_in_order(&ids(0..50));
    central.stop().await;
    ship.stop().await;
}

/// Must hold: an offline node never delays other nodes; its messages wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_node_does_not_delay_others() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let (ship2, rec) = recording_node(test_node("ship2", &urls, dir.path()), Kind::Command).await;
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let stuck = central
        .send_batch(record_msgs("ship1", 0..10))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let receipts = central
        .send_batch(record_msgs("ship2", 0..1000))
        .await
        .unwrap();
    all_results(&receipts, Duration::from_secs(30)).await;
    let took = started.elapsed();
    rec.assert_exactly_once_in_order(&ids(0..1000));
    for r in &stuck {
        let st = r.status().await.unwrap();
        assert!(
            matches!(st.state, MessageState::Queued | MessageState::Sent),
            "{st:?}"
        );
    }
    eprintln!("1000 commands to ship2 with ship1 offline: {took:?}");
    assert!(took < Duration::from_secs(20));
    central.stop().await;
    ship2.stop().await;
}

/// Must hold: a message whose retries run out is parked as failed and the queue moves on; the
/// failed one is never executed, the next one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_then_queue_moves_on() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e2 = errors.clone();
    central.on_error(move |e| e2.lock().unwrap().push(e.clone()));
    let doomed = central
        .send(Message::command("ship3", "record", ["m-doomed"]).with_retries(2))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), doomed.result())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), steward::ErrorKind::DeliveryFailed);
    assert!(err.to_string().contains("3 attempts"), "{err}");
    let st = doomed.status().await.unwrap();
    assert_eq!((st.state, st.attempts), (MessageState::Failed, 3));
    assert!(
        wait_until_async(Duration::from_secs(5), || errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.message_id.as_deref() == Some(doomed.id.as_str())))
        .await,
        "the failure must reach the error callbacks"
    );
    let next = central
        .send(Message::command("ship3", "record", ["m-next"]))
        .await
        .unwrap();
    let (ship3, rec) = recording_node(test_node("ship3", &urls, dir.path()), Kind::Command).await;
    tokio::time::timeout(Duration::from_secs(20), next.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.seen(),
        vec!["m-next".to_string()],
        "the failed message must never run"
    );
    central.stop().await;
    ship3.stop().await;
}

/// Must hold: a message past its TTL is neither sent nor run, and is reported as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_never_run() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let r = central
        .send(Message::command("ship4", "record", ["m-old"]).with_ttl(Duration::from_millis(300)))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), r.result())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), steward::ErrorKind::Expired);
    let (ship4, rec) = recording_node(test_node("ship4", &urls, dir.path()), Kind::Command).await;
    let ok = central
        .send(Message::command("ship4", "record", ["m-new"]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), ok.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.seen(), vec!["m-new".to_string()]);
    central.stop().await;
    ship4.stop().await;
}

/// Must hold: a command running longer than ackTimeout is not resent and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_command_is_not_resent() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let ship = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let marker = dir.path().join("runs.txt");
    let script = format!("echo run >> {}; sleep 2; echo finished", marker.display());
    let r = central
        .send(
            Message::command("ship1", "shellCommand", ["bash", "-c", &script])
                .with_ack_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), r.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.stdout, "finished\n");
    assert!(res.duration_ms >= 2000);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    central.stop().await;
    ship.stop().await;
}

/// Must hold: fire-and-forget messages (ackTimeout 0) are sent once and report no result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let (ship, rec) = recording_node(test_node("ship1", &urls, dir.path()), Kind::Event).await;
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let r = central
        .send(Message::event("ship1", "record", ["ping"]).with_ack_timeout(Duration::ZERO))
        .await
        .unwrap();
    let err = r.result().await.unwrap_err();
    assert_eq!(err.kind(), steward::ErrorKind::NoResult);
    assert!(wait_until_async(Duration::from_secs(5), || rec.len() == 1).await);
    central.stop().await;
    ship.stop().await;
}

/// Must hold: failures flow to central's errors.log, as JSON lines with node, id and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_central_error_log() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    let ship2 = test_node("ship2", &urls, dir.path()).start().await.unwrap();
    // ship2 may not command ship1: rejected at ship1, reported by ship2 to central.
    let r = ship2
        .send(Message::command("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    assert!(r.result().await.is_err());
    let log = dir.path().join("central").join(steward::ERRORS_LOG);
    assert!(
        wait_until_async(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .map(|s| s.contains(&r.id))
            .unwrap_or(false))
        .await,
        "no error line at central"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains(&r.id)).unwrap()).unwrap();
    assert_eq!(line["node"], "ship2");
    assert_eq!(line["kind"], "rejected");
    assert!(line["reason"].as_str().unwrap().contains("access list"));
    for n in [central, ship1, ship2] {
        n.stop().await;
    }
}

/// Must hold: after a restart the sender still knows every message's state, and resumes the
/// unfinished ones in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_restart_keeps_state_and_resumes() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let receipts = central
        .send_batch(record_msgs("ship5", 0..20))
        .await
        .unwrap();
    let queued: Vec<String> = receipts.iter().map(|r| r.id.clone()).collect();
    central.stop().await;
    drop(central);
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    for id in &queued {
        let st = central
            .message(id)
            .await
            .unwrap()
            .expect("known after restart");
        assert!(!st.state.is_final());
    }
    let (ship5, rec) = recording_node(test_node("ship5", &urls, dir.path()), Kind::Command).await;
    for id in &queued {
        let res = tokio::time::timeout(Duration::from_secs(20), central.result(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status, ResultStatus::Ok);
    }
    rec.assert_exactly_once_in_order(&ids(0..20));
    let cancelled = central
        .send(Message::command("nowhere", "record", ["x"]))
        .await
        .unwrap();
    assert!(central.cancel(&cancelled.id).await.unwrap());
    assert_eq!(
        cancelled.result().await.unwrap_err().kind(),
        steward::ErrorKind::Cancelled
    );
    central.stop().await;
    ship5.stop().await;
}

fn test_node_bin() -> &'static str {
    env!("CARGO_BIN_EXE_steward-test-node")
}

/// A `steward-test-node` process with its stdout lines on a channel. It is SIGKILLed when
/// dropped, so a failing test never leaves one behind (nor a reader blocking the runtime).
struct NodeProc {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl NodeProc {
    fn spawn(args: &[&str]) -> NodeProc {
        let mut child = Command::new(test_node_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn steward-test-node");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProc { child, lines }
    }

    /// The next line matching `pred`, or `None` once the process has closed its stdout.
    /// Panics after `within`, naming `what` was awaited.
    async fn line(
        &mut self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if pred(&l) => return Some(l),
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(_) => panic!("steward-test-node: no {what} within {within:?}"),
            }
        }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Must hold: a sender SIGKILLed at 20 points mid-stream and restarted each time gets every
/// message `send` accepted executed exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_sigkill_cycles_exactly_once_in_order() {
    const COUNT: usize = 400;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let (ship, rec) = recording_node(
        test_node("ship1", &urls, dir.path()).allow("*", "record"),
        Kind::Command,
    )
    .await;
    let d = dir.path().to_str().unwrap().to_owned();
    let url = server.url();
    let count = COUNT.to_string();
    let mut max_accepted: i64 = -1;
    for cycle in 0..20 {
        let mut sender = NodeProc::spawn(&["send", "central", &url, &d, "ship1", &count]);
        // Kill after a varying number of fresh acceptances (some cycles die right at start).
        let want_new = (cycle * 7) % 23;
        let target = max_accepted + want_new as i64;
        let mut last = -1i64;
        while let Some(line) = sender
            .line(Duration::from_secs(60), "acceptance", |l| {
                l.starts_with("accepted ")
            })
            .await
        {
            last = line["accepted ".len()..].parse().unwrap();
            if last >= target {
                break;
            }
        }
        sender.sigkill();
        max_accepted = max_accepted.max(last);
    }
    assert!(max_accepted > 0);
    let mut sender = NodeProc::spawn(&["send", "central", &url, &d, "ship1", &count]);
    assert!(
        sender
            .line(
                Duration::from_secs(60),
                "\"done\" (every result back)",
                |l| l == "done"
            )
            .await
            .is_some(),
        "the restarted sender ended before all results came back"
    );
    rec.assert_exactly_once_in_order(&ids(0..COUNT));
    ship.stop().await;
}

/// Must hold: a receiver SIGKILLed in the middle of a command reports the outcome as unknown
/// after restart and does not run it again; later messages on the subject still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_command_reports_unknown() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let url = server.url();
    let mut ship = NodeProc::spawn(&["serve", "ship1", &url, &d]);
    let central = test_node("central", std::slice::from_ref(&url), dir.path())
        .start()
        .await
        .unwrap();
    let marker = dir.path().join("runs.txt");
    let script = format!("echo run >> {}; sleep 3", marker.display());
    let r = central
        .send(Message::command(
            "ship1",
            "shellCommand",
            ["bash", "-c", &script],
        ))
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(20), || marker.exists()).await,
        "command never started"
    );
    ship.sigkill();
    let mut ship = NodeProc::spawn(&["serve", "ship1", &url, &d]);
    let res = tokio::time::timeout(Duration::from_secs(20), r.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status, ResultStatus::Unknown, "{res:?}");
    assert!(res.error.unwrap().contains("not run again"));
    let next = central
        .send(Message::command("ship1", "echo", ["still", "alive"]))
        .await
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), next.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.stdout, "still alive");
    // Let the orphaned first run finish: it must still be the only run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    ship.sigkill();
    central.stop().await;
}

/// Must hold: a resend answered "received" while the first copy is still running gets its
/// result as a message, even when the result is also answered inline to the first copy's
/// reply inbox, whose sender is gone (restarted, or its link cut): its result is never lost.
/// Played on the wire by a raw client as `central`, so both copies are under the test's
/// control; repeated until at least one first copy is answered inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_answered_received_still_gets_its_result() {
    use futures::{FutureExt, StreamExt};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let ship = test_node("ship1", &[server.url()], dir.path())
        .method(
            "gate",
            steward::Method::new(Kind::Command, move |_r: steward::Request| {
                let (tx, g) = (started_tx.clone(), g.clone());
                async move {
                    let _ = tx.send(());
                    g.acquire().await.unwrap().forget();
                    steward::MethodResult::ok("through")
                }
            }),
        )
        .start()
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut results = client.subscribe("central.event._result").await.unwrap();
    let mut inline_runs = 0;
    for seq in 1..=20u64 {
        let id = format!("p-{seq}");
        let env = serde_json::json!({"id": id, "from": "central", "to": "ship1",
            "kind": "command", "method": "gate", "data": [], "epoch": 7, "seq": seq,
            "ack": true, "method_timeout_ms": 10000});
        let payload: bytes::Bytes = serde_json::to_vec(&env).unwrap().into();
        let (first, second) = (client.new_inbox(), client.new_inbox());
        let mut first_sub = client.subscribe(first.clone()).await.unwrap();
        let mut second_sub = client.subscribe(second.clone()).await.unwrap();
        // The first copy; once it runs, the resend (from a "restarted" sender).
        loop {
            client
                .publish_with_reply("ship1.command.gate", first.clone(), payload.clone())
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(500), started.recv())
                .await
                .is_ok()
            {
                break;
            }
            // Not subscribed yet (no responders): send the first copy again.
            while first_sub.next().now_or_never().flatten().is_some() {}
        }
        client
            .publish_with_reply("ship1.command.gate", second.clone(), payload.clone())
            .await
            .unwrap();
        let r = next_reply(&mut second_sub).await;
        assert_eq!(r["status"], "received", "the resend of {id}: {r}");
        gate.add_permits(1);
        let r = next_reply(&mut first_sub).await;
        if r["status"] == "done" {
            assert_eq!(r["result"]["stdout"], "through", "{r}");
            inline_runs += 1;
        } else {
            assert_eq!(r["status"], "received", "the first copy of {id}: {r}");
        }
        // Whichever way the first copy was answered, the result also comes as a message.
        let msg = tokio::time::timeout(Duration::from_secs(10), results.next())
            .await
            .unwrap_or_else(|_| panic!("no result message for {id}: it would be lost"))
            .unwrap();
        let res: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(res["result_of"], id.as_str(), "{res}");
        assert_eq!(res["result"]["stdout"], "through", "{res}");
        let ack = serde_json::json!({"id": res["id"], "status": "done"});
        client
            .publish(msg.reply.unwrap(), serde_json::to_vec(&ack).unwrap().into())
            .await
            .unwrap();
        if inline_runs >= 3 {
            break;
        }
    }
    assert!(
        inline_runs > 0,
        "no first copy was answered inline in 20 tries"
    );
    ship.stop().await;
}

async fn next_reply(sub: &mut async_nats::Subscriber) -> serde_json::Value {
    let m = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(sub))
        .await
        .expect("a reply in time")
        .unwrap();
    serde_json::from_slice(&m.payload).unwrap()
}

/// Must hold: a message the receiver confirmed ("received") whose result never comes home is
/// not waited for forever: the sender asks the receiver again (after 10 ACK timeouts, at least
/// a second) and takes the result from its answer. Played on the wire: a raw `ship9` that
/// answers the first copy "received" and never sends a result message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_never_comes_home_is_asked_for_again() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("ship9.command.work").await.unwrap();
    client.flush().await.unwrap();
    let central = test_node("central", &[server.url()], dir.path())
        .start()
        .await
        .unwrap();
    let r = central
        .send(Message::command("ship9", "work", ["x"]).with_ack_timeout(Duration::from_millis(100)))
        .await
        .unwrap();
    let ack = serde_json::to_vec(&serde_json::json!({"id": r.id, "status": "received"})).unwrap();
    let mut first: Option<bytes::Bytes> = None;
    let mut answered_at = tokio::time::Instant::now();
    let again = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the sender never asked again")
            .unwrap();
        if let Some(p) = &first {
            assert_eq!(&m.payload, p, "the same message, sent again");
        }
        // Copies within 900 ms of an answer are resends of an ACK that came late (slow
        // machine); answered "received" like the first. A copy after that is the poll.
        if first.is_some() && answered_at.elapsed() >= Duration::from_millis(900) {
            break m;
        }
        first.get_or_insert(m.payload.clone());
        client
            .publish(m.reply.unwrap(), ack.clone().into())
            .await
            .unwrap();
        answered_at = tokio::time::Instant::now();
    };
    let done = serde_json::json!({"id": r.id, "status": "done", "result": {"status": "ok",
        "stdout": "from the record", "stderr": "", "truncated": false, "duration_ms": 1,
        "node": "ship9"}});
    client
        .publish(
            again.reply.unwrap(),
            serde_json::to_vec(&done).unwrap().into(),
        )
        .await
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), r.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.stdout, "from the record");
    central.stop().await;
}

/// Must hold: a start that fails after the store is open (here: the control socket path is
/// too long for a Unix socket) leaves the data directory free, so a corrected start on the
/// same directory succeeds at once — never "data directory in use" — and keeps its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_frees_the_data_directory_at_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Long enough that `<dir>/control.sock.<pid>.tmp` exceeds the 107-byte socket path limit.
    let deep = dir.path().join("d".repeat(100));
    let urls = vec![server.url()];
    let first = test_node("ship1", &urls, &deep).start().await.unwrap();
    let queued = first
        .send(Message::command("nowhere", "record", ["kept"]))
        .await
        .unwrap();
    first.stop().await;
    for attempt in 0..5 {
        let e = test_node("ship1", &urls, &deep)
            .control_socket(true)
            .start()
            .await
            .err()
            .unwrap_or_else(|| panic!("attempt {attempt}: the start should fail"));
        assert!(e.to_string().contains("control socket path"), "{e}");
        let node = test_node("ship1", &urls, &deep)
            .control_socket(false)
            .start()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the corrected start failed: {e}"));
        let st = node.message(&queued.id).await.unwrap().unwrap();
        assert!(
            !st.state.is_final(),
            "still waiting for its destination: {st:?}"
        );
        node.stop().await;
    }
}
