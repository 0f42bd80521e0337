//! The one way to queue messages for sending: write them to the outbox (with whatever else the
//! same transaction must record), then wake the publisher of each new message's stream. Used
//! by `Node::send`, results going home, error reports to central and trust bundles.
//!
//! The outbox knows the store and a *wake-up* given by the node when it wires its parts (it
//! counts the message as accepted and hands it to its stream's publisher, starting one if
//! needed) — nothing else of the node.

use std::sync::Arc;

use crate::error::Result;
use crate::store::{self, Enqueued, NewMessage, Store, Tx};

/// Called once for each newly queued message, after its transaction committed.
pub(crate) type Wake = Arc<dyn Fn(&Enqueued) + Send + Sync>;

/// A handle to queue messages; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    store: Store,
    wake: Wake,
}

impl Outbox {
    /// An outbox writing to `store`; `wake` runs for each new message once it is durable.
    pub(crate) fn new(store: Store, wake: Wake) -> Outbox {
        Outbox { store, wake }
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
