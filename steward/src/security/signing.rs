//! Signatures: what exactly is signed, and the sending side's hooks.
//!
//! A message is signed over a canonical encoding of its whole envelope: a domain tag with a
//! version, then every field in a fixed order, each string length-prefixed and every list
//! preceded by its element count. So no change of destination, method, kind, data (including
//! moving text from one argument to the next: `["bash","-c ls"]` and `["bash -c","ls"]` encode
//! differently), expiry, id, epoch, sequence number or result survives verification. The
//! signature travels in the envelope's `sig` field with the signer's public key; JSON
//! formatting, field order and unknown fields play no part (the receiver verifies the values it
//! parsed, which are the values it runs).
//!
//! Answers (ACKs, inline results, refusals) are signed too when the sender asks for it: a
//! sender whose policy is `required` uses reply subjects whose third-last token is
//! [`SIGNED_REPLIES`]; the answering node then signs the answer over its own name, that reply
//! subject (so an answer cannot be replayed to another sender or message) and every field of
//! the answer, and the sender accepts only answers signed by the key it trusts for the
//! destination. Stripping the marker changes the reply subject, so the answer never arrives:
//! the request can be delayed, never misled. Senders that do not check do not ask, and
//! receivers do not pay for a signature nobody reads.
//!
//! Ed25519 (RFC 8032, via `ed25519-dalek`): deterministic, so an envelope signed again after a
//! restart carries the same signature; verification is strict (no malleable signatures, no weak
//! keys).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::security::keys::{KeyPair, PublicKey};
use crate::security::trust::{Security, SignaturePolicy};
use crate::wire::envelope::{Envelope, Reply, ReplyStatus, Seal, WireKind};
use crate::wire::result::{MethodResult, ResultStatus};

/// Domain tag and version of the envelope encoding (changing the encoding means a new version).
const ENVELOPE_DOMAIN: &str = "steward/envelope/v1";
/// Domain tag of a sender's stream floor (see [`floor_header`]).
const FLOOR_DOMAIN: &str = "steward/floor/v1";
/// Domain of a sender's answer to a receiver's position challenge (`confirm.rs`).
const CONFIRM_DOMAIN: &str = "steward/confirm/v1";
/// Domain tag of a trust bundle signed by central.
pub(crate) const BUNDLE_DOMAIN: &str = "steward/trust-bundle/v1";

/// Domain tag of an answer to a message.
const REPLY_DOMAIN: &str = "steward/reply/v1";
/// Reply-subject token by which a sender asks for signed answers (see the module docs).
pub(crate) const SIGNED_REPLIES: &str = "_signed";

/// Header carrying the signature of the floor header (sender, epoch, subject, floor).
pub(crate) const FLOOR_SIG_HEADER: &str = "Steward-Floor-Sig";

/// Why a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigError {
    /// No signature at all.
    Unsigned,
    /// The key or signature is not well-formed.
    Malformed(String),
    /// Well-formed, but not a signature of these bytes by this key.
    Bad,
}

/// Length-prefixed canonical writer.
struct Canon(Vec<u8>);

impl Canon {
    fn new(domain: &str) -> Canon {
        let mut c = Canon(Vec::with_capacity(256));
        c.str(domain);
        c
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn flag(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
    fn opt_str(&mut self, s: Option<&str>) {
        self.flag(s.is_some());
        if let Some(s) = s {
            self.str(s);
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }
}

fn kind_token(k: WireKind) -> &'static str {
    match k {
        WireKind::Command => "command",
        WireKind::Event => "event",
        WireKind::Result => "result",
    }
}

fn status_token(s: ReplyStatus) -> &'static str {
    match s {
        ReplyStatus::Received => "received",
        ReplyStatus::Done => "done",
        ReplyStatus::Rejected => "rejected",
        ReplyStatus::Expired => "expired",
        ReplyStatus::Gap => "gap",
        ReplyStatus::Stale => "stale",
        ReplyStatus::Retry => "retry",
    }
}

fn result_token(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Ok => "ok",
        ResultStatus::Failed => "failed",
        ResultStatus::Unknown => "unknown",
    }
}

/// The bytes an envelope's signature covers: every field but the signature itself.
pub(crate) fn canonical(env: &Envelope) -> Vec<u8> {
    let mut c = Canon::new(ENVELOPE_DOMAIN);
    c.str(&env.id);
    c.str(&env.from);
    c.str(&env.to);
    c.str(kind_token(env.kind));
    c.str(&env.method);
    c.u64(env.data.len() as u64);
    for d in &env.data {
        c.str(d);
    }
    c.u64(env.epoch);
    c.u64(env.seq);
    c.flag(env.ack);
    c.opt_u64(env.expires_ms);
    c.u64(env.method_timeout_ms);
    c.opt_str(env.result_of.as_deref());
    c.result(env.result.as_ref());
    c.opt_str(env.outcome.map(status_token));
    c.0
}

impl Canon {
    fn result(&mut self, r: Option<&MethodResult>) {
        self.flag(r.is_some());
        if let Some(r) = r {
            self.str(result_token(r.status));
            self.flag(r.exit_code.is_some());
            if let Some(code) = r.exit_code {
                self.u64(code as i64 as u64);
            }
            self.str(&r.stdout);
            self.str(&r.stderr);
            self.flag(r.truncated);
            self.u64(r.duration_ms);
            self.str(&r.node);
            self.opt_str(r.error.as_deref());
        }
    }
}

/// The bytes an answer's signature covers: the answering node, the reply subject it was sent
/// to, and every field of the answer but the signature.
pub(crate) fn reply_canonical(responder: &str, reply_to: &str, r: &Reply) -> Vec<u8> {
    let mut c = Canon::new(REPLY_DOMAIN);
    c.str(responder);
    c.str(reply_to);
    c.str(&r.id);
    c.str(status_token(r.status));
    c.opt_u64(r.expected);
    c.opt_str(r.reason.as_deref());
    c.result(r.result.as_ref());
    // Appended only when present, so answers without one sign as before.
    if let Some(refusal) = &r.refusal {
        c.str(refusal);
    }
    c.0
}

/// Whether the sender of a request asked for a signed answer (by its reply subject).
pub(crate) fn wants_signed_reply(reply_to: &str) -> bool {
    reply_to.rsplit('.').nth(2) == Some(SIGNED_REPLIES)
}

/// Signs an answer as `responder` for the reply subject `reply_to`.
pub(crate) fn sign_reply(keys: &KeyPair, responder: &str, reply_to: &str, r: &mut Reply) {
    r.sig = None;
    let sig = keys.sign(&reply_canonical(responder, reply_to, r));
    r.sig = Some(Seal {
        key: keys.public_b64.clone(),
        sig: B64.encode(sig.to_bytes()),
    });
}

/// The key an answer names as its signer, after checking its signature over
/// [`reply_canonical`]; whether that key is trusted for `responder` is the caller's question.
pub(crate) fn verify_reply(
    responder: &str,
    reply_to: &str,
    r: &Reply,
) -> Result<PublicKey, SigError> {
    let seal = r.sig.as_ref().ok_or(SigError::Unsigned)?;
    let (key, vk) = parse_key(&seal.key)?;
    verify_with(&vk, &reply_canonical(responder, reply_to, r), &seal.sig)?;
    Ok(key)
}

/// Signs an envelope with `keys` (replacing any earlier signature).
pub(crate) fn sign_with(keys: &KeyPair, env: &mut Envelope) {
    let sig = keys.sign(&canonical(env));
    env.sig = Some(Seal {
        key: keys.public_b64.clone(),
        sig: B64.encode(sig.to_bytes()),
    });
}

/// Checks the envelope's signature against the key it names; returns that key. Whether the key
/// is trusted for the sender is the receiver's question (see `trust`).
pub(crate) fn verify(env: &Envelope) -> Result<PublicKey, SigError> {
    let (key, vk) = signer(env)?;
    verify_with(
        &vk,
        &canonical(env),
        &env.sig.as_ref().ok_or(SigError::Unsigned)?.sig,
    )?;
    Ok(key)
}

/// The key an envelope names as its signer, parsed once (and checked on the curve, not weak).
pub(crate) fn signer(env: &Envelope) -> Result<(PublicKey, VerifyingKey), SigError> {
    parse_key(&env.sig.as_ref().ok_or(SigError::Unsigned)?.key)
}

/// Parses a base64 public key (checked on the curve, not weak).
fn parse_key(b64: &str) -> Result<(PublicKey, VerifyingKey), SigError> {
    let bad = || SigError::Malformed("the signer key is not an ed25519 public key".into());
    let raw = B64.decode(b64.as_bytes()).map_err(|_| bad())?;
    let arr: [u8; 32] = raw.try_into().map_err(|_| bad())?;
    let vk = PublicKey(arr).verifying().ok_or_else(bad)?;
    if vk.is_weak() {
        return Err(bad());
    }
    Ok((PublicKey(arr), vk))
}

/// Checks the envelope's signature with its (already parsed) signer key.
pub(crate) fn verify_envelope_with(env: &Envelope, vk: &VerifyingKey) -> Result<(), SigError> {
    let seal = env.sig.as_ref().ok_or(SigError::Unsigned)?;
    verify_with(vk, &canonical(env), &seal.sig)
}

/// Strict ed25519 verification of `bytes` against a base64 signature.
pub(crate) fn verify_bytes(key: &PublicKey, bytes: &[u8], sig_b64: &str) -> Result<(), SigError> {
    let vk = key
        .verifying()
        .ok_or_else(|| SigError::Malformed("the key is not on the curve".into()))?;
    verify_with(&vk, bytes, sig_b64)
}

fn verify_with(vk: &VerifyingKey, bytes: &[u8], sig_b64: &str) -> Result<(), SigError> {
    let raw = B64
        .decode(sig_b64.as_bytes())
        .map_err(|_| SigError::Malformed("the signature is not base64".into()))?;
    let arr: [u8; 64] = raw
        .try_into()
        .map_err(|_| SigError::Malformed("the signature is not 64 bytes".into()))?;
    let sig = Signature::from_bytes(&arr);
    vk.verify_strict(bytes, &sig).map_err(|_| SigError::Bad)
}

/// Signs `bytes` under a domain tag (for trust bundles); returns base64.
pub(crate) fn sign_domain(keys: &KeyPair, domain: &str, bytes: &[u8]) -> String {
    let mut c = Canon::new(domain);
    c.bytes(bytes);
    B64.encode(keys.sign(&c.0).to_bytes())
}

/// Verifies a signature made by [`sign_domain`].
pub(crate) fn verify_domain(
    key: &PublicKey,
    domain: &str,
    bytes: &[u8],
    sig_b64: &str,
) -> Result<(), SigError> {
    let mut c = Canon::new(domain);
    c.bytes(bytes);
    verify_bytes(key, &c.0, sig_b64)
}

/// The bytes a floor signature covers.
pub(crate) fn floor_bytes(from: &str, epoch: u64, subject: &str, floor: u64) -> Vec<u8> {
    let mut c = Canon::new(FLOOR_DOMAIN);
    c.str(from);
    c.u64(epoch);
    c.str(subject);
    c.u64(floor);
    c.0
}

/// What a sender signs to confirm a stream's floor in answer to a receiver's nonce.
pub(crate) fn confirm_bytes(
    from: &str,
    epoch: u64,
    subject: &str,
    floor: u64,
    nonce: &str,
) -> Vec<u8> {
    let mut c = Canon::new(CONFIRM_DOMAIN);
    c.str(from);
    c.u64(epoch);
    c.str(subject);
    c.u64(floor);
    c.str(nonce);
    c.0
}

// ----- the sending side's hooks -----

/// Publisher hook, once per message when it is loaded from the outbox (its sequence number is
/// known by then): a fire-and-forget message gets its stream position too, so a receiver can
/// recognise a replay of it. Deterministic: a reload after a restart gives the same envelope
/// (and, ed25519 being deterministic, the same signature when it is signed).
pub(crate) fn number(env: &mut Envelope, seq: u64) {
    if !env.ack && env.seq == 0 && env.kind != WireKind::Result {
        env.seq = seq;
    }
}

/// Signs an envelope as the policy says (none when unsigned): as it goes out in JSON.
pub(crate) fn sign(sec: &Security, env: &mut Envelope) {
    if sec.policy != SignaturePolicy::Unsigned {
        sign_with(&sec.keys, env);
    }
}

/// Publisher hook: signs the floor header of a stream (sender, epoch, subject, floor), so a
/// third party cannot make a receiver skip messages by replaying one with a forged floor. One
/// signature per new floor value of a subject (cached). `me` and `epoch`: the sender's name and
/// store epoch.
pub(crate) fn floor_header(
    sec: &Security,
    me: &str,
    epoch: u64,
    subject: &str,
    floor: u64,
    headers: &mut async_nats::HeaderMap,
) {
    if sec.policy == SignaturePolicy::Unsigned {
        return;
    }
    let sig = {
        let mut cache = sec.floor_sigs.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(subject) {
            Some((f, sig)) if *f == floor => sig.clone(),
            _ => {
                let bytes = floor_bytes(me, epoch, subject, floor);
                let sig = B64.encode(sec.keys.sign(&bytes).to_bytes());
                cache.insert(subject.to_owned(), (floor, sig.clone()));
                sig
            }
        }
    };
    headers.insert(FLOOR_SIG_HEADER, sig.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::result::{MethodResult, Refusal};

    fn env() -> Envelope {
        Envelope {
            id: "01J0000000000000000000000".into(),
            from: "central".into(),
            to: "ship1".into(),
            kind: WireKind::Command,
            method: "shellCommand".into(),
            data: vec!["bash".into(), "-c ls".into()],
            epoch: 7,
            seq: 3,
            ack: true,
            expires_ms: Some(1_900_000_000_000),
            method_timeout_ms: 1000,
            result_of: None,
            result: None,
            outcome: None,
            sig: None,
            wire: None,
            authentic: None,
        }
    }

    #[test]
    fn every_field_is_covered() {
        let keys = KeyPair::random();
        let mut signed = env();
        sign_with(&keys, &mut signed);
        assert_eq!(verify(&signed), Ok(keys.public()));
        type Change = fn(&mut Envelope);
        let changes: Vec<(&str, Change)> = vec![
            ("id", |e| e.id.push('x')),
            ("from", |e| e.from = "ship2".into()),
            ("to", |e| e.to = "ship2".into()),
            ("kind", |e| e.kind = WireKind::Event),
            ("method", |e| e.method = "echo".into()),
            ("re-split data", |e| {
                e.data = vec!["bash -c".into(), "ls".into()]
            }),
            ("joined data", |e| e.data = vec!["bash-c ls".into()]),
            ("extra element", |e| e.data.push(String::new())),
            ("epoch", |e| e.epoch += 1),
            ("seq", |e| e.seq += 1),
            ("ack", |e| e.ack = false),
            ("expiry", |e| e.expires_ms = Some(1_900_000_000_001)),
            ("no expiry", |e| e.expires_ms = None),
            ("timeout", |e| e.method_timeout_ms = 2000),
            ("result_of", |e| e.result_of = Some("x".into())),
            ("result", |e| e.result = Some(MethodResult::ok("fake"))),
            ("outcome", |e| e.outcome = Some(ReplyStatus::Expired)),
        ];
        for (what, change) in changes {
            let mut e = signed.clone();
            change(&mut e);
            assert_eq!(
                verify(&e),
                Err(SigError::Bad),
                "{what} must break the signature"
            );
        }
    }

    #[test]
    fn replies_are_bound_to_responder_reply_subject_and_every_field() {
        let keys = KeyPair::random();
        let to = "_INBOX.abc.central._signed.3.17";
        assert!(wants_signed_reply(to));
        assert!(!wants_signed_reply("_INBOX.abc.central.3.17"));
        let mut signed = Reply::new("m-1", ReplyStatus::Done);
        signed.result = Some(MethodResult::ok("out"));
        sign_reply(&keys, "ship1", to, &mut signed);
        assert_eq!(verify_reply("ship1", to, &signed), Ok(keys.public()));
        assert_eq!(verify_reply("ship2", to, &signed), Err(SigError::Bad));
        let other_message = "_INBOX.abc.central._signed.3.18";
        assert_eq!(
            verify_reply("ship1", other_message, &signed),
            Err(SigError::Bad)
        );
        type Change = fn(&mut Reply);
        let changes: Vec<(&str, Change)> = vec![
            ("id", |r| r.id.push('x')),
            ("status", |r| r.status = ReplyStatus::Received),
            ("expected", |r| r.expected = Some(1)),
            ("reason", |r| r.reason = Some("x".into())),
            ("refusal", |r| r.set_refusal(Some(Refusal::NotAllowed))),
            ("stdout", |r| r.result.as_mut().unwrap().stdout.push('!')),
            ("no result", |r| r.result = None),
        ];
        for (what, change) in changes {
            let mut r = signed.clone();
            change(&mut r);
            assert_eq!(verify_reply("ship1", to, &r), Err(SigError::Bad), "{what}");
        }
        let mut r = signed.clone();
        r.sig = None;
        assert_eq!(verify_reply("ship1", to, &r), Err(SigError::Unsigned));
        // Survives JSON, as it travels.
        let back: Reply = serde_json::from_slice(&serde_json::to_vec(&signed).unwrap()).unwrap();
        assert_eq!(verify_reply("ship1", to, &back), Ok(keys.public()));
    }

    #[test]
    fn result_fields_are_covered() {
        let keys = KeyPair::random();
        let mut e = env();
        e.result = Some(MethodResult {
            exit_code: Some(0),
            ..MethodResult::ok("out")
        });
        sign_with(&keys, &mut e);
        for change in [
            |r: &mut MethodResult| r.stdout.push('!'),
            |r: &mut MethodResult| r.stderr.push('!'),
            |r: &mut MethodResult| r.exit_code = Some(1),
            |r: &mut MethodResult| r.exit_code = None,
            |r: &mut MethodResult| r.status = ResultStatus::Failed,
            |r: &mut MethodResult| r.truncated = true,
            |r: &mut MethodResult| r.node = "other".into(),
            |r: &mut MethodResult| r.error = Some(String::new()),
        ] {
            let mut t = e.clone();
            change(t.result.as_mut().unwrap());
            assert_eq!(verify(&t), Err(SigError::Bad));
        }
    }

    #[test]
    fn json_round_trip_keeps_the_signature_valid() {
        let keys = KeyPair::random();
        let mut e = env();
        e.data = vec!["ü\u{0}\"".into(), String::new()];
        sign_with(&keys, &mut e);
        let back: Envelope = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(verify(&back), Ok(keys.public()));
        // Signing is deterministic.
        let mut again = env();
        again.data = e.data.clone();
        sign_with(&keys, &mut again);
        assert_eq!(again.sig, e.sig);
    }

    #[test]
    fn unsigned_malformed_and_foreign_signatures() {
        let keys = KeyPair::random();
        let other = KeyPair::random();
        assert_eq!(verify(&env()), Err(SigError::Unsigned));
        let mut e = env();
        sign_with(&keys, &mut e);
        // Claiming another key for the same signature.
        let mut t = e.clone();
        t.sig.as_mut().unwrap().key = other.public_b64.clone();
        assert_eq!(verify(&t), Err(SigError::Bad));
        let mut t = e.clone();
        t.sig.as_mut().unwrap().sig = "AAAA".into();
        assert!(matches!(verify(&t), Err(SigError::Malformed(_))));
        let mut t = e.clone();
        t.sig.as_mut().unwrap().key = "AAAA".into();
        assert!(matches!(verify(&t), Err(SigError::Malformed(_))));
    }

    #[test]
    fn domains_separate_signatures() {
        let keys = KeyPair::random();
        let sig = sign_domain(&keys, BUNDLE_DOMAIN, b"payload");
        assert!(verify_domain(&keys.public(), BUNDLE_DOMAIN, b"payload", &sig).is_ok());
        assert_eq!(
            verify_domain(&keys.public(), BUNDLE_DOMAIN, b"payloaD", &sig),
            Err(SigError::Bad)
        );
        assert_eq!(
            verify_domain(&keys.public(), FLOOR_DOMAIN, b"payload", &sig),
            Err(SigError::Bad)
        );
    }
}
