//! Enrolment: how a new node comes to trust central, and central the node, in one step.
//!
//! Nodes are closed by default (`signatures = required`): a node runs only what a key it
//! trusts signed. A **join token**, printed on central by `steward keys token` (Rust
//! [`crate::Node::join_token`]), carries everything a new node needs:
//!
//! - central's name and public key, which the node pins (kept in `<data_dir>/central.pub`, so
//!   later starts need no token);
//! - the private half of a fresh *join key*, whose public half central keeps in its registry.
//!
//! The node registers its own key with central as always (signed by that key) and adds a
//! *join proof*: the join key's signature over central's name, the node's name and the node's
//! key. Central finds the join key among its unexpired tokens, checks the proof and approves
//! the key at once. Central stores no secret (only the join key's public half), a captured
//! registration can only approve the same key for the same name again, and a token never
//! replaces a node's approved key nor brings back a revoked one: those stay with the operator
//! (`steward keys approve`).
//!
//! Without a token, the operator pins central's key (`--central-key-file`) and approves the
//! node's key by hand, or central runs with `auto_approve` (labs: every new key registered is
//! approved, logged as a warning).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::security::keys::PublicKey;
use crate::security::signing;
use crate::security::trust::{SignedBundle, KEY_REGISTER};
use crate::wire::envelope::{now_ms, Envelope, Reply, ReplyStatus, WireKind};

/// File in a node's data directory that holds central's pinned key, written when the node
/// joins with a token and read at every later start that gives no central key.
pub const CENTRAL_KEY_FILE: &str = "central.pub";
/// Where central's key for this node comes from, decided once at start: the configured key,
/// the join token's (which must agree with it, and names central), or the key pinned by an
/// earlier join in `<data_dir>/central.pub`. A join writes that file.
pub(crate) fn resolve(mut cfg: NodeConfig) -> Result<NodeConfig> {
    let file = cfg.data_dir.join(CENTRAL_KEY_FILE);
    if cfg.auto_approve && cfg.name != cfg.central {
        return Err(Error::config(format!(
            "auto_approve is a setting of central ({}), and {} is not central",
            cfg.central, cfg.name
        )));
    }
    if let Some(token) = cfg.join.clone() {
        if cfg.name == token.central() {
            return Err(Error::config(format!(
                "{} is the central node of this join token; a join token is for the other nodes",
                cfg.name
            )));
        }
        if cfg.central != token.central() {
            return Err(Error::config(format!(
                "the join token is for central {:?}, but this node's central is {:?}; drop --central or use a token from {}",
                token.central(), cfg.central, cfg.central
            )));
        }
        if let Some(k) = cfg.central_key.filter(|k| *k != token.central_key()) {
            return Err(Error::config(format!(
                "the join token names central's key {}, but central_key is {k}; give one of them",
                token.central_key()
            )));
        }
        cfg.central_key = Some(token.central_key());
        pin(&cfg.data_dir, &file, &token.central_key())?;
        return Ok(cfg);
    }
    if cfg.central_key.is_none() && cfg.name != cfg.central {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                cfg.central_key = Some(PublicKey::parse(&text).map_err(|e| {
                    Error::config(format!(
                        "{}: {e}; it holds central's key pinned when this node joined",
                        file.display()
                    ))
                })?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&file, e)),
        }
    }
    Ok(cfg)
}

/// Says at start what this node trusts, when that is not the closed default with central's
/// key known: signatures off or unsigned, a node that waits for enrolment, auto-approve.
pub(crate) fn say_how_trust_stands(cfg: &NodeConfig) {
    use crate::security::trust::SignaturePolicy;
    let is_central = cfg.name == cfg.central;
    match cfg.signatures {
        SignaturePolicy::Off | SignaturePolicy::Unsigned => tracing::warn!(
            signatures = %cfg.signatures,
            "signatures = {}: this node checks no signatures, so anyone who can publish on the broker can make it run what its access list allows, under any name; use signatures = required (the default) and enrol nodes with `steward keys token`",
            cfg.signatures
        ),
        SignaturePolicy::Required
            if !is_central
                && cfg.central_key.is_none()
                && !cfg.trusted_keys.iter().any(|t| t.node == cfg.central) =>
        {
            tracing::warn!(
            "{} trusts no key of {} yet, so it runs nothing {} sends: start it with --join TOKEN (print one on {} with `steward keys token`), or pin central's key with --central-key-file",
            cfg.name, cfg.central, cfg.central, cfg.central
            )
        }
        SignaturePolicy::Required => {}
    }
    if cfg.auto_approve && is_central {
        tracing::warn!(
            "auto_approve is on: every new key registered under a name that has none is approved, so anyone on the broker can enrol a node; for labs only (use `steward keys token` otherwise)"
        );
    }
}

/// Writes central's key to `file` unless it holds it already; a different key there means
/// central changed (a new central, or a rebuilt one): its old trust bundle is set aside, since
/// it can no longer be verified.
fn pin(dir: &Path, file: &PathBuf, key: &PublicKey) -> Result<()> {
    let before = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| PublicKey::parse(&t).ok());
    if before == Some(*key) {
        return Ok(());
    }
    crate::private_files::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(old) = before {
        tracing::warn!(
            old = %old, new = %key,
            "the join token names a new key for central; pinning it (the trust bundle of the old key is moved to trust.json.old)"
        );
        let trust = dir.join(crate::security::trust::TRUST_FILE);
        if trust.exists() {
            std::fs::rename(&trust, dir.join("trust.json.old"))
                .map_err(|e| Error::io(&trust, e))?;
        }
    }
    crate::security::keys::write_atomic(file, format!("{key}\n").as_bytes(), 0o644)
}

// ----- registration with central, at start -----

/// Starts what the node does for trust at start: a node that knows central's key registers
/// its own key with central (until central answers).
pub(crate) fn start(inner: &Arc<Delivery>) {
    if inner.cfg.name == inner.cfg.central || inner.cfg.central_key.is_none() {
        return;
    }
    let i = inner.clone();
    inner.tasks.spawn(async move { register(i).await });
}

/// What a node sends with its registration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Registration {
    /// The trust version the node has, so central can send a newer one.
    pub trust_version: u64,
    /// Proof of a join token, to have the key approved at once (see `enrol.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<crate::security::join::JoinProof>,
}

/// Central's answer to a registration (the result's text).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegistrationAnswer {
    pub state: crate::central::registry::KeyState,
    pub trust_version: u64,
    /// Central's current bundle, when the node is behind: a pending node gets it only here
    /// (central queues nothing to names nobody approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<SignedBundle>,
    /// Why a key stays pending although the node asked for more (a join token expired, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

async fn register(inner: Arc<Delivery>) {
    let mut shutdown = inner.tasks.subscribe();
    let mut connected = inner.link.connected.clone();
    let mut wait = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*connected.borrow() {
            tokio::select! {
                _ = connected.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let data = serde_json::to_string(&Registration {
            trust_version: inner.security.state().version,
            join: inner
                .cfg
                .join
                .as_ref()
                .map(|t| t.prove(&inner.cfg.name, &inner.security.keys.public())),
        })
        .unwrap_or_default();
        let mut env = Envelope {
            id: ulid::Ulid::new().to_string(),
            from: inner.cfg.name.clone(),
            to: inner.cfg.central.clone(),
            kind: WireKind::Event,
            method: KEY_REGISTER.into(),
            data: vec![data],
            epoch: inner.store.epoch(),
            seq: 0,
            ack: true,
            expires_ms: Some(now_ms() + 60_000),
            method_timeout_ms: 0,
            result_of: None,
            result: None,
            outcome: None,
            sig: None,
            wire: Some(crate::wire::frame::VERSION),
            authentic: None,
        };
        // Always signed: central accepts a registration only with the key it carries.
        signing::sign_with(&inner.security.keys, &mut env);
        let payload = bytes::Bytes::from(serde_json::to_vec(&env).unwrap_or_default());
        let req = inner.link.client.request(env.subject(), payload);
        let answer = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(10), req) => r,
            _ = shutdown.changed() => return,
        };
        match answer {
            Ok(Ok(msg)) => match serde_json::from_slice::<Reply>(&msg.payload) {
                Ok(r) if r.status == ReplyStatus::Done => {
                    inner.security.registered.send_replace(true);
                    let mut ans = r.result.and_then(|res| {
                        serde_json::from_str::<RegistrationAnswer>(&res.stdout).ok()
                    });
                    if let Some(text) = ans.as_mut().and_then(|a| a.bundle.take()) {
                        let text = serde_json::to_string(&text).unwrap_or_default();
                        match crate::delivery::screen::apply_bundle(&inner, &text).await {
                            Ok(done) => tracing::info!("{done}"),
                            Err((_, why)) => tracing::warn!("the trust bundle in central's answer to the key registration was not applied: {why}"),
                        }
                    }
                    match ans {
                        Some(a) if a.state == crate::central::registry::KeyState::Pending => {
                            match &a.note {
                                Some(why) => tracing::warn!(
                                    key = %inner.security.keys.public(),
                                    "this node's key waits for approval on central: {why}"
                                ),
                                None => tracing::warn!(
                                    key = %inner.security.keys.public(),
                                    "this node's key waits for approval on central: run `steward keys approve {}` there after comparing the key, or start this node with --join TOKEN (`steward keys token` on central)",
                                    inner.cfg.name
                                ),
                            }
                            // Registering again keeps the key among the newest pending ones
                            // (central forgets the oldest under a flood) and brings newer bundles.
                            tokio::select! {
                                _ = tokio::time::sleep(crate::central::registry::PENDING_REREGISTER) => {}
                                _ = shutdown.changed() => return,
                            }
                            wait = Duration::from_secs(1);
                            continue;
                        }
                        Some(a) => {
                            tracing::info!(state = ?a.state, trust_version = a.trust_version, "registered this node's key with central")
                        }
                        None => tracing::info!("registered this node's key with central"),
                    }
                    return;
                }
                Ok(r) => {
                    inner.security.registered.send_replace(true);
                    tracing::warn!(
                        "central refused this node's key registration: {}",
                        r.reason.unwrap_or_default()
                    );
                    return;
                }
                Err(e) => tracing::debug!("unreadable answer to the key registration: {e}"),
            },
            Ok(Err(e)) => tracing::debug!("key registration not answered yet: {e}"),
            Err(_) => tracing::debug!("key registration not answered within 10 s"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(300));
    }
}
