//! One publisher task per destination subject: sends in order, pipelined up to the window,
//! resends on silence with capped, jittered backoff, and gives up only when told to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::delivery::Delivery;
use crate::runtime::notify::ErrorReportKind;
use crate::security::trust::{log_admit, SignaturePolicy};
use crate::store::{self, decode_outbox};
use crate::wire::envelope::{now_ms, Envelope, ReplyStatus, WireKind, FLOOR_HEADER};
use crate::wire::frame;
use crate::wire::result::{MessageState, MethodResult, Refusal};

/// What a publisher is told.
pub(crate) enum PubEvent {
    /// A message was committed to the outbox at this sequence number.
    Enqueued(u64),
    /// The receiver answered (the payload as it came: the publisher, which knows who answered,
    /// reads it).
    Reply(u64, Bytes),
    /// Nobody listens on the subject.
    NoResponders(u64),
    /// The message reached a final state elsewhere (result arrived, cancelled).
    Finished(u64),
    /// Asks for the live state of a message.
    Query(u64, oneshot::Sender<Option<(MessageState, u32)>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to be sent (at `not_before`).
    Pending,
    /// Sent; waiting for the receiver's ACK until `deadline`.
    AwaitAck,
    /// The receiver has it; waiting for the result message (asking again at `deadline`).
    Received,
}

struct Entry {
    id: String,
    /// A result going home: its ACK completes it, no result of its own follows.
    is_result: bool,
    /// The message as it travels (encoded per send: the floor and the format may change).
    envelope: Envelope,
    /// Its signed JSON, made the first time it is sent in JSON.
    json: Option<Bytes>,
    /// The last send was a binary frame with a session tag.
    tagged: bool,
    ack: bool,
    ack_timeout: Duration,
    retries: Option<u32>,
    retry_wait: Duration,
    expires_ms: Option<u64>,
    phase: Phase,
    attempts: u32,
    not_before: Instant,
    deadline: Instant,
    last_sent: Option<Instant>,
    /// When `send` accepted it (ms), for the delivery-latency metric.
    accepted_ms: u64,
    /// Holds it in the in-flight gauge from its first publish until it leaves the window.
    in_flight: Option<crate::runtime::metrics::InFlight>,
    /// Why the last answer was not taken (its signature did not hold), for the failure reason.
    ignored: Option<String>,
    /// How often the receiver was asked again for a result that is taking long.
    polls: u32,
}

/// Where the answers to message `seq` of a stream come (`<node prefix>.<stream>.<seq>`); a
/// signed answer is bound to exactly this subject.
fn reply_subject(prefix: &str, seq: u64) -> String {
    format!("{prefix}.{seq}")
}

/// When to ask the receiver again about a message it has ("received") whose result has not come:
/// after 10 ACK timeouts (at least a second), then twice as long each time, up to 10 minutes.
/// A result lost on the way home (a crash between two commits, a bug) is then fetched from the
/// receiver's record instead of being waited for forever; a long command costs one small
/// resend per interval, answered "received" until it is done.
fn poll_after(ack_timeout: Duration, polls: u32) -> Duration {
    let first = (ack_timeout * 10).max(Duration::from_secs(1));
    first
        .saturating_mul(1u32 << polls.min(16))
        .min(Duration::from_secs(600))
}

/// Starts a publisher for a stream under supervision; returns its event channel.
pub(crate) fn spawn(
    inner: Arc<Delivery>,
    stream_id: u64,
    subject: String,
) -> mpsc::UnboundedSender<PubEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let to_node = subject.split('.').next().unwrap_or_default().to_owned();
    let p = Publisher {
        reply_prefix: format!("{}.{stream_id}", inner.link.reply_prefix),
        metrics: inner.metrics.stream(&subject),
        inner: inner.clone(),
        stream_id,
        subject: subject.clone(),
        to_node,
        window: BTreeMap::new(),
        next_load: 1,
        more_on_disk: true,
        probing: false,
        said_ignored: false,
        unrecorded: Default::default(),
    };
    let task_inner = inner.clone();
    inner.tasks.spawn(async move {
        let run = std::panic::AssertUnwindSafe(p.run(rx)).catch_unwind().await;
        let failure = match run {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("panicked".to_owned()),
        };
        if let Some(why) = failure {
            if task_inner.tasks.stopping() {
                return;
            }
            task_inner.reporter.report(
                None,
                ErrorReportKind::TaskFailed,
                format!("publisher for {subject} failed ({why}); restarting it from the outbox"),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            task_inner.publishers.forget(stream_id);
            task_inner.publisher(stream_id, &subject);
        }
    });
    tx
}

struct Publisher {
    inner: Arc<Delivery>,
    stream_id: u64,
    subject: String,
    to_node: String,
    reply_prefix: String,
    window: BTreeMap<u64, Entry>,
    /// Next sequence number to load from the outbox.
    next_load: u64,
    /// The outbox may hold messages past what is loaded.
    more_on_disk: bool,
    /// After a failure, only the oldest message is sent until the receiver answers.
    probing: bool,
    /// An answer that did not hold was logged; more are logged at debug level until one holds.
    said_ignored: bool,
    /// Messages the receiver confirmed, not yet recorded as received: most complete within
    /// milliseconds, so the record is written only for those still waiting after a moment.
    unrecorded: std::collections::VecDeque<(u64, Instant)>,
    metrics: crate::runtime::metrics::StreamMetrics,
}

/// How long a confirmed message may wait for its result before "received" is written down.
const RECORD_RECEIVED_AFTER: Duration = Duration::from_millis(100);

impl Publisher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PubEvent>) -> crate::Result<()> {
        let mut shutdown = self.inner.tasks.subscribe();
        let mut connected = self.inner.link.connected.clone();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            self.fill()?;
            self.send_due().await;
            // Messages that finish when published (fire-and-forget) free the window with no
            // event to follow: load the rest now instead of waiting for one that never comes.
            if self.more_on_disk
                && self.window.len() < self.inner.cfg.window
                && self.inner.link.is_connected()
            {
                tokio::task::yield_now().await;
                continue;
            }
            let wake = self.next_wakeup();
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    self.handle(ev);
                    while let Ok(ev) = rx.try_recv() {
                        self.handle(ev);
                    }
                }
                _ = sleep_until(wake) => self.on_timer(),
                r = connected.changed() => {
                    if r.is_ok() && *connected.borrow() {
                        // The link is back: retry now instead of at the end of the backoff.
                        let now = Instant::now();
                        for e in self.window.values_mut() {
                            if e.phase == Phase::Pending {
                                e.not_before = now;
                            }
                        }
                    }
                }
                _ = shutdown.changed() => {
                    self.record_received(true);
                    return Ok(());
                }
                _ = tokio::time::sleep(crate::delivery::executor::IDLE_RETIRE), if self.is_idle() => {
                    // Retire unless an event arrived meanwhile; senders hold the map lock.
                    let mut arrived = None;
                    let retired = self.inner.publishers.retire_if(self.stream_id, || match rx.try_recv() {
                        Ok(ev) => {
                            arrived = Some(ev);
                            false
                        }
                        Err(_) => true,
                    });
                    if retired {
                        return Ok(());
                    }
                    if let Some(ev) = arrived {
                        self.handle(ev);
                    }
                }
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.window.is_empty() && !self.more_on_disk && self.unrecorded.is_empty()
    }

    fn fill(&mut self) -> crate::Result<()> {
        let room = self.inner.cfg.window.saturating_sub(self.window.len());
        if !self.more_on_disk || room == 0 {
            return Ok(());
        }
        let rows = self
            .inner
            .store
            .load_outbox(self.stream_id, self.next_load, room)?;
        if rows.len() < room {
            self.more_on_disk = false;
        }
        let now = Instant::now();
        for (seq, bytes) in rows {
            self.next_load = seq + 1;
            let mut item = match decode_outbox(&bytes) {
                Ok(item) => item,
                Err(e) => {
                    self.quarantine(seq, e);
                    continue;
                }
            };
            crate::security::signing::number(&mut item.envelope, seq);
            self.window.insert(
                seq,
                Entry {
                    is_result: item.envelope.kind == WireKind::Result,
                    id: item.envelope.id.clone(),
                    ack: item.envelope.ack,
                    ack_timeout: Duration::from_millis(item.ack_timeout_ms),
                    retries: item.retries,
                    retry_wait: Duration::from_millis(item.retry_wait_ms),
                    expires_ms: item.envelope.expires_ms,
                    phase: Phase::Pending,
                    attempts: item.attempts,
                    not_before: now,
                    deadline: now,
                    last_sent: None,
                    accepted_ms: item.accepted_ms,
                    in_flight: None,
                    ignored: None,
                    polls: 0,
                    envelope: item.envelope,
                    json: None,
                    tagged: false,
                },
            );
        }
        Ok(())
    }

    /// A damaged outbox row is never sent: it is removed and its message recorded as failed.
    fn quarantine(&mut self, seq: u64, e: crate::Error) {
        let reason = format!("damaged in the sender's store, so it was not sent: {e}");
        let (inner, stream_id, subject) =
            (self.inner.clone(), self.stream_id, self.subject.clone());
        let r = reason.clone();
        let _ = self.inner.store.submit(
            move |t| store::quarantine_outbox(t, stream_id, seq, r),
            move |done| match done {
                Ok(Some(rec)) => inner.finals.after_final(rec.into_status()),
                Ok(None) => inner.reporter.report(
                    None,
                    ErrorReportKind::DeliveryFailed,
                    format!("message {seq} of {subject}: {reason}"),
                ),
                Err(err) => tracing::error!(subject = %subject, seq, "cannot quarantine a damaged outbox row: {err}"),
            },
        );
    }

    /// When the publisher has something to do: a deadline, a record to write, or the first
    /// pending message falling due. A pending message `send_due` would hold back anyway (the
    /// link is down, or a probe is still unanswered) sets no time: the reconnection or the
    /// probe's answer wakes the publisher, and waking for it meanwhile would spin.
    fn next_wakeup(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = self
            .unrecorded
            .front()
            .map(|(_, at)| *at + RECORD_RECEIVED_AFTER);
        let held = !self.inner.link.is_connected()
            || (self.probing && self.window.values().any(|e| e.phase == Phase::AwaitAck));
        let mut first_pending = !held;
        for e in self.window.values() {
            let t = match e.phase {
                Phase::AwaitAck | Phase::Received => Some(e.deadline),
                Phase::Pending if first_pending => {
                    first_pending = false;
                    Some(e.not_before)
                }
                _ => None,
            };
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            }
        }
        wake
    }

    async fn send_due(&mut self) {
        if !self.inner.link.is_connected() {
            return;
        }
        let now = Instant::now();
        let floor = match self.window.keys().next() {
            Some(k) => *k,
            None => return,
        };
        let mut out = Outgoing {
            d: &self.inner,
            subject: &self.subject,
            to_node: &self.to_node,
            floor,
            headers: None,
        };
        // Received long ago and still no result: ask again (answered from the receiver's record).
        for (&seq, e) in self.window.iter_mut() {
            if e.phase != Phase::Received || e.deadline > now {
                continue;
            }
            tracing::debug!(msg_id = %e.id, subject = %self.subject, seq, polls = e.polls, "no result yet; asking the receiver again");
            let reply = reply_subject(&self.reply_prefix, seq);
            let (payload, headers) = out.payload(e);
            let client = &self.inner.link.client;
            let _ = match headers {
                Some(h) => {
                    client
                        .publish_with_reply_and_headers(self.subject.clone(), reply, h, payload)
                        .await
                }
                None => {
                    client
                        .publish_with_reply(self.subject.clone(), reply, payload)
                        .await
                }
            };
            e.polls += 1;
            e.deadline = now + poll_after(e.ack_timeout, e.polls);
        }
        let mut outstanding = self.window.values().any(|e| e.phase == Phase::AwaitAck);
        let mut finished = Vec::new();
        let mut sent_any = false;
        for (&seq, e) in self.window.iter_mut() {
            if e.phase != Phase::Pending {
                continue;
            }
            if e.not_before > now || (self.probing && outstanding) {
                break;
            }
            if let Some(exp) = e.expires_ms {
                if now_ms() > exp {
                    finished.push((
                        seq,
                        MessageState::Expired,
                        None,
                        Some("expired before it could be delivered".to_owned()),
                    ));
                    continue;
                }
            }
            let (payload, headers) = out.payload(e);
            let size = payload.len();
            let client = &self.inner.link.client;
            let subject = self.subject.clone();
            let r = match (e.ack, headers) {
                (true, Some(h)) => {
                    let reply = reply_subject(&self.reply_prefix, seq);
                    client
                        .publish_with_reply_and_headers(subject, reply, h, payload)
                        .await
                }
                (true, None) => {
                    let reply = reply_subject(&self.reply_prefix, seq);
                    client.publish_with_reply(subject, reply, payload).await
                }
                (false, Some(h)) => client.publish_with_headers(subject, h, payload).await,
                (false, None) => client.publish(subject, payload).await,
            };
            if let Err(err) = r {
                if err.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
                    // Accepted while the broker's limit was unknown (offline): it can never be
                    // sent, so it fails clearly instead of blocking its subject forever.
                    let max = self.inner.link.client.max_payload();
                    finished.push((
                        seq,
                        MessageState::Failed,
                        None,
                        Some(format!(
                            "the message is {size} bytes, more than the broker's max_payload of {max} bytes; send less data per message",
                        )),
                    ));
                    continue;
                }
                tracing::debug!(msg_id = %e.id, subject = %self.subject, "publish failed: {err}");
                break;
            }
            sent_any = true;
            e.attempts += 1;
            self.metrics.published(&mut e.in_flight, e.attempts);
            e.last_sent = Some(now);
            if e.ack {
                e.phase = Phase::AwaitAck;
                e.deadline = now + e.ack_timeout;
                outstanding = true;
            } else {
                finished.push((
                    seq,
                    MessageState::Completed,
                    None,
                    Some("sent without ACK (ackTimeout 0)".to_owned()),
                ));
            }
        }
        if sent_any {
            let _ = self.inner.link.client.flush().await;
        }
        for (seq, state, result, reason) in finished {
            self.finish(seq, state, result, reason);
        }
    }

    fn handle(&mut self, ev: PubEvent) {
        match ev {
            PubEvent::Enqueued(seq) => {
                if seq >= self.next_load {
                    self.more_on_disk = true;
                }
            }
            PubEvent::Finished(seq) => {
                self.window.remove(&seq);
            }
            PubEvent::Query(seq, tx) => {
                let _ = tx.send(self.window.get(&seq).map(|e| {
                    let state = match e.phase {
                        Phase::Received => MessageState::Received,
                        _ if e.attempts > 0 => MessageState::Sent,
                        _ => MessageState::Queued,
                    };
                    (state, e.attempts)
                }));
            }
            PubEvent::NoResponders(seq) => {
                if self
                    .window
                    .get(&seq)
                    .is_some_and(|e| e.phase == Phase::AwaitAck)
                {
                    let reason = format!(
                        "no node listens on {} (is {} running and connected?)",
                        self.subject, self.to_node
                    );
                    self.failed_attempt(seq, reason);
                }
            }
            PubEvent::Reply(seq, payload) => self.on_reply(seq, payload),
        }
    }

    fn on_reply(&mut self, seq: u64, payload: Bytes) {
        let Some(e) = self.window.get_mut(&seq) else {
            return;
        };
        let reply = match frame::decode_reply(&payload, &self.to_node) {
            Ok(r) => r,
            Err(why) => {
                if log_admit(&self.inner.cfg.name, &self.to_node) {
                    tracing::warn!(msg_id = %e.id, subject = %self.subject, "ignored an answer it cannot read: {why}");
                }
                return;
            }
        };
        if reply.send_signed {
            // The receiver could not check the session tag (unauthenticated, so it only ever
            // makes this node sign: a forged one costs bytes, not trust). Send it again at
            // once, signed, as JSON; the answer to that says what is wrong, if anything.
            if e.tagged && e.phase == Phase::AwaitAck {
                tracing::info!(msg_id = %e.id, subject = %self.subject, "{} could not check the session tag; sending signed JSON to it for a while: {}", self.to_node, reply.reason.as_deref().unwrap_or(""));
                self.inner.peers.tag_refused(&self.to_node);
                e.phase = Phase::Pending;
                e.not_before = Instant::now();
            }
            return;
        }
        // An answer without the id is a refusal of a message the receiver could not read
        // (bound to this message by the reply subject, and signed when asked).
        if e.id != reply.id && !(reply.id.is_empty() && reply.status == ReplyStatus::Rejected) {
            return;
        }
        if self.inner.security.policy == SignaturePolicy::Required {
            let reply_to = reply_subject(&self.reply_prefix, seq);
            if let Err(why) = self
                .inner
                .security
                .check_reply(&self.to_node, &reply_to, &reply)
            {
                // Not an answer: it changes nothing, and the ACK timeout runs on. Said once
                // until an answer holds again (each resend brings the same answer).
                if !std::mem::replace(&mut self.said_ignored, true) {
                    tracing::warn!(msg_id = %e.id, subject = %self.subject, "ignored an answer: {why}");
                } else {
                    tracing::debug!(msg_id = %e.id, subject = %self.subject, "ignored an answer: {why}");
                }
                e.ignored = Some(why);
                return;
            }
        }
        self.said_ignored = false;
        self.inner.peers.heard(&self.to_node, reply.wire);
        if e.phase != Phase::Received
            && matches!(reply.status, ReplyStatus::Received | ReplyStatus::Done)
        {
            self.metrics.delivered(e.accepted_ms);
        }
        match reply.status {
            ReplyStatus::Received => {
                self.probing = false;
                if e.phase != Phase::Received {
                    e.phase = Phase::Received;
                    e.deadline = Instant::now() + poll_after(e.ack_timeout, e.polls);
                    self.unrecorded.push_back((seq, Instant::now()));
                }
            }
            ReplyStatus::Done if e.is_result => {
                self.probing = false;
                self.finish(seq, MessageState::Completed, None, None);
            }
            ReplyStatus::Done => {
                self.probing = false;
                let result = reply.result.unwrap_or_else(|| {
                    MethodResult::unknown(
                        "the receiver finished this message earlier and no longer keeps its result",
                    )
                });
                self.finish(seq, MessageState::Completed, Some(result), None);
            }
            ReplyStatus::Rejected => {
                self.probing = false;
                let refusal = reply.refusal();
                self.finish_as(seq, MessageState::Rejected, None, reply.reason, refusal);
            }
            ReplyStatus::Expired => {
                self.probing = false;
                self.finish(
                    seq,
                    MessageState::Expired,
                    None,
                    reply
                        .reason
                        .or(Some("expired at the receiver before it ran".into())),
                );
            }
            ReplyStatus::Stale => {
                self.probing = false;
                self.finish(
                    seq,
                    MessageState::Completed,
                    Some(MethodResult::unknown(
                        "the receiver moved past this message long ago and no longer remembers its outcome",
                    )),
                    None,
                );
            }
            ReplyStatus::Gap => {
                let now = Instant::now();
                let expected = reply.expected.unwrap_or(0);
                let this_sent = e.last_sent;
                let from = match self.window.get(&expected) {
                    // Resend from the missing one, unless it was already resent after this one went out.
                    Some(missing)
                        if missing.phase == Phase::AwaitAck && missing.last_sent <= this_sent =>
                    {
                        Some(expected)
                    }
                    Some(_) => None,
                    // The receiver waits for something we already finished: resend with the new floor.
                    None if expected < seq => Some(seq),
                    None => None,
                };
                if let Some(from) = from {
                    for (_, e) in self.window.range_mut(from..) {
                        if e.phase == Phase::AwaitAck {
                            e.phase = Phase::Pending;
                            e.not_before = now;
                        }
                    }
                }
            }
            ReplyStatus::Retry => {
                let reason = reply
                    .reason
                    .unwrap_or_else(|| "the receiver could not record it".into());
                self.failed_attempt(seq, reason);
            }
        }
    }

    /// Writes "received" for confirmed messages still waiting for their result.
    fn record_received(&mut self, all: bool) {
        let now = Instant::now();
        let mut batch = Vec::new();
        while let Some(&(seq, at)) = self.unrecorded.front() {
            if !all && now.duration_since(at) < RECORD_RECEIVED_AFTER {
                break;
            }
            self.unrecorded.pop_front();
            if let Some(e) = self.window.get(&seq).filter(|e| e.phase == Phase::Received) {
                batch.push((e.id.clone(), e.attempts));
            }
        }
        if !batch.is_empty() {
            let _ = self.inner.store.submit(
                move |txn| {
                    for (id, attempts) in batch {
                        store::mark_progress(txn, &id, MessageState::Received, attempts)?;
                    }
                    Ok(())
                },
                |_| {},
            );
        }
    }

    fn on_timer(&mut self) {
        self.record_received(false);
        let now = Instant::now();
        let timed_out: Vec<u64> = self
            .window
            .iter()
            .filter(|(_, e)| e.phase == Phase::AwaitAck && e.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        if let Some(&first) = timed_out.first() {
            let e = self.window.get_mut(&first).expect("timed out entry");
            let reason = match e.ignored.take() {
                Some(why) => format!("no valid ACK within {:?}; {why}", e.ack_timeout),
                None => format!("no ACK within {:?}", e.ack_timeout),
            };
            self.failed_attempt(first, reason);
        }
    }

    /// The oldest unanswered message failed an attempt: give it up if its retries are spent,
    /// and send the rest again, in order, after a backoff, starting with a single probe.
    fn failed_attempt(&mut self, seq: u64, reason: String) {
        let now = Instant::now();
        let Some(e) = self.window.get(&seq) else {
            return;
        };
        let exhausted = e.retries.is_some_and(|r| e.attempts > r);
        let wait = backoff(e.retry_wait, self.inner.cfg.retry_wait_max, e.attempts);
        let mut failed = Vec::new();
        if !exhausted && !e.is_result {
            failed.push((seq, e.id.clone(), e.attempts));
        }
        if exhausted {
            let why = format!("gave up after {} attempts: {reason}", e.attempts);
            self.finish(seq, MessageState::Failed, None, Some(why));
        } else {
            tracing::debug!(msg_id = %e.id, subject = %self.subject, seq, "attempt failed ({reason}); retrying in {wait:?}");
        }
        // Everything at or after it that awaits an ACK goes back to pending, in order.
        let mut exhausted_later = Vec::new();
        for (&s, e) in self.window.range_mut(seq..) {
            if e.phase == Phase::AwaitAck {
                if e.deadline <= now && e.retries.is_some_and(|r| e.attempts > r) {
                    exhausted_later.push((s, e.attempts));
                    continue;
                }
                // Later ones only where a retries limit makes the count matter: a backlog of
                // unlimited messages timing out together costs one row, not a window of rows.
                if s != seq && e.deadline <= now && !e.is_result && e.retries.is_some() {
                    failed.push((s, e.id.clone(), e.attempts));
                }
                e.phase = Phase::Pending;
                e.not_before = now + wait;
            }
        }
        if !failed.is_empty() {
            // Off the hot path (only failed attempts are written): the count survives a restart.
            let stream_id = self.stream_id;
            let _ = self.inner.store.submit(
                move |t| store::record_attempts(t, stream_id, &failed),
                |_| {},
            );
        }
        for (s, attempts) in exhausted_later {
            self.finish(
                s,
                MessageState::Failed,
                None,
                Some(format!("gave up after {attempts} attempts: {reason}")),
            );
        }
        self.probing = true;
    }

    /// Removes a message from the window and records its final state.
    fn finish(
        &mut self,
        seq: u64,
        state: MessageState,
        result: Option<MethodResult>,
        reason: Option<String>,
    ) {
        self.finish_as(seq, state, result, reason, None);
    }

    /// [`Self::finish`] with the receiver's code for a refusal.
    fn finish_as(
        &mut self,
        seq: u64,
        state: MessageState,
        result: Option<MethodResult>,
        reason: Option<String>,
        refusal: Option<Refusal>,
    ) {
        let Some(e) = self.window.remove(&seq) else {
            return;
        };
        if e.is_result {
            if state != MessageState::Completed {
                tracing::error!(msg_id = %e.id, subject = %self.subject, ?state, ?reason, "a result could not be delivered; it is dropped");
            }
            let stream_id = self.stream_id;
            let _ = self
                .inner
                .store
                .submit(move |t| store::remove_outbox(t, stream_id, seq), |_| {});
            return;
        }
        let inner = self.inner.clone();
        let (id, attempts) = (e.id, e.attempts);
        let early = match (state, &result) {
            (MessageState::Completed, Some(result)) => {
                // The receiver holds it durably: the caller need not wait for this commit.
                self.inner.finals.finishing_now(
                    &id,
                    crate::delivery::finals::Finishing {
                        result: result.clone(),
                        attempts,
                        at_ms: now_ms(),
                    },
                );
                Some((id.clone(), result.clone()))
            }
            _ => None,
        };
        let msg_id = id.clone();
        let r = self.inner.store.submit(
            move |txn| store::finalize_with(txn, &id, state, result, reason, refusal, attempts),
            move |r| match r {
                Ok(Some(rec)) => inner.finals.after_final(rec.into_status()),
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(msg_id = %msg_id, "could not record a final state: {err}")
                }
            },
        );
        // Answered after the commit is submitted: a status read that follows waits for it.
        if let Some((id, result)) = early {
            self.inner.finals.answer_early(&id, &result);
        }
        if r.is_err() {
            tracing::debug!("store closed while finishing a message");
        }
    }
}

/// Encodes the messages of one round of sends: binary with a session tag to a peer that reads
/// it and whose key this node trusts, else signed JSON with the floor in (signed) headers.
struct Outgoing<'a> {
    d: &'a Delivery,
    subject: &'a str,
    to_node: &'a str,
    floor: u64,
    /// The JSON floor headers, made once per round when first needed.
    headers: Option<HeaderMap>,
}

impl Outgoing<'_> {
    /// The payload for `e`, and the headers when it goes as JSON.
    fn payload(&mut self, e: &mut Entry) -> (Bytes, Option<HeaderMap>) {
        let unsigned = self.d.security.policy == SignaturePolicy::Unsigned;
        // The third, fifth… attempt goes as JSON, which every version reads: a peer rolled back
        // to a version that reads only JSON answers it, and says so.
        let alternate = e.attempts >= 2 && e.attempts.is_multiple_of(2);
        if self.d.cfg.wire_format == crate::WireFormat::Binary
            && self.d.peers.reads_binary(self.to_node)
            && !alternate
        {
            let session = if unsigned {
                None
            } else {
                self.d.security.session_with(self.to_node)
            };
            if unsigned || session.is_some() {
                let tag = session.map(|s| s.tag_envelope(&e.envelope, self.floor));
                e.tagged = tag.is_some();
                let bytes = frame::encode_envelope(&e.envelope, self.floor, tag.as_ref());
                return (Bytes::from(bytes), None);
            }
        }
        e.tagged = false;
        let json = e
            .json
            .get_or_insert_with(|| {
                let mut env = e.envelope.clone();
                env.wire = Some(frame::VERSION);
                crate::security::signing::sign(&self.d.security, &mut env);
                Bytes::from(serde_json::to_vec(&env).unwrap_or_default())
            })
            .clone();
        let headers = self
            .headers
            .get_or_insert_with(|| {
                let mut headers = HeaderMap::new();
                headers.insert(FLOOR_HEADER, self.floor.to_string().as_str());
                crate::security::signing::floor_header(
                    &self.d.security,
                    &self.d.cfg.name,
                    self.d.store.epoch(),
                    self.subject,
                    self.floor,
                    &mut headers,
                );
                headers
            })
            .clone();
        (json, Some(headers))
    }
}

/// `base * 2^(attempt-1)`, capped, with ±20 % jitter.
fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(cap).max(Duration::from_millis(1));
    let jitter = rand::random_range(0.8..1.2);
    d.mul_f64(jitter)
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_start_after_ten_ack_timeouts_and_cap_at_ten_minutes() {
        assert_eq!(
            poll_after(Duration::from_secs(10), 0),
            Duration::from_secs(100)
        );
        assert_eq!(
            poll_after(Duration::from_secs(10), 1),
            Duration::from_secs(200)
        );
        assert_eq!(
            poll_after(Duration::from_millis(10), 0),
            Duration::from_secs(1)
        );
        assert_eq!(
            poll_after(Duration::from_secs(10), 40),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        assert!(backoff(b, cap, 1) <= Duration::from_millis(120));
        assert!(backoff(b, cap, 3) >= Duration::from_millis(320));
        assert!(backoff(b, cap, 30) <= Duration::from_millis(2400));
    }
}
