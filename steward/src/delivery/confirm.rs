//! Stream positions confirmed by their sender after every (re)connect (`signatures = required`).
//!
//! A message its sender cancelled, gave up on or let expire must never run, even when a copy
//! captured on the broker is replayed the moment the receiver comes back — before the sender has
//! sent anything newer whose signed floor would tell the receiver to skip it. So after each
//! start and each reconnect, a receiver runs nothing further of an ordered stream until the
//! sender has answered a fresh challenge: the receiver asks `<sender>.command._floorQuery` with
//! a random nonce, and the sender answers with the stream's floor (its lowest unfinished
//! sequence number) signed over its name, the epoch, the subject, the floor and the nonce. The
//! messages that arrived meanwhile are held and then decided with that floor: one below it is
//! *stale* and never runs. An answer that does not hold, or none within 10 s, drops the held
//! messages (the sender resends them) and nothing runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::delivery::Delivery;
use crate::security::keys::PublicKey;
use crate::security::trust::SignaturePolicy;
use crate::wire::envelope::{Envelope, WireKind};

/// The method a receiver asks a sender's floor with.
pub(crate) const FLOOR_QUERY: &str = "_floorQuery";
/// How long a sender has to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages held per stream while its position is asked; more are dropped (the sender resends).
const MAX_HELD: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Query {
    subject: String,
    epoch: u64,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    floor: u64,
    sig: String,
}

/// The receiver's confirmed streams and the messages held until their sender answers.
pub(crate) struct Confirmations {
    state: Mutex<State>,
    reinject: mpsc::UnboundedSender<async_nats::Message>,
    /// Held messages whose stream is now confirmed, for the receive loop to decide again.
    pub reinjected: tokio::sync::Mutex<mpsc::UnboundedReceiver<async_nats::Message>>,
}

struct State {
    /// Per stream (`from/epoch/subject`): the floor its sender confirmed since the last connect.
    confirmed: HashMap<String, u64>,
    waiting: HashMap<String, Vec<async_nats::Message>>,
    /// The broker link: every change (a reconnect) forgets what was confirmed.
    link: watch::Receiver<bool>,
}

/// What the receiver does with an admitted message.
pub(crate) enum Gate {
    /// Decide it now, with this floor from the sender's confirmation (0: none needed).
    Pass(u64),
    /// Held until the sender confirms the stream's position.
    Held,
}

impl Confirmations {
    pub(crate) fn new(link: watch::Receiver<bool>) -> Confirmations {
        let (tx, rx) = mpsc::unbounded_channel();
        Confirmations {
            state: Mutex::new(State {
                confirmed: HashMap::new(),
                waiting: HashMap::new(),
                link,
            }),
            reinject: tx,
            reinjected: tokio::sync::Mutex::new(rx),
        }
    }
}

/// Passes a message whose stream is confirmed (or needs no confirmation); otherwise holds it
/// and, for the first one held, asks its sender.
pub(crate) fn gate(inner: &Arc<Delivery>, env: &Envelope, msg: &async_nats::Message) -> Gate {
    if inner.security.policy != SignaturePolicy::Required
        || !env.ack
        || env.seq == 0
        || env.kind == WireKind::Result
        || env.from == inner.cfg.name
        || env.to != inner.cfg.name
    {
        return Gate::Pass(0);
    }
    // Admitted under `required`, so signed by the key trusted for its sender.
    let Some(key) = env.sig.as_ref().and_then(|s| PublicKey::parse(&s.key).ok()) else {
        return Gate::Pass(0);
    };
    let subject = env.subject();
    let stream = format!("{}/{:x}/{}", env.from, env.epoch, subject);
    let c = &inner.confirm;
    let mut st = c.state.lock().unwrap_or_else(|p| p.into_inner());
    if st.link.has_changed().unwrap_or(false) {
        st.link.borrow_and_update();
        st.confirmed.clear();
    }
    if let Some(floor) = st.confirmed.get(&stream) {
        return Gate::Pass(*floor);
    }
    let held = st.waiting.entry(stream.clone()).or_default();
    let first = held.is_empty();
    if held.len() < MAX_HELD {
        held.push(msg.clone());
    }
    drop(st);
    if first {
        let (inner, from, epoch) = (inner.clone(), env.from.clone(), env.epoch);
        inner
            .tasks
            .rt
            .clone()
            .spawn(ask(inner, stream, from, subject, epoch, key));
    }
    Gate::Held
}

/// Asks the sender for the stream's floor, then hands the held messages back to the receiver
/// (confirmed) or drops them (not confirmed: nothing runs; the sender resends).
async fn ask(
    inner: Arc<Delivery>,
    stream: String,
    from: String,
    subject: String,
    epoch: u64,
    key: PublicKey,
) {
    let mut raw = [0u8; 16];
    let nonce = match getrandom::fill(&mut raw) {
        Ok(()) => B64.encode(raw),
        Err(_) => String::new(),
    };
    let floor = if nonce.is_empty() {
        None
    } else {
        let q = Query {
            subject: subject.clone(),
            epoch,
            nonce: nonce.clone(),
        };
        let asked = inner.link.client.request(
            format!("{from}.command.{FLOOR_QUERY}"),
            serde_json::to_vec(&q).unwrap_or_default().into(),
        );
        match tokio::time::timeout(QUERY_TIMEOUT, asked).await {
            Ok(Ok(m)) => serde_json::from_slice::<Answer>(&m.payload)
                .ok()
                .filter(|a| {
                    let bytes = crate::security::signing::confirm_bytes(
                        &from, epoch, &subject, a.floor, &nonce,
                    );
                    crate::security::signing::verify_bytes(&key, &bytes, &a.sig).is_ok()
                })
                .map(|a| a.floor),
            _ => None,
        }
    };
    let c = &inner.confirm;
    let held = {
        let mut st = c.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = floor {
            st.confirmed.insert(stream.clone(), f);
        }
        st.waiting.remove(&stream).unwrap_or_default()
    };
    match floor {
        Some(f) => {
            tracing::debug!(from = %from, subject = %subject, floor = f, "the sender confirmed the stream's position");
            for m in held {
                let _ = c.reinject.send(m);
            }
        }
        None => tracing::warn!(
            from = %from,
            subject = %subject,
            "{from} did not confirm the position of {subject} (no valid answer within {QUERY_TIMEOUT:?}); \
             its messages wait and run only once it does"
        ),
    }
}

/// The sender's side: answers a receiver's challenge with the stream's floor, signed with the
/// receiver's nonce (a floor of `u64::MAX` for an epoch or subject this node does not send on).
pub(crate) async fn answer(inner: &Arc<Delivery>, msg: &async_nats::Message) {
    let Some(reply) = msg.reply.as_ref() else {
        return;
    };
    let Ok(q) = serde_json::from_slice::<Query>(&msg.payload) else {
        return;
    };
    if q.nonce.is_empty() || q.nonce.len() > 64 || q.subject.len() > 512 {
        return;
    }
    let floor = if q.epoch != inner.store.epoch() {
        u64::MAX
    } else {
        match inner.store.stream_floor(&q.subject) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot answer a position query for {}: {e}", q.subject);
                return;
            }
        }
    };
    let bytes = crate::security::signing::confirm_bytes(
        &inner.cfg.name,
        q.epoch,
        &q.subject,
        floor,
        &q.nonce,
    );
    let sig = B64.encode(inner.security.keys.sign(&bytes).to_bytes());
    let payload = serde_json::to_vec(&Answer { floor, sig }).unwrap_or_default();
    if let Err(e) = inner
        .link
        .client
        .publish(reply.clone(), payload.into())
        .await
    {
        tracing::debug!("could not answer a position query: {e}");
    }
}
