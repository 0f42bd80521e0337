//! The one way to queue messages for sending: write them to the outbox (with whatever else the
//! same transaction must record), then wake the publisher of each new message's stream. Used
//! by `Node::send`, results going home, error reports to central and trust bundles.
//!
//! Messages are validated and filled in with the node's defaults here ([`Outbox::prepare`]).
//! The outbox knows the store, the settings, the broker connection (for its `max_payload`) and
//! a *wake-up* given by the node when it wires its parts (it counts the message as accepted and
//! hands it to its stream's publisher, starting one if needed) — nothing else of the node.

use std::sync::Arc;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::store::{self, Enqueued, NewMessage, OutboxItem, Store, Tx};
use crate::wire::envelope::{now_ms, Envelope, WireKind};
use crate::wire::message::{Expiry, Message};

/// Called once for each newly queued message, after its transaction committed.
pub(crate) type Wake = Arc<dyn Fn(&Enqueued) + Send + Sync>;

/// A handle to queue messages; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    store: Store,
    wake: Wake,
    /// The node's settings: its name and the defaults of its messages.
    cfg: Arc<NodeConfig>,
    /// The broker connection, for its `max_payload`.
    client: async_nats::Client,
}

impl Outbox {
    /// An outbox writing to `store`; `wake` runs for each new message once it is durable.
    pub(crate) fn new(
        store: Store,
        wake: Wake,
        cfg: Arc<NodeConfig>,
        client: async_nats::Client,
    ) -> Outbox {
        Outbox {
            store,
            wake,
            cfg,
            client,
        }
    }

    /// Validates a message and turns it into an outbox entry.
    pub(crate) fn prepare(
        &self,
        m: Message,
        index: Option<usize>,
        internal: bool,
    ) -> Result<NewMessage> {
        m.validate(index)?;
        if m.method.starts_with('_') && !internal {
            return Err(Error::invalid(
                index,
                Some("method"),
                "names starting with '_' are reserved for steward",
            ));
        }
        let fresh_id = m.id.is_none();
        let id =
            m.id.clone()
                .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let now = SystemTime::now();
        let expires = match m.expiry.or(self.cfg.ttl.map(Expiry::Ttl)) {
            Some(Expiry::Ttl(d)) => Some(now + d),
            Some(Expiry::At(t)) => Some(t),
            None => None,
        };
        let expires_ms = expires.map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        });
        if let Some(ms) = expires_ms {
            if ms <= now_ms() {
                return Err(Error::invalid(
                    index,
                    Some("expiresAt"),
                    "is already in the past",
                ));
            }
        }
        let ack_timeout = m.ack_timeout.unwrap_or(self.cfg.ack_timeout);
        let envelope = Envelope {
            id: id.clone(),
            from: self.cfg.name.clone(),
            to: m.to_node.clone(),
            kind: WireKind::from(m.kind),
            method: m.method.clone(),
            data: m.data.clone(),
            epoch: self.store.epoch(),
            seq: 0,
            ack: !ack_timeout.is_zero(),
            expires_ms,
            method_timeout_ms: m
                .method_timeout
                .unwrap_or(self.cfg.method_timeout)
                .as_millis() as u64,
            result_of: None,
            result: None,
            outcome: None,
            sig: None,
            wire: None,
            authentic: None,
        };
        let size = serde_json::to_vec(&envelope).map(|v| v.len()).unwrap_or(0) + 256;
        let max = self.max_payload();
        if size > max {
            return Err(Error::invalid(
                index,
                Some("data"),
                format!("the message is about {size} bytes, more than the broker's max_payload of {max} bytes; send less data per message"),
            ));
        }
        let subject = m.subject();
        let mut json = m.to_json();
        if let Some(o) = json.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        Ok(NewMessage {
            item: OutboxItem {
                envelope,
                ack_timeout_ms: ack_timeout.as_millis() as u64,
                retries: m.retries.or(self.cfg.retries),
                retry_wait_ms: m.retry_wait.unwrap_or(self.cfg.retry_wait).as_millis() as u64,
                accepted_ms: now_ms(),
                attempts: 0,
            },
            subject,
            json,
            internal,
            fresh_id,
        })
    }

    fn max_payload(&self) -> usize {
        match self.client.max_payload() {
            0 => 1 << 20,
            n => n,
        }
    }

    /// Queues `msgs` (all or none) and waits until they are durable; returns what was queued
    /// (`existed`: the same id was queued before, nothing new to send).
    pub(crate) async fn queue(&self, msgs: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        let (_, done) = self.queue_with(|_| Ok(()), msgs, |_| {}).await?;
        Ok(done)
    }

    /// Like [`Outbox::queue`], in one transaction with `extra` (run first); `then` sees its
    /// outcome after the commit and before any publisher is woken.
    pub(crate) async fn queue_with<R, F, T>(
        &self,
        extra: F,
        msgs: Vec<NewMessage>,
        then: T,
    ) -> Result<(R, Vec<Enqueued>)>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
        T: FnOnce(&R) + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_with(extra, msgs, move |r| {
            if let Ok((v, _)) = &r {
                then(v);
            }
            let _ = tx.send(r);
        })?;
        self.store.outcome(rx).await
    }

    /// Without waiting (for callers on the store's completion path): queues `msgs` in one
    /// transaction with `extra`; `then` gets the outcome after the commit, before the
    /// publishers are woken. Errs only if the store is stopping.
    pub(crate) fn submit_with<R, F, T>(
        &self,
        extra: F,
        msgs: Vec<NewMessage>,
        then: T,
    ) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
        T: FnOnce(Result<(R, Vec<Enqueued>)>) + Send + 'static,
    {
        let wake = self.wake.clone();
        self.store.submit(
            move |txn| {
                let r = extra(txn)?;
                Ok((r, store::enqueue(txn, msgs)?))
            },
            move |out: Result<(R, Vec<Enqueued>)>| {
                let fresh: Vec<Enqueued> = match &out {
                    Ok((_, done)) => done.iter().filter(|e| !e.existed).cloned().collect(),
                    Err(_) => Vec::new(),
                };
                then(out);
                for e in &fresh {
                    wake(e);
                }
            },
        )
    }
}
