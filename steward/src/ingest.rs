//! `inmsg.txt`, exactly as the original: JSON arrays appended to `<data_dir>/inmsg.txt` are sent.
//!
//! The file is taken over by an atomic rename to `inmsg.<ULID>.ingest` (new appends create a fresh
//! `inmsg.txt`, so no byte written later is lost), a writer still mid-append to the old file is
//! waited for, every valid message is durably accepted, anything unparsable goes to
//! `inmsg.rejected/` with its error, and only then is the taken file deleted. Messages without an
//! id get `<ULID>-<n>`, so a crash mid-way makes the retry idempotent instead of a double send.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;

use crate::error::Error;
use crate::message::{self, ParsedBatch};
use crate::node::{Inner, Node};
use crate::notify::ErrorReportKind;

/// The watched file's name.
pub const INMSG: &str = "inmsg.txt";
/// Folder for content that could not be parsed.
pub const REJECTED_DIR: &str = "inmsg.rejected";
/// Largest `inmsg.txt` read; a bigger one is moved to `inmsg.rejected/` whole.
pub const MAX_INMSG_BYTES: u64 = 64 << 20;
/// Messages accepted per disk commit while ingesting a large file.
const INGEST_SLICE: usize = 1024;
/// How long the file must stay unchanged before a truncated tail counts as final.
const SETTLE: Duration = Duration::from_millis(300);
/// How long a writer that stopped mid-value is waited for.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn run(inner: Arc<Inner>) -> crate::Result<()> {
    let dir = inner.cfg.data_dir.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == INMSG))
            {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| Error::Config(format!("cannot watch {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::Config(format!("cannot watch {}: {e}", dir.display())))?;
    let node = Node {
        inner: inner.clone(),
    };
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        ingest_all(&node).await?;
        tokio::select! {
            _ = rx.recv() => {}
            // A safety net for file systems whose change events get lost.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        while rx.try_recv().is_ok() {}
    }
}

/// Processes leftover taken files (from a crash), then takes and processes `inmsg.txt`.
pub(crate) async fn ingest_all(node: &Node) -> crate::Result<()> {
    let dir = node.inner.cfg.data_dir.clone();
    for taken in leftover(&dir)? {
        ingest_taken(node, &taken).await?;
    }
    let src = dir.join(INMSG);
    match std::fs::metadata(&src) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(()),
    }
    let taken = dir.join(format!("inmsg.{}.ingest", ulid::Ulid::new()));
    match std::fs::rename(&src, &taken) {
        Ok(()) => ingest_taken(node, &taken).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&src, e)),
    }
}

fn leftover(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("inmsg.") && n.ends_with(".ingest"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One parsed piece of the file.
enum Chunk {
    Value(serde_json::Value),
    Bad { text: Vec<u8>, error: String },
}

async fn ingest_taken(node: &Node, taken: &Path) -> crate::Result<()> {
    let inner = &node.inner;
    let batch_id = taken
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("inmsg."))
        .and_then(|n| n.strip_suffix(".ingest"))
        .unwrap_or("batch")
        .to_owned();
    let size = std::fs::metadata(taken)
        .map_err(|e| Error::io(taken, e))?
        .len();
    if size > MAX_INMSG_BYTES {
        let reason = format!("{INMSG} was {size} bytes, more than the limit of {MAX_INMSG_BYTES}; split it into smaller appends");
        reject_file(inner, taken, &batch_id, &reason)?;
        return Ok(());
    }
    let bytes = wait_complete(taken).await?;
    let mut n = 0usize;
    for (pos, chunk) in split_bytes(&bytes).into_iter().enumerate() {
        match chunk {
            Chunk::Value(v) => {
                let mut batch: ParsedBatch = message::parse_value(&v);
                for (_, m) in batch.messages.iter_mut() {
                    n += 1;
                    if m.id.is_none() {
                        m.id = Some(format!("{batch_id}-{n}"));
                    }
                }
                // Accept in slices, so a flood does not hold every receipt and record at once.
                let mut messages = std::mem::take(&mut batch.messages).into_iter().peekable();
                let mut errors = std::mem::take(&mut batch.errors);
                let (mut accepted, mut refused) = (0, 0);
                while messages.peek().is_some() || !errors.is_empty() {
                    let slice = ParsedBatch {
                        messages: messages.by_ref().take(INGEST_SLICE).collect(),
                        errors: std::mem::take(&mut errors),
                    };
                    let report = node.send_parsed(slice).await?;
                    for e in &report.rejected {
                        tracing::warn!("{INMSG}: {e}");
                    }
                    accepted += report.accepted.len();
                    refused += report.rejected.len();
                }
                tracing::info!("{INMSG}: accepted {accepted} message(s), refused {refused}");
            }
            Chunk::Bad { text, error } => {
                let name = format!("{batch_id}-{pos}");
                let reason = format!("{INMSG}: content that is not valid JSON ({error}); moved to {REJECTED_DIR}/{name}.txt");
                write_rejected(inner, &name, &text, &reason)?;
                inner.report(None, ErrorReportKind::BadInput, reason);
            }
        }
    }
    std::fs::remove_file(taken).map_err(|e| Error::io(taken, e))?;
    Ok(())
}

/// Reads the taken file, waiting while its tail is an unfinished JSON value and it still grows.
async fn wait_complete(path: &Path) -> crate::Result<Vec<u8>> {
    let start = Instant::now();
    let mut last_len = u64::MAX;
    let mut stable_since = Instant::now();
    loop {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        let len = bytes.len() as u64;
        if len != last_len {
            last_len = len;
            stable_since = Instant::now();
        }
        // Only to see whether the tail is unfinished; the content itself is never altered.
        let unfinished = ends_unfinished(&String::from_utf8_lossy(&bytes));
        let settled = stable_since.elapsed() >= SETTLE;
        if (!unfinished && settled) || start.elapsed() >= MAX_WAIT {
            return Ok(bytes);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ends_unfinished(text: &str) -> bool {
    let mut it = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    loop {
        match it.next() {
            None => return false,
            Some(Ok(_)) => {}
            Some(Err(e)) => return e.is_eof(),
        }
    }
}

/// Runs the reader over raw `inmsg.txt` bytes without sending: (valid messages, refused parts
/// and elements). Used by the fuzz targets.
pub(crate) fn parse_inmsg_bytes(bytes: &[u8]) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    for chunk in split_bytes(bytes) {
        match chunk {
            Chunk::Value(v) => {
                let b = message::parse_value(&v);
                ok += b.messages.len();
                bad += b.errors.len();
            }
            Chunk::Bad { .. } => bad += 1,
        }
    }
    (ok, bad)
}

/// Splits raw file content into parts at lines that start a new value; a part that is not valid
/// UTF-8 is refused whole (never repaired: a replaced byte would alter a command).
fn split_bytes(bytes: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, w) in bytes.windows(2).enumerate() {
        if w[0] == b'\n' && (w[1] == b'[' || w[1] == b'{') {
            cuts.push(i + 1);
        }
    }
    cuts.push(bytes.len());
    let mut pending = String::new();
    for cut in cuts {
        let span = &bytes[start..cut];
        start = cut;
        match std::str::from_utf8(span) {
            Ok(text) => pending.push_str(text),
            Err(e) => {
                out.extend(split(&std::mem::take(&mut pending)));
                out.push(Chunk::Bad {
                    text: span.to_vec(),
                    error: format!("invalid UTF-8 at byte {} of this part", e.valid_up_to()),
                });
            }
        }
    }
    out.extend(split(&pending));
    out
}

/// Splits concatenated JSON values; unparsable stretches run to the next line starting with `[`
/// or `{`, so a bad append does not take valid later ones down with it.
fn split(text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.trim().is_empty() {
        let trimmed = rest.trim_start();
        if let Some(depth) = message::too_deep(first_value_span(trimmed)) {
            let end = resync(trimmed);
            out.push(Chunk::Bad {
                text: trimmed.as_bytes()[..end].to_vec(),
                error: format!(
                    "nested {depth}+ levels deep (at most {})",
                    message::MAX_JSON_DEPTH
                ),
            });
            rest = &trimmed[end..];
            continue;
        }
        let mut it = serde_json::Deserializer::from_str(trimmed).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(v)) => {
                out.push(Chunk::Value(v));
                rest = &trimmed[it.byte_offset()..];
            }
            Some(Err(e)) => {
                let end = resync(trimmed);
                out.push(Chunk::Bad {
                    text: trimmed.as_bytes()[..end].to_vec(),
                    error: e.to_string(),
                });
                rest = &trimmed[end..];
            }
            None => break,
        }
    }
    out
}

/// The text up to the next line that starts a new value (or all of it).
fn first_value_span(text: &str) -> &str {
    &text[..resync(text)]
}

fn resync(text: &str) -> usize {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i > 0 && (line.starts_with('[') || line.starts_with('{')) {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

fn write_rejected(inner: &Inner, name: &str, content: &[u8], reason: &str) -> crate::Result<()> {
    let dir = inner.cfg.data_dir.join(REJECTED_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let body = dir.join(format!("{name}.txt"));
    std::fs::write(&body, content).map_err(|e| Error::io(&body, e))?;
    let why = dir.join(format!("{name}.error.txt"));
    std::fs::write(&why, format!("{reason}\n")).map_err(|e| Error::io(&why, e))?;
    Ok(())
}

fn reject_file(
    inner: &Arc<Inner>,
    taken: &Path,
    batch_id: &str,
    reason: &str,
) -> crate::Result<()> {
    let dir = inner.cfg.data_dir.join(REJECTED_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let body = dir.join(format!("{batch_id}.txt"));
    std::fs::rename(taken, &body).map_err(|e| Error::io(&body, e))?;
    let why = dir.join(format!("{batch_id}.error.txt"));
    std::fs::write(&why, format!("{reason}\n")).map_err(|e| Error::io(&why, e))?;
    inner.report(None, ErrorReportKind::BadInput, reason.to_owned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_arrays_and_isolates_bad_ones() {
        let text = "[{\"a\":1}]\n[{\"b\":\n  oops]\n[{\"c\":3}]\n";
        let chunks = split(text);
        assert_eq!(chunks.len(), 3);
        assert!(matches!(chunks[0], Chunk::Value(_)));
        assert!(matches!(chunks[1], Chunk::Bad { .. }));
        assert!(matches!(chunks[2], Chunk::Value(_)));
    }

    #[test]
    fn invalid_utf8_is_refused_not_repaired() {
        let mut bytes = b"[{\"a\":1}]\n[{\"b\":\"x".to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(b"\"}]\n[{\"c\":3}]\n");
        let chunks = split_bytes(&bytes);
        assert_eq!(chunks.len(), 3);
        assert!(matches!(chunks[0], Chunk::Value(_)));
        assert!(matches!(&chunks[1], Chunk::Bad { error, .. } if error.contains("UTF-8")));
        assert!(matches!(chunks[2], Chunk::Value(_)));
    }

    #[test]
    fn detects_unfinished_tail() {
        assert!(ends_unfinished("[{\"a\":1}] [{\"b\""));
        assert!(!ends_unfinished("[{\"a\":1}]\n"));
        assert!(!ends_unfinished("[{\"a\":1}] garbage"));
    }
}
