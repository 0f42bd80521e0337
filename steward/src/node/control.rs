//! The control socket: other processes (the `steward send|status|cancel` commands) talk to a
//! running node through `<data_dir>/steward.sock`, and a stopped node's store can be read or
//! edited directly with [`inspect`] and [`cancel_offline`].
//!
//! The socket (mode 0600, so only the node's user can use it) speaks JSON lines: one request
//! per line, answered by one line (a `send` with `"wait":true` adds one line per message when
//! it reaches its final state). Every answer has `"ok"`; failures carry `"error"` (a sentence
//! for people) and `"kind"` (the [`crate::ErrorKind`] name, e.g. `"NotFound"`).
//!
//! | request | answer |
//! | --- | --- |
//! | `{"op":"send","json":"<original JSON text>","wait":false}` | `{"ok":true,"accepted":[{"index":0,"id":…,"toNode":…,"subject":…}],"rejected":["…"]}`, then with `"wait":true` one `{"ok":true,"finished":<MessageStatus>}` per accepted message |
//! | `{"op":"status","limit":20}` | `{"ok":true,"node":…,"connected":…,"dataDir":…,"destinations":[…],"messages":[…]}` |
//! | `{"op":"message","id":…}` | `{"ok":true,"message":<MessageStatus or null>}` |
//! | `{"op":"cancel","id":…}` | `{"ok":true,"cancelled":true\|false}` |
//! | `{"op":"wait","id":…,"timeoutMs":…}` | `{"ok":true,"finished":<MessageStatus>}` |
//! | `{"op":"keys"}` | `{"ok":true,"node":…,"publicKey":…,"trustVersion":…,"keys":[<KeyInfo>…]}` (`keys` only on central) |
//! | `{"op":"approve","node":…,"key":…}` (`key` optional) | `{"ok":true,"trustVersion":…}` |
//! | `{"op":"revoke","node":…,"key":…}` (`key` optional) | `{"ok":true,"trustVersion":…}` |
//! | `{"op":"access","node":…,"rules":[<RuleSpec>…] or null}` | `{"ok":true,"trustVersion":…}` |
//! | `{"op":"purge"}` (central) | `{"ok":true,"purged":<number of pending keys forgotten>}` |
//! | `{"op":"token","validForMs":…}` (central; no `validForMs`: never expires) | `{"ok":true,"token":"sjt1.…","id":…}` |
//! | `{"op":"tokens"}` (central) | `{"ok":true,"tokens":[<JoinTokenInfo>…]}` |
//! | `{"op":"revokeToken","id":…}` (central) | `{"ok":true}` |
//!
//! A connection serves one request at a time; closing it while waiting abandons the wait (the
//! message itself goes on).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::node::{Inner, Node};
use crate::store::{self, Store};
use crate::wire::result::{DestinationStatus, MessageState, MessageStatus};

/// File name of the control socket inside the data directory.
pub const CONTROL_SOCKET: &str = "steward.sock";

/// Longest request line accepted (a `send` carries the whole JSON text).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Messages listed by `status` when the request gives no limit.
const DEFAULT_LIMIT: usize = 20;

/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// What a stopped node's data directory holds, read by [`inspect`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// Every destination with its counts and last contact.
    pub destinations: Vec<DestinationStatus>,
    /// The most recent messages sent, newest first.
    pub messages: Vec<MessageStatus>,
}

/// The store file's path in a data directory; errors if no node ever ran there.
fn existing_store(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("steward.redb");
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no steward node has run in this data directory (check --data-dir)",
            ),
        ))
    }
}

async fn open_store(data_dir: &Path) -> Result<Store> {
    existing_store(data_dir)?;
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| Error::storage_from(e.to_string(), e))?
}

/// Reads destinations and the `limit` most recent messages from the store in `data_dir`
/// without starting a node or touching the network. Fails with
/// [`crate::ErrorKind::DataDirInUse`] while a node runs there (ask it through the socket).
pub async fn inspect(data_dir: impl AsRef<Path>, limit: usize) -> Result<Inspection> {
    let store = open_store(data_dir.as_ref()).await?;
    let out = (|| -> Result<Inspection> {
        Ok(Inspection {
            destinations: store.destinations()?,
            messages: store.recent_messages(limit)?,
        })
    })();
    store.close().await;
    out
}

/// Cancels a message in a stopped node's store (`true`), or tells that it is too late
/// (`false`: already received or final). The node reports nothing about it when it starts;
/// the cancellation is in its audit log from then on.
pub async fn cancel_offline(data_dir: impl AsRef<Path>, id: &str) -> Result<bool> {
    let store = open_store(data_dir.as_ref()).await?;
    let owned = id.to_owned();
    let out = store
        .write(move |txn| {
            if store::get_message(txn, &owned)?.is_none() {
                return Ok(None);
            }
            store::finalize(
                txn,
                &owned,
                MessageState::Cancelled,
                None,
                Some("cancelled by the operator while the node was stopped".into()),
                0,
            )
            .map(|r| Some(r.is_some()))
        })
        .await;
    store.close().await;
    out?.ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// A bound, not yet published socket (a temporary name until the node is ready).
pub(crate) struct Bound {
    listener: UnixListener,
    tmp: PathBuf,
    path: PathBuf,
}

/// Binds the socket under a temporary name (mode 0600) when the configuration asks for it.
/// Runs after the store is open, so any existing socket is a stale one from a crashed node.
pub(crate) fn bind(cfg: &NodeConfig) -> Result<Option<Bound>> {
    if !cfg.control_socket {
        return Ok(None);
    }
    let path = cfg.data_dir.join(CONTROL_SOCKET);
    let tmp = cfg
        .data_dir
        .join(format!("{CONTROL_SOCKET}.{}.tmp", std::process::id()));
    if tmp.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(Error::config(format!(
            "the control socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter data directory path",
            tmp.display()
        )));
    }
    for p in [&path, &tmp] {
        match std::fs::remove_file(p) {
            Ok(()) => tracing::info!("removed a stale control socket {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&tmp, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io(&tmp, e))?;
    let listener = UnixListener::from_std(listener).map_err(|e| Error::io(&tmp, e))?;
    Ok(Some(Bound {
        listener,
        tmp,
        path,
    }))
}

/// Publishes the socket under its real name and serves it until the node stops, then removes it.
pub(crate) fn serve(inner: &Arc<Inner>, bound: Bound) -> Result<()> {
    std::fs::rename(&bound.tmp, &bound.path).map_err(|e| Error::io(&bound.path, e))?;
    tracing::info!(socket = %bound.path.display(), "control socket ready");
    let node = Node {
        inner: inner.clone(),
    };
    inner.d.tasks.spawn(accept_loop(node, bound));
    Ok(())
}

async fn accept_loop(node: Node, bound: Bound) {
    let mut shutdown = node.inner.d.tasks.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = bound.listener.accept() => match r {
                Ok((stream, _)) => {
                    let n = node.clone();
                    node.inner.d.tasks.rt.spawn(async move { connection(n, stream).await });
                }
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => {}
        }
    }
    let _ = std::fs::remove_file(&bound.path);
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Send {
        json: String,
        #[serde(default)]
        wait: bool,
    },
    Status {
        #[serde(default)]
        limit: Option<usize>,
    },
    Message {
        id: String,
    },
    Cancel {
        id: String,
    },
    Wait {
        id: String,
        #[serde(default, rename = "timeoutMs")]
        timeout_ms: Option<u64>,
    },
    Keys,
    Approve {
        node: String,
        #[serde(default)]
        key: Option<String>,
    },
    Revoke {
        node: String,
        #[serde(default)]
        key: Option<String>,
    },
    Access {
        node: String,
        #[serde(default)]
        rules: Option<crate::AccessList>,
    },
    Purge,
    Token {
        #[serde(default, rename = "validForMs")]
        valid_for_ms: Option<u64>,
    },
    Tokens,
    #[serde(rename = "revokeToken")]
    RevokeToken {
        id: String,
    },
}

fn error_line(e: &Error) -> Value {
    json!({"ok": false, "error": e.to_string(), "kind": format!("{:?}", e.kind())})
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await.is_ok()
}

async fn connection(node: Node, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut shutdown = node.inner.d.tasks.subscribe();
    loop {
        let mut buf = Vec::new();
        let mut limited = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
        let read = tokio::select! {
            r = limited.read_until(b'\n', &mut buf) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.len() > MAX_REQUEST_BYTES {
            let e = Error::invalid(
                None,
                None,
                format!("control request longer than {MAX_REQUEST_BYTES} bytes"),
            );
            let _ = write_line(&mut w, &error_line(&e)).await;
            return;
        }
        let req: Request = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                let e = Error::invalid(None, None, format!("bad control request: {e}; one JSON object per line with \"op\" one of send, status, message, cancel, wait, keys, approve, revoke, access"));
                if !write_line(&mut w, &error_line(&e)).await {
                    return;
                }
                continue;
            }
        };
        if !handle(&node, req, &mut reader, &mut w).await {
            return;
        }
    }
}

/// Answers one request; false when the connection should close.
async fn handle(
    node: &Node,
    req: Request,
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    w: &mut tokio::net::unix::OwnedWriteHalf,
) -> bool {
    match req {
        Request::Send { json, wait } => {
            let report = match node.send_json(&json).await {
                Ok(r) => r,
                Err(e) => return write_line(w, &error_line(&e)).await,
            };
            let accepted: Vec<Value> = report
                .accepted
                .iter()
                .map(|(i, r)| json!({"index": i, "id": r.id, "toNode": r.to_node, "subject": r.subject}))
                .collect();
            let rejected: Vec<String> = report.rejected.iter().map(|e| e.to_string()).collect();
            let line = json!({"ok": true, "accepted": accepted, "rejected": rejected});
            if !write_line(w, &line).await {
                return false;
            }
            if !wait {
                return true;
            }
            let mut waits: FuturesUnordered<_> = report
                .accepted
                .iter()
                .map(|(_, r)| {
                    let r = r.clone();
                    async move { r.wait().await }
                })
                .collect();
            while !waits.is_empty() {
                let next = tokio::select! {
                    n = waits.next() => n,
                    _ = client_gone(reader) => return false,
                };
                let line = match next {
                    Some(Ok(st)) => json!({"ok": true, "finished": st}),
                    Some(Err(e)) => error_line(&e),
                    None => break,
                };
                if !write_line(w, &line).await {
                    return false;
                }
            }
            true
        }
        Request::Status { limit } => {
            let limit = limit.unwrap_or(DEFAULT_LIMIT);
            let line = match (node.destinations(), node.recent_messages(limit)) {
                (Ok(d), Ok(mut m)) => {
                    // The store has the durable state; unfinished ones get the live view
                    // (sent, attempts) from their publisher.
                    for st in m.iter_mut().filter(|s| !s.state.is_final()) {
                        if let Ok(Some(live)) = node.message(&st.id).await {
                            *st = live;
                        }
                    }
                    json!({
                    "ok": true,
                    "node": node.name(),
                    "connected": node.is_connected(),
                    "dataDir": node.config().data_dir,
                    "destinations": d,
                    "messages": m,
                    })
                }
                (Err(e), _) | (_, Err(e)) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Message { id } => {
            let line = match node.message(&id).await {
                Ok(m) => json!({"ok": true, "message": m}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Cancel { id } => {
            let line = match node.cancel(&id).await {
                Ok(c) => json!({"ok": true, "cancelled": c}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Keys => {
            let line = match node.keys() {
                Ok(keys) => json!({
                    "ok": true,
                    "node": node.name(),
                    "publicKey": node.public_key(),
                    "trustVersion": node.trust_version(),
                    "keys": keys,
                }),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Approve { node: n, key } => {
            let done = match key.as_deref().map(crate::PublicKey::parse).transpose() {
                Ok(key) => node.approve_key(&n, key).await,
                Err(e) => Err(e),
            };
            let line = match done {
                Ok(v) => json!({"ok": true, "trustVersion": v}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Revoke { node: n, key } => {
            let done = match key.as_deref().map(crate::PublicKey::parse).transpose() {
                Ok(key) => node.revoke_key(&n, key).await,
                Err(e) => Err(e),
            };
            let line = match done {
                Ok(v) => json!({"ok": true, "trustVersion": v}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Purge => {
            let line = match node.purge_pending_keys().await {
                Ok(n) => json!({"ok": true, "purged": n}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Token { valid_for_ms } => {
            let valid_for = valid_for_ms.map(Duration::from_millis);
            let line = match node.join_token(valid_for).await {
                Ok(t) => json!({"ok": true, "token": t.to_string(), "id": t.id()}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Tokens => {
            let line = match node.join_tokens() {
                Ok(t) => json!({"ok": true, "tokens": t}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::RevokeToken { id } => {
            let line = match node.revoke_join_token(&id).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Access { node: n, rules } => {
            let line = match node.set_node_access(&n, rules).await {
                Ok(v) => json!({"ok": true, "trustVersion": v}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
        Request::Wait { id, timeout_ms } => {
            let limit = timeout_ms.map(Duration::from_millis);
            let waited = async {
                match limit {
                    Some(d) => tokio::time::timeout(d, node.wait(&id))
                        .await
                        .unwrap_or_else(|_| Err(Error::TimedOut(format!("message {id}")))),
                    None => node.wait(&id).await,
                }
            };
            let r = tokio::select! {
                r = waited => r,
                _ = client_gone(reader) => return false,
            };
            let line = match r {
                Ok(st) => json!({"ok": true, "finished": st}),
                Err(e) => error_line(&e),
            };
            write_line(w, &line).await
        }
    }
}

/// Resolves when the client closes the connection or sends more while a wait is in progress.
async fn client_gone(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>) {
    let mut byte = [0u8; 1];
    let _ = reader.read(&mut byte).await;
}
