//! Talking to a node: through its control socket when one runs on the data directory, or
//! directly to a node this process started (the temporary node of `steward send`).

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use steward::{MessageStatus, Node, CONTROL_SOCKET};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A failed call, with the core's error kind name when the node answered.
#[derive(Debug)]
pub struct CallError {
    /// `steward::ErrorKind` name (`"InvalidMessage"`, `"Stopped"`, ...), or `"Io"`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<steward::Error> for CallError {
    fn from(e: steward::Error) -> Self {
        CallError {
            kind: format!("{:?}", e.kind()),
            message: e.to_string(),
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> CallError {
    CallError {
        kind: "Io".into(),
        message: format!("control socket {}: {e}", path.display()),
    }
}

/// A client of one node's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    /// The client of the node running on `data_dir`, or `None` when none runs there (no
    /// socket, or a stale one from a node that died).
    pub async fn probe(data_dir: &Path) -> Result<Option<Client>, CallError> {
        let path = data_dir.join(CONTROL_SOCKET);
        match UnixStream::connect(&path).await {
            Ok(_) => Ok(Some(Client { path })),
            Err(e) if matches!(e.kind(), IoKind::NotFound | IoKind::ConnectionRefused) => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn open(
        &self,
    ) -> Result<
        (
            BufReader<tokio::net::unix::OwnedReadHalf>,
            tokio::net::unix::OwnedWriteHalf,
        ),
        CallError,
    > {
        let s = UnixStream::connect(&self.path)
            .await
            .map_err(|e| io_err(&self.path, e))?;
        let (r, w) = s.into_split();
        Ok((BufReader::new(r), w))
    }

    /// Sends one request on a fresh connection and returns the first answer line.
    async fn call(&self, req: Value) -> Result<Value, CallError> {
        let (mut r, mut w) = self.open().await?;
        let mut line = req.to_string();
        line.push('\n');
        w.write_all(line.as_bytes())
            .await
            .map_err(|e| io_err(&self.path, e))?;
        read_answer(&self.path, &mut r).await
    }

    /// The node's status (`node`, `connected`, `dataDir`, `destinations`, `messages`).
    pub async fn status(&self, limit: usize) -> Result<Value, CallError> {
        self.call(json!({"op": "status", "limit": limit})).await
    }

    /// Sends a control request and returns its answer (`keys`, `approve`, `revoke`, `access`).
    pub async fn request(&self, req: Value) -> Result<Value, CallError> {
        self.call(req).await
    }

    /// Cancels a message; false when it is too late.
    pub async fn cancel(&self, id: &str) -> Result<bool, CallError> {
        let v = self.call(json!({"op": "cancel", "id": id})).await?;
        Ok(v["cancelled"].as_bool().unwrap_or(false))
    }
}

async fn read_answer(
    path: &Path,
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Value, CallError> {
    let mut answer = String::new();
    let n = r
        .read_line(&mut answer)
        .await
        .map_err(|e| io_err(path, e))?;
    if n == 0 {
        return Err(CallError {
            kind: "Stopped".into(),
            message: "the node closed the control connection (it is stopping)".into(),
        });
    }
    let v: Value = serde_json::from_str(&answer).map_err(|e| CallError {
        kind: "Io".into(),
        message: format!("unreadable answer from the node: {e}"),
    })?;
    if v["ok"].as_bool() == Some(true) {
        Ok(v)
    } else {
        Err(CallError {
            kind: v["kind"].as_str().unwrap_or("Io").to_owned(),
            message: v["error"].as_str().unwrap_or("unknown error").to_owned(),
        })
    }
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Index in the JSON array it came from.
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Its destination.
    pub to_node: String,
    /// Its subject.
    pub subject: String,
}

/// What a node did with a JSON text.
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Accepted messages.
    pub accepted: Vec<Accepted>,
    /// Reasons for refused elements.
    pub rejected: Vec<String>,
}

/// The node `steward send` works through.
pub enum Backend {
    /// A node running in another process.
    Socket(Client),
    /// A temporary node in this process.
    Local(Node),
}

impl Backend {
    /// Hands the JSON text to the node.
    pub async fn send(&self, json_text: &str) -> Result<SendOutcome, CallError> {
        match self {
            Backend::Socket(c) => {
                let v = c
                    .call(json!({"op": "send", "json": json_text, "wait": false}))
                    .await?;
                let accepted = v["accepted"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| Accepted {
                                index: x["index"].as_u64().unwrap_or(0) as usize,
                                id: x["id"].as_str().unwrap_or_default().to_owned(),
                                to_node: x["toNode"].as_str().unwrap_or_default().to_owned(),
                                subject: x["subject"].as_str().unwrap_or_default().to_owned(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let rejected = v["rejected"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(SendOutcome { accepted, rejected })
            }
            Backend::Local(node) => {
                let report = node.send_json(json_text).await?;
                Ok(SendOutcome {
                    accepted: report
                        .accepted
                        .iter()
                        .map(|(i, r)| Accepted {
                            index: *i,
                            id: r.id.clone(),
                            to_node: r.to_node.clone(),
                            subject: r.subject.clone(),
                        })
                        .collect(),
                    rejected: report.rejected.iter().map(|e| e.to_string()).collect(),
                })
            }
        }
    }

    /// The current state of a message.
    pub async fn message(&self, id: &str) -> Result<Option<MessageStatus>, CallError> {
        match self {
            Backend::Socket(c) => {
                let v = c.call(json!({"op": "message", "id": id})).await?;
                match &v["message"] {
                    Value::Null => Ok(None),
                    m => serde_json::from_value(m.clone())
                        .map(Some)
                        .map_err(|e| CallError {
                            kind: "Io".into(),
                            message: format!("unreadable message status: {e}"),
                        }),
                }
            }
            Backend::Local(node) => Ok(node.message(id).await?),
        }
    }

    /// Waits until the message reaches a final state.
    pub async fn wait(&self, id: &str) -> Result<MessageStatus, CallError> {
        match self {
            Backend::Socket(c) => {
                let v = c.call(json!({"op": "wait", "id": id})).await?;
                serde_json::from_value(v["finished"].clone()).map_err(|e| CallError {
                    kind: "Io".into(),
                    message: format!("unreadable message status: {e}"),
                })
            }
            Backend::Local(node) => Ok(node.wait(id).await?),
        }
    }
}
