//! The audit log: every message this node finished, as one JSON line in `<data_dir>/audit.log`
//! holding the message (resendable as is) and its outcome.
//!
//! Lines are queued in the store in the same transaction as the final state, then appended and
//! fsync'd here and only then removed from the queue: a crash can repeat a line, never lose one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::store::Store;

/// File name of the audit log inside the data directory.
pub const AUDIT_LOG: &str = "audit.log";

/// Lines are gathered this long before being appended: each append costs an fsync of
/// `audit.log` and a store commit, which would otherwise be paid per message and delay the
/// store's other writes. The lines are durable in the store meanwhile.
const GATHER: Duration = Duration::from_millis(200);

/// Appends the queued lines of `store` to `<data_dir>/audit.log` whenever `wake` is notified
/// (and every 5 s), until `shutdown` turns true; then flushes once more.
pub(crate) async fn run(
    store: Store,
    data_dir: PathBuf,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    let path = data_dir.join(AUDIT_LOG);
    loop {
        let wrote = flush_once(&store, &path).await?;
        if *shutdown.borrow() {
            return Ok(());
        }
        if wrote == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                // A safety net: lines queued by a finalization that woke nobody (e.g. at start).
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => {
                    flush_once(&store, &path).await?;
                    return Ok(());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(GATHER) => {}
            _ = shutdown.changed() => {
                flush_once(&store, &path).await?;
                return Ok(());
            }
        }
    }
}

async fn flush_once(store: &Store, path: &std::path::Path) -> crate::Result<usize> {
    let rows = store.audit_pending(4096)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let path = path.to_path_buf();
    let keys: Vec<u64> = rows.iter().map(|(k, _)| *k).collect();
    let p = path.clone();
    tokio::task::spawn_blocking(move || -> crate::Result<()> {
        let mut buf = Vec::new();
        for (_, line) in &rows {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let mut f = crate::private_files::append(&p).map_err(|e| crate::Error::io(&p, e))?;
        f.write_all(&buf).map_err(|e| crate::Error::io(&p, e))?;
        f.sync_data().map_err(|e| crate::Error::io(&p, e))?;
        Ok(())
    })
    .await
    .map_err(|e| crate::Error::storage_from(e.to_string(), e))??;
    let n = keys.len();
    store
        .write(move |txn| crate::store::audit_done(txn, &keys))
        .await?;
    Ok(n)
}
