//! Two nodes on a real nats-server: commands and events, results, ordering, offline peers.

use std::time::Duration;

use steward::{ErrorKind, Kind, Message, MessageState, Refusal, ResultStatus};
use steward_tests::nodes::test_node;
use steward_tests::recorder::recording_node;
use steward_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_shell_command_round_trip() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();

    let report = central
        .send_json(r#"[{"toNode":"ship1","data":["bash","-c","echo hello from $0; exit 0"],"commandOrEvent":"command","method":"shellCommand"}]"#)
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let receipt = &report.accepted[0].1;
    // Several waiters on one message all get the result.
    let (a, b) = tokio::join!(receipt.result(), central.result(&receipt.id));
    assert_eq!(a.unwrap(), b.unwrap());
    let result = tokio::time::timeout(Duration::from_secs(20), receipt.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.status, ResultStatus::Ok);
    assert_eq!(result.stdout, "hello from bash\n");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.node, "ship1");

    let st = central.message(&receipt.id).await.unwrap().unwrap();
    assert_eq!(st.state, MessageState::Completed);
    // The audit log gets the line with everything needed to resend it.
    let audit = dir.path().join("central").join(steward::AUDIT_LOG);
    assert!(
        steward_tests::wait_until_async(Duration::from_secs(10), || std::fs::read_to_string(
            &audit
        )
        .map(|s| s.contains(&receipt.id))
        .unwrap_or(false))
        .await,
        "audit line missing"
    );
    let line = std::fs::read_to_string(&audit).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["message"]["data"][2], "echo hello from $0; exit 0");
    let back = steward::parse_value(&v["message"]);
    assert_eq!(
        back.messages.len(),
        1,
        "audit message must parse as a resendable message"
    );

    let dests = central.destinations().unwrap();
    let d = dests.iter().find(|d| d.node == "ship1").unwrap();
    assert_eq!((d.pending, d.completed, d.failed), (0, 1, 0));
    ship1.stop().await;
    central.stop().await;
}

/// The result reaches the caller before the sender's own final-state commit; a status read
/// that follows must still count it (read-your-writes), never show it pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_right_after_a_result_counts_it_completed() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    for i in 1..=30u64 {
        let id = format!("status-{i:03}");
        let m = Message::command("ship1", "echo", ["x"]).with_id(&id);
        let receipt = central.send(m).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), receipt.result())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.stdout, "x");
        let dests = central.destinations().unwrap();
        let d = dests.iter().find(|d| d.node == "ship1").unwrap();
        assert_eq!((d.completed, d.pending), (i, 0), "round {i}");
        let recent = central.recent_messages(1).unwrap();
        assert_eq!(
            (recent[0].id.as_str(), recent[0].state),
            (id.as_str(), MessageState::Completed)
        );
        let st = central.message(&id).await.unwrap().unwrap();
        assert_eq!(st.state, MessageState::Completed);
    }
    ship1.stop().await;
    central.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_custom_methods_run_in_order() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let ship = test_node("ship2", &urls, dir.path())
        .method(
            "record",
            steward::Method::new(Kind::Event, move |req: steward::Request| {
                let s = s2.clone();
                async move {
                    s.lock().unwrap().push(req.data[0].clone());
                    steward::MethodResult::ok("")
                }
            }),
        )
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..500)
        .map(|i| Message::event("ship2", "record", [i.to_string()]))
        .collect();
    let receipts = central.send_batch(msgs).await.unwrap();
    for r in &receipts {
        tokio::time::timeout(Duration::from_secs(30), r.result())
            .await
            .unwrap()
            .unwrap();
    }
    let got = seen.lock().unwrap().clone();
    let want: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(
        got, want,
        "events must run exactly once each, in the order sent"
    );
    central.stop().await;
    ship.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_reach_the_sender() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    let ship2 = test_node("ship2", &urls, dir.path()).start().await.unwrap();
    let errors = ship2.subscribe();
    // ship2 is not central: ship1's default access list refuses it.
    let r = ship2
        .send(Message::command("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), r.result())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("access list"), "{e}");
    // The receiver says why as a code, not only in words: the sender's API tells an access
    // refusal by its variant (Python raises `NotAllowed` by it).
    assert!(matches!(e, steward::Error::NotAllowed { .. }), "{e:?}");
    let st = r.status().await.unwrap();
    assert_eq!(st.refusal, Some(Refusal::NotAllowed), "{st:?}");
    // Unknown method.
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let r = central
        .send(Message::command("ship1", "noSuchMethod", ["x"]))
        .await
        .unwrap();
    let e = r.result().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("does not serve"), "{e}");
    assert!(matches!(e, steward::Error::Rejected { .. }), "{e:?}");
    assert_eq!(r.status().await.unwrap().refusal, Some(Refusal::NotServed));
    // Kind mismatch.
    let r = central
        .send(Message::event("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    assert!(r
        .result()
        .await
        .unwrap_err()
        .to_string()
        .contains("served as a command"));
    assert_eq!(r.status().await.unwrap().refusal, Some(Refusal::NotServed));
    drop(errors);
    for n in [ship1, ship2, central] {
        n.stop().await;
    }
}

/// Must hold: after the retention period the sender forgets finished messages and the receiver
/// its dedup records; the message ran once, and an id reused after that is a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_forgets_finished_but_never_reruns() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let (ship, rec) = recording_node(
        test_node("ship1", &urls, dir.path()).retention(Duration::ZERO),
        Kind::Command,
    )
    .await;
    let central = test_node("central", &urls, dir.path())
        .retention(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let r = central
        .send(Message::command("ship1", "record", ["once"]).with_id("fixed-1"))
        .await
        .unwrap();
    r.result().await.unwrap();
    // Let the result's own ACK complete at the receiver before pruning.
    assert!(
        steward_tests::wait_until_future(Duration::from_secs(5), || {
            let s = ship.clone();
            async move { s.destinations().unwrap().iter().all(|d| d.pending == 0) }
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, sent) = central.prune().await.unwrap();
    let (dedup, _) = ship.prune().await.unwrap();
    assert!(sent >= 1 && dedup >= 1, "pruned sent={sent} dedup={dedup}");
    assert!(central.message("fixed-1").await.unwrap().is_none());
    // The same id again is a new message to the sender, with a new sequence number: it runs.
    let again = central
        .send(Message::command("ship1", "record", ["twice"]).with_id("fixed-1"))
        .await
        .unwrap();
    again.result().await.unwrap();
    assert_eq!(rec.seen(), vec!["once".to_string(), "twice".to_string()]);
    central.stop().await;
    ship.stop().await;
}

/// Repeatable methods are run by the receiver itself when nothing of their stream waits, and
/// recorded once (done with the result). What must hold: every message completes with its own
/// result, in the sender's order, even when one run overruns the receiver's budget and the
/// stream falls back to its executor (the overrun run is cancelled and run again there, which a
/// repeatable method allows; no completed run is out of order or repeated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_methods_run_at_the_receiver_in_order() {
    use std::sync::{Arc, Mutex};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let completed = Arc::new(Mutex::new(Vec::<u32>::new()));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (c2, g2) = (completed.clone(), gate.clone());
    let ship = test_node("ship1", &urls, dir.path())
        .method(
            "rep",
            steward::Method::new(Kind::Command, move |req: steward::Request| {
                let (c, g) = (c2.clone(), g2.clone());
                async move {
                    let n: u32 = req.data[0].parse().unwrap();
                    if n == 5 {
                        // Overruns the receiver's budget: its first run is cancelled.
                        g.notified().await;
                    }
                    c.lock().unwrap().push(n);
                    steward::MethodResult::ok(format!("ran {n}"))
                }
            })
            .repeatable(),
        )
        .allow("*", "rep")
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    // One at a time first: each round trip is one record at the receiver.
    let before = ship.store_stats().jobs;
    for n in 0..3u32 {
        let r = central
            .send(Message::command("ship1", "rep", [n.to_string()]))
            .await
            .unwrap();
        assert_eq!(r.result().await.unwrap().stdout, format!("ran {n}"));
    }
    // One record per message (two would be "received" then "done"); a run descheduled past
    // the receiver's budget on a loaded machine takes the two-record path, hence "fewer than 6".
    let jobs = ship.store_stats().jobs - before;
    assert!(
        jobs < 6,
        "a repeatable method run by the receiver is recorded once per message: {jobs} jobs"
    );
    // Then a burst whose message 5 blocks until the ones after it are queued behind it.
    let mut receipts = Vec::new();
    for n in 3..40u32 {
        receipts.push(
            central
                .send(Message::command("ship1", "rep", [n.to_string()]))
                .await
                .unwrap(),
        );
    }
    // Message 5 waits; nothing after it may complete first.
    let five = receipts[2].clone();
    assert!(
        steward_tests::wait_until_async(Duration::from_secs(10), || {
            let c = completed.lock().unwrap();
            c.contains(&4)
        })
        .await
    );
    assert_eq!(*completed.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    gate.notify_waiters();
    gate.notify_one();
    assert_eq!(five.result().await.unwrap().stdout, "ran 5");
    for (i, r) in receipts.iter().enumerate() {
        let n = i as u32 + 3;
        assert_eq!(r.result().await.unwrap().stdout, format!("ran {n}"));
    }
    assert_eq!(*completed.lock().unwrap(), (0..40).collect::<Vec<_>>());
    central.stop().await;
    ship.stop().await;
}

/// Fire-and-forget messages finish as soon as they are published, so nothing answers them. What
/// must hold: when more are queued than the send window holds, the publisher goes on loading
/// the rest by itself (no ACK, result or new message is needed to wake it) and all of them run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_backlog_larger_than_the_window_is_all_delivered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let ship = test_node("ship1", &urls, dir.path())
        .allow("*", "count")
        .method(
            "count",
            steward::Method::new(Kind::Event, move |_| {
                h.fetch_add(1, Ordering::SeqCst);
                async { steward::MethodResult::ok("") }
            }),
        )
        .start()
        .await
        .unwrap();
    let central = test_node("central", &urls, dir.path())
        .window(4)
        .start()
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..50)
        .map(|i| Message::event("ship1", "count", [i.to_string()]).with_ack_timeout(Duration::ZERO))
        .collect();
    central.send_batch(msgs).await.unwrap();
    assert!(
        steward_tests::wait_until_async(Duration::from_secs(20), || hits.load(Ordering::SeqCst)
            >= 50)
        .await,
        "only {} of 50 fire-and-forget messages ran",
        hits.load(Ordering::SeqCst)
    );
    central.stop().await;
    ship.stop().await;
}

/// A message's retries budget holds across a sender restart, and `status` shows the true count.
/// ship1's subject has a silent subscriber (a raw client that never answers), so every attempt
/// times out; the raw client counts every publish. With `retries = 5` the message must be
/// published exactly 6 times in all — 3 or more before central restarts, the rest after — and
/// end *failed* with 6 attempts. Before the fix a restarted sender started again from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hold_across_a_sender_restart() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut silent = raw.subscribe("ship1.command.echo").await.unwrap();
    raw.flush().await.unwrap();
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = {
        let published = published.clone();
        tokio::spawn(async move {
            while silent.next().await.is_some() {
                published.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let count = || published.load(std::sync::atomic::Ordering::SeqCst);
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let receipt = central
        .send(Message::command("ship1", "echo", ["x"]).with_retries(5))
        .await
        .unwrap();
    assert!(steward_tests::wait_until_async(Duration::from_secs(30), || count() >= 3).await);
    central.stop().await;
    let before = count();
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let shown = central.message(&receipt.id).await.unwrap().unwrap();
    assert!(
        shown.attempts >= (before as u32).saturating_sub(1),
        "status after the restart shows {} attempts, {before} were made",
        shown.attempts
    );
    let status = tokio::time::timeout(Duration::from_secs(60), central.wait(&receipt.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state, MessageState::Failed, "{status:?}");
    raw.flush().await.unwrap();
    // A publish in flight when the sender stopped may not have been counted as failed yet:
    // at most one extra, never a fresh budget.
    let total = count();
    assert!(
        (6..=7).contains(&total),
        "published {total} times in all ({before} before the restart) for retries = 5"
    );
    assert_eq!(status.attempts, 6, "{status:?}");
    counter.abort();
    central.stop().await;
}

/// Other local users read nothing: a data directory steward creates is 0700, and every file it
/// writes there — the store, `audit.log`, `errors.log`, `textlogging/`, the key — is 0600
/// (only `node.pub`, the public key, is readable by others). Before the fix the store and the
/// logs were 0644 in a 0755 directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    let ok = central
        .send(Message::command("ship1", "shellCommand", ["true"]))
        .await
        .unwrap();
    let refused = central
        .send(Message::command("ship1", "nosuch", ["x"]))
        .await
        .unwrap();
    let logged = ship1
        .send(Message::event("central", "textLogging", ["a line"]))
        .await
        .unwrap();
    for r in [&ok, &refused, &logged] {
        let _ = tokio::time::timeout(Duration::from_secs(20), r.wait())
            .await
            .unwrap();
    }
    let errors_log = dir.path().join("central").join(steward::ERRORS_LOG);
    let audit_log = dir.path().join("central").join(steward::AUDIT_LOG);
    assert!(
        steward_tests::wait_until_async(Duration::from_secs(20), || errors_log.exists()
            && audit_log.exists())
        .await
    );
    central.stop().await;
    ship1.stop().await;
    let mut checked = 0;
    let mut stack = vec![dir.path().join("central"), dir.path().join("ship1")];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.file_name().is_some_and(|n| n != steward::PUBLIC_KEY_FILE) {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} files checked");
}

/// A result is handed to `result()` as soon as the receiver holds it durably, before the
/// sender's own final-state commit; what must hold: from that moment the message's status
/// reads completed with that result (never "sent" or "received" again), `wait()` returns the
/// same, and the final state and listeners follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_returned_early_is_the_status_from_then_on() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![server.url()];
    let central = test_node("central", &urls, dir.path())
        .start()
        .await
        .unwrap();
    let ship1 = test_node("ship1", &urls, dir.path()).start().await.unwrap();
    for i in 0..200 {
        let r = central
            .send(Message::command("ship1", "echo", [format!("n{i}")]))
            .await
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(20), r.result())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.stdout, format!("n{i}"));
        let st = r.status().await.unwrap();
        assert_eq!(st.state, MessageState::Completed, "{i}: {st:?}");
        assert_eq!(st.result.as_ref(), Some(&res), "{i}");
        let done = r.wait().await.unwrap();
        assert_eq!(
            (done.state, done.result.as_ref()),
            (MessageState::Completed, Some(&res))
        );
    }
    ship1.stop().await;
    central.stop().await;
}
