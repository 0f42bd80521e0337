//! Forgets what is no longer needed: finished messages older than the retention period.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Inner;
use crate::store;
use crate::wire::envelope::now_ms;

/// How often the store is pruned.
const EVERY: Duration = Duration::from_secs(3600);

pub(crate) async fn run(inner: Arc<Inner>) -> crate::Result<()> {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        prune_now(&inner).await?;
    }
}

/// Prunes once; returns (dedup records, message records) removed.
pub(crate) async fn prune_now(inner: &Arc<Inner>) -> crate::Result<(usize, usize)> {
    let cutoff = now_ms().saturating_sub(inner.cfg.retention.as_millis() as u64);
    let (a, b) = inner.store.write(move |t| store::prune(t, cutoff)).await?;
    if a + b > 0 {
        tracing::info!(
            dedup_records = a,
            message_records = b,
            "pruned finished messages past retention"
        );
    }
    Ok((a, b))
}
