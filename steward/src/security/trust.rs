//! The receiving side of signatures: which keys this node trusts for which sender, the signed
//! and versioned trust bundle from central, and the receiver's hooks that refuse what does not
//! verify before anything is recorded.
//!
//! Trust comes from three places: this node's own key, the local list in the configuration
//! (`trusted_keys`, and central's pinned `central_key` for messages from central), and the
//! newest trust bundle — the keys central's operator approved, the keys revoked, and access
//! lists per node, signed by central's key and versioned. A bundle is applied only if it
//! verifies against the pinned central key and is newer than the one this node has; it is kept
//! verbatim in `<data_dir>/trust.json` and verified again at every start. A key revoked on
//! central stops working here when the bundle that revokes it arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::node::Inner;
use crate::runtime::notify::ErrorReportKind;
use crate::security::access::AccessList;
use crate::security::keys::{KeyPair, PublicKey, KEY_FILE};
use crate::security::signing::{self, SigError, BUNDLE_DOMAIN, FLOOR_SIG_HEADER};
use crate::wire::envelope::{now_ms, Envelope, Reply, ReplyStatus, WireKind, FLOOR_HEADER};
use crate::wire::result::MethodResult;

/// Reserved method: a node registers its public key with central.
pub(crate) const KEY_REGISTER: &str = "_keyRegister";
/// Reserved method: central sends a signed trust bundle to a node.
pub(crate) const TRUST_UPDATE: &str = "_trustUpdate";
/// File in the data directory holding the newest trust bundle, exactly as central signed it.
pub const TRUST_FILE: &str = "trust.json";

/// Whether a node requires signed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// Signatures are not checked: anyone who can publish on the broker can make this node run
    /// what its access list allows, under any name. Only when asked for (a warning at start).
    /// The node still signs what it sends (so receivers can require signatures), and still
    /// accepts only signed trust updates.
    Off,
    /// Like `Off`, and messages are sent unsigned too: for fleets that rely on the broker's
    /// authentication alone and want the CPU (about 20 µs per message on a small machine). A
    /// receiver that requires signatures refuses them.
    Unsigned,
    /// The default: every message must be signed by a key this node trusts for its sender;
    /// anything else is refused and never runs. A node trusts central once it joined (a join
    /// token, see [`crate::JoinToken`]) or was given central's key.
    #[default]
    Required,
}

impl std::str::FromStr for SignaturePolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "no" | "false" => Ok(SignaturePolicy::Off),
            "unsigned" | "none" => Ok(SignaturePolicy::Unsigned),
            "required" | "require" | "on" | "yes" | "true" => Ok(SignaturePolicy::Required),
            other => Err(Error::Config(format!(
                "signatures {other:?}: give `required`, `off` (sign, don't check) or `unsigned` (neither)"
            ))),
        }
    }
}

impl std::fmt::Display for SignaturePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignaturePolicy::Off => "off",
            SignaturePolicy::Unsigned => "unsigned",
            SignaturePolicy::Required => "required",
        })
    }
}

/// A trust bundle exactly as central signed it: `payload` is the JSON text of the bundle,
/// `sig` central's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedBundle {
    pub payload: String,
    pub sig: String,
}

/// What a trust bundle says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bundle {
    /// Increases with every change; a node refuses a bundle not newer than its own.
    pub version: u64,
    /// The central node that issued it.
    pub issuer: String,
    pub issued_ms: u64,
    /// The approved key of each node.
    #[serde(default)]
    pub keys: BTreeMap<String, PublicKey>,
    /// Keys central revoked, per node (so receivers can say "revoked" rather than "unknown").
    #[serde(default)]
    pub revoked: BTreeMap<String, Vec<PublicKey>>,
    /// Access lists set by central's operator, per node; a listed node uses its list instead
    /// of its configured one.
    #[serde(default)]
    pub access: BTreeMap<String, AccessList>,
}

/// What this node currently trusts from the newest bundle.
#[derive(Debug, Default)]
pub(crate) struct TrustState {
    pub version: u64,
    /// The signed bundle as received (for catching up nodes and for `trust.json`).
    pub signed: Option<SignedBundle>,
    approved: HashMap<String, PublicKey>,
    owner: HashMap<PublicKey, String>,
    revoked: HashMap<PublicKey, String>,
    /// This node's access list from the bundle, if central set one.
    pub access: Option<AccessList>,
}

impl TrustState {
    pub(crate) fn from_bundle(me: &str, b: &Bundle, signed: Option<SignedBundle>) -> TrustState {
        let mut owner = HashMap::new();
        for (node, key) in &b.keys {
            owner.insert(*key, node.clone());
        }
        let mut revoked = HashMap::new();
        for (node, keys) in &b.revoked {
            for k in keys {
                revoked.insert(*k, node.clone());
            }
        }
        TrustState {
            version: b.version,
            signed,
            approved: b.keys.clone().into_iter().collect(),
            owner,
            revoked,
            access: b.access.get(me).cloned(),
        }
    }
}

/// Counts refusals so that a flood of forged messages cannot flood the log and central:
/// at most [`REPORTS_PER_WINDOW`] are logged and reported per minute, then one line with the
/// number left out.
pub(crate) struct Limiter {
    window_start: Instant,
    sent: u32,
    suppressed: u64,
}

const REPORTS_PER_WINDOW: u32 = 20;
const REPORT_WINDOW: Duration = Duration::from_secs(60);

impl Limiter {
    /// A limiter whose first window starts now.
    pub(crate) fn new() -> Limiter {
        Limiter {
            window_start: Instant::now(),
            sent: 0,
            suppressed: 0,
        }
    }

    /// Whether to report this one, and how many were left out before it (to say so).
    pub(crate) fn admit(&mut self) -> (bool, u64) {
        let now = Instant::now();
        let mut left_out = 0;
        if now.duration_since(self.window_start) >= REPORT_WINDOW {
            left_out = std::mem::take(&mut self.suppressed);
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent < REPORTS_PER_WINDOW {
            self.sent += 1;
            (true, left_out)
        } else {
            self.suppressed += 1;
            (false, left_out)
        }
    }
}

/// Senders tracked one by one by [`log_admit`]; beyond, the rest share one budget.
const LOG_SENDERS: usize = 4096;

/// Whether to write a WARN line about refused or junk traffic from `sender` (a node name, or
/// the subject when the sender is unreadable), at most [`REPORTS_PER_WINDOW`] a minute per
/// sender of node `me`: a flood costs a few lines, not one per message. Writes the summary
/// ("N more … suppressed") when a new window starts; lines left out go to DEBUG.
pub(crate) fn log_admit(me: &str, sender: &str) -> bool {
    static LIMITS: std::sync::OnceLock<Mutex<HashMap<String, Limiter>>> =
        std::sync::OnceLock::new();
    let mut map = LIMITS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut key = format!("{me}\u{0}{sender}");
    if !map.contains_key(&key) && map.len() >= LOG_SENDERS {
        map.retain(|_, l| l.window_start.elapsed() < REPORT_WINDOW || l.suppressed > 0);
        if map.len() >= LOG_SENDERS {
            key = format!("{me}\u{0}*");
        }
    }
    let (log, left_out) = map.entry(key).or_insert_with(Limiter::new).admit();
    if left_out > 0 {
        tracing::warn!(
            from = sender,
            "{left_out} more lines about refused or malformed messages from {sender} were suppressed in the last minute"
        );
    }
    log
}

/// A node's keys, trust and policy; lives in the node for its lifetime.
pub(crate) struct Security {
    pub keys: KeyPair,
    pub policy: SignaturePolicy,
    central_key: Option<PublicKey>,
    local: HashMap<String, Vec<PublicKey>>,
    state: RwLock<Arc<TrustState>>,
    /// Serializes applying trust updates (check version, write the file, swap the state).
    apply: tokio::sync::Mutex<()>,
    trust_file: PathBuf,
    /// Per outgoing subject: the last floor signed and its signature.
    pub floor_sigs: Mutex<HashMap<String, (u64, String)>>,
    /// Per inbound stream: the highest floor whose signature was checked.
    verified_floors: Mutex<HashMap<String, u64>>,
    reports: Mutex<Limiter>,
    /// The key registry, on central only.
    pub registry: Option<crate::central::registry::Registry>,
    /// False while a node that joins with a token has no answer to its registration yet.
    pub registered: tokio::sync::watch::Sender<bool>,
}

impl Security {
    /// Loads (or creates) the key pair, the local trust list and the newest trust bundle; on
    /// central, the key registry. Runs after the store is open (the data directory is ours).
    pub(crate) fn open(cfg: &NodeConfig) -> Result<Security> {
        let key_path = cfg
            .key_file
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join(KEY_FILE));
        let keys = KeyPair::load_or_create(&key_path)?;
        let is_central = cfg.name == cfg.central;
        if is_central {
            if let Some(ck) = cfg.central_key.filter(|k| *k != keys.public()) {
                return Err(Error::Config(format!(
                    "this node is central, but central_key ({ck}) is not its key ({}); nodes that pin central_key would refuse its trust updates — fix central_key or the key file",
                    keys.public()
                )));
            }
        }
        let mut local: HashMap<String, Vec<PublicKey>> = HashMap::new();
        for t in &cfg.trusted_keys {
            crate::wire::names::node(&t.node)
                .map_err(|e| Error::Config(format!("trusted key for {:?}: {e}", t.node)))?;
            local.entry(t.node.clone()).or_default().push(t.key);
        }
        let trust_file = cfg.data_dir.join(TRUST_FILE);
        let (registry, state) = if is_central {
            let reg = crate::central::registry::Registry::open(&cfg.data_dir)?;
            let state = reg.state(&cfg.name, &keys);
            (Some(reg), state)
        } else {
            (None, load_trust_file(cfg, &trust_file)?)
        };
        Ok(Security {
            keys,
            policy: cfg.signatures,
            central_key: if is_central { None } else { cfg.central_key },
            local,
            state: RwLock::new(Arc::new(state)),
            apply: tokio::sync::Mutex::new(()),
            trust_file,
            floor_sigs: Mutex::default(),
            verified_floors: Mutex::default(),
            reports: Mutex::new(Limiter::new()),
            registry,
            registered: tokio::sync::watch::Sender::new(cfg.join.is_none() || is_central),
        })
    }

    pub(crate) fn state(&self) -> Arc<TrustState> {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn set_state(&self, s: TrustState) {
        let mut w = self.state.write().unwrap_or_else(|p| p.into_inner());
        *w = Arc::new(s);
    }

    /// Central's key as this node knows it: pinned, or its own when it is central.
    fn central_key(&self, cfg: &NodeConfig) -> Option<PublicKey> {
        if cfg.name == cfg.central {
            Some(self.keys.public())
        } else {
            self.central_key
        }
    }

    /// Whether `key` may sign for `from`; the error is the reason for refusing.
    /// Checks that an answer received on `reply_to` is signed by the key trusted for
    /// `responder`, the node the message went to.
    pub(crate) fn check_reply(
        &self,
        cfg: &NodeConfig,
        responder: &str,
        reply_to: &str,
        r: &crate::wire::envelope::Reply,
    ) -> Result<(), String> {
        let key = match signing::verify_reply(responder, reply_to, r) {
            Ok(key) => key,
            Err(SigError::Unsigned) => return Err(format!(
                "the answer from {responder} is not signed; with signatures = required only signed answers count (does {responder} run with signatures = unsigned?)"
            )),
            Err(SigError::Malformed(why)) => {
                return Err(format!("the answer from {responder} has a malformed signature: {why}"))
            }
            Err(SigError::Bad) => return Err(format!(
                "the answer does not carry a valid signature by {responder} (forged, altered, or meant for another message)"
            )),
        };
        self.key_trusted(cfg, responder, &key)
            .map_err(|why| format!("the answer from {responder}: {why}"))
    }

    fn key_trusted(&self, cfg: &NodeConfig, from: &str, key: &PublicKey) -> Result<(), String> {
        let me = &cfg.name;
        let st = self.state();
        // Central is trusted only with its pinned key: a bundle cannot name another one.
        if (from == me && *key == self.keys.public())
            || (from == cfg.central && self.central_key(cfg) == Some(*key))
            || self.local.get(from).is_some_and(|ks| ks.contains(key))
            || (from != cfg.central && st.approved.get(from) == Some(key))
        {
            return Ok(());
        }
        if let Some(node) = st.revoked.get(key) {
            return Err(format!(
                "signed with a key that central revoked (it was {node}'s key, trust version {}); the message is refused",
                st.version
            ));
        }
        let owner = st
            .owner
            .get(key)
            .cloned()
            .or_else(|| (*key == self.keys.public()).then(|| me.clone()))
            .or_else(|| (self.central_key(cfg) == Some(*key)).then(|| cfg.central.clone()))
            .or_else(|| {
                self.local
                    .iter()
                    .find(|(_, ks)| ks.contains(key))
                    .map(|(n, _)| n.clone())
            });
        Err(match owner {
            Some(owner) => format!(
                "signed with {owner}'s key, but it claims to be from {from}; the key does not match the sender"
            ),
            None if *from == cfg.central => format!(
                "signed with a key that {me} does not trust for {from} (unknown key {key}): this node has not pinned central's key; start it with --join TOKEN (print one on {from} with `steward keys token`) or give the key with --central-key-file"
            ),
            None => format!(
                "signed with a key that {me} does not trust for {from} (unknown key {key}); approve it on central with `steward keys approve {from}`, or add it to trusted_keys"
            ),
        })
    }

    /// The signature checks of the `Required` policy.
    fn admit(&self, cfg: &NodeConfig, env: &Envelope) -> Result<(), String> {
        let (key, vk) = match signing::signer(env) {
            Ok(k) => k,
            Err(SigError::Unsigned) => {
                return Err(format!(
                "unsigned message: {} requires every message to be signed (signatures = required)",
                cfg.name
            ))
            }
            Err(SigError::Malformed(why)) => return Err(format!("malformed signature: {why}")),
            Err(SigError::Bad) => return Err("bad signature".into()),
        };
        self.key_trusted(cfg, &env.from, &key)?;
        match signing::verify_envelope_with(env, &vk) {
            Ok(_) => {}
            Err(SigError::Bad) => {
                return Err("bad signature: the message was changed after it was signed (destination, method, data, expiry or another field), or the signature is not by the key it names".into())
            }
            Err(SigError::Malformed(why)) => return Err(format!("malformed signature: {why}")),
            Err(SigError::Unsigned) => return Err("unsigned message".into()),
        }
        if env.kind != WireKind::Result {
            if env.ack && env.seq == 0 {
                return Err("a signed message with ACK must carry its stream sequence number (a replay could not be recognised otherwise)".into());
            }
            if !env.ack && env.seq == 0 && env.expires_ms.is_none() {
                return Err("a fire-and-forget message without a stream sequence number must carry an expiry (a replay could not be recognised otherwise)".into());
            }
        }
        Ok(())
    }
}

/// Loads `trust.json` if present; one that does not verify stops the start (fail closed: an
/// older bundle must never be accepted because the newer one was lost).
fn load_trust_file(cfg: &NodeConfig, path: &std::path::Path) -> Result<TrustState> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustState::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let Some(ck) = cfg.central_key else {
        tracing::warn!(
            "{} exists but no central_key is configured, so it cannot be verified; ignoring it",
            path.display()
        );
        return Ok(TrustState::default());
    };
    let (bundle, signed) = verify_bundle(&ck, &cfg.central, &text).map_err(|why| {
        Error::Config(format!(
            "{} is not a valid trust bundle from central ({why}); if central_key changed, move the file aside and let central send the current bundle",
            path.display()
        ))
    })?;
    Ok(TrustState::from_bundle(&cfg.name, &bundle, Some(signed)))
}

/// Checks a signed bundle's signature against central's key and parses it.
pub(crate) fn verify_bundle(
    central_key: &PublicKey,
    central: &str,
    text: &str,
) -> std::result::Result<(Bundle, SignedBundle), String> {
    let signed: SignedBundle =
        serde_json::from_str(text).map_err(|e| format!("not a signed trust bundle: {e}"))?;
    match signing::verify_domain(
        central_key,
        BUNDLE_DOMAIN,
        signed.payload.as_bytes(),
        &signed.sig,
    ) {
        Ok(()) => {}
        Err(SigError::Bad) => {
            return Err(format!(
            "not signed by central's key {central_key} (forged, altered, or signed by another key)"
        ))
        }
        Err(SigError::Malformed(why)) => return Err(format!("malformed signature: {why}")),
        Err(SigError::Unsigned) => return Err("unsigned".into()),
    }
    let bundle: Bundle = serde_json::from_str(&signed.payload)
        .map_err(|e| format!("the signed payload is not a trust bundle: {e}"))?;
    if bundle.issuer != central {
        return Err(format!(
            "issued by {:?}, but this node's central is {central:?}",
            bundle.issuer
        ));
    }
    Ok((bundle, signed))
}

/// Signs a bundle with this node's (central's) key.
pub(crate) fn sign_bundle(keys: &KeyPair, bundle: &Bundle) -> SignedBundle {
    let payload = serde_json::to_string(bundle).unwrap_or_default();
    let sig = signing::sign_domain(keys, BUNDLE_DOMAIN, payload.as_bytes());
    SignedBundle { payload, sig }
}

// ----- the receiver's hooks -----

/// Receiver hook, for every envelope before anything is decided or recorded. Handles the
/// protocol's own messages (key registration, trust updates) and, when signatures are
/// required, refuses what does not verify: answered `rejected` with the reason, logged,
/// reported to central, never run, and nothing written (so a forged message cannot occupy
/// the id or sequence number of a real one). Returns the envelope if it goes on.
pub(crate) async fn screen(
    inner: &Arc<Inner>,
    env: Envelope,
    reply_to: &Option<String>,
) -> Option<Envelope> {
    if env.method == KEY_REGISTER {
        crate::central::registry::on_register(inner, env, reply_to.clone()).await;
        return None;
    }
    if env.method == TRUST_UPDATE {
        on_update(inner, env, reply_to).await;
        return None;
    }
    if inner.security.policy != SignaturePolicy::Required {
        return Some(env);
    }
    match inner.security.admit(&inner.cfg, &env) {
        Ok(()) => Some(env),
        Err(reason) => {
            refuse(inner, &env, reply_to, ReplyStatus::Rejected, reason).await;
            None
        }
    }
}

/// Logs and reports a refusal (rate-limited) and answers it.
pub(crate) async fn refuse(
    inner: &Arc<Inner>,
    env: &Envelope,
    reply_to: &Option<String>,
    status: ReplyStatus,
    reason: String,
) {
    note_refusal(inner, env, &reason);
    if let Some(to) = reply_to {
        let mut r = Reply::new(&env.id, status);
        r.reason = Some(reason);
        crate::delivery::receiver::send_reply(inner, to, &r).await;
    }
}

fn note_refusal(inner: &Arc<Inner>, env: &Envelope, reason: &str) {
    let text = format!(
        "{} refused a message from {} ({}): {reason}",
        inner.cfg.name,
        env.from,
        env.subject()
    );
    report_refusal(inner, &env.id, &env.from, text, reason);
}

/// Reports a refusal to the listeners and central, at most 20 a minute (then one line with the
/// count left out); the rest are only logged.
fn report_refusal(inner: &Arc<Inner>, id: &str, from: &str, text: String, reason: &str) {
    let (report, left_out) = inner
        .security
        .reports
        .lock()
        .map(|mut l| l.admit())
        .unwrap_or((true, 0));
    if left_out > 0 {
        inner.report(
            None,
            ErrorReportKind::Rejected,
            format!(
                "{left_out} more refused messages were not reported one by one in the last minute"
            ),
        );
    }
    if report {
        inner.report(Some(id.to_owned()), ErrorReportKind::Rejected, text);
    } else {
        tracing::debug!(msg_id = id, from, "refused: {reason}");
    }
}

/// Receiver hook for a message refused after its signature held (not addressed here, not in
/// the access list, not served, expired): logged; with signatures required also reported to
/// central, since the real sender may never learn of it (a retargeted copy, say). Without
/// signatures the sender reports its rejection itself, as before.
pub(crate) fn refused_after_check(inner: &Arc<Inner>, key: &str, reason: &str) {
    let (from, id) = key.split_once('/').unwrap_or(("", key));
    if inner.security.policy != SignaturePolicy::Required {
        if log_admit(&inner.cfg.name, from) {
            tracing::warn!(msg_id = id, from, "refused: {reason}");
        } else {
            tracing::debug!(msg_id = id, from, "refused: {reason}");
        }
        return;
    }
    let text = format!(
        "{} refused message {id} from {from}: {reason}",
        inner.cfg.name
    );
    report_refusal(inner, id, from, text, reason);
}

/// Receiver hook: the sender's floor header counts only if its signature holds (so nobody can
/// make this node skip messages by replaying one with a forged floor). Checked only when the
/// floor would move the stream forward, once per new floor.
pub(crate) fn checked_floor(
    inner: &Inner,
    env: &Envelope,
    floor: u64,
    headers: Option<&async_nats::HeaderMap>,
    expected: &HashMap<String, u64>,
) -> u64 {
    if inner.security.policy != SignaturePolicy::Required
        || floor == 0
        || env.kind == WireKind::Result
    {
        return floor;
    }
    let stream = format!("{}/{:x}/{}", env.from, env.epoch, env.subject());
    if expected.get(&stream).is_some_and(|e| *e >= floor) {
        return floor;
    }
    let mut verified = inner
        .security
        .verified_floors
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if verified.get(&stream).is_some_and(|v| *v >= floor) {
        return floor;
    }
    let sig = headers
        .and_then(|h| h.get(FLOOR_SIG_HEADER))
        .map(|v| v.as_str().to_owned());
    let key = env.sig.as_ref().and_then(|s| PublicKey::parse(&s.key).ok());
    let ok = match (sig, key) {
        (Some(sig), Some(key)) => {
            let bytes = signing::floor_bytes(&env.from, env.epoch, &env.subject(), floor);
            signing::verify_bytes(&key, &bytes, &sig).is_ok()
        }
        _ => false,
    };
    if ok {
        verified.insert(stream, floor);
        floor
    } else {
        if log_admit(&inner.cfg.name, &env.from) {
            tracing::warn!(id = %env.id, from = %env.from, floor, "ignored a {FLOOR_HEADER} header without a valid signature");
        }
        0
    }
}

fn unacked_key(stream: &str) -> String {
    format!("{stream}#unacked")
}

/// Receiver hook for a fire-and-forget message: with signatures required, one already seen
/// (its stream position is not past the last one run) is a replay and never runs again, also
/// after a restart.
pub(crate) fn unacked_replayed(
    inner: &Arc<Inner>,
    stream: &str,
    env: &Envelope,
    expected: &mut HashMap<String, u64>,
) -> Option<Reply> {
    if inner.security.policy != SignaturePolicy::Required || env.seq == 0 {
        return None;
    }
    let key = unacked_key(stream);
    let next = *expected
        .entry(key.clone())
        .or_insert_with(|| inner.store.inbox_expected(&key).unwrap_or(1));
    if env.seq < next {
        let reason = format!(
            "fire-and-forget message {} of {stream} was received before; a replay never runs",
            env.seq
        );
        note_refusal(inner, env, &reason);
        let mut r = Reply::new(&env.id, ReplyStatus::Stale);
        r.reason = Some(reason);
        return Some(r);
    }
    expected.insert(key, env.seq + 1);
    None
}

/// What the receiver's batch commit writes for a fire-and-forget message about to run: the
/// next stream position it accepts (see [`unacked_replayed`]).
pub(crate) fn unacked_mark(inner: &Inner, stream: &str, env: &Envelope) -> Option<(String, u64)> {
    (inner.security.policy == SignaturePolicy::Required && env.seq > 0)
        .then(|| (unacked_key(stream), env.seq + 1))
}

/// Receiver hook: the access list in force (central's for this node if it sent one, else the
/// configured one) decides; the error is the reason.
pub(crate) fn access(inner: &Inner, env: &Envelope) -> std::result::Result<(), String> {
    let st = inner.security.state();
    let list = st.access.as_ref().unwrap_or(&inner.cfg.access);
    list.check(&inner.cfg.name, &env.from, &env.method, &env.data)
}

/// A trust update from central: verified, applied if newer, answered.
async fn on_update(inner: &Arc<Inner>, env: Envelope, reply_to: &Option<String>) {
    let outcome = apply_update(inner, &env).await;
    match outcome {
        Ok(text) => {
            tracing::info!(id = %env.id, "{text}");
            if let Some(to) = reply_to {
                let mut r = Reply::new(&env.id, ReplyStatus::Done);
                let mut res = MethodResult::ok(text);
                res.node = inner.cfg.name.clone();
                r.result = Some(res);
                crate::delivery::receiver::send_reply(inner, to, &r).await;
            }
        }
        Err((status, reason)) => {
            let reason = format!("trust update refused: {reason}");
            if status == ReplyStatus::Retry {
                tracing::error!(id = %env.id, "{reason}");
                if let Some(to) = reply_to {
                    let mut r = Reply::new(&env.id, status);
                    r.reason = Some(reason);
                    crate::delivery::receiver::send_reply(inner, to, &r).await;
                }
            } else {
                refuse(inner, &env, reply_to, status, reason).await;
            }
        }
    }
}

async fn apply_update(
    inner: &Arc<Inner>,
    env: &Envelope,
) -> std::result::Result<String, (ReplyStatus, String)> {
    let rejected = |s: String| (ReplyStatus::Rejected, s);
    let cfg = &inner.cfg;
    let sec = &inner.security;
    if cfg.name == cfg.central {
        return Err(rejected(format!(
            "{} is central and keeps the key registry itself",
            cfg.name
        )));
    }
    if env.from != cfg.central {
        return Err(rejected(format!(
            "sent by {}, but trust updates come only from central ({})",
            env.from, cfg.central
        )));
    }
    if env.to != cfg.name {
        return Err(rejected(format!(
            "addressed to {}, but this is {}",
            env.to, cfg.name
        )));
    }
    if sec.policy == SignaturePolicy::Required {
        sec.admit(cfg, env).map_err(rejected)?;
    }
    let text = env
        .data
        .first()
        .ok_or_else(|| rejected("it carries no bundle".into()))?;
    apply_bundle(inner, text).await
}

/// Verifies a signed bundle (from a trust update, or from the answer to this node's
/// registration) against the pinned central key and applies it if newer.
async fn apply_bundle(
    inner: &Arc<Inner>,
    text: &str,
) -> std::result::Result<String, (ReplyStatus, String)> {
    let rejected = |s: String| (ReplyStatus::Rejected, s);
    let cfg = &inner.cfg;
    let sec = &inner.security;
    let Some(ck) = sec.central_key else {
        return Err(rejected(format!(
            "{} has no central_key configured, so it cannot verify trust updates; configure central's public key",
            cfg.name
        )));
    };
    let (bundle, signed) = verify_bundle(&ck, &cfg.central, text).map_err(rejected)?;
    let _guard = sec.apply.lock().await;
    let current = sec.state();
    if bundle.version < current.version {
        return Err(rejected(format!(
            "stale: version {} is older than version {} that {} has",
            bundle.version, current.version, cfg.name
        )));
    }
    if bundle.version == current.version {
        return if current.signed.as_ref().map(|s| &s.payload) == Some(&signed.payload) {
            Ok(format!(
                "trust version {} is already applied",
                bundle.version
            ))
        } else {
            Err(rejected(format!(
                "version {} differs from the bundle of the same version that {} has",
                bundle.version, cfg.name
            )))
        };
    }
    let path = sec.trust_file.clone();
    let bytes = serde_json::to_vec(&signed).unwrap_or_default();
    tokio::task::spawn_blocking(move || crate::security::keys::write_atomic(&path, &bytes, 0o600))
        .await
        .map_err(|e| (ReplyStatus::Retry, e.to_string()))?
        .map_err(|e| (ReplyStatus::Retry, format!("cannot store it: {e}")))?;
    let version = bundle.version;
    sec.set_state(TrustState::from_bundle(&cfg.name, &bundle, Some(signed)));
    Ok(format!(
        "applied trust version {version} from {} ({} approved keys{})",
        cfg.central,
        bundle.keys.len(),
        if bundle.access.contains_key(&cfg.name) {
            ", with an access list for this node"
        } else {
            ""
        }
    ))
}

// ----- registration with central, at start -----

/// Starts what the node does for trust at start: a node that knows central's key registers
/// its own key with central (until central answers).
pub(crate) fn start(inner: &Arc<Inner>) {
    if inner.cfg.name == inner.cfg.central || inner.cfg.central_key.is_none() {
        return;
    }
    let i = inner.clone();
    let handle = inner.rt.spawn(async move { register(i).await });
    if let Ok(mut t) = inner.tasks.lock() {
        t.push(handle);
    }
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

async fn register(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut connected = inner.connected.clone();
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
        };
        // Always signed: central accepts a registration only with the key it carries.
        signing::sign_with(&inner.security.keys, &mut env);
        let payload = bytes::Bytes::from(serde_json::to_vec(&env).unwrap_or_default());
        let req = inner.client.request(env.subject(), payload);
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
                        match apply_bundle(&inner, &text).await {
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

// ----- the public API -----

/// A key in central's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// The node the key belongs to.
    pub node: String,
    /// The public key.
    pub key: PublicKey,
    /// Pending approval, approved, or revoked.
    pub state: crate::central::registry::KeyState,
    /// When it entered this state (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A public key trusted locally for a node (a `trusted_keys` entry of the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The node.
    pub node: String,
    /// Its key.
    pub key: PublicKey,
}

impl crate::Node {
    /// This node's public key (also in `node.pub` beside its private key).
    pub fn public_key(&self) -> PublicKey {
        self.inner.security.keys.public()
    }

    /// The version of the newest trust bundle this node applied (0: none).
    pub fn trust_version(&self) -> u64 {
        self.inner.security.state().version
    }

    /// The access list in force: central's for this node if it sent one, else the configured one.
    pub fn access_list(&self) -> AccessList {
        let st = self.inner.security.state();
        st.access
            .clone()
            .unwrap_or_else(|| self.inner.cfg.access.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reports_are_limited_per_minute_and_counted() {
        let mut l = Limiter {
            window_start: Instant::now(),
            sent: 0,
            suppressed: 0,
        };
        for _ in 0..REPORTS_PER_WINDOW {
            assert_eq!(l.admit(), (true, 0));
        }
        assert_eq!(l.admit(), (false, 0));
        assert_eq!(l.admit(), (false, 0));
        l.window_start -= REPORT_WINDOW;
        assert_eq!(
            l.admit(),
            (true, 2),
            "the next window says how many were left out"
        );
    }

    #[test]
    fn bundles_verify_only_with_central_key_and_issuer() {
        let central = KeyPair::random();
        let other = KeyPair::random();
        let b = Bundle {
            version: 3,
            issuer: "central".into(),
            ..Bundle::default()
        };
        let signed = serde_json::to_string(&sign_bundle(&central, &b)).unwrap();
        let (got, _) = verify_bundle(&central.public(), "central", &signed).unwrap();
        assert_eq!(got, b);
        let e = verify_bundle(&other.public(), "central", &signed).unwrap_err();
        assert!(e.contains("not signed by central's key"), "{e}");
        let e = verify_bundle(&central.public(), "hq", &signed).unwrap_err();
        assert!(e.contains("issued by"), "{e}");
        let forged = serde_json::to_string(&sign_bundle(&other, &b)).unwrap();
        assert!(verify_bundle(&central.public(), "central", &forged).is_err());
        assert!(verify_bundle(&central.public(), "central", "{}").is_err());
    }
}
