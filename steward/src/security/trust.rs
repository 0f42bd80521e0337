//! The receiving side of signatures: which keys this node trusts for which sender, and the
//! signed and versioned trust bundle from central. The receiver's hooks that use it are in
//! `delivery/screen.rs`; registering this node's key with central is in `central/enrol.rs`.
//!
//! Trust comes from three places: this node's own key, the local list in the configuration
//! (`trusted_keys`, and central's pinned `central_key` for messages from central), and the
//! newest trust bundle — the keys central's operator approved, the keys revoked, and access
//! lists per node, signed by central's key and versioned. A bundle is applied only if it
//! verifies against the pinned central key and is newer than the one this node has; it is kept
//! verbatim in `<data_dir>/trust.json` and verified again at every start. A key revoked on
//! central stops working here when the bundle that revokes it arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::security::access::AccessList;
use crate::security::keys::{KeyPair, PublicKey, KEY_FILE};
use crate::security::signing::{self, SigError, BUNDLE_DOMAIN};
use crate::wire::envelope::{Envelope, WireKind};

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
            other => Err(Error::config(format!(
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
    /// This node's name and its central's.
    me: String,
    central: String,
    pub keys: KeyPair,
    pub policy: SignaturePolicy,
    pub(crate) central_key: Option<PublicKey>,
    local: HashMap<String, Vec<PublicKey>>,
    state: RwLock<Arc<TrustState>>,
    /// Serializes applying trust updates (check version, write the file, swap the state).
    pub(crate) apply: tokio::sync::Mutex<()>,
    pub(crate) trust_file: PathBuf,
    /// Per outgoing subject: the last floor signed and its signature.
    pub floor_sigs: Mutex<HashMap<String, (u64, String)>>,
    /// Per inbound stream: the highest floor whose signature was checked.
    pub(crate) verified_floors: Mutex<HashMap<String, u64>>,
    pub(crate) reports: Mutex<Limiter>,
    /// Session keys with peers, derived once each (see `session.rs`).
    pub(crate) sessions: crate::security::session::Sessions,
    /// False while a node that joins with a token has no answer to its registration yet.
    pub registered: tokio::sync::watch::Sender<bool>,
}

/// What [`Security::open`] needs to know of the node's settings.
pub(crate) struct TrustSettings<'a> {
    /// This node's name and its central's.
    pub name: &'a str,
    pub central: &'a str,
    pub data_dir: &'a Path,
    /// The private key file (`None`: `<data_dir>/node.key`).
    pub key_file: Option<&'a Path>,
    /// Central's key, pinned.
    pub central_key: Option<PublicKey>,
    pub trusted_keys: &'a [TrustedKey],
    pub policy: SignaturePolicy,
    /// The node joins with a token (its first hello waits for the registration's answer).
    pub joining: bool,
}

impl Security {
    /// Loads (or creates) the key pair, the local trust list and, on a node that is not
    /// central, the newest trust bundle (central's comes from its registry: the node sets it).
    pub(crate) fn open(cfg: &TrustSettings<'_>) -> Result<Security> {
        let key_path = cfg
            .key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cfg.data_dir.join(KEY_FILE));
        let keys = KeyPair::load_or_create(&key_path)?;
        let is_central = cfg.name == cfg.central;
        if is_central {
            if let Some(ck) = cfg.central_key.filter(|k| *k != keys.public()) {
                return Err(Error::config(format!(
                    "this node is central, but central_key ({ck}) is not its key ({}); nodes that pin central_key would refuse its trust updates — fix central_key or the key file",
                    keys.public()
                )));
            }
        }
        let mut local: HashMap<String, Vec<PublicKey>> = HashMap::new();
        for t in cfg.trusted_keys {
            crate::wire::names::node(&t.node)
                .map_err(|e| Error::config_from(format!("trusted key for {:?}: {e}", t.node), e))?;
            local.entry(t.node.clone()).or_default().push(t.key);
        }
        let trust_file = cfg.data_dir.join(TRUST_FILE);
        let state = if is_central {
            TrustState::default()
        } else {
            load_trust_file(cfg, &trust_file)?
        };
        Ok(Security {
            me: cfg.name.to_owned(),
            central: cfg.central.to_owned(),
            keys,
            policy: cfg.policy,
            central_key: if is_central { None } else { cfg.central_key },
            local,
            state: RwLock::new(Arc::new(state)),
            apply: tokio::sync::Mutex::new(()),
            trust_file,
            floor_sigs: Mutex::default(),
            verified_floors: Mutex::default(),
            reports: Mutex::new(Limiter::new()),
            sessions: Default::default(),
            registered: tokio::sync::watch::Sender::new(!cfg.joining || is_central),
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
    fn central_key(&self) -> Option<PublicKey> {
        if self.me == self.central {
            Some(self.keys.public())
        } else {
            self.central_key
        }
    }

    /// Whether `key` may sign for `from`; the error is the reason for refusing.
    /// Checks that an answer received on `reply_to` is signed by the key trusted for
    /// `responder`, the node the message went to (or carries a session tag that holds).
    pub(crate) fn check_reply(
        &self,
        responder: &str,
        reply_to: &str,
        r: &crate::wire::envelope::Reply,
    ) -> Result<(), String> {
        if let Some(tag) = &r.tag {
            return self.check_reply_tag(responder, reply_to, r, tag);
        }
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
        self.key_trusted(responder, &key)
            .map_err(|why| format!("the answer from {responder}: {why}"))
    }

    /// Every key trusted for `node` (the same rules as [`Security::key_trusted`]).
    pub(crate) fn trusted_keys(&self, node: &str) -> Vec<PublicKey> {
        let mut keys = Vec::with_capacity(1);
        if node == self.me {
            keys.push(self.keys.public());
        }
        if node == self.central {
            keys.extend(self.central_key());
        }
        if let Some(ks) = self.local.get(node) {
            keys.extend(ks.iter().copied());
        }
        if node != self.central {
            keys.extend(self.state().approved.get(node).copied());
        }
        keys.sort_by_key(|k| k.0);
        keys.dedup();
        keys
    }

    fn key_trusted(&self, from: &str, key: &PublicKey) -> Result<(), String> {
        let me = &self.me;
        let st = self.state();
        // Central is trusted only with its pinned key: a bundle cannot name another one.
        if (from == me && *key == self.keys.public())
            || (*from == self.central && self.central_key() == Some(*key))
            || self.local.get(from).is_some_and(|ks| ks.contains(key))
            || (*from != self.central && st.approved.get(from) == Some(key))
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
            .or_else(|| (self.central_key() == Some(*key)).then(|| self.central.clone()))
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
            None if *from == self.central => format!(
                "signed with a key that {me} does not trust for {from} (unknown key {key}): this node has not pinned central's key; start it with --join TOKEN (print one on {from} with `steward keys token`) or give the key with --central-key-file"
            ),
            None => format!(
                "signed with a key that {me} does not trust for {from} (unknown key {key}); approve it on central with `steward keys approve {from}`, or add it to trusted_keys"
            ),
        })
    }

    /// The signature checks of the `Required` policy: a session tag that held (see
    /// `session.rs`; the receiver checks it as it reads the frame), or a valid signature.
    pub(crate) fn admit(&self, env: &Envelope) -> Result<(), String> {
        if let Some(key) = env.authentic {
            self.key_trusted(&env.from, &PublicKey(key))?;
        } else {
            self.admit_signed(env)?;
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

    fn admit_signed(&self, env: &Envelope) -> Result<(), String> {
        let (key, vk) = match signing::signer(env) {
            Ok(k) => k,
            Err(SigError::Unsigned) => {
                return Err(format!(
                "unsigned message: {} requires every message to be signed (signatures = required)",
                self.me
            ))
            }
            Err(SigError::Malformed(why)) => return Err(format!("malformed signature: {why}")),
            Err(SigError::Bad) => return Err("bad signature".into()),
        };
        self.key_trusted(&env.from, &key)?;
        match signing::verify_envelope_with(env, &vk) {
            Ok(_) => Ok(()),
            Err(SigError::Bad) => {
                Err("bad signature: the message was changed after it was signed (destination, method, data, expiry or another field), or the signature is not by the key it names".into())
            }
            Err(SigError::Malformed(why)) => Err(format!("malformed signature: {why}")),
            Err(SigError::Unsigned) => Err("unsigned message".into()),
        }
    }
}

/// Loads `trust.json` if present; one that does not verify stops the start (fail closed: an
/// older bundle must never be accepted because the newer one was lost).
fn load_trust_file(cfg: &TrustSettings<'_>, path: &Path) -> Result<TrustState> {
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
    let (bundle, signed) = verify_bundle(&ck, cfg.central, &text).map_err(|why| {
        Error::config(format!(
            "{} is not a valid trust bundle from central ({why}); if central_key changed, move the file aside and let central send the current bundle",
            path.display()
        ))
    })?;
    Ok(TrustState::from_bundle(cfg.name, &bundle, Some(signed)))
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

// ----- the public API -----

/// A public key trusted locally for a node (a `trusted_keys` entry of the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The node.
    pub node: String,
    /// Its key.
    pub key: PublicKey,
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
