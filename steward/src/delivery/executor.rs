//! Per-stream executors: run received messages one after another in the sender's order,
//! record "started" before anything with side effects, and send the result home durably.
//!
//! "Started" is recorded for the messages queued together on a stream in one commit (at most
//! [`START_BATCH`]), then they run one after another: a stream of events to a method with side
//! effects runs at the speed of a commit per batch, not per message. The price, on a crash: a
//! message of the batch that had not run yet is found "started" and, never being run twice, is
//! reported with an unknown outcome, like one that was running — never as run. A graceful stop
//! puts the ones that did not begin to run back to "received" first.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::mpsc;

use crate::delivery::Delivery;
use crate::runtime::notify::ErrorReportKind;
use crate::store::{self, InboxRecord, InboxState, NewMessage, OutboxItem};
use crate::wire::envelope::{now_ms, Envelope, ReplyStatus, WireKind, RESULT_METHOD};
use crate::wire::handler::{Method, Request};
use crate::wire::message::Kind;
use crate::wire::result::MethodResult;

/// A received message to run; `key` is its inbox key (`from/id`).
pub(crate) struct Work {
    pub key: String,
    pub env: Envelope,
    /// Set while the receiver still waits to answer with the result itself (see [`Inline`]).
    pub inline: Option<Inline>,
}

/// A result handed straight to the receiver's reply instead of a result message of its own.
///
/// The receiver waits a moment after recording a batch; whoever takes the sender out of the
/// slot first decides: the executor (finished in time: the result rides on the reply, after its
/// commit) or the receiver (gave up waiting: it answers "received" and the result travels later
/// as a durable message). Exactly one of the two ever happens.
pub(crate) type Inline = Arc<
    std::sync::Mutex<Option<tokio::sync::oneshot::Sender<(MethodResult, Option<ReplyStatus>)>>>,
>;

/// An inbound stream's executor: its queue and how many messages it holds (queued or running).
#[derive(Clone)]
pub(crate) struct ExecutorHandle {
    tx: mpsc::UnboundedSender<Work>,
    outstanding: Arc<AtomicUsize>,
}

/// The executor of each inbound stream, and what the receiver remembers about running them.
#[derive(Default)]
pub(crate) struct Executors {
    map: Mutex<HashMap<String, ExecutorHandle>>,
    /// Repeatable methods that once ran too long to be run by the receiver itself.
    pub slow_methods: Mutex<HashSet<String>>,
    /// Inbox keys of messages whose resend was answered "received": their senders now wait
    /// for a result message, so a result that went out inline must also go as a message.
    pub promised: Mutex<HashSet<String>>,
}

impl Executors {
    /// True if nothing of `stream` is queued or running: a message of it may run right away
    /// without overtaking an earlier one.
    pub(crate) fn idle(&self, stream: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(stream)
            .is_none_or(|h| h.tx.is_closed() || h.outstanding.load(Ordering::SeqCst) == 0)
    }

    /// Forgets every executor (at stop).
    pub(crate) fn clear(&self) {
        if let Ok(mut e) = self.map.lock() {
            e.clear();
        }
    }
}

impl Delivery {
    /// Hands a received message to its inbound stream's executor, starting it if needed. The
    /// send happens under the map lock, so an executor retiring while idle can never miss it.
    pub(crate) fn run_work(self: &Arc<Self>, stream: &str, work: Work) {
        let mut map = self.executors.map.lock().unwrap_or_else(|p| p.into_inner());
        let h = match map.get(stream) {
            Some(h) if !h.tx.is_closed() => h.clone(),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                let h = ExecutorHandle {
                    tx,
                    outstanding: Arc::default(),
                };
                self.tasks.spawn(run(
                    self.clone(),
                    stream.to_owned(),
                    rx,
                    h.outstanding.clone(),
                ));
                map.insert(stream.to_owned(), h.clone());
                h
            }
        };
        h.outstanding.fetch_add(1, Ordering::SeqCst);
        if h.tx.send(work).is_err() {
            h.outstanding.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!("executor gone (node stopping); the message resumes at the next start");
        }
    }
}

/// Most messages recorded "started" in one commit.
const START_BATCH: usize = 256;

/// An executor or publisher with nothing to do for this long retires (and is restarted on demand).
pub(crate) const IDLE_RETIRE: Duration = Duration::from_secs(30);

async fn run(
    inner: Arc<Delivery>,
    stream: String,
    mut rx: mpsc::UnboundedReceiver<Work>,
    outstanding: Arc<AtomicUsize>,
) {
    let mut shutdown = inner.tasks.subscribe();
    loop {
        let work = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => return },
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(IDLE_RETIRE) => {
                // Retire unless work arrived meanwhile; senders hold the map lock while sending.
                let mut map = inner.executors.map.lock().unwrap_or_else(|p| p.into_inner());
                match rx.try_recv() {
                    Ok(w) => w,
                    Err(_) => {
                        map.remove(&stream);
                        return;
                    }
                }
            }
        };
        let mut batch = vec![work];
        while batch.len() < START_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let started = start(&inner, &batch).await;
        let mut rest = batch.into_iter().zip(started);
        while let Some((work, started)) = rest.next() {
            if inner.tasks.stopping() {
                // A graceful stop leaves no doubt behind: what was started with this group but
                // has not begun to run goes back to received, and runs after the next start.
                let unrun: Vec<String> = std::iter::once((work, started))
                    .chain(rest)
                    .filter(|(_, s)| *s == Some(true))
                    .map(|(w, _)| w.key)
                    .collect();
                unstart(&inner, unrun).await;
                return;
            }
            run_one(&inner, work, started).await;
            // After run_one: its result's record is submitted, so anything run later commits later.
            outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Puts messages recorded "started" that never began to run back to "received".
async fn unstart(inner: &Arc<Delivery>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let n = keys.len();
    let written = inner
        .store
        .write(move |txn| {
            for k in keys {
                if let Some(mut rec) = store::get_inbox(txn, &k)? {
                    if rec.state == InboxState::Started {
                        rec.state = InboxState::Received;
                        store::put_inbox(txn, &k, &mut rec)?;
                    }
                }
            }
            Ok(())
        })
        .await;
    match written {
        Ok(()) => tracing::debug!(count = n, "stopping: started messages that did not run wait for the next start"),
        Err(e) => tracing::warn!(count = n, "stopping: could not put {n} started messages that did not run back to received, so they will be reported unknown: {e}"),
    }
}

/// Whether a message must be recorded "started" before it runs: it has side effects (its
/// method is not repeatable) and an answer is owed (fire-and-forget messages are not recorded).
fn needs_start(inner: &Delivery, env: &Envelope) -> bool {
    env.ack
        && inner
            .methods
            .get(&env.method)
            .is_some_and(|m| !m.repeatable)
}

/// Records "started" for every message of `batch` that needs it, in one commit. Per message:
/// `None` when it needs no record, `Some(true)` when it may run, `Some(false)` when it must not
/// (already started or done: resumed twice; or the record failed).
async fn start(inner: &Arc<Delivery>, batch: &[Work]) -> Vec<Option<bool>> {
    let skew = inner.cfg.clock_skew.as_millis() as u64;
    let wanted: Vec<(usize, String, Envelope)> = batch
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            needs_start(inner, &w.env)
                // An expired one is finished as expired, never started.
                && w.env.expires_ms.is_none_or(|exp| now_ms() <= exp.saturating_add(skew))
        })
        .map(|(i, w)| (i, w.key.clone(), w.env.clone()))
        .collect();
    let mut out = vec![None; batch.len()];
    if wanted.is_empty() {
        return out;
    }
    let index: Vec<usize> = wanted.iter().map(|(i, _, _)| *i).collect();
    let first = wanted[0].2.clone();
    let written = inner
        .store
        .write(move |txn| {
            let mut may_run = Vec::with_capacity(wanted.len());
            for (_, k, e) in wanted {
                let mut rec = store::get_inbox(txn, &k)?.unwrap_or_else(|| fresh(e));
                if rec.state != InboxState::Received {
                    // Already started or done (resumed twice): never run again.
                    may_run.push(false);
                    continue;
                }
                rec.state = InboxState::Started;
                store::put_inbox(txn, &k, &mut rec)?;
                may_run.push(true);
            }
            Ok(may_run)
        })
        .await;
    match written {
        Ok(may_run) => {
            for (i, ok) in index.into_iter().zip(may_run) {
                out[i] = Some(ok);
            }
        }
        Err(e) => {
            // Not recorded as started, so not run; they stay received and resume after a restart.
            tracing::error!(msg_id = %first.id, from = %first.from, method = %first.method, count = index.len(), "cannot record start, not running them now: {e}");
            for i in index {
                out[i] = Some(false);
            }
        }
    }
    out
}

/// Runs one message. `started`: what [`start`] recorded for it (`None`: it needs no record).
async fn run_one(inner: &Arc<Delivery>, work: Work, started: Option<bool>) {
    if started == Some(false) {
        return;
    }
    let Work { key, env, inline } = work;
    let skew = inner.cfg.clock_skew.as_millis() as u64;
    if env
        .expires_ms
        .is_some_and(|exp| now_ms() > exp.saturating_add(skew))
    {
        let r = MethodResult::failed("expired before it ran");
        inner.metrics.refused(
            inner.methods.serves(&env.method),
            &env,
            ReplyStatus::Expired,
        );
        finish_inline(inner, &key, &env, r, Some(ReplyStatus::Expired), inline);
        return;
    }
    let method = inner.methods.get(&env.method);
    let Some(method) = method else {
        let r = MethodResult::failed(format!(
            "{} no longer serves {}",
            inner.cfg.name, env.method
        ));
        finish(inner, &key, &env, r, None).await;
        return;
    };
    if env.ack && !method.repeatable && started.is_none() {
        // Its method was served as repeatable (or not at all) when the batch was started:
        // recorded on its own now, never run unrecorded.
        if start(
            inner,
            std::slice::from_ref(&Work {
                key: key.clone(),
                env: env.clone(),
                inline: None,
            }),
        )
        .await
        .first()
            != Some(&Some(true))
        {
            return;
        }
    }
    let result = call(inner, &env, &method).await;
    if !env.ack {
        if result.status != crate::ResultStatus::Ok {
            tracing::warn!(msg_id = %env.id, from = %env.from, method = %env.method, "fire-and-forget message failed: {:?}", result.error);
        }
        return;
    }
    finish_inline(inner, &key, &env, result, None, inline);
}

/// Calls the method's handler for `env` (panics and overruns become failed results).
pub(crate) async fn call(inner: &Arc<Delivery>, env: &Envelope, method: &Method) -> MethodResult {
    let kind = match env.kind {
        WireKind::Command => Kind::Command,
        _ => Kind::Event,
    };
    let timeout = Duration::from_millis(env.method_timeout_ms.max(1));
    let req = Request {
        id: env.id.clone(),
        from_node: env.from.clone(),
        to_node: env.to.clone(),
        kind,
        method: env.method.clone(),
        data: env.data.clone(),
        method_timeout: timeout,
        data_dir: inner.cfg.data_dir.clone(),
        output_limit: inner.cfg.output_limit,
    };
    let started = Instant::now();
    // Whatever the method logs carries the message's id, sender and method.
    let span = tracing::info_span!("run", msg_id = %env.id, from = %env.from, method = %env.method);
    let fut = std::panic::AssertUnwindSafe(tracing::Instrument::instrument(
        method.handler.call(req),
        span,
    ))
    .catch_unwind();
    // Handlers enforce their own timeout (shellCommand kills its process group); this is the backstop.
    let mut result = match tokio::time::timeout(timeout + Duration::from_secs(5), fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => MethodResult::failed(format!("method {} panicked", env.method)),
        Err(_) => MethodResult::failed(format!(
            "method {} did not finish within {timeout:?}",
            env.method
        )),
    };
    if result.duration_ms == 0 {
        result.duration_ms = started.elapsed().as_millis() as u64;
    }
    result.node = inner.cfg.name.clone();
    inner.metrics.executed(env, &result, started.elapsed());
    tracing::debug!(msg_id = %env.id, from = %env.from, method = %env.method, status = ?result.status, duration_ms = result.duration_ms, "ran");
    result
}

/// Finishes a message whose receiver may still be waiting to answer with the result inline.
fn finish_inline(
    inner: &Arc<Delivery>,
    key: &str,
    env: &Envelope,
    result: MethodResult,
    outcome: Option<ReplyStatus>,
    inline: Option<Inline>,
) {
    let waiting = inline.and_then(|slot| slot.lock().ok().and_then(|mut s| s.take()));
    let Some(reply) = waiting else {
        finish_then(inner, key, env, result, outcome, || {});
        return;
    };
    // The receiver answers with this result once it is durable: no result message needed.
    let k = key.to_owned();
    let e = env.clone();
    let stored = result.clone();
    let id = env.id.clone();
    let (i, key, env) = (inner.clone(), key.to_owned(), env.clone());
    let submitted = inner.store.submit(
        move |txn| {
            let mut rec = store::get_inbox(txn, &k)?.unwrap_or_else(|| fresh(e));
            rec.state = InboxState::Done;
            rec.reply = Some(outcome.unwrap_or(ReplyStatus::Done));
            rec.result = Some(stored);
            store::put_inbox(txn, &k, &mut rec)
        },
        move |written| match written {
            Ok(()) => {
                // A resend was told "received" meanwhile: its sender waits for a message.
                if crate::delivery::receiver::promised(&i, &key) {
                    finish_then(&i, &key, &env, result.clone(), outcome, || {});
                }
                let _ = reply.send((result, outcome));
            }
            // Dropping `reply` makes the receiver answer "received"; the sender's resend is
            // then answered from the record, which stays "received" and resumes after a restart.
            Err(err) => tracing::error!(msg_id = %id, "cannot record the result: {err}"),
        },
    );
    if submitted.is_err() {
        tracing::debug!("node stopping; the result is recorded at the next start");
    }
}

fn fresh(env: Envelope) -> InboxRecord {
    InboxRecord {
        state: InboxState::Received,
        reply: None,
        reason: None,
        refusal: None,
        result: None,
        envelope: Some(env),
        pending_key: 0,
        updated_ms: 0,
    }
}

/// Records the outcome and queues the result for the sender in the same transaction, and waits
/// for the commit.
pub(crate) async fn finish(
    inner: &Arc<Delivery>,
    key: &str,
    env: &Envelope,
    result: MethodResult,
    outcome: Option<ReplyStatus>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    finish_then(inner, key, env, result, outcome, move || {
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Like [`finish`] without waiting: the executor moves on to the next message while the result
/// is committed (in order, by the single store writer) together with its neighbours' results.
/// A later "started" record of the same stream commits after this one, so nothing is reordered.
pub(crate) fn finish_then(
    inner: &Arc<Delivery>,
    key: &str,
    env: &Envelope,
    result: MethodResult,
    outcome: Option<ReplyStatus>,
    then: impl FnOnce() + Send + 'static,
) {
    if !env.ack {
        then();
        return;
    }
    let result_msg = Envelope {
        id: ulid::Ulid::new().to_string(),
        from: inner.cfg.name.clone(),
        to: env.from.clone(),
        kind: WireKind::Result,
        method: RESULT_METHOD.into(),
        data: Vec::new(),
        epoch: inner.store.epoch(),
        seq: 0,
        ack: true,
        expires_ms: None,
        method_timeout_ms: 0,
        result_of: Some(env.id.clone()),
        result: Some(result.clone()),
        outcome,
        sig: None,
        wire: None,
        authentic: None,
    };
    let subject = result_msg.subject();
    let new = NewMessage {
        item: OutboxItem {
            envelope: result_msg,
            ack_timeout_ms: inner.cfg.ack_timeout.as_millis() as u64,
            retries: None,
            retry_wait_ms: inner.cfg.retry_wait.as_millis() as u64,
            accepted_ms: now_ms(),
            attempts: 0,
        },
        json: serde_json::json!({"resultOf": env.id, "toNode": env.from}),
        subject,
        internal: true,
        fresh_id: false,
    };
    let k = key.to_owned();
    let pk = key.to_owned();
    let e = env.clone();
    let id = env.id.clone();
    let i = inner.clone();
    let submitted = inner.outbox.submit_with(
        move |txn| {
            let mut rec = store::get_inbox(txn, &k)?.unwrap_or_else(|| fresh(e));
            rec.state = InboxState::Done;
            rec.reply = Some(outcome.unwrap_or(ReplyStatus::Done));
            rec.result = Some(result);
            store::put_inbox(txn, &k, &mut rec)
        },
        vec![new],
        move |written| {
            match written {
                // The result goes as a message: any promise of one is kept.
                Ok(_) => {
                    crate::delivery::receiver::promised(&i, &pk);
                }
                Err(err) => tracing::error!(msg_id = %id, "cannot record the result: {err}"),
            }
            then();
        },
    );
    if submitted.is_err() {
        tracing::debug!("node stopping; the result is recorded at the next start");
    }
}

/// At start: messages received but not finished before the last stop run now, in arrival
/// order; those that had started are reported with an unknown outcome and not run again.
pub(crate) async fn resume(inner: &Arc<Delivery>) -> crate::Result<()> {
    for (key, rec) in inner.store.inbox_pending()? {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                // Never run what may have been altered; a resend is answered "rejected".
                let reason = format!(
                    "the record of this message at {} was damaged: {e}",
                    inner.cfg.name
                );
                let k = key.clone();
                let r = reason.clone();
                inner
                    .store
                    .write(move |t| store::quarantine_inbox(t, &k, r))
                    .await?;
                inner.reporter.report(
                    None,
                    ErrorReportKind::TaskFailed,
                    format!("received message {key}: {reason}"),
                );
                continue;
            }
        };
        let Some(env) = rec.envelope.clone() else {
            continue;
        };
        match rec.state {
            InboxState::Received => {
                let stream = format!("{}/{:x}/{}", env.from, env.epoch, env.subject());
                inner.run_work(
                    &stream,
                    Work {
                        key,
                        env,
                        inline: None,
                    },
                );
            }
            InboxState::Started => {
                tracing::warn!(msg_id = %env.id, from = %env.from, method = %env.method, "was started when the node stopped; reporting its outcome as unknown");
                let r = MethodResult::unknown(format!(
                    "{} stopped after {} was started (running, or queued behind messages started with it) and before it finished; it was not run again, so its outcome is unknown",
                    inner.cfg.name, env.method
                ));
                finish(inner, &key, &env, r, None).await;
            }
            InboxState::Done => {}
        }
    }
    Ok(())
}
