//! Section 4: a backlog queued for an offline node, drained when it comes up; and a sender
//! SIGKILLed with the whole backlog pending, drained after its restart. Each drain rate is set
//! next to raw pipelined request/reply with 1,024 in flight over the same number of messages.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use steward::{Message, MessageState, Notification};

use super::children::builder;
use super::proc::{num, ChildProc};
use super::report::{fmt_num, Row, Target};
use super::throughput::{raw_responder, raw_throughput};
use super::Settings;

fn child_args(mode: &str, rest: &[&str]) -> Vec<String> {
    std::iter::once(mode)
        .chain(rest.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// Runs section 4.
pub async fn run(url: &str, s: &Settings, rows: &mut Vec<Row>, extra: &mut Map<String, Value>) {
    let n = s.backlog;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 tempdir");
    let responder = raw_responder(url, "bench.backlog").await;
    let client = async_nats::connect(url).await.expect("connect");

    // (a) The receiver is offline while the backlog is queued, then comes up.
    let sender = builder("blsend", url, dir.path())
        .start()
        .await
        .expect("sender");
    let mut finished = sender.subscribe();
    let tq = Instant::now();
    for start in (0..n).step_by(1000) {
        let batch = (start..(start + 1000).min(n))
            .map(|i| Message::command("bl1", "echo", ["x"]).with_id(format!("b-{i}")))
            .collect();
        sender.send_batch(batch).await.expect("send_batch");
    }
    let queue_s = tq.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut recv = ChildProc::spawn(&child_args("--serve-child", &["bl1", url, d]), &[]);
    let ready = recv.expect(&["ready"], Duration::from_secs(60)).await;
    let up_s = t0.elapsed().as_secs_f64();
    let (started_ms, connected_ms): (f64, f64) = ready
        .as_ref()
        .map_or((0.0, 0.0), |w| (num(w, 1), num(w, 2)));
    let (mut got, mut failed) = (0, 0);
    let mut first_s = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while ready.is_some() && got < n {
        match tokio::time::timeout_at(deadline, finished.recv()).await {
            Ok(Some(Notification::Finished(m))) if m.id.starts_with("b-") => {
                got += 1;
                first_s.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                if m.state != MessageState::Completed {
                    failed += 1;
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let total_s = t0.elapsed().as_secs_f64();
    let first_s = first_s.unwrap_or(total_s);
    let drain = got.saturating_sub(1) as f64 / (total_s - first_s).max(1e-6);
    let raw = raw_throughput(&client, "bench.backlog", 1024, n).await;
    let mut note = format!(
        "{n} echo commands queued in {} s while the receiver was offline; after the receiver's process was spawned: node started at {} s, connected at {} s, serving at {} s, first completion at {} s (the sender's next resend of its probe: it backs off 0.1 s doubling to at most 0.5 s here, 30 s by default), last at {} s; the drain rate counts from the first completion to the last; raw: pipelined request/reply, 1024 in flight",
        fmt_num(queue_s),
        fmt_num(started_ms / 1000.0),
        fmt_num(connected_ms / 1000.0),
        fmt_num(up_s),
        fmt_num(first_s),
        fmt_num(total_s),
    );
    if got < n || failed > 0 {
        note.push_str(&format!(
            "; INCOMPLETE: {got} of {n} finished, {failed} not completed"
        ));
    }
    rows.push(
        Row::new(
            4,
            format!("backlog of {n} for an offline node: drain rate"),
            "msg/s",
            Some(drain),
            Some(raw),
        )
        .target(Target::RatioAtLeast(0.5))
        .note(note),
    );
    rows.push(Row::new(
        4,
        format!("backlog of {n}: receiver start to all completed"),
        "s",
        Some(total_s),
        Some(n as f64 / raw),
    ));
    recv.finish(Duration::from_secs(10)).await;
    sender.stop().await;
    extra.insert(
        "backlog".into(),
        json!({ "n": n, "queue_s": queue_s, "receiver_up_s": up_s, "first_completed_s": first_s, "all_completed_s": total_s, "drain_per_s": drain, "raw_per_s": raw }),
    );

    // (b) The sender is SIGKILLed with the whole backlog pending, then restarted.
    let mut q = ChildProc::spawn(
        &child_args("--queue-child", &["blk", url, d, "bl2", &n.to_string()]),
        &[],
    );
    let queued = q.expect(&["queued"], Duration::from_secs(300)).await;
    q.kill().await;
    let mut recv = ChildProc::spawn(&child_args("--serve-child", &["bl2", url, d]), &[]);
    recv.expect(&["ready"], Duration::from_secs(60)).await;
    let t0 = Instant::now();
    let mut r = ChildProc::spawn(
        &child_args("--resume-child", &["blk", url, d, &n.to_string()]),
        &[],
    );
    let done = if queued.is_some() {
        r.expect(&["done"], Duration::from_secs(600)).await
    } else {
        None
    };
    let total_s = t0.elapsed().as_secs_f64();
    let raw = raw_throughput(&client, "bench.backlog", 1024, n).await;
    match done {
        Some(w) => {
            let (failed, pending): (u64, u64) = (num(&w, 3), num(&w, 4));
            let started_s: f64 = num::<f64>(&w, 2) / 1000.0;
            let exec_s: f64 = num::<f64>(&w, 1) / 1000.0;
            let first_s: f64 = num::<f64>(&w, 5) / 1000.0;
            let connected_s: f64 = num::<f64>(&w, 6) / 1000.0;
            let drain = (n - 1) as f64 / (exec_s - first_s).max(1e-6);
            let mut note = format!(
                "sender SIGKILLed right after durably queueing {n} echo commands for a then offline node, which is up before the restart; from the restarted process's exec: node started (store reopened, outbox resumed) at {} s, connected to the broker at {} s, first completion at {} s, last at {} s ({} s as seen by the parent, process spawn included); drain rate from the first completion to the last; raw: pipelined request/reply, 1024 in flight",
                fmt_num(started_s),
                fmt_num(connected_s),
                fmt_num(first_s),
                fmt_num(exec_s),
                fmt_num(total_s),
            );
            if failed > 0 || pending > 0 {
                note.push_str(&format!(
                    "; {failed} not completed, {pending} still pending"
                ));
            }
            rows.push(
                Row::new(
                    4,
                    format!("sender killed with {n} pending: restart to all completed"),
                    "s",
                    Some(total_s),
                    Some(n as f64 / raw),
                )
                .note(note),
            );
            rows.push(
                Row::new(
                    4,
                    format!("sender killed with {n} pending: drain rate"),
                    "msg/s",
                    Some(drain),
                    Some(raw),
                )
                .target(Target::RatioAtLeast(0.5)),
            );
            extra.insert(
                "recovery".into(),
                json!({ "n": n, "restart_to_all_completed_s": total_s, "node_started_s": started_s, "connected_s": connected_s, "first_completed_s": first_s, "all_completed_since_exec_s": exec_s, "raw_per_s": raw }),
            );
        }
        None => rows.push(
            Row::new(
                4,
                format!("sender killed with {n} pending: restart to all completed"),
                "s",
                None,
                None,
            )
            .note("the restarted sender did not report completion (see stderr)"),
        ),
    }
    r.finish(Duration::from_secs(10)).await;
    recv.finish(Duration::from_secs(10)).await;
    responder.abort();
}
