//! The durable store (one redb file per node) and its group-commit writer.
//!
//! Every write goes through one writer thread that gathers all pending write jobs into a single
//! transaction with one fsync, so concurrent senders share the cost of durability. Reads run on
//! the caller's thread through redb's MVCC read transactions.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::wire::envelope::{now_ms, Envelope, ReplyStatus};
use crate::wire::result::{DestinationStatus, MessageState, MessageStatus, MethodResult, Refusal};

/// Key/value: misc settings such as the epoch.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Subject -> stream record (id, next sequence number).
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// Stream id -> subject.
const STREAM_IDS: TableDefinition<u64, &str> = TableDefinition::new("stream_ids");
/// (stream id, seq) -> envelope JSON, for every message not yet final.
const OUTBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("outbox");
/// Message id -> record with its state, for every message this node sent.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
/// Message id -> the message in the original JSON format: written once when it is accepted,
/// so state changes rewrite only the small record in `messages`.
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("message_bodies");
/// Node -> destination counters.
const DESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("destinations");
/// Message id -> what this node did with a message it received (the dedup record).
const INBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("inbox");
/// Inbound stream key -> next sequence number expected.
const INBOX_STREAMS: TableDefinition<&str, u64> = TableDefinition::new("inbox_streams");
/// Arrival number -> id of a received message not yet finished, in arrival order.
const INBOX_PENDING: TableDefinition<u64, &str> = TableDefinition::new("inbox_pending");
/// Number -> audit log line waiting to be appended to audit.log.
const AUDIT_PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_pending");

/// A redb error kept as the source of a steward [`Error`]. redb stays out of steward's API: its
/// text shows, and [`std::error::Error::source`] goes on to the OS error under it (a full disk,
/// a refused permission) where there is one. Shared, so one failed commit can fail every job of
/// its batch.
#[derive(Debug, Clone)]
pub(crate) struct StoreFailure(Arc<redb::Error>);

impl StoreFailure {
    fn new(e: impl Into<redb::Error>) -> StoreFailure {
        StoreFailure(Arc::new(e.into()))
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            redb::Error::Io(e) => Some(e),
            redb::Error::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Turns redb's errors into a storage [`Error`] keeping them as its source (in place of
/// `From` impls, which would put redb's types in steward's public API).
pub(crate) trait OrStorage<T> {
    /// A storage error with the failure's text, keeping it as the source.
    fn or_storage(self) -> Result<T>;
}

impl<T, E> OrStorage<T> for std::result::Result<T, E>
where
    E: Into<redb::Error> + std::fmt::Display,
{
    fn or_storage(self) -> Result<T> {
        self.map_err(|e| {
            let reason = e.to_string();
            Error::storage_from(reason, StoreFailure::new(e))
        })
    }
}

/// Why a write transaction was not committed, handed to every job in it.
#[derive(Debug, Clone)]
struct CommitFailed {
    /// What failed, as the jobs' storage errors say it.
    reason: String,
    /// The store's error, if the failure was one (not a job's).
    cause: Option<StoreFailure>,
}

impl CommitFailed {
    fn from_redb(e: impl Into<redb::Error> + std::fmt::Display) -> CommitFailed {
        CommitFailed {
            reason: e.to_string(),
            cause: Some(StoreFailure::new(e)),
        }
    }

    /// The storage error a job of the failed transaction gets.
    fn error(&self) -> Error {
        match &self.cause {
            Some(c) => Error::storage_from(self.reason.clone(), c.clone()),
            None => Error::storage(self.reason.clone()),
        }
    }
}

/// Encodes a record with a CRC32 of its bytes in front. redb verifies its pages only when it
/// repairs after a crash, so without this a flipped bit in a stored command would go unnoticed
/// and the altered command would run.
fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain data types cannot fail.
    let mut out = vec![0; 4];
    let _ = serde_json::to_writer(&mut out, v);
    let crc = crc32fast::hash(&out[4..]).to_le_bytes();
    out[..4].copy_from_slice(&crc);
    out
}

/// Puts a CRC32 in front of bytes already encoded.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks a record's CRC32 and returns its bytes.
pub(crate) fn unseal<'a>(table: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let damaged = |why: &str| {
        Error::damaged(format!(
            "damaged record in table {table} of steward.redb ({why}); it is not used — \
             if the disk is failing, replace it; the node's audit.log has every finished message"
        ))
    };
    if bytes.len() < 4 {
        return Err(damaged("too short"));
    }
    let (crc, body) = bytes.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(damaged("checksum mismatch"));
    }
    Ok(body)
}

fn dec<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(unseal(table, bytes)?).map_err(|e| {
        Error::damaged_from(
            format!("damaged record in table {table} of steward.redb: {e}"),
            e,
        )
    })
}

/// A sent message's record: its public status plus where it sits in the outbox.
///
/// `status.message` stays `Null` until [`MessageRecord::into_status`] parses `body`: the hot
/// paths (progress, finalize) never need the message itself.
#[derive(Debug, Clone)]
pub(crate) struct MessageRecord {
    pub stream_id: u64,
    pub seq: u64,
    /// Protocol traffic (results) rather than a user message: not audited.
    pub internal: bool,
    pub status: MessageStatus,
    /// The message in the original JSON format, when loaded (else empty).
    pub body: Vec<u8>,
}

impl MessageRecord {
    /// Fills `status.message` from the stored JSON, if loaded.
    fn parse_body(&mut self) {
        if self.status.message.is_null() && !self.body.is_empty() {
            self.status.message = serde_json::from_slice(&self.body).unwrap_or_default();
        }
    }

    /// The public status, with the message parsed from its stored JSON.
    pub(crate) fn into_status(mut self) -> MessageStatus {
        self.parse_body();
        self.status
    }
}

/// How a [`MessageRecord`] is stored: the status without the message (it lives in `BODIES`).
#[derive(Serialize)]
struct StoredRecordRef<'a> {
    stream_id: u64,
    seq: u64,
    internal: bool,
    status: StoredStatusRef<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredStatusRef<'a> {
    id: &'a str,
    to_node: &'a str,
    subject: &'a str,
    state: MessageState,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: &'a Option<MethodResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Refusal>,
    created_ms: u64,
    updated_ms: u64,
}

#[derive(Deserialize)]
struct StoredRecord {
    stream_id: u64,
    seq: u64,
    #[serde(default)]
    internal: bool,
    status: StoredStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredStatus {
    id: String,
    to_node: String,
    subject: String,
    state: MessageState,
    attempts: u32,
    #[serde(default)]
    result: Option<MethodResult>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    refusal: Option<Refusal>,
    created_ms: u64,
    updated_ms: u64,
    /// Records written before bodies had a table of their own carry the message here.
    #[serde(default)]
    message: Option<serde_json::Value>,
}

fn dec_message(bytes: &[u8]) -> Result<MessageRecord> {
    let r: StoredRecord = dec("messages", bytes)?;
    let s = r.status;
    Ok(MessageRecord {
        stream_id: r.stream_id,
        seq: r.seq,
        internal: r.internal,
        status: MessageStatus {
            id: s.id,
            message: s.message.unwrap_or_default(),
            to_node: s.to_node,
            subject: s.subject,
            state: s.state,
            attempts: s.attempts,
            result: s.result,
            reason: s.reason,
            refusal: s.refusal,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        },
        body: Vec::new(),
    })
}

fn enc_message(rec: &MessageRecord) -> Vec<u8> {
    let s = &rec.status;
    enc(&StoredRecordRef {
        stream_id: rec.stream_id,
        seq: rec.seq,
        internal: rec.internal,
        status: StoredStatusRef {
            id: &s.id,
            to_node: &s.to_node,
            subject: &s.subject,
            state: s.state,
            attempts: s.attempts,
            result: &s.result,
            reason: &s.reason,
            refusal: s.refusal,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        },
    })
}

/// Loads a message's stored JSON into its record (a damaged body reads as absent).
fn load_body(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    rec: &mut MessageRecord,
) -> Result<()> {
    if let Some(v) = table.get(rec.status.id.as_str()).or_storage()? {
        match unseal("message_bodies", v.value()) {
            Ok(b) => rec.body = b.to_vec(),
            Err(e) => tracing::error!(msg_id = %rec.status.id, "{e}"),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamRecord {
    id: u64,
    next_seq: u64,
}

/// State of a received message at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InboxState {
    Received,
    Started,
    Done,
}

/// The receiver's durable memory of one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InboxRecord {
    pub state: InboxState,
    /// How the message ended (Done, Rejected or Expired), once done.
    #[serde(default)]
    pub reply: Option<ReplyStatus>,
    #[serde(default)]
    pub reason: Option<String>,
    /// For a refusal: why, as a code (see [`Refusal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    #[serde(default)]
    pub result: Option<MethodResult>,
    /// Kept until done, so an unfinished message can be resumed after a restart.
    #[serde(default)]
    pub envelope: Option<Envelope>,
    #[serde(default)]
    pub pending_key: u64,
    pub updated_ms: u64,
}

/// What the outbox keeps per message: the wire envelope and how to deliver it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutboxItem {
    pub envelope: Envelope,
    pub ack_timeout_ms: u64,
    #[serde(default)]
    pub retries: Option<u32>,
    pub retry_wait_ms: u64,
    /// When `send` accepted it (ms since the Unix epoch), for the delivery-latency metric; 0 in
    /// rows written before this was recorded.
    #[serde(default)]
    pub accepted_ms: u64,
    /// Attempts that failed so far (stored when they fail), so the retries limit and the state
    /// hold across sender restarts; 0 in rows written before this was recorded.
    #[serde(default)]
    pub attempts: u32,
}

/// A message ready to be written into the outbox.
pub(crate) struct NewMessage {
    pub item: OutboxItem,
    pub subject: String,
    /// The message in the original JSON format, for status and audit.
    pub json: serde_json::Value,
    pub internal: bool,
    /// The id was just generated here (a ULID), so it cannot be in the store yet.
    pub fresh_id: bool,
}

/// Where a newly accepted message went.
#[derive(Debug, Clone)]
pub(crate) struct Enqueued {
    pub id: String,
    pub to_node: String,
    pub subject: String,
    pub stream_id: u64,
    pub seq: u64,
    /// True when the id was already known (an idempotent resend of the same message).
    pub existed: bool,
}

type Done = Box<dyn FnOnce(&Result<(), CommitFailed>) + Send>;
/// A job returns its completion and whether it failed in storage (which aborts the whole
/// transaction: a half-applied job must never be committed). Other errors must come before
/// any write.
type Job = Box<dyn for<'t> FnOnce(&mut Tx<'t>) -> (Done, bool) + Send>;

/// Every table, opened once per write transaction and shared by all jobs in it (opening a
/// table per operation costs more than the operation).
pub(crate) struct Tx<'t> {
    meta: Table<'t, &'static str, u64>,
    streams: Table<'t, &'static str, &'static [u8]>,
    stream_ids: Table<'t, u64, &'static str>,
    outbox: Table<'t, (u64, u64), &'static [u8]>,
    messages: Table<'t, &'static str, &'static [u8]>,
    bodies: Table<'t, &'static str, &'static [u8]>,
    dests: Table<'t, &'static str, &'static [u8]>,
    inbox: Table<'t, &'static str, &'static [u8]>,
    inbox_streams: Table<'t, &'static str, u64>,
    inbox_pending: Table<'t, u64, &'static str>,
    audit: Table<'t, u64, &'static [u8]>,
    next_pending: Option<u64>,
    next_audit: Option<u64>,
    /// Destination counters and stream heads touched in this transaction, written once at the end.
    dest_cache: std::collections::HashMap<String, DestinationStatus>,
    stream_cache: std::collections::HashMap<String, StreamRecord>,
}

impl<'t> Tx<'t> {
    fn open(txn: &'t WriteTransaction) -> std::result::Result<Tx<'t>, redb::TableError> {
        Ok(Tx {
            meta: txn.open_table(META)?,
            streams: txn.open_table(STREAMS)?,
            stream_ids: txn.open_table(STREAM_IDS)?,
            outbox: txn.open_table(OUTBOX)?,
            messages: txn.open_table(MESSAGES)?,
            bodies: txn.open_table(BODIES)?,
            dests: txn.open_table(DESTS)?,
            inbox: txn.open_table(INBOX)?,
            inbox_streams: txn.open_table(INBOX_STREAMS)?,
            inbox_pending: txn.open_table(INBOX_PENDING)?,
            audit: txn.open_table(AUDIT_PENDING)?,
            next_pending: None,
            next_audit: None,
            dest_cache: Default::default(),
            stream_cache: Default::default(),
        })
    }

    /// Writes the cached destination counters and stream heads.
    fn flush(&mut self) -> std::result::Result<(), redb::StorageError> {
        for (node, d) in std::mem::take(&mut self.dest_cache) {
            self.dests.insert(node.as_str(), enc(&d).as_slice())?;
        }
        for (subject, rec) in std::mem::take(&mut self.stream_cache) {
            self.streams
                .insert(subject.as_str(), enc(&rec).as_slice())?;
        }
        Ok(())
    }
}

enum WriterMsg {
    Job(Job),
    /// Commit what came before, then let go of the database.
    Close(oneshot::Sender<()>),
}

/// Counters of the store's writer, for benchmarks and diagnosis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write jobs applied.
    pub jobs: u64,
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Time spent applying jobs, in nanoseconds.
    pub apply_ns: u64,
    /// Time spent committing (including fsync), in nanoseconds.
    pub commit_ns: u64,
}

#[derive(Default)]
struct Counters {
    jobs: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
    apply_ns: std::sync::atomic::AtomicU64,
    commit_ns: std::sync::atomic::AtomicU64,
    /// Jobs handed to the writer, and jobs whose transaction ended (committed or not): equal
    /// when no write is on its way.
    submitted: std::sync::atomic::AtomicU64,
    settled: std::sync::atomic::AtomicU64,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    counters: Arc<Counters>,
    db: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
    jobs: mpsc::UnboundedSender<WriterMsg>,
    epoch: u64,
}

/// Under load, a commit waits up to this long for more jobs...
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// ...unless it already has this many.
const LINGER_UNTIL: usize = 256;
/// A commit lingers only after one that gathered at least this many jobs without waiting:
/// concurrent senders, whose next jobs are about to come. One caller waiting on its own
/// (a sequential round trip: its send and the previous final state, two jobs) is never made to
/// wait.
const LINGER_AFTER: usize = 8;

/// Largest number of write jobs committed in one transaction.
const MAX_BATCH: usize = 4096;

impl Store {
    /// Opens (or creates) `<dir>/steward.redb` and starts the writer thread.
    pub(crate) fn open(dir: &Path) -> Result<Store> {
        crate::private_files::create_dir(dir).map_err(|e| Error::io(dir, e))?;
        crate::private_files::warn_if_readable_by_others(dir);
        let path = dir.join("steward.redb");
        let created = !path.exists();
        let db = Database::builder()
            .set_cache_size(16 << 20)
            .create(&path)
            .map_err(|e| match &e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::DataDirInUse(dir.to_owned()),
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                    let reason = format!(
                        "{} is damaged ({why}); move it aside to start this node empty (audit.log keeps every finished message) or restore a backup",
                        path.display()
                    );
                    Error::damaged_from(reason, StoreFailure::new(e))
                }
                _ => Error::storage_from(format!("{}: {e}", path.display()), StoreFailure::new(e)),
            })?;
        if created {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&path, e))?;
        }
        let db = Arc::new(db);
        let epoch = {
            let txn = db.begin_write().or_storage()?;
            let epoch = {
                let mut meta = txn.open_table(META).or_storage()?;
                let existing = meta.get("epoch").or_storage()?.map(|v| v.value());
                match existing {
                    Some(e) => e,
                    None => {
                        let e = new_epoch();
                        meta.insert("epoch", e).or_storage()?;
                        e
                    }
                }
            };
            // Create every table so read transactions never meet a missing one.
            txn.open_table(STREAMS).or_storage()?;
            txn.open_table(STREAM_IDS).or_storage()?;
            txn.open_table(OUTBOX).or_storage()?;
            txn.open_table(MESSAGES).or_storage()?;
            txn.open_table(BODIES).or_storage()?;
            txn.open_table(DESTS).or_storage()?;
            txn.open_table(INBOX).or_storage()?;
            txn.open_table(INBOX_STREAMS).or_storage()?;
            txn.open_table(INBOX_PENDING).or_storage()?;
            txn.open_table(AUDIT_PENDING).or_storage()?;
            txn.commit().or_storage()?;
            epoch
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let completions = Completions::start();
        std::thread::Builder::new()
            .name("steward-store".into())
            .spawn(move || writer_loop(writer_db, rx, c, completions))
            .map_err(|e| {
                Error::storage_from(format!("cannot start the store writer thread: {e}"), e)
            })?;
        Ok(Store {
            counters,
            db: Arc::new(std::sync::RwLock::new(Some(db))),
            jobs,
            epoch,
        })
    }

    /// Commits pending writes and closes the database file, so another node may open it.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(WriterMsg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
    }

    /// The writer's counters so far.
    pub(crate) fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            jobs: self.counters.jobs.load(Relaxed),
            commits: self.counters.commits.load(Relaxed),
            apply_ns: self.counters.apply_ns.load(Relaxed),
            commit_ns: self.counters.commit_ns.load(Relaxed),
        }
    }

    /// This store's epoch: sequence numbers are unique within it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Runs `f` in the next group-committed write transaction and returns its value after commit.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })?;
        self.outcome(rx).await
    }

    /// Waits for the outcome a submitted job's completion sends on `rx`; a job the writer
    /// dropped unrun (it could not start a transaction) is a storage error.
    pub(crate) async fn outcome<R>(&self, rx: oneshot::Receiver<Result<R>>) -> Result<R> {
        match rx.await {
            Ok(r) => r,
            Err(_) if self.is_closed() => Err(Error::Stopped),
            Err(_) => Err(Error::storage(
                "the store could not start a write transaction; see the node log",
            )),
        }
    }

    /// Runs `f` in the next write transaction without waiting; `then` gets the outcome after commit.
    pub(crate) fn submit<R, F, T>(&self, f: F, then: T) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
        T: FnOnce(Result<R>) + Send + 'static,
    {
        let job: Job = Box::new(move |txn: &mut Tx<'_>| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(txn)))
                .unwrap_or_else(|_| Err(Error::storage("a store operation panicked")));
            let poisoned = matches!(r, Err(Error::Storage { .. }));
            let done: Done = Box::new(move |commit: &Result<(), CommitFailed>| {
                let out = match (r, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(c)) => Err(c.error()),
                    (Ok(v), Ok(())) => Ok(v),
                };
                then(out)
            });
            (done, poisoned)
        });
        self.counters
            .submitted
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.jobs
            .send(WriterMsg::Job(job))
            .map_err(|_| Error::Stopped)
    }

    /// Waits until every write submitted before this call has been committed, so a read that
    /// follows sees them (a status read right after `result()` returned, whose final state was
    /// still being committed). Returns at once when no write is on its way.
    pub(crate) fn settle(&self) {
        use std::sync::atomic::Ordering::Acquire;
        if self.counters.settled.load(Acquire) == self.counters.submitted.load(Acquire) {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let barrier = self.submit(
            |_| Ok(()),
            move |_: Result<()>| {
                let _ = tx.send(());
            },
        );
        if barrier.is_ok() {
            // Dropped unrun (the writer stopped or could not begin a transaction): read anyway.
            let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
        }
    }

    /// True once the writer thread is gone (the node stopped).
    pub(crate) fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Runs a read-only closure on a consistent snapshot.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R>) -> Result<R> {
        let db = self
            .db
            .read()
            .ok()
            .and_then(|d| d.clone())
            .ok_or(Error::Stopped)?;
        let txn = db.begin_read().or_storage()?;
        f(&txn)
    }

    // ----- reads -----

    /// A sent message's record with its body (the message itself).
    pub(crate) fn message(&self, id: &str) -> Result<Option<MessageRecord>> {
        self.read(|t| get_message_r(t, id))
    }

    /// A sent message's state alone (`None`: unknown), without reading its body.
    pub(crate) fn message_state(&self, id: &str) -> Result<Option<MessageState>> {
        self.read(|t| {
            let table = t.open_table(MESSAGES).or_storage()?;
            let v = table.get(id).or_storage()?;
            v.map(|v| dec_message(v.value()).map(|r| r.status.state))
                .transpose()
        })
    }

    /// Every sent message, newest id first, at most `limit`.
    pub(crate) fn recent_messages(&self, limit: usize) -> Result<Vec<MessageStatus>> {
        self.read(|t| {
            let table = t.open_table(MESSAGES).or_storage()?;
            let bodies = t.open_table(BODIES).or_storage()?;
            let mut out = Vec::new();
            for row in table.iter().or_storage()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row.or_storage()?;
                let mut rec = dec_message(v.value())?;
                if !rec.internal {
                    load_body(&bodies, &mut rec)?;
                    out.push(rec.into_status());
                }
            }
            Ok(out)
        })
    }

    pub(crate) fn destinations(&self) -> Result<Vec<DestinationStatus>> {
        self.read(|t| {
            let table = t.open_table(DESTS).or_storage()?;
            let mut out = Vec::new();
            for row in table.iter().or_storage()? {
                let (_, v) = row.or_storage()?;
                out.push(dec("destinations", v.value())?);
            }
            Ok(out)
        })
    }

    /// Streams that have messages in the outbox: (stream id, subject).
    pub(crate) fn active_streams(&self) -> Result<Vec<(u64, String)>> {
        self.read(|t| {
            let ids = t.open_table(STREAM_IDS).or_storage()?;
            let outbox = t.open_table(OUTBOX).or_storage()?;
            let mut out = Vec::new();
            for row in ids.iter().or_storage()? {
                let (id, subject) = row.or_storage()?;
                let id = id.value();
                if outbox
                    .range((id, 0)..=(id, u64::MAX))
                    .or_storage()?
                    .next()
                    .is_some()
                {
                    out.push((id, subject.value().to_owned()));
                }
            }
            Ok(out)
        })
    }

    /// Up to `limit` outbox envelopes of a stream from `from_seq` on, in order.
    pub(crate) fn load_outbox(
        &self,
        stream_id: u64,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.read(|t| {
            let outbox = t.open_table(OUTBOX).or_storage()?;
            let mut out = Vec::new();
            for row in outbox
                .range((stream_id, from_seq)..=(stream_id, u64::MAX))
                .or_storage()?
            {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row.or_storage()?;
                out.push((k.value().1, v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// The lowest unfinished sequence number of the outgoing stream `subject` (the next one to
    /// be assigned when none is unfinished); `u64::MAX` for a subject never sent on.
    pub(crate) fn stream_floor(&self, subject: &str) -> Result<u64> {
        self.read(|t| {
            let streams = t.open_table(STREAMS).or_storage()?;
            let Some(v) = streams.get(subject).or_storage()? else {
                return Ok(u64::MAX);
            };
            let rec: StreamRecord = dec("streams", v.value())?;
            let outbox = t.open_table(OUTBOX).or_storage()?;
            let first = outbox
                .range((rec.id, 0)..=(rec.id, u64::MAX))
                .or_storage()?
                .next()
                .transpose()
                .or_storage()?
                .map(|(k, _)| k.value().1);
            Ok(first.unwrap_or(rec.next_seq))
        })
    }

    pub(crate) fn inbox(&self, id: &str) -> Result<Option<InboxRecord>> {
        self.read(|t| {
            let table = t.open_table(INBOX).or_storage()?;
            let v = table.get(id).or_storage()?;
            v.map(|v| dec("inbox", v.value())).transpose()
        })
    }

    /// How many stream positions this receiver keeps for `from`.
    pub(crate) fn inbox_streams_of(&self, from: &str) -> Result<usize> {
        self.read(|t| count_streams(t, from))
    }

    pub(crate) fn inbox_expected(&self, stream: &str) -> Result<u64> {
        self.read(|t| {
            let table = t.open_table(INBOX_STREAMS).or_storage()?;
            let v = table
                .get(stream)
                .or_storage()?
                .map(|v| v.value())
                .unwrap_or(1);
            Ok(v)
        })
    }

    /// Received messages not yet finished, in arrival order; a damaged record comes as an error.
    pub(crate) fn inbox_pending(&self) -> Result<Vec<(String, Result<InboxRecord>)>> {
        self.read(|t| {
            let pending = t.open_table(INBOX_PENDING).or_storage()?;
            let inbox = t.open_table(INBOX).or_storage()?;
            let mut out = Vec::new();
            for row in pending.iter().or_storage()? {
                let (_, id) = row.or_storage()?;
                let id = id.value().to_owned();
                if let Some(v) = inbox.get(id.as_str()).or_storage()? {
                    out.push((id, dec("inbox", v.value())));
                }
            }
            Ok(out)
        })
    }

    pub(crate) fn audit_pending(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.read(|t| {
            let table = t.open_table(AUDIT_PENDING).or_storage()?;
            let mut out = Vec::new();
            for row in table.iter().or_storage()? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row.or_storage()?;
                let body = match unseal("audit_pending", v.value()) {
                    Ok(b) => b.to_vec(),
                    Err(e) => {
                        tracing::error!("an audit line is lost: {e}");
                        Vec::new()
                    }
                };
                out.push((k.value(), body));
            }
            Ok(out)
        })
    }
}

/// Runs the completions of committed jobs (waking waiters, publisher bookkeeping, listeners) in
/// commit order on a task of the node's runtime, so the writer thread goes straight on to the
/// next transaction: the writer's time per message bounds a node's throughput.
enum Completions {
    Task(mpsc::UnboundedSender<Completion>),
    /// No runtime (a store opened outside one): completions run on the writer thread.
    Inline,
}

enum Completion {
    Batch(Vec<Done>, Result<(), CommitFailed>),
    Closed(oneshot::Sender<()>),
}

impl Completions {
    fn start() -> Completions {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Completions::Inline;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        rt.spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Completion::Batch(dones, outcome) => {
                        for done in dones {
                            done(&outcome);
                        }
                    }
                    Completion::Closed(tx) => {
                        let _ = tx.send(());
                    }
                }
            }
        });
        Completions::Task(tx)
    }

    fn run(&self, dones: Vec<Done>, outcome: Result<(), CommitFailed>) {
        let rest = match self {
            Completions::Task(tx) => match tx.send(Completion::Batch(dones, outcome)) {
                Ok(()) => return,
                // The runtime is shutting down: finish here.
                Err(mpsc::error::SendError(c)) => c,
            },
            Completions::Inline => Completion::Batch(dones, outcome),
        };
        if let Completion::Batch(dones, outcome) = rest {
            for done in dones {
                done(&outcome);
            }
        }
    }

    /// Signals `done` once every completion handed over before has run.
    fn close(&self, done: oneshot::Sender<()>) {
        match self {
            Completions::Task(tx) => {
                if let Err(mpsc::error::SendError(Completion::Closed(done))) =
                    tx.send(Completion::Closed(done))
                {
                    let _ = done.send(());
                }
            }
            Completions::Inline => {
                let _ = done.send(());
            }
        }
    }
}

fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    counters: Arc<Counters>,
    completions: Completions,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut closing = None;
    let mut busy = false;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::new();
        match first {
            WriterMsg::Job(j) => jobs.push(j),
            WriterMsg::Close(done) => closing = Some(done),
        }
        while jobs.len() < MAX_BATCH && closing.is_none() {
            match rx.try_recv() {
                Ok(WriterMsg::Job(j)) => jobs.push(j),
                Ok(WriterMsg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            break;
        }
        // Under load, wait a moment for more jobs: one commit (and its fsync and page writes)
        // then serves many more messages. A store that is idle or serves one sequential caller
        // commits at once.
        let gathered = jobs.len();
        if busy && jobs.len() < LINGER_UNTIL && closing.is_none() {
            let until = std::time::Instant::now() + LINGER;
            while jobs.len() < MAX_BATCH && std::time::Instant::now() < until {
                match rx.try_recv() {
                    Ok(WriterMsg::Job(j)) => jobs.push(j),
                    Ok(WriterMsg::Close(done)) => {
                        closing = Some(done);
                        break;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_micros(50)),
                }
            }
        }
        busy = gathered >= LINGER_AFTER;
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                // Dropping the jobs wakes their waiters with a storage error.
                tracing::error!("store: cannot begin a write transaction: {e}");
                drop(jobs);
                continue;
            }
        };
        let started = std::time::Instant::now();
        let n_jobs = jobs.len() as u64;
        counters.jobs.fetch_add(n_jobs, Relaxed);
        let (dones, flushed) = match Tx::open(&txn) {
            Ok(mut tables) => {
                let mut poisoned = false;
                let dones: Vec<Done> = jobs
                    .into_iter()
                    .map(|job| {
                        let (done, bad) = job(&mut tables);
                        poisoned |= bad;
                        done
                    })
                    .collect();
                let flushed = if poisoned {
                    Err(CommitFailed {
                        reason: "a store operation failed, so the whole transaction was rolled back; retry"
                            .to_owned(),
                        cause: None,
                    })
                } else {
                    tables.flush().map_err(CommitFailed::from_redb)
                };
                (dones, flushed)
            }
            Err(e) => {
                tracing::error!("store: cannot open the tables: {e}");
                continue;
            }
        };
        let applied = std::time::Instant::now();
        let outcome = flushed.and_then(|()| txn.commit().map_err(CommitFailed::from_redb));
        counters.commits.fetch_add(1, Relaxed);
        counters
            .apply_ns
            .fetch_add((applied - started).as_nanos() as u64, Relaxed);
        counters
            .commit_ns
            .fetch_add(applied.elapsed().as_nanos() as u64, Relaxed);
        if let Err(e) = &outcome {
            tracing::error!("store: commit failed: {}", e.reason);
        }
        counters
            .settled
            .fetch_add(n_jobs, std::sync::atomic::Ordering::AcqRel);
        completions.run(dones, outcome);
        if closing.is_some() {
            break;
        }
    }
    drop(db);
    // Later jobs find the writer gone and fail with `Stopped`.
    rx.close();
    if let Some(done) = closing {
        completions.close(done);
    }
}

// ----- write-side operations, run inside a writer job -----

/// Reads a sent message's record with its body.
fn get_message_r(t: &ReadTransaction, id: &str) -> Result<Option<MessageRecord>> {
    let table = t.open_table(MESSAGES).or_storage()?;
    let Some(v) = table.get(id).or_storage()? else {
        return Ok(None);
    };
    let mut rec = dec_message(v.value())?;
    load_body(&t.open_table(BODIES).or_storage()?, &mut rec)?;
    Ok(Some(rec))
}

/// Reads a sent message's record (without its body) inside a write transaction.
pub(crate) fn get_message(t: &mut Tx<'_>, id: &str) -> Result<Option<MessageRecord>> {
    let v = t.messages.get(id).or_storage()?;
    v.map(|v| dec_message(v.value())).transpose()
}

fn put_message(t: &mut Tx<'_>, rec: &MessageRecord) -> Result<()> {
    t.messages
        .insert(rec.status.id.as_str(), enc_message(rec).as_slice())
        .or_storage()?;
    Ok(())
}

/// Updates a destination's counters; written once per transaction by [`Tx::flush`].
fn update_dest(t: &mut Tx<'_>, node: &str, f: impl FnOnce(&mut DestinationStatus)) -> Result<()> {
    if !t.dest_cache.contains_key(node) {
        let d: DestinationStatus = match t.dests.get(node).or_storage()? {
            Some(v) => dec("destinations", v.value())?,
            None => DestinationStatus {
                node: node.to_owned(),
                ..Default::default()
            },
        };
        t.dest_cache.insert(node.to_owned(), d);
    }
    if let Some(d) = t.dest_cache.get_mut(node) {
        f(d);
    }
    Ok(())
}

/// Accepts messages into the outbox, assigning stream sequence numbers.
pub(crate) fn enqueue(t: &mut Tx<'_>, msgs: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
    // Check every id before writing anything: all or none are accepted.
    let mut existing_recs = Vec::with_capacity(msgs.len());
    let mut ids = std::collections::HashSet::new();
    for m in &msgs {
        if m.internal || m.fresh_id {
            existing_recs.push(None);
            continue;
        }
        if !ids.insert(m.item.envelope.id.clone()) {
            return Err(Error::invalid(
                None,
                Some("id"),
                format!(
                    "id {} appears twice in one batch; ids must be unique",
                    m.item.envelope.id
                ),
            ));
        }
        let mut existing = get_message(t, &m.item.envelope.id)?;
        if let Some(e) = existing.as_mut() {
            load_body(&t.bodies, e)?;
            e.parse_body();
        }
        if let Some(existing) = &existing {
            let same = existing.status.message == m.json
                || (existing.status.to_node == m.item.envelope.to
                    && existing.status.subject == m.subject
                    && {
                        let mut a = existing.status.message.clone();
                        let mut b = m.json.clone();
                        strip_defaults(&mut a);
                        strip_defaults(&mut b);
                        a == b
                    });
            if !same {
                return Err(Error::invalid(
                    None,
                    Some("id"),
                    format!(
                        "id {} is already used by a different message; choose another id",
                        m.item.envelope.id
                    ),
                ));
            }
        }
        existing_recs.push(existing);
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (mut m, existing) in msgs.into_iter().zip(existing_recs) {
        if let Some(existing) = existing {
            out.push(Enqueued {
                id: existing.status.id,
                to_node: existing.status.to_node,
                subject: existing.status.subject,
                stream_id: existing.stream_id,
                seq: existing.seq,
                existed: true,
            });
            continue;
        }
        let (stream_id, seq) = {
            if !t.stream_cache.contains_key(&m.subject) {
                let rec: StreamRecord = match t.streams.get(m.subject.as_str()).or_storage()? {
                    Some(v) => dec("streams", v.value())?,
                    None => {
                        let id = t
                            .meta
                            .get("next_stream_id")
                            .or_storage()?
                            .map(|v| v.value())
                            .unwrap_or(1);
                        t.meta.insert("next_stream_id", id + 1).or_storage()?;
                        t.stream_ids.insert(id, m.subject.as_str()).or_storage()?;
                        StreamRecord { id, next_seq: 1 }
                    }
                };
                t.stream_cache.insert(m.subject.clone(), rec);
            }
            let rec = t
                .stream_cache
                .get_mut(&m.subject)
                .ok_or_else(|| Error::storage("stream cache"))?;
            let seq = rec.next_seq;
            rec.next_seq += 1;
            (rec.id, seq)
        };
        if m.item.envelope.ack {
            m.item.envelope.seq = seq;
        }
        {
            t.outbox
                .insert((stream_id, seq), enc(&m.item).as_slice())
                .or_storage()?;
        }
        // Results going home live only in the outbox: no status record, no counters.
        if !m.internal {
            let now = now_ms();
            let body = serde_json::to_vec(&m.json).unwrap_or_default();
            t.bodies
                .insert(m.item.envelope.id.as_str(), seal(&body).as_slice())
                .or_storage()?;
            let rec = MessageRecord {
                stream_id,
                seq,
                internal: false,
                body: Vec::new(),
                status: MessageStatus {
                    id: m.item.envelope.id.clone(),
                    message: serde_json::Value::Null,
                    to_node: m.item.envelope.to.clone(),
                    subject: m.subject.clone(),
                    state: MessageState::Queued,
                    attempts: 0,
                    result: None,
                    reason: None,
                    refusal: None,
                    created_ms: now,
                    updated_ms: now,
                },
            };
            put_message(t, &rec)?;
            update_dest(t, &m.item.envelope.to, |d| d.pending += 1)?;
        }
        out.push(Enqueued {
            id: m.item.envelope.id,
            to_node: m.item.envelope.to,
            subject: m.subject,
            stream_id,
            seq,
            existed: false,
        });
    }
    Ok(out)
}

fn strip_defaults(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        for k in [
            "ackTimeout",
            "retries",
            "retryWait",
            "ttl",
            "expiresAt",
            "methodTimeout",
            "id",
        ] {
            o.remove(k);
        }
    }
}

/// Moves a non-final message to `Sent` or `Received` and counts attempts.
pub(crate) fn mark_progress(
    t: &mut Tx<'_>,
    id: &str,
    state: MessageState,
    attempts: u32,
) -> Result<()> {
    if let Some(mut rec) = get_message(t, id)? {
        if rec.status.state.is_final() {
            return Ok(());
        }
        if state == MessageState::Received || rec.status.state != MessageState::Received {
            rec.status.state = state;
        }
        rec.status.attempts = rec.status.attempts.max(attempts);
        rec.status.updated_ms = now_ms();
        put_message(t, &rec)?;
        if state == MessageState::Received {
            let node = rec.status.to_node.clone();
            update_dest(t, &node, |d| {
                d.last_ack_ms = Some(now_ms());
                d.last_seen_ms = Some(now_ms());
            })?;
        }
    }
    Ok(())
}

/// Records a final state. Returns the new status, or `None` if it was already final
/// (a late result after `Failed` still upgrades the message to `Completed`).
pub(crate) fn finalize(
    t: &mut Tx<'_>,
    id: &str,
    state: MessageState,
    result: Option<MethodResult>,
    reason: Option<String>,
    attempts: u32,
) -> Result<Option<MessageRecord>> {
    finalize_with(t, id, state, result, reason, None, attempts)
}

/// [`finalize`] for a rejection whose receiver said why as a code.
pub(crate) fn finalize_with(
    t: &mut Tx<'_>,
    id: &str,
    state: MessageState,
    result: Option<MethodResult>,
    reason: Option<String>,
    refusal: Option<Refusal>,
    attempts: u32,
) -> Result<Option<MessageRecord>> {
    let Some(mut rec) = get_message(t, id)? else {
        return Ok(None);
    };
    let old = rec.status.state;
    // A result is the truth: it upgrades a message given up (failed) or cancelled while it was
    // already on its way — it did run.
    let late_result = matches!(old, MessageState::Failed | MessageState::Cancelled)
        && state == MessageState::Completed;
    if old.is_final() && !late_result {
        return Ok(None);
    }
    if state == MessageState::Cancelled && !matches!(old, MessageState::Queued | MessageState::Sent)
    {
        return Ok(None);
    }
    {
        t.outbox.remove((rec.stream_id, rec.seq)).or_storage()?;
    }
    let now = now_ms();
    tracing::debug!(msg_id = id, to = %rec.status.to_node, subject = %rec.status.subject, ?old, ?state, "finalize");
    rec.status.state = state;
    rec.status.attempts = rec.status.attempts.max(attempts);
    rec.status.result = result;
    rec.status.reason = reason;
    rec.status.refusal = refusal;
    rec.status.updated_ms = now;
    put_message(t, &rec)?;
    let node = rec.status.to_node.clone();
    let acked = matches!(state, MessageState::Completed | MessageState::Rejected);
    update_dest(t, &node, |d| {
        if rec.internal {
            // Protocol traffic (results) counts as contact, not as messages.
        } else if late_result {
            d.failed = d.failed.saturating_sub(1);
        } else {
            d.pending = d.pending.saturating_sub(1);
        }
        if rec.internal {
        } else if state == MessageState::Completed {
            d.completed += 1;
        } else {
            d.failed += 1;
        }
        if acked {
            d.last_ack_ms = Some(now);
            d.last_seen_ms = Some(now);
        }
    })?;
    if !rec.internal {
        load_body(&t.bodies, &mut rec)?;
        if rec.body.is_empty() {
            // A record from before bodies had their own table.
            rec.body = serde_json::to_vec(&rec.status.message).unwrap_or_default();
        }
        let message: &serde_json::value::RawValue =
            serde_json::from_slice(&rec.body).map_err(|e| {
                Error::damaged_from(format!("message {id}: stored JSON unreadable: {e}"), e)
            })?;
        let s = &rec.status;
        let line = AuditLine {
            time: now,
            id: &s.id,
            to_node: &s.to_node,
            subject: &s.subject,
            outcome: state,
            attempts: s.attempts,
            reason: &s.reason,
            result: &s.result,
            message,
            created_ms: s.created_ms,
        };
        push_audit(t, &line)?;
    }
    Ok(Some(rec))
}

/// One line of `audit.log`: the message in the original JSON format and how it ended.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine<'a> {
    time: u64,
    id: &'a str,
    to_node: &'a str,
    subject: &'a str,
    outcome: MessageState,
    attempts: u32,
    reason: &'a Option<String>,
    result: &'a Option<MethodResult>,
    message: &'a serde_json::value::RawValue,
    created_ms: u64,
}

fn push_audit(t: &mut Tx<'_>, line: &impl Serialize) -> Result<()> {
    let next = match t.next_audit {
        Some(n) => n,
        None => t
            .audit
            .last()
            .or_storage()?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1),
    };
    t.next_audit = Some(next + 1);
    t.audit.insert(next, enc(line).as_slice()).or_storage()?;
    Ok(())
}

/// Takes a damaged outbox row out of service: the row is removed and its message (found by its
/// place in the stream) recorded as failed. Returns the message, if its record could be found.
pub(crate) fn quarantine_outbox(
    t: &mut Tx<'_>,
    stream_id: u64,
    seq: u64,
    reason: String,
) -> Result<Option<MessageRecord>> {
    t.outbox.remove((stream_id, seq)).or_storage()?;
    let mut found = None;
    for row in t.messages.iter().or_storage()? {
        let (k, v) = row.or_storage()?;
        if let Ok(rec) = dec_message(v.value()) {
            if rec.stream_id == stream_id && rec.seq == seq {
                found = Some(k.value().to_owned());
                break;
            }
        }
    }
    match found {
        Some(id) => finalize(t, &id, MessageState::Failed, None, Some(reason), 0),
        None => Ok(None),
    }
}

/// Replaces a damaged receiver record: the message is answered as rejected and never runs.
pub(crate) fn quarantine_inbox(t: &mut Tx<'_>, key: &str, reason: String) -> Result<()> {
    let mut pending_key = None;
    for row in t.inbox_pending.iter().or_storage()? {
        let (k, v) = row.or_storage()?;
        if v.value() == key {
            pending_key = Some(k.value());
            break;
        }
    }
    if let Some(k) = pending_key {
        t.inbox_pending.remove(k).or_storage()?;
    }
    let mut rec = InboxRecord {
        state: InboxState::Done,
        reply: Some(ReplyStatus::Rejected),
        reason: Some(reason),
        refusal: None,
        result: None,
        envelope: None,
        pending_key: 0,
        updated_ms: 0,
    };
    put_inbox(t, key, &mut rec)
}

/// Removes a delivered result from the outbox (results have no status record).
/// Stores the failed attempts of unfinished messages of a stream (`(seq, id, attempts)`), in
/// their outbox rows and their status, so a restarted sender goes on counting from there.
pub(crate) fn record_attempts(
    t: &mut Tx<'_>,
    stream_id: u64,
    failed: &[(u64, String, u32)],
) -> Result<()> {
    for (seq, id, attempts) in failed {
        let row = t
            .outbox
            .get((stream_id, *seq))
            .or_storage()?
            .map(|v| v.value().to_vec());
        let Some(row) = row else { continue };
        let mut item: OutboxItem = dec("outbox", &row)?;
        if item.attempts < *attempts {
            item.attempts = *attempts;
            t.outbox
                .insert((stream_id, *seq), enc(&item).as_slice())
                .or_storage()?;
        }
        mark_progress(t, id, MessageState::Sent, *attempts)?;
    }
    Ok(())
}

pub(crate) fn remove_outbox(t: &mut Tx<'_>, stream_id: u64, seq: u64) -> Result<()> {
    t.outbox.remove((stream_id, seq)).or_storage()?;
    Ok(())
}

/// Removes audit lines that reached audit.log.
pub(crate) fn audit_done(t: &mut Tx<'_>, keys: &[u64]) -> Result<()> {
    for k in keys {
        t.audit.remove(*k).or_storage()?;
    }
    Ok(())
}

/// Notes that `node` was heard from.
pub(crate) fn touch_seen(t: &mut Tx<'_>, node: &str) -> Result<()> {
    update_dest(t, node, |d| d.last_seen_ms = Some(now_ms()))
}

/// Writes the receiver's record of a message; `pending` puts it on (or takes it off) the resume list.
pub(crate) fn put_inbox(t: &mut Tx<'_>, id: &str, rec: &mut InboxRecord) -> Result<()> {
    match rec.state {
        InboxState::Received | InboxState::Started => {
            if rec.pending_key == 0 {
                rec.pending_key = match t.next_pending {
                    Some(n) => n,
                    None => t
                        .inbox_pending
                        .last()
                        .or_storage()?
                        .map(|(k, _)| k.value() + 1)
                        .unwrap_or(1),
                };
                t.next_pending = Some(rec.pending_key + 1);
                t.inbox_pending.insert(rec.pending_key, id).or_storage()?;
            }
        }
        InboxState::Done => {
            if rec.pending_key != 0 {
                t.inbox_pending.remove(rec.pending_key).or_storage()?;
                rec.pending_key = 0;
            }
            rec.envelope = None;
        }
    }
    rec.updated_ms = now_ms();
    t.inbox.insert(id, enc(rec).as_slice()).or_storage()?;
    Ok(())
}

/// Reads the receiver's record inside a write transaction.
pub(crate) fn get_inbox(t: &mut Tx<'_>, id: &str) -> Result<Option<InboxRecord>> {
    let v = t.inbox.get(id).or_storage()?;
    v.map(|v| dec("inbox", v.value())).transpose()
}

/// Tag of an epoch made from the store's creation time (see [`new_epoch`]); stores made before
/// epochs were time-based have random ones, which receivers never prune.
const TIME_EPOCH_TAG: u64 = 1 << 62;

/// A new store's epoch: its creation time in ms (bits 16..62) under [`TIME_EPOCH_TAG`], and 16
/// random bits, so the epochs of one sender's successive stores increase (while its clock does)
/// and a receiver can forget the stream positions of a sender's earlier stores.
pub(crate) fn new_epoch() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        & ((1 << 46) - 1);
    TIME_EPOCH_TAG | (ms << 16) | (rand::random::<u64>() & 0xffff)
}

/// When a time-based epoch was made (ms since the Unix epoch); `None` for a random one.
pub(crate) fn epoch_time(epoch: u64) -> Option<u64> {
    (epoch >> 62 == 1).then_some((epoch >> 16) & ((1 << 46) - 1))
}

/// The inbox-streams key of a sender's epoch floor: the newest time-based epoch of its that
/// this receiver accepted a message from; messages of older epochs are stale.
pub(crate) fn epoch_floor_key(from: &str) -> String {
    format!("{from}#epoch")
}

/// Raises `from`'s epoch floor to `epoch` (if higher) and forgets the positions of its streams
/// under older time-based epochs: that store is gone, its messages are stale below the floor,
/// so the positions no longer guard anything. Returns how many positions were forgotten.
pub(crate) fn raise_epoch_floor(t: &mut Tx<'_>, from: &str, epoch: u64) -> Result<usize> {
    let key = epoch_floor_key(from);
    let cur = t
        .inbox_streams
        .get(key.as_str())
        .or_storage()?
        .map(|v| v.value())
        .unwrap_or(1);
    if epoch <= cur {
        return Ok(0);
    }
    t.inbox_streams.insert(key.as_str(), epoch).or_storage()?;
    let (lo, hi) = (format!("{from}/"), format!("{from}0"));
    let mut old = Vec::new();
    for row in t
        .inbox_streams
        .range(lo.as_str()..hi.as_str())
        .or_storage()?
    {
        let (k, _) = row.or_storage()?;
        let k = k.value();
        let e = k
            .split('/')
            .nth(1)
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if e.is_some_and(|e| e < epoch && epoch_time(e).is_some()) {
            old.push(k.to_owned());
        }
    }
    for k in &old {
        t.inbox_streams.remove(k.as_str()).or_storage()?;
    }
    Ok(old.len())
}

/// How many stream positions this receiver keeps for `from` (for the per-sender bound).
pub(crate) fn count_streams(t: &ReadTransaction, from: &str) -> Result<usize> {
    let table = t.open_table(INBOX_STREAMS).or_storage()?;
    let (lo, hi) = (format!("{from}/"), format!("{from}0"));
    let mut n = 0;
    for row in table.range(lo.as_str()..hi.as_str()).or_storage()? {
        row.or_storage()?;
        n += 1;
    }
    Ok(n)
}

/// Sets the next sequence number expected on an inbound stream.
pub(crate) fn set_expected(t: &mut Tx<'_>, stream: &str, expected: u64) -> Result<()> {
    let cur = t
        .inbox_streams
        .get(stream)
        .or_storage()?
        .map(|v| v.value())
        .unwrap_or(1);
    if expected > cur {
        t.inbox_streams.insert(stream, expected).or_storage()?;
    }
    Ok(())
}

/// Decodes an outbox row.
pub(crate) fn decode_outbox(bytes: &[u8]) -> Result<OutboxItem> {
    dec("outbox", bytes)
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::wire::envelope::WireKind;

    pub(super) fn new_msg(id: &str) -> NewMessage {
        NewMessage {
            item: OutboxItem {
                envelope: Envelope {
                    id: id.into(),
                    from: "a".into(),
                    to: "b".into(),
                    kind: WireKind::Command,
                    method: "echo".into(),
                    data: vec![],
                    epoch: 1,
                    seq: 0,
                    ack: true,
                    expires_ms: None,
                    method_timeout_ms: 1000,
                    result_of: None,
                    result: None,
                    outcome: None,
                    sig: None,
                    wire: None,
                    authentic: None,
                },
                ack_timeout_ms: 1000,
                retries: None,
                retry_wait_ms: 100,
                accepted_ms: 0,
                attempts: 0,
            },
            subject: "b.command.echo".into(),
            json: serde_json::json!({"toNode": "b"}),
            internal: false,
            fresh_id: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::new_msg;
    use super::*;
    use redb::ReadableTableMetadata;

    /// A record that passes its checksum but is not JSON: the damage error keeps the
    /// decoder's error as its source.
    #[test]
    fn undecodable_record_keeps_the_decoding_error() {
        let e = dec::<StreamRecord>("streams", &seal(b"not json")).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e:?}");
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert_eq!(
            e.to_string(),
            format!("damaged record in table streams of steward.redb: {source}")
        );
    }

    /// A failed commit fails every job of its batch with the same message, and each job's
    /// error leads to the OS error.
    #[test]
    fn commit_failure_reaches_every_job_with_its_source() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let want = format!(
            "the message store failed: I/O error: {full}; check free disk space and \
             permissions of the data directory"
        );
        let failed =
            CommitFailed::from_redb(redb::CommitError::Storage(redb::StorageError::Io(full)));
        for e in [failed.error(), failed.error()] {
            assert_eq!(e.kind(), crate::ErrorKind::Storage);
            assert_eq!(e.to_string(), want);
            let mut last = std::error::Error::source(&e).expect("a source");
            while let Some(next) = last.source() {
                last = next;
            }
            let io = last
                .downcast_ref::<std::io::Error>()
                .unwrap_or_else(|| panic!("the chain ends at {last:?}, not the OS error"));
            assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        }
    }

    #[tokio::test]
    async fn finalize_twice_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|t| enqueue(t, vec![new_msg("m1")]))
            .await
            .unwrap();
        let s2 = store.clone();
        let a = store.write(|t| {
            finalize(t, "m1", MessageState::Completed, None, None, 1).map(|r| r.is_some())
        });
        let b = s2.write(|t| {
            finalize(t, "m1", MessageState::Completed, None, None, 1).map(|r| r.is_some())
        });
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a.unwrap(), b.unwrap()), (true, false));
        let d = store.destinations().unwrap();
        assert_eq!((d[0].pending, d[0].completed), (0, 1));
    }

    /// The message body is written once at acceptance, survives state changes untouched, is
    /// copied verbatim into the audit line, and is forgotten with its record.
    #[tokio::test]
    async fn body_round_trips_into_status_and_audit_and_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut m = new_msg("m1");
        m.json = serde_json::json!({"toNode": "b", "data": ["x", "y z"], "method": "echo"});
        let want = m.json.clone();
        store.write(|t| enqueue(t, vec![m])).await.unwrap();
        store
            .write(|t| mark_progress(t, "m1", MessageState::Received, 1))
            .await
            .unwrap();
        assert_eq!(
            store.message_state("m1").unwrap(),
            Some(MessageState::Received)
        );
        assert_eq!(
            store.message("m1").unwrap().unwrap().into_status().message,
            want
        );
        let done = store
            .write(|t| finalize(t, "m1", MessageState::Completed, None, None, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.into_status().message, want);
        let lines = store.audit_pending(10).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&lines[0].1).unwrap();
        assert_eq!(line["message"], want);
        assert_eq!(line["outcome"], "completed");
        let (_, removed) = store.write(|t| prune(t, u64::MAX)).await.unwrap();
        assert_eq!(removed, 1);
        assert!(store.message("m1").unwrap().is_none());
        let left = store
            .read(|t| ReadableTableMetadata::len(&t.open_table(BODIES).or_storage()?).or_storage())
            .unwrap();
        assert_eq!(left, 0, "the body outlived its record");
    }
}

/// Lightweight views for pruning: only the fields needed to decide.
#[derive(Deserialize)]
struct InboxAge {
    state: InboxState,
    updated_ms: u64,
}

#[derive(Deserialize)]
struct MessageAge {
    status: MessageAgeStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageAgeStatus {
    state: MessageState,
    updated_ms: u64,
}

/// Forgets finished messages last changed before `cutoff_ms`: receivers' dedup records (older
/// resends are still recognised by their sequence numbers and answered as stale) and senders'
/// message records (their audit lines stay in audit.log). Returns (inbox, messages) removed.
pub(crate) fn prune(t: &mut Tx<'_>, cutoff_ms: u64) -> Result<(usize, usize)> {
    let mut inbox_removed = 0;
    t.inbox
        .retain(|_, v| {
            let old = dec::<InboxAge>("inbox", v)
                .map(|r| r.state == InboxState::Done && r.updated_ms < cutoff_ms)
                .unwrap_or(false);
            inbox_removed += usize::from(old);
            !old
        })
        .or_storage()?;
    let mut messages_removed = 0;
    let mut forgotten = Vec::new();
    t.messages
        .retain(|k, v| {
            let old = dec::<MessageAge>("messages", v)
                .map(|r| r.status.state.is_final() && r.status.updated_ms < cutoff_ms)
                .unwrap_or(false);
            messages_removed += usize::from(old);
            if old {
                forgotten.push(k.to_owned());
            }
            !old
        })
        .or_storage()?;
    for id in forgotten {
        t.bodies.remove(id.as_str()).or_storage()?;
    }
    Ok((inbox_removed, messages_removed))
}
