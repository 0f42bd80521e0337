//! The receiving side: decides for every incoming envelope — accept, refuse, deduplicate, or
//! wait for an earlier one — records the decision durably (group-committed per batch), answers
//! the sender, and hands accepted messages to the per-stream executors in order.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

use crate::delivery::executor::{Inline, Work};
use crate::delivery::publisher::PubEvent;
use crate::delivery::Delivery;
use crate::security::keys::PublicKey;
use crate::security::trust::log_admit;
use crate::store::{self, InboxRecord, InboxState};
use crate::wire::envelope::{
    now_ms, Envelope, Reply, ReplyStatus, WireKind, FLOOR_HEADER, RESULT_METHOD,
};
use crate::wire::frame::{self, Format, FrameError};
use crate::wire::result::{MessageState, Refusal};

/// What one decided item writes: (stream, seq, inbox record, incoming result, sender).
type PlannedWrite = (
    String,
    u64,
    Option<(String, InboxRecord)>,
    Option<Envelope>,
    String,
);

/// Largest batch of incoming messages decided and committed together.
const BATCH: usize = 1024;

/// One decision, carried out after the batch commits.
enum Action {
    /// Just answer.
    Reply(Reply),
    /// Record as received, answer, then run.
    Accept { key: String, env: Envelope },
    /// Record as refused (so a resend gets the same answer), then answer.
    Refuse {
        key: String,
        status: ReplyStatus,
        reason: String,
        refusal: Option<Refusal>,
    },
    /// A result coming home for a message we sent.
    Result { env: Envelope },
    /// Fire-and-forget: run without recording or answering.
    RunUnacked { env: Envelope },
    /// Already run here (see [`run_fast`]): record as done with the result, answer with it.
    Ran {
        key: String,
        env: Envelope,
        result: crate::MethodResult,
    },
}

struct Item {
    reply_to: Option<ReplyTo>,
    stream: String,
    seq: u64,
    action: Action,
}

/// Runs until the subscription ends or the node stops.
pub(crate) async fn run<S>(inner: Arc<Delivery>, mut sub: S)
where
    S: Stream<Item = async_nats::Message> + Unpin,
{
    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut shutdown = inner.tasks.subscribe();
    // Messages held until their sender confirmed the stream's position (`confirm.rs`).
    let mut confirmed = inner.confirm.reinjected.lock().await;
    loop {
        let first = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            Some(m) = confirmed.recv() => m,
            _ = shutdown.changed() => return,
        };
        let mut batch = vec![first];
        while let Ok(m) = confirmed.try_recv() {
            batch.push(m);
        }
        while batch.len() < BATCH {
            match sub.next().now_or_never() {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        process(&inner, batch, &mut expected).await;
    }
}

async fn process(
    inner: &Arc<Delivery>,
    batch: Vec<async_nats::Message>,
    expected: &mut HashMap<String, u64>,
) {
    let mut items = Vec::with_capacity(batch.len());
    // Ids decided in this batch (not yet committed), for duplicates arriving together.
    let mut in_batch: HashMap<String, ReplyStatus> = HashMap::new();
    for msg in batch {
        if msg.subject.as_str().strip_prefix(inner.cfg.name.as_str())
            == Some(&format!(
                ".command.{}",
                crate::delivery::confirm::FLOOR_QUERY
            ))
        {
            crate::delivery::confirm::answer(inner, &msg).await;
            continue;
        }
        let mut reply_to = msg.reply.as_ref().map(|r| ReplyTo::new(r.to_string()));
        let incoming = match read(inner, &msg, &mut reply_to).await {
            Ok(Some(i)) => i,
            Ok(None) => continue,
            Err(e) => {
                if crate::security::trust::log_admit(&inner.cfg.name, &msg.subject) {
                    tracing::warn!(subject = %msg.subject, "refused a message it cannot read: {e}");
                } else {
                    tracing::debug!(subject = %msg.subject, "refused a message it cannot read: {e}");
                }
                if let FrameError::UnknownVersion(_) = e {
                    // Said to central too: a node that cannot read what it is sent needs an
                    // upgrade, and the sender may not be watching.
                    inner.reporter.report(
                        None,
                        crate::runtime::notify::ErrorReportKind::Rejected,
                        format!(
                            "{} could not read a message on {}: {e}",
                            inner.cfg.name, msg.subject
                        ),
                    );
                }
                if let Some(mut to) = reply_to {
                    // In JSON, which every version reads.
                    to.binary = false;
                    let mut r = Reply::new("", ReplyStatus::Rejected);
                    r.reason = Some(format!("{} could not read it: {e}", inner.cfg.name));
                    send_reply(inner, &to, &r).await;
                }
                continue;
            }
        };
        let Incoming {
            env,
            floor: framed_floor,
        } = incoming;
        let Some(env) = crate::delivery::screen::screen(inner, env, &reply_to).await else {
            continue;
        };
        inner.peers.heard(&env.from, env.wire);
        let confirmed_floor = match crate::delivery::confirm::gate(inner, &env, &msg) {
            crate::delivery::confirm::Gate::Pass(floor) => floor,
            crate::delivery::confirm::Gate::Held => continue,
        };
        let floor = match framed_floor {
            // Covered by the frame's tag (or nothing is checked here).
            Some(f)
                if env.authentic.is_some()
                    || inner.security.policy
                        != crate::security::trust::SignaturePolicy::Required =>
            {
                f
            }
            Some(_) => 0,
            None => {
                let floor = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(FLOOR_HEADER))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .unwrap_or(0);
                crate::delivery::screen::checked_floor(
                    inner,
                    &env,
                    floor,
                    msg.headers.as_ref(),
                    expected,
                )
            }
        }
        .max(confirmed_floor);
        let item = decide(inner, env, floor, reply_to, expected, &mut in_batch);
        items.push(item);
    }
    if items.is_empty() {
        return;
    }
    run_fast(inner, &mut items).await;
    // Record every decision in one transaction.
    let to_write: Vec<PlannedWrite> = items
        .iter()
        .map(|it| {
            let from = match &it.action {
                Action::Accept { env, .. }
                | Action::Result { env }
                | Action::Ran { env, .. }
                | Action::RunUnacked { env } => env.from.clone(),
                Action::Refuse { key, .. } => key.split('/').next().unwrap_or_default().to_owned(),
                Action::Reply(_) => String::new(),
            };
            let rec = match &it.action {
                Action::Accept { key, env } => Some((
                    key.clone(),
                    InboxRecord {
                        state: InboxState::Received,
                        reply: None,
                        reason: None,
                        refusal: None,
                        result: None,
                        envelope: Some(env.clone()),
                        pending_key: 0,
                        updated_ms: 0,
                    },
                )),
                Action::Ran { key, result, .. } => Some((
                    key.clone(),
                    InboxRecord {
                        state: InboxState::Done,
                        reply: Some(ReplyStatus::Done),
                        reason: None,
                        refusal: None,
                        result: Some(result.clone()),
                        envelope: None,
                        pending_key: 0,
                        updated_ms: 0,
                    },
                )),
                // An ordered message refused leaves no record, only its stream position: a
                // resend is below it, is checked again and answered refused (see `decide`), and
                // never runs. So refusals cost no disk per message, whoever floods them.
                Action::Refuse { .. } if it.seq > 0 => None,
                Action::Refuse {
                    key,
                    status,
                    reason,
                    refusal,
                } => Some((
                    key.clone(),
                    InboxRecord {
                        state: InboxState::Done,
                        reply: Some(*status),
                        reason: Some(reason.clone()),
                        refusal: *refusal,
                        result: None,
                        envelope: None,
                        pending_key: 0,
                        updated_ms: 0,
                    },
                )),
                _ => None,
            };
            let result = match &it.action {
                Action::Result { env } => Some(env.clone()),
                _ => None,
            };
            (it.stream.clone(), it.seq, rec, result, from)
        })
        .collect();
    let marks: Vec<(String, u64)> = items
        .iter()
        .filter_map(|it| match &it.action {
            Action::RunUnacked { env } => {
                crate::delivery::screen::unacked_mark(inner, &it.stream, env)
            }
            Action::Refuse { .. } if it.seq > 0 => Some((it.stream.clone(), it.seq + 1)),
            _ => None,
        })
        .collect();
    // The newest store (epoch) of each sender accepted in this batch: older ones are gone.
    let mut epochs: HashMap<String, u64> = HashMap::new();
    for it in &items {
        if let Action::Accept { env, .. } | Action::Ran { env, .. } | Action::RunUnacked { env } =
            &it.action
        {
            if epoch_may_raise(env.epoch) {
                let e = epochs.entry(env.from.clone()).or_insert(0);
                *e = (*e).max(env.epoch);
            }
        }
    }
    let write = inner
        .store
        .write(move |txn| {
            let mut finished = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (from, epoch) in &epochs {
                let forgot = store::raise_epoch_floor(txn, from, *epoch)?;
                if forgot > 0 {
                    tracing::debug!(
                        from,
                        forgot,
                        "forgot the stream positions of a sender's earlier stores"
                    );
                }
            }
            // Positions of a store older than its sender's newest (in this same batch) are
            // not kept: its messages are stale from now on anyway.
            let superseded = |stream: &str| {
                let mut parts = stream.split('/');
                let (Some(from), Some(e)) = (parts.next(), parts.next()) else {
                    return false;
                };
                let e = u64::from_str_radix(e, 16).unwrap_or(u64::MAX);
                store::epoch_time(e).is_some() && epochs.get(from).is_some_and(|f| e < *f)
            };
            for (key, next) in marks {
                if !superseded(&key) {
                    store::set_expected(txn, &key, next)?;
                }
            }
            for (stream, seq, rec, result, from) in to_write {
                if let Some((key, mut rec)) = rec {
                    store::put_inbox(txn, &key, &mut rec)?;
                    if seq > 0 && !superseded(&stream) {
                        store::set_expected(txn, &stream, seq + 1)?;
                    }
                }
                if let Some(env) = result {
                    finished.push(accept_result(txn, &env)?);
                }
                if !from.is_empty() && seen.insert(from.clone()) {
                    store::touch_seen(txn, &from)?;
                }
            }
            Ok(finished)
        })
        .await;
    let finished = match write {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("could not record incoming messages: {e}");
            expected.clear();
            for it in items {
                if let Some(to) = it.reply_to {
                    let id = match &it.action {
                        Action::Accept { env, .. }
                        | Action::Result { env }
                        | Action::Ran { env, .. } => env.id.clone(),
                        _ => continue,
                    };
                    let mut r = Reply::new(&id, ReplyStatus::Retry);
                    r.reason = Some(format!("the receiver could not record it: {e}"));
                    send_reply(inner, &to, &r).await;
                }
            }
            return;
        }
    };
    let mut finished = finished.into_iter();
    let mut waiting = Vec::new();
    for it in items {
        if let Action::Accept { env, .. } | Action::Ran { env, .. } | Action::RunUnacked { env } =
            &it.action
        {
            inner.metrics.received(env);
        }
        let reply = match it.action {
            Action::Reply(r) => Some(r),
            Action::Accept { key, env } => match it.reply_to {
                Some(to) => {
                    // Give the method a moment to finish so its result rides on the reply.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let slot: Inline = Arc::new(std::sync::Mutex::new(Some(tx)));
                    waiting.push((to, env.id.clone(), slot.clone(), rx));
                    inner.run_work(
                        &it.stream,
                        Work {
                            key,
                            env,
                            inline: Some(slot),
                        },
                    );
                    continue;
                }
                None => {
                    inner.run_work(
                        &it.stream,
                        Work {
                            key,
                            env,
                            inline: None,
                        },
                    );
                    None
                }
            },
            Action::Refuse {
                key,
                status,
                reason,
                refusal,
            } => {
                let id = key
                    .split_once('/')
                    .map(|(_, id)| id.to_owned())
                    .unwrap_or_default();
                crate::delivery::screen::refused_after_check(inner, &key, &reason);
                let mut r = Reply::new(&id, status);
                r.reason = Some(reason);
                r.set_refusal(refusal);
                Some(r)
            }
            Action::Result { env } => {
                let outcome = finished.next().flatten();
                let mut r = Reply::new(&env.id, ReplyStatus::Done);
                match outcome {
                    Some(ResultOutcome::Finished(rec)) => {
                        inner.publisher_event(
                            rec.stream_id,
                            &rec.status.subject,
                            PubEvent::Finished(rec.seq),
                        );
                        inner.finals.after_final(rec.into_status());
                    }
                    Some(ResultOutcome::Refused(reason)) => {
                        if crate::security::trust::log_admit(&inner.cfg.name, &env.from) {
                            tracing::warn!(msg_id = env.result_of.as_deref(), from = %env.from, result_id = %env.id, "refused a result: {reason}");
                        }
                        r.status = ReplyStatus::Rejected;
                        r.reason = Some(reason);
                    }
                    None => {}
                }
                Some(r)
            }
            Action::Ran { key, env, result } => {
                if promised(inner, &key) {
                    crate::delivery::executor::finish_then(
                        inner,
                        &key,
                        &env,
                        result.clone(),
                        None,
                        || {},
                    );
                }
                let mut r = Reply::new(&env.id, ReplyStatus::Done);
                r.result = Some(result);
                Some(r)
            }
            Action::RunUnacked { env } => {
                let key = format!("{}/{}", env.from, env.id);
                inner.run_work(
                    &it.stream,
                    Work {
                        key,
                        env,
                        inline: None,
                    },
                );
                None
            }
        };
        if let (Some(to), Some(r)) = (it.reply_to, reply) {
            send_reply(inner, &to, &r).await;
        }
    }
    if !waiting.is_empty() {
        // Answer from a task of its own so the receiver goes on reading meanwhile.
        let inner = inner.clone();
        inner
            .tasks
            .rt
            .clone()
            .spawn(async move { answer_accepted(&inner, waiting).await });
    }
}

/// How long the receiver may spend per batch running repeatable methods itself.
const FAST_RUN_BUDGET: std::time::Duration = std::time::Duration::from_millis(5);

/// Runs accepted messages of `repeatable` methods right here, before anything is recorded, when
/// nothing of their stream is queued or running (so no earlier message is overtaken). Their
/// results are then recorded as done in the batch's own transaction — one record and one
/// commit instead of "received" then "done" — and ride on the reply. A crash before that
/// commit leaves no record, so the sender's resend runs the message again, which a repeatable
/// method allows. A method that overruns the budget is cancelled (repeatable: harmless), takes
/// the usual path through its executor, and is never run here again.
async fn run_fast(inner: &Arc<Delivery>, items: &mut [Item]) {
    let deadline = tokio::time::Instant::now() + FAST_RUN_BUDGET;
    // Streams with a message on the usual path in this batch: later ones must follow it there.
    let mut queued: std::collections::HashSet<String> = std::collections::HashSet::new();
    for it in items.iter_mut() {
        let (key, env) = match &it.action {
            Action::Accept { key, env } => (key, env),
            Action::RunUnacked { .. } => {
                queued.insert(it.stream.clone());
                continue;
            }
            _ => continue,
        };
        let method = inner.methods.get(&env.method);
        let skew = inner.cfg.clock_skew.as_millis() as u64;
        let eligible = it.reply_to.is_some()
            && !queued.contains(&it.stream)
            && tokio::time::Instant::now() < deadline
            && method.as_ref().is_some_and(|m| m.repeatable)
            && env
                .expires_ms
                .is_none_or(|exp| now_ms() <= exp.saturating_add(skew))
            && !inner
                .executors
                .slow_methods
                .lock()
                .map(|s| s.contains(&env.method))
                .unwrap_or(true)
            && inner.executors.idle(&it.stream);
        let (Some(method), true) = (method, eligible) else {
            queued.insert(it.stream.clone());
            continue;
        };
        match tokio::time::timeout_at(
            deadline,
            crate::delivery::executor::call(inner, env, &method),
        )
        .await
        {
            Ok(result) => {
                it.action = Action::Ran {
                    key: key.clone(),
                    env: env.clone(),
                    result,
                };
            }
            Err(_) => {
                tracing::debug!(msg_id = %env.id, from = %env.from, method = %env.method, "too slow to run in the receiver; it runs in its executor");
                if let Ok(mut s) = inner.executors.slow_methods.lock() {
                    s.insert(env.method.clone());
                }
                queued.insert(it.stream.clone());
            }
        }
    }
}

/// How long accepted messages may take to finish and answer "done" with their result at once.
const INLINE_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

type Waiting = (
    ReplyTo,
    String,
    Inline,
    tokio::sync::oneshot::Receiver<(crate::MethodResult, Option<ReplyStatus>)>,
);

/// Answers each accepted message: "done" with its result if it finished within [`INLINE_WAIT`],
/// otherwise "received" (its result then travels as a message of its own).
async fn answer_accepted(inner: &Arc<Delivery>, waiting: Vec<Waiting>) {
    let deadline = tokio::time::Instant::now() + INLINE_WAIT;
    for (to, id, slot, mut rx) in waiting {
        let got = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(done)) => Some(done),
            _ => {
                // Take the slot: from now on the executor sends the result as a message.
                let taken = slot.lock().ok().and_then(|mut s| s.take());
                match taken {
                    Some(_) => None,
                    // The executor took it first: its result is (about to be) committed.
                    None => rx.await.ok(),
                }
            }
        };
        let reply = match got {
            Some((result, outcome)) => {
                let mut r = Reply::new(&id, outcome.unwrap_or(ReplyStatus::Done));
                if outcome.is_some() {
                    r.reason = result.error.clone();
                } else {
                    r.result = Some(result);
                }
                r
            }
            None => Reply::new(&id, ReplyStatus::Received),
        };
        send_reply(inner, &to, &reply).await;
    }
}

pub(crate) enum ResultOutcome {
    Finished(Box<store::MessageRecord>),
    Refused(String),
}

/// Records a result for a message this node sent, after checking that it came from its destination.
fn accept_result(txn: &mut store::Tx<'_>, env: &Envelope) -> crate::Result<Option<ResultOutcome>> {
    let Some(of) = env.result_of.as_deref() else {
        return Ok(Some(ResultOutcome::Refused(
            "result without result_of".into(),
        )));
    };
    let Some(rec) = store::get_message(txn, of)? else {
        return Ok(Some(ResultOutcome::Refused(format!(
            "no message {of} was sent from here"
        ))));
    };
    if rec.status.to_node != env.from {
        return Ok(Some(ResultOutcome::Refused(format!(
            "message {of} was sent to {}, not to {}",
            rec.status.to_node, env.from
        ))));
    }
    let (state, reason) = match env.outcome {
        Some(ReplyStatus::Expired) => (
            MessageState::Expired,
            Some("expired at the receiver before it ran".to_owned()),
        ),
        Some(ReplyStatus::Rejected) => (
            MessageState::Rejected,
            env.result.as_ref().and_then(|r| r.error.clone()),
        ),
        _ => (MessageState::Completed, None),
    };
    let result = if state == MessageState::Completed {
        env.result.clone()
    } else {
        None
    };
    // A message with a result was sent at least once; the exact count is the publisher's.
    Ok(store::finalize(txn, of, state, result, reason, 1)?
        .map(|r| ResultOutcome::Finished(Box::new(r))))
}

fn decide(
    inner: &Arc<Delivery>,
    env: Envelope,
    floor: u64,
    reply_to: Option<ReplyTo>,
    expected: &mut HashMap<String, u64>,
    in_batch: &mut HashMap<String, ReplyStatus>,
) -> Item {
    let subject = env.subject();
    let stream = format!("{}/{:x}/{}", env.from, env.epoch, subject);
    let key = format!("{}/{}", env.from, env.id);
    let item = |action| Item {
        reply_to: reply_to.clone(),
        stream: stream.clone(),
        seq: 0,
        action,
    };
    if let Err(e) = crate::wire::names::node(&env.from) {
        return item(Action::Reply(rejected(&env.id, format!("bad sender: {e}"))));
    }
    if env.kind == WireKind::Result {
        if env.method != RESULT_METHOD || env.to != inner.cfg.name {
            return item(Action::Reply(rejected(&env.id, "malformed result".into())));
        }
        return item(Action::Result { env });
    }
    if let Some(r) = stale_epoch(inner, &env, expected) {
        return item(Action::Reply(r));
    }
    if !env.ack {
        if let Some(r) = crate::delivery::screen::unacked_replayed(inner, &stream, &env, expected) {
            return item(Action::Reply(r));
        }
        if let Some(r) = too_many_streams(inner, &env, &stream, expected) {
            return item(Action::Reply(r));
        }
        return match check(inner, &env) {
            Ok(()) => {
                note_epoch(&env, expected);
                item(Action::RunUnacked { env })
            }
            Err(no) => {
                inner
                    .metrics
                    .refused(inner.methods.serves(&env.method), &env, no.status);
                crate::delivery::screen::refused_after_check(
                    inner,
                    &format!("{}/{}", env.from, env.id),
                    &no.reason,
                );
                item(Action::Reply(no.reply(&env.id)))
            }
        };
    }
    // Duplicate of something decided in this batch or earlier?
    let seq = env.seq;
    let exp = if seq > 0 {
        *expected
            .entry(stream.clone())
            .or_insert_with(|| inner.store.inbox_expected(&stream).unwrap_or(1))
    } else {
        0
    };
    if exp == 1 && seq > 0 {
        if let Some(r) = too_many_streams(inner, &env, &stream, expected) {
            return item(Action::Reply(r));
        }
    }
    let effective = exp.max(floor);
    let is_next = seq > 0 && seq == effective;
    if !is_next {
        if let Some(status) = in_batch.get(&key) {
            if *status == ReplyStatus::Received {
                promise(inner, &key);
            }
            return item(Action::Reply(Reply::new(&env.id, *status)));
        }
        if let Ok(Some(rec)) = inner.store.inbox(&key) {
            if rec.state == InboxState::Done {
                return item(Action::Reply(answer_from_record(&env.id, rec)));
            }
            // Still running: promise a result message first, then look again, so a result
            // committed in between is either seen here or sent as that message.
            promise(inner, &key);
            let rec = match inner.store.inbox(&key) {
                Ok(Some(now)) => now,
                _ => rec,
            };
            return item(Action::Reply(answer_from_record(&env.id, rec)));
        }
        if seq > 0 && seq < effective {
            // No record: refused (refusals keep none) or pruned. A refusal is checked again and
            // answered the same way; either way it never runs.
            if let Err(no) = check(inner, &env) {
                return item(Action::Reply(no.reply(&env.id)));
            }
            return item(Action::Reply(Reply::new(&env.id, ReplyStatus::Stale)));
        }
        if seq > effective {
            let mut r = Reply::new(&env.id, ReplyStatus::Gap);
            r.expected = Some(effective);
            return item(Action::Reply(r));
        }
    }
    let mut it = item(Action::Reply(Reply::new(&env.id, ReplyStatus::Received)));
    it.seq = seq;
    if seq > 0 {
        expected.insert(stream.clone(), seq + 1);
    }
    match check(inner, &env) {
        Ok(()) => {
            in_batch.insert(key.clone(), ReplyStatus::Received);
            note_epoch(&env, expected);
            it.action = Action::Accept { key, env };
        }
        Err(Refused {
            status,
            reason,
            refusal,
        }) => {
            inner
                .metrics
                .refused(inner.methods.serves(&env.method), &env, status);
            in_batch.insert(key.clone(), status);
            it.action = Action::Refuse {
                key,
                status,
                reason,
                refusal,
            };
        }
    }
    it
}

/// Stream positions a receiver keeps per sender at most (within the sender's current store);
/// a message that would open one more is refused, so no sender grows the store without bound.
pub(crate) const MAX_STREAMS_PER_SENDER: usize = 1024;

/// How far ahead of this node's clock a sender's epoch may be and still raise its floor.
const EPOCH_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// A message from an earlier store of its sender (a time-based epoch below the newest one
/// accepted from it) never runs: that store is gone, so only a replay can bring it. Its stream
/// positions were forgotten when the newer epoch arrived (see `store::raise_epoch_floor`). It
/// is refused, not answered *stale* (which a sender takes for "ran long ago"): should a real
/// sender's clock have gone back when its store was rebuilt, it learns that nothing ran, and
/// why.
fn stale_epoch(
    inner: &Delivery,
    env: &Envelope,
    expected: &mut HashMap<String, u64>,
) -> Option<Reply> {
    store::epoch_time(env.epoch)?;
    let key = store::epoch_floor_key(&env.from);
    let floor = *expected
        .entry(key.clone())
        .or_insert_with(|| inner.store.inbox_expected(&key).unwrap_or(1));
    (env.epoch < floor).then(|| {
        let made = |e: u64| store::epoch_time(e).unwrap_or(0) / 1000;
        rejected(
            &env.id,
            format!(
                "from an earlier store of {} (made at {} s since 1970; a newer one, made at {} s, has sent since): a copy of a message of a store that is gone never runs; if {} rebuilt its data directory, check its clock",
                env.from,
                made(env.epoch),
                made(floor),
                env.from
            ),
        )
    })
}

/// Raises the sender's epoch floor in the cache when an accepted message comes from a newer
/// time-based store (not more than a day ahead of this clock), forgetting cached positions of
/// its older stores; the batch's commit does the same in the store.
fn note_epoch(env: &Envelope, expected: &mut HashMap<String, u64>) {
    if !epoch_may_raise(env.epoch) {
        return;
    }
    let key = store::epoch_floor_key(&env.from);
    if expected.get(&key).is_some_and(|f| *f >= env.epoch) {
        return;
    }
    expected.insert(key, env.epoch);
    let prefix = format!("{}/", env.from);
    expected.retain(|k, _| {
        k.strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next())
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .is_none_or(|e| e >= env.epoch || store::epoch_time(e).is_none())
    });
}

/// Whether an accepted message of this epoch may raise its sender's epoch floor.
fn epoch_may_raise(epoch: u64) -> bool {
    store::epoch_time(epoch).is_some_and(|t| t <= crate::wire::envelope::now_ms() + EPOCH_AHEAD_MS)
}

/// Refuses a message that would open a stream position beyond [`MAX_STREAMS_PER_SENDER`] for
/// its sender.
fn too_many_streams(
    inner: &Delivery,
    env: &Envelope,
    stream: &str,
    expected: &HashMap<String, u64>,
) -> Option<Reply> {
    if expected.get(stream).is_some_and(|e| *e > 1) {
        return None;
    }
    let n = inner.store.inbox_streams_of(&env.from).unwrap_or(0);
    (n >= MAX_STREAMS_PER_SENDER).then(|| {
        rejected(
            &env.id,
            format!(
                "{} keeps {n} stream positions for {} already (at most {MAX_STREAMS_PER_SENDER}, one per subject and store of the sender): a new stream is refused",
                inner.cfg.name, env.from
            ),
        )
    })
}

/// Notes that the sender of `key` was told "received" for a message still running: it now
/// waits for a result message, even if the result is also answered inline to an earlier copy
/// (whose sender may be gone: restarted, or its link cut).
fn promise(inner: &Delivery, key: &str) {
    if let Ok(mut p) = inner.executors.promised.lock() {
        p.insert(key.to_owned());
    }
}

/// Whether a result that was answered inline must also go as a result message; forgets the
/// promise. Called after the result is committed.
pub(crate) fn promised(inner: &Delivery, key: &str) -> bool {
    inner
        .executors
        .promised
        .lock()
        .map(|mut p| p.remove(key))
        .unwrap_or(true)
}

fn rejected(id: &str, reason: String) -> Reply {
    let mut r = Reply::new(id, ReplyStatus::Rejected);
    r.reason = Some(reason);
    r
}

fn answer_from_record(id: &str, rec: InboxRecord) -> Reply {
    match rec.state {
        InboxState::Received | InboxState::Started => Reply::new(id, ReplyStatus::Received),
        InboxState::Done => {
            let mut r = Reply::new(id, rec.reply.unwrap_or(ReplyStatus::Done));
            r.reason = rec.reason;
            r.set_refusal(rec.refusal);
            r.result = rec.result;
            r
        }
    }
}

/// Why [`check`] refused a message: the answer's status, the reason, and its code if any.
struct Refused {
    status: ReplyStatus,
    reason: String,
    refusal: Option<Refusal>,
}

impl Refused {
    fn rejected(reason: String, refusal: Option<Refusal>) -> Self {
        Refused {
            status: ReplyStatus::Rejected,
            reason,
            refusal,
        }
    }

    /// The answer to message `id`.
    fn reply(self, id: &str) -> Reply {
        let mut r = Reply::new(id, self.status);
        r.reason = Some(self.reason);
        r.set_refusal(self.refusal);
        r
    }
}

/// Whether this node accepts the message: addressed here, allowed, served, not expired.
fn check(inner: &Delivery, env: &Envelope) -> Result<(), Refused> {
    let me = &inner.cfg.name;
    if env.to != *me {
        return Err(Refused::rejected(
            format!("addressed to {}, but this is {me}", env.to),
            None,
        ));
    }
    if let Err(e) = crate::wire::names::method(&env.method) {
        return Err(Refused::rejected(e.to_string(), None));
    }
    if let Err(reason) = crate::delivery::screen::access(inner, env) {
        return Err(Refused::rejected(reason, Some(Refusal::NotAllowed)));
    }
    match inner.methods.get(&env.method) {
        None => {
            return Err(Refused::rejected(
                format!("{me} does not serve the method {:?}", env.method),
                Some(Refusal::NotServed),
            ))
        }
        Some(m) if crate::wire::envelope::WireKind::from(m.kind) != env.kind => {
            return Err(Refused::rejected(
                format!(
                    "{} is served as a {}, not as a {}",
                    env.method,
                    m.kind,
                    env.kind.subject_token()
                ),
                Some(Refusal::NotServed),
            ))
        }
        Some(_) => {}
    }
    if let Some(exp) = env.expires_ms {
        if now_ms() > exp.saturating_add(inner.cfg.clock_skew.as_millis() as u64) {
            return Err(Refused {
                status: ReplyStatus::Expired,
                reason: "expired before it reached the receiver".into(),
                refusal: None,
            });
        }
    }
    Ok(())
}

/// Where and how to answer a message: its reply subject, and what it came in.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    /// The reply subject.
    pub subject: String,
    /// It came as a binary frame, so the answer goes as one.
    pub binary: bool,
    /// Its sender, once read (whose session tags the answer).
    pub asker: Option<String>,
    /// Its session tag held, under the session with this key.
    pub peer: Option<PublicKey>,
    /// Its session tag could not be checked: the answer asks for signed JSON.
    pub send_signed: bool,
}

impl ReplyTo {
    /// An answer to `subject`, in JSON until the message is read.
    pub(crate) fn new(subject: String) -> ReplyTo {
        ReplyTo {
            subject,
            binary: false,
            asker: None,
            peer: None,
            send_signed: false,
        }
    }
}

/// A message as read, whatever its format.
struct Incoming {
    env: Envelope,
    /// The floor a binary frame carries (JSON: in a header).
    floor: Option<u64>,
}

/// Reads a message in either format and checks a binary frame's session tag. `Ok(None)`: it
/// was answered already (a tag that does not hold, with signatures required).
async fn read(
    inner: &Delivery,
    msg: &async_nats::Message,
    reply_to: &mut Option<ReplyTo>,
) -> Result<Option<Incoming>, FrameError> {
    if frame::sniff(&msg.payload, "envelope")? == Format::Json {
        let env: Envelope =
            serde_json::from_slice(&msg.payload).map_err(|e| FrameError::Malformed {
                what: "envelope",
                why: e.to_string(),
            })?;
        if let Some(to) = reply_to {
            to.asker = Some(env.from.clone());
        }
        return Ok(Some(Incoming { env, floor: None }));
    }
    let frame::ReadEnvelope {
        mut env,
        floor,
        tag,
    } = frame::decode_envelope(&msg.payload, &msg.subject)?;
    if let Some(to) = reply_to.as_mut() {
        to.binary = true;
        to.asker = Some(env.from.clone());
    }
    if let Some(tag) = tag {
        match inner.security.check_envelope_tag(&env, floor, &tag) {
            Ok(key) => {
                env.authentic = Some(key.0);
                if let Some(to) = reply_to.as_mut() {
                    to.peer = Some(key);
                }
            }
            Err(why) => {
                // The tag is what a signature is for a binary frame: without one that holds,
                // the message is unsigned (refused with signatures required, see `screen`).
                // With signatures required, a sender waiting for an answer is asked for signed
                // JSON instead, whose answer names exactly what is wrong.
                let required =
                    inner.security.policy == crate::security::trust::SignaturePolicy::Required;
                if let (true, Some(mut to)) = (required, reply_to.take()) {
                    if log_admit(&inner.cfg.name, &env.from) {
                        tracing::warn!(msg_id = %env.id, from = %env.from, "asked for signed JSON: {why}");
                    } else {
                        tracing::debug!(msg_id = %env.id, from = %env.from, "asked for signed JSON: {why}");
                    }
                    to.send_signed = true;
                    let mut r = Reply::new(&env.id, ReplyStatus::Retry);
                    r.reason = Some(format!(
                        "{} could not check the session tag: {why}; send it signed",
                        inner.cfg.name
                    ));
                    send_reply(inner, &to, &r).await;
                    return Ok(None);
                }
                tracing::debug!(msg_id = %env.id, from = %env.from, "a session tag did not hold: {why}");
            }
        }
    }
    Ok(Some(Incoming {
        env,
        floor: Some(floor),
    }))
}

/// Sends an answer in the format of the message it answers: binary with a session tag when the
/// message came with one (or the sender asked for signed answers and this node trusts its key),
/// else signed JSON when the sender asked for signed answers (see `signing`), else plain.
pub(crate) async fn send_reply(inner: &Delivery, to: &ReplyTo, r: &Reply) {
    let me = inner.cfg.name.as_str();
    let signing_wanted = inner.security.policy != crate::security::trust::SignaturePolicy::Unsigned
        && crate::security::signing::wants_signed_reply(&to.subject);
    let payload = if to.binary && to.send_signed {
        frame::encode_reply(r, me, None, true)
    } else if to.binary && !signing_wanted {
        frame::encode_reply(r, me, None, false)
    } else {
        let session = to
            .binary
            .then(|| {
                to.peer
                    .and_then(|k| inner.security.session(&k))
                    .or_else(|| {
                        to.asker
                            .as_deref()
                            .and_then(|a| inner.security.session_with(a))
                    })
            })
            .flatten();
        match session {
            Some(s) => {
                let tag = s.tag_reply(me, &to.subject, r);
                frame::encode_reply(r, me, Some(&tag), false)
            }
            None => {
                let mut s = r.clone();
                s.wire = Some(frame::VERSION);
                if signing_wanted {
                    crate::security::signing::sign_reply(
                        &inner.security.keys,
                        me,
                        &to.subject,
                        &mut s,
                    );
                }
                serde_json::to_vec(&s).unwrap_or_default()
            }
        }
    };
    if let Err(e) = inner
        .link
        .client
        .publish(to.subject.clone(), Bytes::from(payload))
        .await
    {
        tracing::debug!("could not send a reply: {e}");
    }
}
