//! `inmsg.txt`, exactly as the original: JSON arrays appended to `<data_dir>/inmsg.txt` are sent.
//!
//! The file is read **where it is**, from an offset kept in `inmsg.offset`, so a writer that
//! holds it open — one that opened it early, or a producer that appends for minutes through one
//! descriptor — always writes into the file that is read: no rename ever strands its bytes.
//! Every complete value up to the offset is durably accepted before the offset moves past it;
//! messages without an id get `<generation>-<n>` (the generation is a ULID stored with the
//! offset before the first value of a file is read), so a crash re-reads the same bytes into
//! the same ids and sending them again is idempotent.
//!
//! The content is erased only when every byte is accepted and **no other process has the file
//! open**: a Linux write lease (`F_SETLEASE`, `F_WRLCK`) is granted only then, and while it is
//! held the kernel holds back every new `open` of the file. Under the lease a fresh empty file
//! is renamed over `inmsg.txt`; a writer whose `open` raced with the rename (the lease shows a
//! pending break) gets the old file, which is then read on until nobody holds it. Where leases
//! are not available (another owner without `CAP_LEASE`, a file system without leases) the file
//! is read on by offset and never erased, and the node says so once.
//!
//! An unfinished value at the end waits while a writer holds the file; once nobody does and it
//! has not changed for [`SETTLE`], it is final: unparsable content goes to `inmsg.rejected/`
//! with its error.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::node::{Inner, Node};
use crate::runtime::notify::ErrorReportKind;
use crate::wire::message::{self, ParsedBatch};

/// The watched file's name.
pub const INMSG: &str = "inmsg.txt";
/// Folder for content that could not be parsed.
pub const REJECTED_DIR: &str = "inmsg.rejected";
/// Largest stretch of unread `inmsg.txt` read at once; a bigger one is moved to
/// `inmsg.rejected/` whole.
pub const MAX_INMSG_BYTES: u64 = 64 << 20;
/// Where the read position in `inmsg.txt` is kept.
const STATE_FILE: &str = "inmsg.offset";
/// Messages accepted per disk commit while ingesting a large file.
const INGEST_SLICE: usize = 1024;
/// How long an unfinished tail must stay unchanged, with no writer holding the file, to be final.
const SETTLE: Duration = Duration::from_millis(300);
/// Without leases: how long an unfinished tail is waited for.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn run(inner: Arc<Inner>) -> crate::Result<()> {
    let dir = inner.d.cfg.data_dir.clone();
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
    .map_err(|e| Error::config_from(format!("cannot watch {}: {e}", dir.display()), e))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::config_from(format!("cannot watch {}: {e}", dir.display()), e))?;
    // A lease holder is told of a competing open by SIGIO, whose default action ends the
    // process: take it over (tokio's handler only records it) before the first lease.
    let _sigio =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::io()).map_err(|e| {
            Error::config_from(format!("cannot handle SIGIO for {INMSG} leases: {e}"), e)
        })?;
    let node = Node {
        inner: inner.clone(),
    };
    let mut reader = Reader::new(dir)?;
    let mut shutdown = inner.d.tasks.subscribe();
    loop {
        // A safety net for file systems whose change events get lost; sooner while a tail waits.
        let next = reader.poll(&node).await?.unwrap_or(Duration::from_secs(2));
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::time::sleep(next) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        while rx.try_recv().is_ok() {}
    }
}

/// What identifies one file across renames and restarts: device, inode and (where the file
/// system records it) birth time, since a deleted file's inode number is soon reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    dev: u64,
    ino: u64,
    born: Option<(i64, u32)>,
}

impl FileId {
    fn of(file: &File) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            born: birth_time(file),
        })
    }
}

#[cfg(target_os = "linux")]
fn birth_time(file: &File) -> Option<(i64, u32)> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx writes only into the zeroed struct it is given; the empty path with
    // AT_EMPTY_PATH names the open descriptor itself.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BTIME,
            &mut stx,
        );
        (rc == 0 && stx.stx_mask & libc::STATX_BTIME != 0)
            .then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec))
    }
}

#[cfg(not(target_os = "linux"))]
fn birth_time(_: &File) -> Option<(i64, u32)> {
    None
}

/// The durable read position of `inmsg.txt` (`inmsg.offset`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    file: FileId,
    /// The ULID that prefixes the ids given to messages of this file.
    generation: String,
    /// Bytes of the file accepted (or moved to `inmsg.rejected/`).
    offset: u64,
    /// Messages without an id numbered so far.
    count: u64,
}

/// One file being read by offset.
struct Tracked {
    file: File,
    pos: Position,
    /// The length last seen and since when, to tell a settled tail.
    seen_len: u64,
    seen_since: Instant,
    /// Whether its position is kept in `inmsg.offset` (the live `inmsg.txt`).
    durable: bool,
}

/// Reads `inmsg.txt`, and the older files still being written to.
struct Reader {
    dir: PathBuf,
    current: Option<Tracked>,
    /// Files that were erased (renamed over) while a writer's `open` raced with it, or taken
    /// over by an older version: read on until nobody holds them, then closed or deleted.
    others: Vec<(Tracked, Option<PathBuf>)>,
    /// Said once: the file cannot be erased here.
    said_no_erase: bool,
}

impl Tracked {
    fn new(file: File, pos: Position, durable: bool) -> Tracked {
        Tracked {
            file,
            pos,
            seen_len: u64::MAX,
            seen_since: Instant::now(),
            durable,
        }
    }
}

impl Reader {
    /// Adopts `inmsg.<ULID>.ingest` files left by an older version's take-over by rename.
    fn new(dir: PathBuf) -> crate::Result<Reader> {
        let mut others = Vec::new();
        for path in leftover(&dir)? {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let generation = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("inmsg."))
                .and_then(|n| n.strip_suffix(".ingest"))
                .unwrap_or("batch")
                .to_owned();
            let pos = Position {
                file: FileId::of(&file).map_err(|e| Error::io(&path, e))?,
                generation,
                offset: 0,
                count: 0,
            };
            others.push((Tracked::new(file, pos, false), Some(path)));
        }
        Ok(Reader {
            dir,
            current: None,
            others,
            said_no_erase: false,
        })
    }

    /// One pass over every file; returns how soon to look again when a tail waits to settle.
    async fn poll(&mut self, node: &Node) -> crate::Result<Option<Duration>> {
        let mut soon = None;
        // Older files first: what was written to them came before the live file's content.
        let mut i = 0;
        while i < self.others.len() {
            let (t, path) = &mut self.others[i];
            let wait = drain(node, &self.dir, t).await?;
            if wait.is_none() && held_by_others(&t.file) != Some(true) {
                if let Some(path) = path {
                    match std::fs::remove_file(&*path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(Error::io(&*path, e))
                        }
                        _ => {}
                    }
                }
                self.others.remove(i);
                continue;
            }
            soon = earliest(soon, wait);
            i += 1;
        }
        let path = self.dir.join(INMSG);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.current = None;
                return Ok(soon);
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let id = FileId::of(&file).map_err(|e| Error::io(&path, e))?;
        if self.current.as_ref().map(|t| t.pos.file) != Some(id) {
            let pos = match load_position(&self.dir) {
                Some(p) if p.file == id => p,
                _ => {
                    // Stored before the first value is read, so a crash re-reads the same ids.
                    let p = Position {
                        file: id,
                        generation: ulid::Ulid::new().to_string(),
                        offset: 0,
                        count: 0,
                    };
                    save_position(&self.dir, &p)?;
                    p
                }
            };
            self.current = Some(Tracked::new(file, pos, true));
        } else {
            // Only the tracked descriptor may stay open, or no lease is ever granted.
            drop(file);
        }
        let Some(t) = self.current.as_mut() else {
            return Ok(soon);
        };
        let wait = drain(node, &self.dir, t).await?;
        if wait.is_none() && t.pos.offset > 0 && t.pos.offset == t.seen_len {
            self.erase();
        }
        Ok(earliest(soon, wait))
    }

    /// Erases the fully accepted `inmsg.txt` if no other process holds it open.
    fn erase(&mut self) {
        let Some(t) = self.current.take() else {
            return;
        };
        match replace_with_empty(&self.dir, &t) {
            Ok(Erased::Done { raced: true }) => {
                // A writer's open came between the lease and the rename: it writes to the
                // old file, which is read on until nobody holds it.
                tracing::debug!(
                    "a writer opened {INMSG} as it was erased; reading on from the old file"
                );
                self.others.push((t, None));
            }
            Ok(Erased::Done { raced: false }) => {}
            Ok(Erased::NotNow) => self.current = Some(t),
            Err(e) => {
                self.current = Some(t);
                self.cannot_erase(&e.to_string());
            }
        }
    }

    fn cannot_erase(&mut self, why: &str) {
        if !std::mem::replace(&mut self.said_no_erase, true) {
            tracing::warn!(
                "{INMSG} is read by offset but cannot be erased here ({why}); it keeps its content, \
                 nothing is sent twice (run steward as the file's owner on a local file system to have it erased)"
            );
        }
    }
}

/// What an attempt to erase `inmsg.txt` did.
enum Erased {
    /// A writer holds the file, or bytes arrived since it was read.
    NotNow,
    /// An empty file replaced it; `raced`: a writer's open came during the swap.
    Done { raced: bool },
}

/// Under a write lease, renames an empty file with the same mode and owner over `inmsg.txt`.
fn replace_with_empty(dir: &Path, t: &Tracked) -> std::io::Result<Erased> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let lease = match Lease::take(&t.file) {
        Ok(lease) => lease,
        Err(None) => return Ok(Erased::NotNow),
        Err(Some(e)) => return Err(e),
    };
    let meta = t.file.metadata()?;
    if meta.len() != t.pos.offset {
        return Ok(Erased::NotNow);
    }
    let fresh = dir.join(format!("{INMSG}.new"));
    let mode = meta.mode() & 0o7777;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&fresh)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
    }
    f.sync_all()?;
    std::fs::rename(&fresh, dir.join(INMSG))?;
    File::open(dir)?.sync_all()?;
    Ok(Erased::Done {
        raced: !lease.intact(),
    })
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Accepts every complete value of a file from its offset on; returns when to look again if an
/// unfinished tail waits (None: everything up to the current length is taken).
async fn drain(node: &Node, dir: &Path, t: &mut Tracked) -> crate::Result<Option<Duration>> {
    let inner = &node.inner;
    let name = dir.join(INMSG);
    loop {
        let len = t.file.metadata().map_err(|e| Error::io(&name, e))?.len();
        if len != t.seen_len {
            t.seen_len = len;
            t.seen_since = Instant::now();
        }
        if len < t.pos.offset {
            tracing::warn!(
                "{INMSG} was cut short by another program; what it holds now is read as new content"
            );
            t.pos.generation = ulid::Ulid::new().to_string();
            t.pos.offset = 0;
            t.pos.count = 0;
            if t.durable {
                save_position(dir, &t.pos)?;
            }
            continue;
        }
        let unread = len - t.pos.offset;
        if unread == 0 {
            return Ok(None);
        }
        if unread > MAX_INMSG_BYTES {
            let part = format!("{}-{}", t.pos.generation, t.pos.offset);
            let reason = format!(
                "{INMSG} had {unread} unread bytes at once, more than the limit of {MAX_INMSG_BYTES}; \
                 moved to {REJECTED_DIR}/{part}.txt — split it into smaller appends"
            );
            copy_rejected(dir, &part, &t.file, t.pos.offset, len, &reason)?;
            inner
                .d
                .reporter
                .report(None, ErrorReportKind::BadInput, reason);
            t.pos.offset = len;
            if t.durable {
                save_position(dir, &t.pos)?;
            }
            continue;
        }
        let mut bytes = vec![0u8; unread as usize];
        t.file
            .read_exact_at(&mut bytes, t.pos.offset)
            .map_err(|e| Error::io(&name, e))?;
        let pieces = split_bytes(&bytes);
        let tail_waits = pieces
            .last()
            .is_some_and(|p| p.may_grow(bytes.len()) && !tail_is_final(t));
        let take = pieces.len() - usize::from(tail_waits);
        let consumed = if tail_waits {
            take.checked_sub(1).map_or(0, |i| pieces[i].end)
        } else {
            bytes.len()
        };
        for piece in pieces.into_iter().take(take) {
            accept(node, dir, t, piece, &bytes).await?;
        }
        if consumed > 0 {
            t.pos.offset += consumed as u64;
            if t.durable {
                save_position(dir, &t.pos)?;
            }
        }
        if tail_waits {
            return Ok(Some(Duration::from_millis(100)));
        }
    }
}

/// An unfinished tail is final once nobody holds the file and it has not changed for
/// [`SETTLE`] (without leases: [`MAX_WAIT`]).
fn tail_is_final(t: &Tracked) -> bool {
    let quiet = t.seen_since.elapsed();
    match held_by_others(&t.file) {
        Some(true) => false,
        Some(false) => quiet >= SETTLE,
        None => quiet >= MAX_WAIT,
    }
}

async fn accept(
    node: &Node,
    dir: &Path,
    t: &mut Tracked,
    piece: Piece,
    bytes: &[u8],
) -> crate::Result<()> {
    match piece.chunk {
        Chunk::Value(v) => {
            let mut batch: ParsedBatch = message::parse_value(&v);
            for (_, m) in batch.messages.iter_mut() {
                t.pos.count += 1;
                if m.id.is_none() {
                    m.id = Some(format!("{}-{}", t.pos.generation, t.pos.count));
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
        Chunk::Bad { error } => {
            let part = format!("{}-{}", t.pos.generation, t.pos.offset + piece.start as u64);
            let reason = format!(
                "{INMSG}: content that is not valid JSON ({error}); moved to {REJECTED_DIR}/{part}.txt"
            );
            write_rejected(dir, &part, &bytes[piece.start..piece.end], &reason)?;
            node.inner
                .d
                .reporter
                .report(None, ErrorReportKind::BadInput, reason);
        }
    }
    Ok(())
}

/// A write lease on a file (Linux `F_SETLEASE`), released when dropped.
struct Lease<'a>(&'a File);

impl<'a> Lease<'a> {
    /// Granted only while no other descriptor has the file open. `Err(None)`: others hold it;
    /// `Err(Some(e))`: leases are not available here.
    #[cfg(target_os = "linux")]
    fn take(file: &'a File) -> Result<Lease<'a>, Option<std::io::Error>> {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this File owns; no memory is passed.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } == 0 {
            return Ok(Lease(file));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) => Err(None),
            _ => Err(Some(e)),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn take(_: &'a File) -> Result<Lease<'a>, Option<std::io::Error>> {
        Err(Some(std::io::Error::other(
            "file leases are a Linux feature",
        )))
    }

    /// Still ours: no other process has tried to open the file since it was granted.
    fn intact(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: as in take().
            unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETLEASE) == libc::F_WRLCK }
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: as in take().
            unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

/// Whether another process has the file open: Some(true) or Some(false) where leases tell,
/// None where they cannot.
fn held_by_others(file: &File) -> Option<bool> {
    match Lease::take(file) {
        Ok(_) => Some(false),
        Err(None) => Some(true),
        Err(Some(_)) => None,
    }
}

fn load_position(dir: &Path) -> Option<Position> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

fn save_position(dir: &Path, pos: &Position) -> crate::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let path = dir.join(STATE_FILE);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(pos).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::io(&path, e))
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
    Bad { error: String },
}

/// A chunk and where its bytes are in what was read.
struct Piece {
    chunk: Chunk,
    start: usize,
    end: usize,
}

impl Piece {
    /// Whether more bytes could still change it: unparsable text, or a bare number or word
    /// that ends the bytes read.
    fn may_grow(&self, len: usize) -> bool {
        match &self.chunk {
            Chunk::Bad { .. } => true,
            Chunk::Value(v) => !(v.is_array() || v.is_object()) && self.end == len,
        }
    }
}

/// Runs the reader over raw `inmsg.txt` bytes without sending: (valid messages, refused parts
/// and elements). Used by the fuzz targets.
pub(crate) fn parse_inmsg_bytes(bytes: &[u8]) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    for piece in split_bytes(bytes) {
        match piece.chunk {
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
fn split_bytes(bytes: &[u8]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut cuts = Vec::new();
    for (i, w) in bytes.windows(2).enumerate() {
        if w[0] == b'\n' && (w[1] == b'[' || w[1] == b'{') {
            cuts.push(i + 1);
        }
    }
    cuts.push(bytes.len());
    let (mut start, mut valid_from) = (0, 0);
    for cut in cuts {
        let span = &bytes[start..cut];
        if let Err(e) = std::str::from_utf8(span) {
            if let Ok(text) = std::str::from_utf8(&bytes[valid_from..start]) {
                split(text, valid_from, &mut out);
            }
            out.push(Piece {
                chunk: Chunk::Bad {
                    error: format!("invalid UTF-8 at byte {} of this part", e.valid_up_to()),
                },
                start,
                end: cut,
            });
            valid_from = cut;
        }
        start = cut;
    }
    if let Ok(text) = std::str::from_utf8(&bytes[valid_from..]) {
        split(text, valid_from, &mut out);
    }
    out
}

/// Splits concatenated JSON values (`text` starts at byte `base`); unparsable stretches run to
/// the next line starting with `[` or `{`, so a bad append does not take valid later ones down.
fn split(text: &str, base: usize, out: &mut Vec<Piece>) {
    let mut pos = 0;
    loop {
        let rest = &text[pos..];
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            break;
        }
        let (chunk, len) = if let Some(depth) = message::too_deep(first_value_span(trimmed)) {
            let error = format!(
                "nested {depth}+ levels deep (at most {})",
                message::MAX_JSON_DEPTH
            );
            (Chunk::Bad { error }, resync(trimmed))
        } else {
            let mut it =
                serde_json::Deserializer::from_str(trimmed).into_iter::<serde_json::Value>();
            match it.next() {
                Some(Ok(v)) => (Chunk::Value(v), it.byte_offset()),
                Some(Err(e)) => (
                    Chunk::Bad {
                        error: e.to_string(),
                    },
                    resync(trimmed),
                ),
                None => break,
            }
        };
        out.push(Piece {
            chunk,
            start: base + pos,
            end: base + pos + len,
        });
        pos += len;
    }
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

fn write_rejected(dir: &Path, name: &str, content: &[u8], reason: &str) -> crate::Result<()> {
    let dir = dir.join(REJECTED_DIR);
    crate::private_files::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let body = dir.join(format!("{name}.txt"));
    crate::private_files::write(&body, content).map_err(|e| Error::io(&body, e))?;
    let why = dir.join(format!("{name}.error.txt"));
    crate::private_files::write(&why, format!("{reason}\n").as_bytes())
        .map_err(|e| Error::io(&why, e))?;
    Ok(())
}

/// Copies bytes `from..to` of a file to `inmsg.rejected/<name>.txt`, with the reason beside it.
fn copy_rejected(
    dir: &Path,
    name: &str,
    file: &File,
    from: u64,
    to: u64,
    reason: &str,
) -> crate::Result<()> {
    use std::io::Write;
    let dir = dir.join(REJECTED_DIR);
    crate::private_files::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let body = dir.join(format!("{name}.txt"));
    let copy = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(crate::private_files::create(&body)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        out.flush()
    };
    copy().map_err(|e| Error::io(&body, e))?;
    let why = dir.join(format!("{name}.error.txt"));
    crate::private_files::write(&why, format!("{reason}\n").as_bytes())
        .map_err(|e| Error::io(&why, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(bytes: &[u8]) -> Vec<(bool, usize, usize)> {
        split_bytes(bytes)
            .into_iter()
            .map(|p| (matches!(p.chunk, Chunk::Value(_)), p.start, p.end))
            .collect()
    }

    #[test]
    fn splits_concatenated_arrays_and_isolates_bad_ones() {
        let text = "[{\"a\":1}]\n[{\"b\":\n  oops]\n[{\"c\":3}]\n";
        let k = kinds(text.as_bytes());
        assert_eq!(k.len(), 3);
        assert!(k[0].0 && !k[1].0 && k[2].0);
        assert_eq!(&text[k[0].1..k[0].2], "[{\"a\":1}]");
        assert_eq!(&text[k[2].1..k[2].2], "[{\"c\":3}]");
    }

    #[test]
    fn invalid_utf8_is_refused_not_repaired() {
        let mut bytes = b"[{\"a\":1}]\n[{\"b\":\"x".to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(b"\"}]\n[{\"c\":3}]\n");
        let pieces = split_bytes(&bytes);
        assert_eq!(pieces.len(), 3);
        assert!(matches!(pieces[0].chunk, Chunk::Value(_)));
        assert!(matches!(&pieces[1].chunk, Chunk::Bad { error } if error.contains("UTF-8")));
        assert!(matches!(pieces[2].chunk, Chunk::Value(_)));
        assert_eq!(&bytes[pieces[2].start..pieces[2].end], b"[{\"c\":3}]");
    }

    #[test]
    fn an_unfinished_tail_may_grow_a_finished_array_may_not() {
        let bytes = b"[{\"a\":1}]\n[{\"b\"";
        let pieces = split_bytes(bytes);
        assert!(!pieces[0].may_grow(bytes.len()));
        assert!(pieces[1].may_grow(bytes.len()));
        assert!(split_bytes(b"12")[0].may_grow(2));
        assert!(!split_bytes(b"12\n")[0].may_grow(3));
    }
}
