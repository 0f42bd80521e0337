//! Forgets what is no longer needed: finished messages older than the retention period.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{self, Store};
use crate::wire::envelope::now_ms;

/// How often the store is pruned.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes `store` every hour, keeping `retention`, until `shutdown` turns true.
pub(crate) async fn run(
    store: Store,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        prune_now(&store, retention).await?;
    }
}

/// Prunes once; returns (dedup records, message records) removed.
pub(crate) async fn prune_now(store: &Store, retention: Duration) -> crate::Result<(usize, usize)> {
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    let (a, b) = store.write(move |t| store::prune(t, cutoff)).await?;
    if a + b > 0 {
        tracing::info!(
            dedup_records = a,
            message_records = b,
            "pruned finished messages past retention"
        );
    }
    Ok((a, b))
}
