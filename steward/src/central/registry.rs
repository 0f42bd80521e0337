//! Central's key registry: every node's key as registered (pending), approved or revoked by the
//! operator, and the access lists the operator set per node. Kept in
//! `<data_dir>/trust-registry.json` (mode 0600, replaced atomically). Every change that alters
//! what nodes trust makes a new trust bundle — a higher version, signed with central's key —
//! that is queued to every node with an approved key (durably, like any message).
//!
//! Anyone on the broker can send registrations, so nothing an unknown party sends may grow
//! central's disk, memory or traffic without bound: at most [`MAX_PENDING`] keys wait (a new
//! one evicts the oldest waiting key), pending registrations reach the file at most once per
//! [`PENDING_FLUSH`], at most [`REGISTERING`] are handled at once (the receiver waits for a free
//! slot, so a flood backs up into the broker, which drops it as a slow consumer), and a pending
//! node gets the trust bundle only in the answer to its own registration — nothing is queued
//! to a name nobody approved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::central::enrol::{Registration, RegistrationAnswer};
use crate::central::Central;
use crate::delivery::publisher::PubEvent;
use crate::error::{Error, Result};
use crate::security::access::AccessList;
use crate::security::join::{token_id, JoinProof, JoinToken, JoinTokenInfo};
use crate::security::keys::{KeyPair, PublicKey};
use crate::security::trust::{sign_bundle, Bundle, TrustState, TRUST_UPDATE};
use crate::wire::envelope::{now_ms, Envelope, Reply, ReplyStatus};
use crate::wire::message::Message;
use crate::wire::result::MethodResult;

/// File name of the registry in central's data directory.
pub const REGISTRY_FILE: &str = "trust-registry.json";
/// Keys waiting for approval at most; a new one evicts the one that waited longest.
pub const MAX_PENDING: usize = 1024;
/// Pending registrations are written to the registry file at most this often (approvals,
/// revocations and access changes are written at once).
const PENDING_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Registrations handled at the same time at most.
const REGISTERING: usize = 16;
/// A node whose key is pending registers again this often (to stay among the newest pending
/// keys and to get a newer bundle).
pub(crate) const PENDING_REREGISTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Where a key stands in central's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Registered by its node; waits for the operator.
    Pending,
    /// Trusted for its node (at most one per node).
    Approved,
    /// No longer trusted (revoked, replaced, or refused while pending).
    Revoked,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryData {
    version: u64,
    #[serde(default)]
    nodes: BTreeMap<String, NodeEntry>,
    /// The join tokens central issued: their keys' public halves only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    key: PublicKey,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    #[serde(default)]
    approved: u64,
}

impl TokenEntry {
    fn info(&self) -> JoinTokenInfo {
        JoinTokenInfo {
            id: token_id(&self.key),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            approved: self.approved,
        }
    }
    fn expired(&self, now: u64) -> bool {
        self.expires_ms.is_some_and(|e| now >= e)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeEntry {
    #[serde(default)]
    keys: Vec<KeyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<AccessList>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyEntry {
    key: PublicKey,
    state: KeyState,
    since_ms: u64,
}

/// A key in central's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// The node the key belongs to.
    pub node: String,
    /// The public key.
    pub key: PublicKey,
    /// Pending approval, approved, or revoked.
    pub state: KeyState,
    /// When it entered this state (ms since the Unix epoch).
    pub since_ms: u64,
}

/// The registry (central only).
pub(crate) struct Registry {
    path: PathBuf,
    data: Mutex<RegistryData>,
    /// Serializes changes (copy, change, write the file, swap).
    writing: tokio::sync::Mutex<()>,
    /// The id of the last trust update queued for each node: a newer bundle supersedes it.
    last_update: Mutex<std::collections::HashMap<String, String>>,
    /// Pending registrations not yet in the file; a flush is scheduled.
    dirty: std::sync::atomic::AtomicBool,
    /// A flush of pending registrations is scheduled.
    flushing: std::sync::atomic::AtomicBool,
    /// Bounds the registrations handled at once.
    slots: Arc<tokio::sync::Semaphore>,
    /// Limits the "a key waits for approval" lines under a flood of registrations.
    noted: Mutex<crate::security::trust::Limiter>,
    /// A bundle for every node is scheduled after keys approved at registration (so a hundred
    /// nodes joining at once cost a few bundles per node, not a hundred).
    distributing: std::sync::atomic::AtomicBool,
}

impl Registry {
    pub(crate) fn open(dir: &Path) -> Result<Registry> {
        let path = dir.join(REGISTRY_FILE);
        let data = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::config_from(format!(
                    "{} is damaged ({e}); restore it from a backup (without it, central forgets which keys it approved)",
                    path.display()
                ), e)
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryData::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(Registry {
            path,
            data: Mutex::new(data),
            writing: tokio::sync::Mutex::new(()),
            last_update: Mutex::default(),
            dirty: std::sync::atomic::AtomicBool::new(false),
            flushing: std::sync::atomic::AtomicBool::new(false),
            slots: Arc::new(tokio::sync::Semaphore::new(REGISTERING)),
            noted: Mutex::new(crate::security::trust::Limiter::new()),
            distributing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn snapshot(&self) -> RegistryData {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn bundle(data: &RegistryData, issuer: &str) -> Bundle {
        let mut b = Bundle {
            version: data.version,
            issuer: issuer.to_owned(),
            issued_ms: now_ms(),
            ..Bundle::default()
        };
        for (node, e) in &data.nodes {
            for k in &e.keys {
                match k.state {
                    KeyState::Approved => {
                        b.keys.insert(node.clone(), k.key);
                    }
                    KeyState::Revoked => b.revoked.entry(node.clone()).or_default().push(k.key),
                    KeyState::Pending => {}
                }
            }
            if let Some(a) = &e.access {
                b.access.insert(node.clone(), a.clone());
            }
        }
        b
    }

    /// Central's own trust state: the current bundle, signed.
    pub(crate) fn state(&self, me: &str, keys: &KeyPair) -> TrustState {
        let b = Registry::bundle(&self.snapshot(), me);
        let signed = sign_bundle(keys, &b);
        TrustState::from_bundle(me, &b, Some(signed))
    }

    fn list(&self) -> Vec<KeyInfo> {
        let data = self.snapshot();
        let mut out = Vec::new();
        for (node, e) in &data.nodes {
            for k in &e.keys {
                out.push(KeyInfo {
                    node: node.clone(),
                    key: k.key,
                    state: k.state,
                    since_ms: k.since_ms,
                });
            }
        }
        out
    }

    /// The nodes trust bundles go to: those with an approved key, and those the operator set
    /// an access list for. Never a name that only registered (anyone can register).
    fn bundle_targets(&self) -> Vec<String> {
        self.snapshot()
            .nodes
            .iter()
            .filter(|(_, e)| {
                e.access.is_some() || e.keys.iter().any(|k| k.state == KeyState::Approved)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Applies `f` to a copy, writes it (with a new version when `bump`), then makes it current.
    async fn change<R>(
        &self,
        bump: bool,
        f: impl FnOnce(&mut RegistryData) -> Result<R>,
    ) -> Result<(R, u64)> {
        let _w = self.writing.lock().await;
        let mut copy = self.snapshot();
        let r = f(&mut copy)?;
        if bump {
            // A clock-based floor keeps versions increasing even if the registry file was lost.
            copy.version = (copy.version + 1).max(now_ms());
        }
        let bytes = serde_json::to_vec_pretty(&copy).unwrap_or_default();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            crate::security::keys::write_atomic(&path, &bytes, 0o600)
        })
        .await
        .map_err(|e| Error::storage_from(e.to_string(), e))??;
        let version = copy.version;
        *self.data.lock().unwrap_or_else(|p| p.into_inner()) = copy;
        // The file now holds every pending registration too.
        self.dirty.store(false, std::sync::atomic::Ordering::SeqCst);
        Ok((r, version))
    }

    /// Writes pending registrations kept only in memory so far.
    async fn flush(&self) -> Result<()> {
        if self.dirty.load(std::sync::atomic::Ordering::SeqCst) {
            self.change(false, |_| Ok(())).await?;
        }
        Ok(())
    }

    /// Records a key a node registered; returns its state (new keys are pending) and whether
    /// it is new. Changes only memory: the caller schedules [`Registry::flush`]. When
    /// [`MAX_PENDING`] keys wait already, the one that waited longest is forgotten (its node
    /// registers again at its next start or within [`PENDING_REREGISTER`]; the operator can
    /// also approve a key from the node's `node.pub` directly). A pending key registered again
    /// counts as new, so a node that is alive keeps its place.
    async fn register(&self, node: &str, key: PublicKey) -> Result<(KeyState, bool)> {
        let _w = self.writing.lock().await;
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        if let Some(k) = d
            .nodes
            .get_mut(node)
            .and_then(|e| e.keys.iter_mut().find(|k| k.key == key))
        {
            if k.state == KeyState::Pending {
                k.since_ms = now;
                self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            return Ok((k.state, false));
        }
        loop {
            // The pending count and the oldest pending key, without copying names.
            let mut count = 0;
            let mut oldest: Option<(u64, &String, PublicKey)> = None;
            for (n, e) in &d.nodes {
                for k in e.keys.iter().filter(|k| k.state == KeyState::Pending) {
                    count += 1;
                    if oldest.is_none_or(|(t, _, _)| k.since_ms < t) {
                        oldest = Some((k.since_ms, n, k.key));
                    }
                }
            }
            match oldest {
                Some((_, n, k)) if count >= MAX_PENDING => {
                    let n = n.clone();
                    remove_pending(&mut d, &n, Some(k));
                }
                _ => break,
            }
        }
        d.nodes
            .entry(node.to_owned())
            .or_default()
            .keys
            .push(KeyEntry {
                key,
                state: KeyState::Pending,
                since_ms: now,
            });
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok((KeyState::Pending, true))
    }
}

/// Removes `node`'s pending key (`None`: all of them); a node left with no key and no access
/// list is dropped. Returns how many keys were removed.
fn remove_pending(d: &mut RegistryData, node: &str, key: Option<PublicKey>) -> usize {
    let Some(e) = d.nodes.get_mut(node) else {
        return 0;
    };
    let before = e.keys.len();
    e.keys
        .retain(|k| k.state != KeyState::Pending || key.is_some_and(|want| want != k.key));
    let removed = before - e.keys.len();
    if e.keys.is_empty() && e.access.is_none() {
        d.nodes.remove(node);
    }
    removed
}

/// After a change: central trusts the new bundle at once and queues it to every node with an
/// approved key or an access list (see [`Registry::bundle_targets`]).
async fn distribute(inner: &Arc<Central>) -> Result<()> {
    let reg = &inner.reg;
    // A bundle is signed once per version: nodes refuse a second, different bundle of the
    // same version (one may have gone out in a registration answer already).
    if inner.d.security.state().version != reg.snapshot().version {
        inner
            .d
            .security
            .set_state(reg.state(&inner.d.cfg.name, &inner.d.security.keys));
    }
    let mut targets: BTreeSet<String> = reg.bundle_targets().into_iter().collect();
    targets.remove(&inner.d.cfg.name);
    send_bundle(inner, targets.into_iter().collect()).await
}

/// Queues the current signed bundle to `nodes` (durably; retried like any message).
async fn send_bundle(inner: &Arc<Central>, nodes: Vec<String>) -> Result<()> {
    if nodes.is_empty() {
        return Ok(());
    }
    let Some(signed) = inner.d.security.state().signed.clone() else {
        return Ok(());
    };
    let text = serde_json::to_string(&signed).unwrap_or_default();
    let reg = &inner.reg;
    let mut prepared = Vec::with_capacity(nodes.len());
    let mut queued = Vec::with_capacity(nodes.len());
    for n in nodes {
        let msg = Message::event(n.clone(), TRUST_UPDATE, [text.clone()]);
        let mut p = inner.d.outbox.prepare(msg, None, true)?;
        // Tracked like a user message: its state and audit line show who has which version.
        p.internal = false;
        queued.push((n, p.item.envelope.id.clone()));
        prepared.push(p);
    }
    // Only the newest bundle matters: an older one still queued for the same node (offline,
    // say) is cancelled in the same transaction, so each node has at most one waiting and a
    // burst of changes does not pile up whole bundles per node.
    let older: Vec<String> = {
        let last = reg.last_update.lock().unwrap_or_else(|p| p.into_inner());
        queued
            .iter()
            .filter_map(|(n, _)| last.get(n).cloned())
            .collect()
    };
    let reason = format!(
        "superseded by trust version {}",
        inner.d.security.state().version
    );
    let i = inner.clone();
    inner
        .d
        .outbox
        .queue_with(
            move |t| {
                let mut cancelled = Vec::new();
                for id in older {
                    let rec = crate::store::finalize(
                        t,
                        &id,
                        crate::wire::result::MessageState::Cancelled,
                        None,
                        Some(reason.clone()),
                        0,
                    )?;
                    cancelled.extend(rec);
                }
                Ok(cancelled)
            },
            prepared,
            move |cancelled| {
                {
                    let reg = &i.reg;
                    reg.last_update
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(queued);
                }
                // The superseded bundles end before the new ones wake their publishers.
                for rec in cancelled {
                    i.d.publisher_event(
                        rec.stream_id,
                        &rec.status.subject,
                        PubEvent::Finished(rec.seq),
                    );
                    i.d.finals.after_final(rec.clone().into_status());
                }
            },
        )
        .await?;
    Ok(())
}

/// Central's side of `_keyRegister`: the envelope must be signed by the key it registers
/// (proof of possession); the key is recorded as pending unless known; a node behind on trust
/// gets the current bundle in the answer (and, if approved, queued durably as well). Waits
/// for one of [`REGISTERING`] slots, so a flood slows the receiver down instead of piling up.
pub(crate) async fn on_register(
    inner: &Arc<Central>,
    env: Envelope,
    reply_to: Option<crate::delivery::receiver::ReplyTo>,
) {
    let reg = &inner.reg;
    let Ok(slot) = reg.slots.clone().acquire_owned().await else {
        return;
    };
    let i = inner.clone();
    inner.d.tasks.rt.spawn(async move {
        let _slot = slot;
        match register(&i, &env).await {
            Ok(answer) => {
                if let Some(to) = reply_to {
                    let mut r = Reply::new(&env.id, ReplyStatus::Done);
                    let mut res =
                        MethodResult::ok(serde_json::to_string(&answer).unwrap_or_default());
                    res.node = i.d.cfg.name.clone();
                    r.result = Some(res);
                    crate::delivery::receiver::send_reply(&i.d, &to, &r).await;
                }
            }
            Err(reason) => {
                let reason = format!("key registration refused: {reason}");
                crate::delivery::screen::refuse(
                    &i.d,
                    &env,
                    &reply_to,
                    ReplyStatus::Rejected,
                    reason,
                )
                .await;
            }
        }
    });
}

async fn register(
    inner: &Arc<Central>,
    env: &Envelope,
) -> std::result::Result<RegistrationAnswer, String> {
    let reg = &inner.reg;
    if env.to != inner.d.cfg.name {
        return Err(format!(
            "addressed to {}, but this is {}",
            env.to, inner.d.cfg.name
        ));
    }
    crate::wire::names::node(&env.from).map_err(|e| format!("bad sender: {e}"))?;
    if env
        .expires_ms
        .is_some_and(|e| now_ms() > e.saturating_add(inner.d.cfg.clock_skew.as_millis() as u64))
    {
        return Err("expired".into());
    }
    if env.from == inner.d.cfg.central {
        return Err(format!(
            "{} is central's own name; central's key is pinned on nodes, not registered",
            env.from
        ));
    }
    let key = crate::security::signing::verify(env)
        .map_err(|e| format!("it must be signed by the key it registers ({e:?})"))?;
    let registration = env
        .data
        .first()
        .and_then(|d| serde_json::from_str::<Registration>(d).ok());
    let (mut state, new) = reg
        .register(&env.from, key)
        .await
        .map_err(|e| e.to_string())?;
    let mut note = None;
    if state == KeyState::Pending {
        let proof = registration.as_ref().and_then(|r| r.join.as_ref());
        match enrol_at_once(inner, reg, &env.from, key, proof).await {
            Ok(true) => state = KeyState::Approved,
            Ok(false) => {}
            Err(why) => {
                tracing::warn!(node = %env.from, %key, "the key stays pending: {why}");
                note = Some(why);
            }
        }
    }
    if reg.dirty.load(std::sync::atomic::Ordering::SeqCst)
        && !reg.flushing.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let i = inner.clone();
        inner.d.tasks.rt.spawn(async move {
            tokio::time::sleep(PENDING_FLUSH).await;
            {
                let reg = &i.reg;
                reg.flushing
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                if let Err(e) = reg.flush().await {
                    tracing::error!("cannot write the pending keys to the key registry: {e}");
                }
            }
        });
    }
    let theirs = registration.map(|r| r.trust_version).unwrap_or(0);
    let current = inner.d.security.state().version;
    if state == KeyState::Pending && new {
        let (log, left_out) = reg.noted.lock().map(|mut l| l.admit()).unwrap_or((true, 0));
        if left_out > 0 {
            tracing::warn!("{left_out} more new keys registered in the last minute (not logged one by one); `steward keys list` shows them, `steward keys purge` forgets every pending key");
        }
        if log {
            tracing::warn!(
                node = %env.from, %key,
                "a key waits for approval: compare it with the node's node.pub, then run `steward keys approve {}`",
                env.from
            );
        }
    }
    // A node behind gets the bundle in this answer (it holds only public keys and access
    // lists; pending nodes need the fleet's keys to check the signed answers to what they
    // send). Only an approved node also gets it queued durably: queuing to any name that
    // registers would let anyone grow central's store and traffic.
    let bundle = (theirs < current)
        .then(|| inner.d.security.state().signed.clone())
        .flatten();
    if state == KeyState::Approved && theirs < current && !new {
        tracing::info!(node = %env.from, theirs, current, "sending the current trust bundle to a node that is behind");
        if let Err(e) = send_bundle(inner, vec![env.from.clone()]).await {
            tracing::error!("cannot queue the trust bundle for {}: {e}", env.from);
        }
    }
    Ok(RegistrationAnswer {
        state,
        trust_version: current,
        bundle,
        note,
    })
}

/// Approves a newly registered key at once when its registration carries a valid proof of a
/// join token that has not expired, or when central runs with `auto_approve`: only for a name
/// with no approved key (a token never replaces a node's key; a revoked key is never pending,
/// so never comes back). Central trusts the key at once; every node gets the new bundle
/// shortly after, in one batch for all keys approved meanwhile. `Ok(false)`: no proof and no
/// auto-approve; `Err`: why the key stays pending (told to the node).
async fn enrol_at_once(
    inner: &Arc<Central>,
    reg: &Registry,
    node: &str,
    key: PublicKey,
    proof: Option<&JoinProof>,
) -> std::result::Result<bool, String> {
    let central = inner.d.cfg.name.clone();
    let how = match proof {
        Some(p) => {
            if !p.holds(&central, node, &key) {
                return Err(
                    "its join proof does not hold (a token of another central, or altered)".into(),
                );
            }
            let now = now_ms();
            let data = reg.snapshot();
            match data.tokens.iter().find(|t| t.key == p.key) {
                None => return Err(format!("join token {} is unknown on {central} (revoked, or from another central); make a new one with `steward keys token`", token_id(&p.key))),
                Some(t) if t.expired(now) => return Err(format!("join token {} expired; make a new one with `steward keys token`", token_id(&p.key))),
                Some(_) => format!("join token {}", token_id(&p.key)),
            }
        }
        None if inner.d.cfg.auto_approve => "auto_approve".to_owned(),
        None => return Ok(false),
    };
    let token = proof.map(|p| p.key);
    let owned = node.to_owned();
    reg.change(true, move |d| {
        let e = d.nodes.entry(owned.clone()).or_default();
        if let Some(other) = e.keys.iter().find(|k| k.state == KeyState::Approved && k.key != key) {
            return Err(Error::Trust(format!(
                "{owned} has an approved key already ({}); a new key replaces it only when the operator approves it: `steward keys approve {owned} --key {key}`",
                other.key
            )));
        }
        let now = now_ms();
        match e.keys.iter_mut().find(|k| k.key == key) {
            Some(k) => {
                k.state = KeyState::Approved;
                k.since_ms = now;
            }
            None => e.keys.push(KeyEntry { key, state: KeyState::Approved, since_ms: now }),
        }
        if let Some(t) = token.and_then(|tk| d.tokens.iter_mut().find(|t| t.key == tk)) {
            t.approved += 1;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?;
    if inner.d.cfg.auto_approve && proof.is_none() {
        tracing::warn!(node, %key, "approved a new key by auto_approve");
    } else {
        tracing::info!(node, %key, "approved a new key with {how}");
    }
    inner
        .d
        .security
        .set_state(reg.state(&inner.d.cfg.name, &inner.d.security.keys));
    if !reg
        .distributing
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let i = inner.clone();
        inner.d.tasks.rt.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            {
                let reg = &i.reg;
                reg.distributing
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
            if let Err(e) = distribute(&i).await {
                tracing::error!("cannot queue the trust bundle after approving keys: {e}");
            }
        });
    }
    Ok(true)
}

impl Central {
    /// Every key in the registry (pending, approved, revoked), by node.
    pub(crate) fn keys(self: &Arc<Self>) -> Result<Vec<KeyInfo>> {
        Ok(self.reg.list())
    }

    /// Approves a node's key (the one given, or its only pending key) and distributes a new bundle.
    pub(crate) async fn approve_key(
        self: &Arc<Self>,
        node: &str,
        key: Option<PublicKey>,
    ) -> Result<u64> {
        crate::wire::names::node(node)?;
        if node == self.d.cfg.central {
            return Err(Error::Trust(format!(
                "{node} is central: nodes trust it by its pinned key (central_key), never by approval"
            )));
        }
        let owned = node.to_owned();
        let reg = &self.reg;
        let (_, version) = reg
            .change(true, move |d| {
                let e = d.nodes.entry(owned.clone()).or_default();
                let chosen = match key {
                    Some(k) => k,
                    None => {
                        let pending: Vec<_> = e
                            .keys
                            .iter()
                            .filter(|k| k.state == KeyState::Pending)
                            .map(|k| k.key)
                            .collect();
                        match pending.as_slice() {
                            [one] => *one,
                            [] => {
                                return Err(Error::Trust(format!(
                                    "{owned} has no key waiting for approval; give the key (from its node.pub) to approve it directly"
                                )))
                            }
                            many => {
                                return Err(Error::Trust(format!(
                                    "{owned} has {} keys waiting for approval ({}); say which one",
                                    many.len(),
                                    many.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
                                )))
                            }
                        }
                    }
                };
                if let Some((other, _)) = d.nodes.iter().find(|(n, e)| {
                    **n != owned
                        && e.keys
                            .iter()
                            .any(|k| k.key == chosen && k.state == KeyState::Approved)
                }) {
                    return Err(Error::Trust(format!(
                        "key {chosen} is approved for {other} already; a key belongs to one node"
                    )));
                }
                let e = d.nodes.entry(owned.clone()).or_default();
                let now = now_ms();
                for k in e.keys.iter_mut() {
                    if k.key != chosen && k.state == KeyState::Approved {
                        k.state = KeyState::Revoked;
                        k.since_ms = now;
                    }
                }
                match e.keys.iter_mut().find(|k| k.key == chosen) {
                    Some(k) => {
                        k.state = KeyState::Approved;
                        k.since_ms = now;
                    }
                    None => e.keys.push(KeyEntry {
                        key: chosen,
                        state: KeyState::Approved,
                        since_ms: now,
                    }),
                }
                Ok(())
            })
            .await?;
        tracing::info!(node, version, "approved a key");
        distribute(self).await?;
        Ok(version)
    }

    /// Revokes a node's key (the one given, or all) and distributes a new bundle.
    pub(crate) async fn revoke_key(
        self: &Arc<Self>,
        node: &str,
        key: Option<PublicKey>,
    ) -> Result<u64> {
        crate::wire::names::node(node)?;
        let owned = node.to_owned();
        let reg = &self.reg;
        let (_, version) = reg
            .change(true, move |d| {
                let Some(e) = d.nodes.get_mut(&owned) else {
                    return Err(Error::Trust(format!("central has no key of {owned}")));
                };
                let now = now_ms();
                let mut changed = 0;
                for k in e.keys.iter_mut() {
                    if key.is_none_or(|want| want == k.key) && k.state != KeyState::Revoked {
                        k.state = KeyState::Revoked;
                        k.since_ms = now;
                        changed += 1;
                    }
                }
                if changed == 0 {
                    return Err(Error::Trust(match key {
                        Some(k) => format!("{owned} has no key {k} that is not revoked already"),
                        None => format!("every key of {owned} is revoked already"),
                    }));
                }
                Ok(())
            })
            .await?;
        tracing::info!(node, version, "revoked a key");
        distribute(self).await?;
        Ok(version)
    }

    /// Forgets every key waiting for approval; returns how many.
    pub(crate) async fn purge_pending_keys(self: &Arc<Self>) -> Result<usize> {
        let reg = &self.reg;
        let (removed, _) = reg
            .change(false, |d| {
                let names: Vec<String> = d.nodes.keys().cloned().collect();
                Ok(names
                    .iter()
                    .map(|n| remove_pending(d, n, None))
                    .sum::<usize>())
            })
            .await?;
        tracing::info!(removed, "forgot every key waiting for approval");
        Ok(removed)
    }

    /// Makes a join token valid for `valid_for` (`None`: until revoked); keeps its public half.
    pub(crate) async fn join_token(
        self: &Arc<Self>,
        valid_for: Option<std::time::Duration>,
    ) -> Result<JoinToken> {
        let reg = &self.reg;
        let token = JoinToken::generate(&self.d.cfg.name, self.d.security.keys.public())?;
        let now = now_ms();
        let entry = TokenEntry {
            key: token.public(),
            created_ms: now,
            expires_ms: valid_for.map(|v| now.saturating_add(v.as_millis() as u64)),
            approved: 0,
        };
        reg.change(false, move |d| {
            d.tokens.retain(|t| !t.expired(now));
            d.tokens.push(entry);
            Ok(())
        })
        .await?;
        tracing::info!(id = %token.id(), "made a join token");
        Ok(token)
    }

    /// The join tokens that can still enrol nodes.
    pub(crate) fn join_tokens(self: &Arc<Self>) -> Result<Vec<JoinTokenInfo>> {
        let now = now_ms();
        Ok(self
            .reg
            .snapshot()
            .tokens
            .iter()
            .filter(|t| !t.expired(now))
            .map(TokenEntry::info)
            .collect())
    }

    /// Revokes the join token with this id.
    pub(crate) async fn revoke_join_token(self: &Arc<Self>, id: &str) -> Result<()> {
        let reg = &self.reg;
        let want = id.trim().to_ascii_lowercase();
        reg.change(false, move |d| {
            let before = d.tokens.len();
            d.tokens.retain(|t| token_id(&t.key) != want);
            if d.tokens.len() == before {
                return Err(Error::NotFound(format!(
                    "central has no join token {want}; `steward keys tokens` lists them"
                )));
            }
            Ok(())
        })
        .await?;
        tracing::info!(id, "revoked a join token");
        Ok(())
    }

    /// Sets or clears the access list of `node` and distributes a new bundle.
    pub(crate) async fn set_node_access(
        self: &Arc<Self>,
        node: &str,
        access: Option<AccessList>,
    ) -> Result<u64> {
        crate::wire::names::node(node)?;
        let owned = node.to_owned();
        let reg = &self.reg;
        let (_, version) = reg
            .change(true, move |d| {
                if access.is_none() && !d.nodes.contains_key(&owned) {
                    return Ok(());
                }
                d.nodes.entry(owned).or_default().access = access;
                Ok(())
            })
            .await?;
        distribute(self).await?;
        Ok(version)
    }
}
