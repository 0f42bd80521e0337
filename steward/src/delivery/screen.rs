//! The receiver's hooks for trust, run on every envelope before anything is decided or
//! recorded: the protocol's own messages (key registration, trust updates), the signature
//! checks of `signatures = required`, refusals (answered, logged and reported, rate-limited),
//! the signed floor header, fire-and-forget replay marks, the access list in force, and
//! applying trust bundles from central.

use std::collections::HashMap;
use std::sync::Arc;

use crate::delivery::Delivery;
use crate::runtime::notify::ErrorReportKind;
use crate::security::keys::PublicKey;
use crate::security::signing::{self, FLOOR_SIG_HEADER};
use crate::security::trust::{
    log_admit, verify_bundle, SignaturePolicy, TrustState, KEY_REGISTER, TRUST_UPDATE,
};
use crate::wire::envelope::{Envelope, Reply, ReplyStatus, WireKind, FLOOR_HEADER};
use crate::wire::result::{MethodResult, Refusal};

/// Receiver hook, for every envelope before anything is decided or recorded. Handles the
/// protocol's own messages (key registration, trust updates) and, when signatures are
/// required, refuses what does not verify: answered `rejected` with the reason, logged,
/// reported to central, never run, and nothing written (so a forged message cannot occupy
/// the id or sequence number of a real one). Returns the envelope if it goes on.
pub(crate) async fn screen(
    inner: &Arc<Delivery>,
    env: Envelope,
    reply_to: &Option<crate::delivery::receiver::ReplyTo>,
) -> Option<Envelope> {
    if env.method == KEY_REGISTER {
        match inner.registrar.get() {
            Some(register) => register(env, reply_to.clone()).await,
            None => {
                let reason = format!(
                    "key registration refused: {} is not central ({})",
                    inner.cfg.name, inner.cfg.central
                );
                refuse(inner, &env, reply_to, ReplyStatus::Rejected, reason).await;
            }
        }
        return None;
    }
    if env.method == TRUST_UPDATE {
        on_update(inner, env, reply_to).await;
        return None;
    }
    if inner.security.policy != SignaturePolicy::Required {
        return Some(env);
    }
    match inner.security.admit(&env) {
        Ok(()) => Some(env),
        Err(reason) => {
            note_refusal(inner, &env, &reason);
            if let Some(to) = reply_to {
                let mut r = Reply::new(&env.id, ReplyStatus::Rejected);
                r.reason = Some(reason);
                r.set_refusal(Some(Refusal::Untrusted));
                crate::delivery::receiver::send_reply(inner, to, &r).await;
            }
            None
        }
    }
}

/// Logs and reports a refusal (rate-limited) and answers it.
pub(crate) async fn refuse(
    inner: &Arc<Delivery>,
    env: &Envelope,
    reply_to: &Option<crate::delivery::receiver::ReplyTo>,
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

fn note_refusal(inner: &Arc<Delivery>, env: &Envelope, reason: &str) {
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
fn report_refusal(inner: &Arc<Delivery>, id: &str, from: &str, text: String, reason: &str) {
    let (report, left_out) = inner
        .security
        .reports
        .lock()
        .map(|mut l| l.admit())
        .unwrap_or((true, 0));
    if left_out > 0 {
        inner.reporter.report(
            None,
            ErrorReportKind::Rejected,
            format!(
                "{left_out} more refused messages were not reported one by one in the last minute"
            ),
        );
    }
    if report {
        inner
            .reporter
            .report(Some(id.to_owned()), ErrorReportKind::Rejected, text);
    } else {
        tracing::debug!(msg_id = id, from, "refused: {reason}");
    }
}

/// Receiver hook for a message refused after its signature held (not addressed here, not in
/// the access list, not served, expired): logged; with signatures required also reported to
/// central, since the real sender may never learn of it (a retargeted copy, say). Without
/// signatures the sender reports its rejection itself, as before.
pub(crate) fn refused_after_check(inner: &Arc<Delivery>, key: &str, reason: &str) {
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
    inner: &Delivery,
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
    inner: &Arc<Delivery>,
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
pub(crate) fn unacked_mark(
    inner: &Delivery,
    stream: &str,
    env: &Envelope,
) -> Option<(String, u64)> {
    (inner.security.policy == SignaturePolicy::Required && env.seq > 0)
        .then(|| (unacked_key(stream), env.seq + 1))
}

/// Receiver hook: the access list in force (central's for this node if it sent one, else the
/// configured one) decides; the error is the reason.
pub(crate) fn access(inner: &Delivery, env: &Envelope) -> std::result::Result<(), String> {
    let st = inner.security.state();
    let list = st.access.as_ref().unwrap_or(&inner.cfg.access);
    list.check(&inner.cfg.name, &env.from, &env.method, &env.data)
}

/// A trust update from central: verified, applied if newer, answered.
async fn on_update(
    inner: &Arc<Delivery>,
    env: Envelope,
    reply_to: &Option<crate::delivery::receiver::ReplyTo>,
) {
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
    inner: &Arc<Delivery>,
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
        sec.admit(env).map_err(rejected)?;
    }
    let text = env
        .data
        .first()
        .ok_or_else(|| rejected("it carries no bundle".into()))?;
    apply_bundle(inner, text).await
}

/// Verifies a signed bundle (from a trust update, or from the answer to this node's
/// registration) against the pinned central key and applies it if newer.
pub(crate) async fn apply_bundle(
    inner: &Arc<Delivery>,
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
