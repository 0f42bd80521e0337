//! `steward send`, `steward status`, `steward cancel`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};
use steward::{ErrorKind, MessageState, MessageStatus};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{CancelArgs, KindArg, SendArgs, StatusArgs};
use crate::client::{Backend, CallError, Client};
use crate::output::{self, *};
use crate::settings::{self, Settings};

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn secs(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        d.as_secs().into()
    } else {
        d.as_secs_f64().into()
    }
}

/// The message(s) in the original JSON format.
pub fn message_json(a: &SendArgs) -> String {
    if let Some(text) = &a.json {
        return text.clone();
    }
    let mut m = Map::new();
    if let Some(id) = &a.id {
        m.insert("id".into(), id.clone().into());
    }
    m.insert("toNode".into(), a.to.clone().unwrap_or_default().into());
    m.insert("data".into(), a.data.clone().into());
    let kind = match a.kind {
        KindArg::Command => "command",
        KindArg::Event => "event",
    };
    m.insert("commandOrEvent".into(), kind.into());
    m.insert("method".into(), a.method.clone().into());
    if let Some(d) = a.ack_timeout {
        m.insert("ackTimeout".into(), secs(d));
    }
    if let Some(r) = a.retries {
        // `unlimited` is the absence of a limit; the JSON has no other spelling for it.
        if let Some(n) = r.0 {
            m.insert("retries".into(), n.into());
        }
    }
    if let Some(d) = a.retry_wait {
        m.insert("retryWait".into(), secs(d));
    }
    if let Some(t) = a.ttl {
        if let Some(d) = t.0 {
            m.insert("ttl".into(), secs(d));
        }
    }
    if let Some(d) = a.method_timeout {
        m.insert("methodTimeout".into(), secs(d));
    }
    Value::Array(vec![Value::Object(m)]).to_string()
}

/// Starts the temporary node of `steward send`.
async fn temporary_node(s: &Settings) -> Result<steward::Node, (i32, String)> {
    let dir = s.data_dir.display().to_string();
    let Some(name) = s.node.clone() else {
        return Err((
            EXIT_UNAVAILABLE,
            format!("no node is running on {dir} (no {dir}/{sock}); start one with `steward --node NAME --data-dir {dir}`, or give --node NAME [--broker-address URL] to send through a temporary node", sock = steward::CONTROL_SOCKET),
        ));
    };
    let brokers = s
        .brokers
        .clone()
        .unwrap_or_else(|| vec![settings::DEFAULT_BROKER.to_owned()]);
    let mut s = s.clone();
    s.hello_interval = None;
    crate::run::start_with_retry(|| {
        crate::run::builder(&s, &name, brokers.clone()).control_socket(true)
    })
    .await
    .map_err(|e| {
        let code = if e.kind() == ErrorKind::BrokerAuth {
            EXIT_BROKER_REFUSED
        } else {
            EXIT_UNAVAILABLE
        };
        (
            code,
            format!("could not start a temporary node {name} on {dir}: {e}"),
        )
    })
}

/// `steward send`; returns the exit status.
pub async fn send(a: SendArgs) -> i32 {
    let s = match settings::resolve(&a.common, Some(&a.conn), None, None, Some(&a.security)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward: {e}");
            return 2;
        }
    };
    crate::init_logging(s.log_level.as_deref().unwrap_or("warn"), s.log_format);
    let text = message_json(&a);
    let backend = match Client::probe(&s.data_dir).await {
        Ok(Some(c)) => Backend::Socket(c),
        Ok(None) => match temporary_node(&s).await {
            Ok(n) => Backend::Local(n),
            Err((code, msg)) => {
                eprintln!("steward: {msg}");
                return code;
            }
        },
        Err(e) => {
            eprintln!("steward: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let code = send_with(&backend, &text, &a).await;
    if let Backend::Local(node) = &backend {
        crate::run::stop_node(node).await;
    }
    code
}

async fn send_with(backend: &Backend, text: &str, a: &SendArgs) -> i32 {
    let outcome = match backend.send(text).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward: {e}");
            return if e.kind == format!("{:?}", ErrorKind::InvalidMessage) {
                EXIT_INVALID
            } else {
                EXIT_UNAVAILABLE
            };
        }
    };
    for r in &outcome.rejected {
        eprintln!("steward: refused: {r}");
    }
    let refused = if outcome.rejected.is_empty() {
        0
    } else {
        EXIT_INVALID
    };
    if outcome.accepted.is_empty() {
        eprintln!("steward: nothing was sent");
        return EXIT_INVALID;
    }
    let local = matches!(backend, Backend::Local(_));
    if a.no_wait && !local {
        for m in &outcome.accepted {
            println!("{}", m.id);
            eprintln!(
                "steward: accepted element {} as {} for {} ({})",
                m.index, m.id, m.to_node, m.subject
            );
        }
        return refused;
    }
    let ids: Vec<String> = outcome.accepted.iter().map(|m| m.id.clone()).collect();
    // A temporary node stops when we return: with --no-wait it still waits until the
    // destination confirms receipt, or the message would sit in its outbox until the next start.
    let until_received = a.no_wait;
    let waited = wait_all(backend, &ids, a.timeout, until_received).await;
    let mut code = refused;
    match waited {
        Waited::Done(finals) => {
            for st in &finals {
                if until_received && !st.state.is_final() {
                    println!("{}", st.id);
                    eprintln!("steward: {} received by {}", st.id, st.to_node);
                    continue;
                }
                print_result(st);
                let c = exit_code(st);
                if code == 0 {
                    code = c;
                }
            }
            code
        }
        Waited::TimedOut(pending) => {
            for st in &pending {
                eprintln!(
                    "steward: timed out; {} is still {} (attempts {}); it goes on: see `steward status --data-dir {}`",
                    st.id,
                    st.state.as_str(),
                    st.attempts,
                    a.common.data_dir.as_deref().unwrap_or(std::path::Path::new(".")).display()
                );
            }
            EXIT_TIMEOUT
        }
        Waited::Interrupted => {
            eprintln!(
                "steward: interrupted; the message(s) go on ({})",
                ids.join(", ")
            );
            EXIT_INTERRUPTED
        }
        Waited::Failed(e) => {
            eprintln!(
                "steward: lost the node while waiting: {e}; the message(s) stay queued and resume when a node runs on the data directory again"
            );
            EXIT_UNAVAILABLE
        }
    }
}

fn print_result(st: &MessageStatus) {
    if let Some(r) = &st.result {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(r.stdout.as_bytes());
        let _ = out.flush();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(r.stderr.as_bytes());
    }
    eprintln!("steward: {}", output::summary(st));
}

enum Waited {
    Done(Vec<MessageStatus>),
    TimedOut(Vec<MessageStatus>),
    Interrupted,
    Failed(CallError),
}

fn reached(st: &MessageStatus, until_received: bool) -> bool {
    st.state.is_final() || (until_received && st.state == MessageState::Received)
}

/// Waits for every id (final state, or receipt when `until_received`), drawing progress on a
/// terminal; the statuses come back in the order of `ids`.
async fn wait_all(
    backend: &Backend,
    ids: &[String],
    timeout: Option<Duration>,
    until_received: bool,
) -> Waited {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut done: Vec<Option<MessageStatus>> = vec![None; ids.len()];
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            return Waited::Failed(CallError {
                kind: "Io".into(),
                message: format!("cannot handle signals: {e}"),
            })
        }
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(if until_received || tty {
        PROGRESS_EVERY
    } else {
        Duration::from_secs(3600)
    });
    let mut waits: FuturesUnordered<_> = ids
        .iter()
        .enumerate()
        .filter(|_| !until_received)
        .map(|(i, id)| async move { (i, backend.wait(id).await) })
        .collect();
    let mut last_state = String::new();
    let result = loop {
        if done.iter().all(Option::is_some) {
            break Waited::Done(done.into_iter().flatten().collect());
        }
        tokio::select! {
            Some((i, r)) = waits.next() => match r {
                Ok(st) => done[i] = Some(st),
                Err(e) => break Waited::Failed(e),
            },
            _ = tick.tick() => {
                // Poll the first unfinished message: for the progress line, and for receipt.
                for (i, id) in ids.iter().enumerate() {
                    if done[i].is_some() {
                        continue;
                    }
                    match backend.message(id).await {
                        Ok(Some(st)) => {
                            if until_received && reached(&st, true) {
                                done[i] = Some(st);
                                continue;
                            }
                            if tty {
                                last_state = format!(
                                    "steward: waiting for {} to {}: {}, attempt {}, {:.1}s",
                                    st.id, st.to_node, st.state.as_str(), st.attempts,
                                    start.elapsed().as_secs_f64()
                                );
                                let finished = done.iter().filter(|d| d.is_some()).count();
                                if ids.len() > 1 {
                                    last_state.push_str(&format!(" [{finished}/{} done]", ids.len()));
                                }
                                eprint!("\r\x1b[2K{last_state}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            if tty { eprint!("\r\x1b[2K"); }
                            return Waited::Failed(e);
                        }
                    }
                    if !until_received {
                        break;
                    }
                }
            }
            _ = sleep_until(deadline) => {
                let mut pending = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    if done[i].is_none() {
                        if let Ok(Some(st)) = backend.message(id).await {
                            pending.push(st);
                        }
                    }
                }
                break Waited::TimedOut(pending);
            }
            _ = term.recv() => break Waited::Interrupted,
            _ = int.recv() => break Waited::Interrupted,
        }
    };
    if tty && !last_state.is_empty() {
        eprint!("\r\x1b[2K");
    }
    result
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A running node's socket, or a stopped node's store contents.
enum Found {
    Running(Client),
    Stopped(steward::Inspection),
}

/// How long a node that holds its store but has no socket yet (it is starting) is waited for.
const STARTING_PATIENCE: Duration = Duration::from_secs(5);

/// Finds the node on `dir`: its socket, else its store. A node that is starting holds the
/// store before its socket appears, so "in use" without a socket is retried for a while.
async fn probe_or_inspect(dir: &std::path::Path, limit: usize) -> Result<Found, CallError> {
    let start = Instant::now();
    loop {
        if let Some(c) = Client::probe(dir).await? {
            return Ok(Found::Running(c));
        }
        match steward::inspect(dir, limit).await {
            Ok(i) => return Ok(Found::Stopped(i)),
            Err(e)
                if e.kind() == ErrorKind::DataDirInUse && start.elapsed() < STARTING_PATIENCE =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `steward status`; returns the exit status.
pub async fn status(a: StatusArgs) -> i32 {
    let s = match settings::resolve(&a.common, None, None, None, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward: {e}");
            return 2;
        }
    };
    crate::init_logging(s.log_level.as_deref().unwrap_or("warn"), s.log_format);
    let dir = std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone());
    let report = match probe_or_inspect(&s.data_dir, a.limit).await {
        Ok(Found::Running(c)) => match c.status(a.limit).await {
            Ok(mut v) => {
                v["running"] = true.into();
                v["dataDir"] = dir.display().to_string().into();
                if let Some(o) = v.as_object_mut() {
                    o.remove("ok");
                }
                v
            }
            Err(e) => {
                eprintln!("steward: {e}");
                return EXIT_UNAVAILABLE;
            }
        },
        Ok(Found::Stopped(i)) => json!({
            "running": false,
            "node": null,
            "connected": false,
            "dataDir": dir.display().to_string(),
            "destinations": i.destinations,
            "messages": i.messages,
        }),
        Err(e) if e.kind == format!("{:?}", ErrorKind::DataDirInUse) => {
            eprintln!("steward: a node runs on {} without a control socket (started by a program, not by the steward command); ask that program for its status", dir.display());
            return EXIT_UNAVAILABLE;
        }
        Err(e) => {
            eprintln!("steward: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", output::status_text(&report));
    }
    0
}

/// `steward cancel`; returns the exit status.
pub async fn cancel(a: CancelArgs) -> i32 {
    let s = match settings::resolve(&a.common, None, None, None, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward: {e}");
            return 2;
        }
    };
    crate::init_logging(s.log_level.as_deref().unwrap_or("warn"), s.log_format);
    let start = Instant::now();
    let r = loop {
        let r = match Client::probe(&s.data_dir).await {
            Ok(Some(c)) => c.cancel(&a.id).await,
            Ok(None) => steward::cancel_offline(&s.data_dir, &a.id)
                .await
                .map_err(CallError::from),
            Err(e) => Err(e),
        };
        match r {
            Err(e)
                if e.kind == format!("{:?}", ErrorKind::DataDirInUse)
                    && start.elapsed() < STARTING_PATIENCE =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r,
        }
    };
    match r {
        Ok(true) => {
            println!("cancelled {}", a.id);
            0
        }
        Ok(false) => {
            eprintln!(
                "steward: too late to cancel {}: its destination already received it or it is finished (see `steward status`)",
                a.id
            );
            1
        }
        Err(e) if e.kind == format!("{:?}", ErrorKind::NotFound) => {
            eprintln!("steward: {e}");
            1
        }
        Err(e) => {
            eprintln!("steward: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

/// `steward keys ...`; returns the exit status.
pub async fn keys(a: crate::cli::KeysArgs) -> i32 {
    use crate::cli::KeysCmd;
    let common = match &a.cmd {
        KeysCmd::Show(x) => &x.common,
        KeysCmd::List(x) | KeysCmd::Purge(x) => &x.common,
        KeysCmd::Approve(x) | KeysCmd::Revoke(x) => &x.common,
        KeysCmd::Access(x) => &x.common,
        KeysCmd::Token(x) => &x.common,
        KeysCmd::Tokens(x) => &x.common,
        KeysCmd::RevokeToken(x) => &x.common,
    };
    let s = match settings::resolve(common, None, None, None, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward: {e}");
            return 2;
        }
    };
    crate::init_logging(s.log_level.as_deref().unwrap_or("warn"), s.log_format);
    let req = match &a.cmd {
        KeysCmd::Show(x) => {
            let key_file = x
                .key_file
                .clone()
                .or(s.key_file.clone())
                .unwrap_or_else(|| s.data_dir.join(steward::KEY_FILE));
            let path = steward::public_key_path(&key_file);
            return match steward::PublicKey::from_file(&path) {
                Ok(k) => {
                    println!("{k}");
                    0
                }
                Err(e) => {
                    eprintln!("steward: {e} (a node creates its key pair on its first start)");
                    EXIT_UNAVAILABLE
                }
            };
        }
        KeysCmd::List(_) => json!({"op": "keys"}),
        KeysCmd::Purge(_) => json!({"op": "purge"}),
        KeysCmd::Token(x) => match x.valid_for.0 {
            Some(d) => json!({"op": "token", "validForMs": d.as_millis() as u64}),
            None => json!({"op": "token"}),
        },
        KeysCmd::Tokens(_) => json!({"op": "tokens"}),
        // The id as listed, or the whole token (`"$(cat join.token)"`).
        KeysCmd::RevokeToken(x) => json!({
            "op": "revokeToken",
            "id": steward::JoinToken::parse(&x.id).map(|t| t.id()).unwrap_or(x.id.clone()),
        }),
        KeysCmd::Approve(x) => json!({"op": "approve", "node": x.node, "key": x.key}),
        KeysCmd::Revoke(x) => json!({"op": "revoke", "node": x.node, "key": x.key}),
        KeysCmd::Access(x) => {
            let rules = match &x.file {
                Some(path) if !x.clear => match read_access_file(path) {
                    Ok(list) => serde_json::to_value(list).unwrap_or(Value::Null),
                    Err(e) => {
                        eprintln!("steward: {e}");
                        return 2;
                    }
                },
                _ => Value::Null,
            };
            json!({"op": "access", "node": x.node, "rules": rules})
        }
    };
    let client = match Client::probe(&s.data_dir).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "steward: no node runs on {}; keys are managed through the running central node (start it with `steward --node central --data-dir {}`)",
                s.data_dir.display(),
                s.data_dir.display()
            );
            return EXIT_UNAVAILABLE;
        }
        Err(e) => {
            eprintln!("steward: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let answer = match client.request(req).await {
        Ok(v) => v,
        Err(e) if e.kind == "Io" || e.kind == "Stopped" => {
            eprintln!("steward: {e}");
            return EXIT_UNAVAILABLE;
        }
        Err(e) => {
            // The node answered: refused (not central, unknown node or token, bad key, ...).
            eprintln!("steward: {e}");
            return 1;
        }
    };
    match &a.cmd {
        KeysCmd::List(x) if x.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
        }
        KeysCmd::List(_) => print!("{}", keys_text(&answer)),
        KeysCmd::Approve(x) => println!(
            "approved the key of {}; trust version {} goes to every approved node",
            x.node, answer["trustVersion"]
        ),
        KeysCmd::Revoke(x) => println!(
            "revoked the key(s) of {}; trust version {} goes to every approved node",
            x.node, answer["trustVersion"]
        ),
        KeysCmd::Access(x) => println!(
            "{} the access list of {}; trust version {} goes to every approved node",
            if x.clear { "cleared" } else { "set" },
            x.node,
            answer["trustVersion"]
        ),
        KeysCmd::Purge(x) if x.json => println!("{answer}"),
        KeysCmd::Purge(_) => println!("forgot {} pending key(s)", answer["purged"]),
        // Only the token on stdout, so `steward keys token > join.token` and `$(...)` work.
        KeysCmd::Token(_) => println!("{}", answer["token"].as_str().unwrap_or_default()),
        KeysCmd::Tokens(x) if x.json => println!(
            "{}",
            serde_json::to_string_pretty(&answer["tokens"]).unwrap_or_default()
        ),
        KeysCmd::Tokens(_) => print!("{}", tokens_text(&answer["tokens"])),
        KeysCmd::RevokeToken(x) => println!(
            "revoked join token {}; nodes it enrolled stay approved",
            steward::JoinToken::parse(&x.id)
                .map(|t| t.id())
                .unwrap_or(x.id.clone())
        ),
        KeysCmd::Show(_) => {}
    }
    0
}

/// Reads a TOML file with `access = [ {from, method, argv | argv_prefix}, ... ]`.
fn read_access_file(path: &std::path::Path) -> Result<steward::AccessList, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        access: steward::AccessList,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str::<File>(&text)
        .map(|f| f.access)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The `steward keys tokens` table.
fn tokens_text(v: &Value) -> String {
    let tokens = v.as_array().cloned().unwrap_or_default();
    if tokens.is_empty() {
        return "no join token can enrol nodes (make one with `steward keys token`)\n".into();
    }
    let mut out = format!("{:<10} {:<10} {:<10} APPROVED\n", "ID", "MADE", "EXPIRES");
    for t in tokens {
        out.push_str(&format!(
            "{:<10} {:<10} {:<10} {}\n",
            t["id"].as_str().unwrap_or_default(),
            output::ago(t["createdMs"].as_u64()),
            output::until(t["expiresMs"].as_u64()),
            t["approved"]
        ));
    }
    out
}

/// The `steward keys list` table.
fn keys_text(v: &Value) -> String {
    let mut out = format!(
        "{} (central) key {}, trust version {}\n",
        v["node"].as_str().unwrap_or_default(),
        v["publicKey"].as_str().unwrap_or_default(),
        v["trustVersion"]
    );
    let keys = v["keys"].as_array().cloned().unwrap_or_default();
    if keys.is_empty() {
        out.push_str("no node has registered a key yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:<24} {:<9} {:<44} SINCE\n",
        "NODE", "STATE", "KEY"
    ));
    for k in keys {
        let since = k["sinceMs"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{:<24} {:<9} {:<44} {}\n",
            k["node"].as_str().unwrap_or_default(),
            k["state"].as_str().unwrap_or_default(),
            k["key"].as_str().unwrap_or_default(),
            output::ago(Some(since))
        ));
    }
    out
}
