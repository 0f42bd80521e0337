//! The binary wire format (version 2) beside the JSON of version 1, and telling them apart.
//!
//! A frame is `[version][type][flags] body [tag]`:
//! - `version` is [`VERSION`]. JSON text starts with `{` (or white space), so the first byte
//!   tells the formats apart; any other first byte is a version this node does not read, refused
//!   with [`FrameError::UnknownVersion`] when it is a version byte of a later release (3 to 31,
//!   never a JSON white-space byte), as malformed otherwise.
//! - `type` is [`ENVELOPE`] or [`REPLY`]; `flags` say whether the body is zstd-compressed, whether
//!   a session tag follows it, and (replies) whether the sender should send signed JSON instead.
//! - `body` is postcard (the postcard 1.0 wire format: varints, no field names). Fields are only
//!   ever added at the end of a struct and enum variants only at the end of an enum, under a new
//!   version byte when old readers would misread them.
//! - An envelope's destination, kind and method are not repeated in the body: they are the
//!   subject's tokens. What a tag covers is the canonical form of every field (`signing.rs`), so
//!   moving a frame to another subject breaks it like changing a field.
//! - `data` and a result's output travel as bytes, so binary payloads fit later; this version
//!   still hands the API text and refuses bytes that are not UTF-8 with a clear error.
//!
//! Why postcard: the smallest serde encoding of the candidates (CBOR repeats field names or
//! needs hand-kept integer keys), a stable specification, and a decoder fuzzed by its
//! maintainers; the version byte in front gives what postcard leaves to the application.

use serde::{Deserialize, Serialize};

use crate::wire::envelope::{Envelope, Reply, ReplyStatus, WireKind};
use crate::wire::result::{MethodResult, ResultStatus};

/// What a node sends in: binary frames where the peer reads them, or JSON only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// The default: binary frames (with a 16-byte session tag in place of a signature) to every
    /// peer that has said it reads them, JSON to the rest; about a third of the bytes of JSON
    /// and a fraction of the CPU.
    #[default]
    Binary,
    /// JSON only, as nodes before binary frames sent (readable with `nats sub`; for debugging).
    /// What arrives is read in either format and answered in the format it came in.
    Json,
}

impl std::str::FromStr for WireFormat {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "binary" => Ok(WireFormat::Binary),
            "json" => Ok(WireFormat::Json),
            other => Err(crate::Error::config(format!(
                "wire format {other:?}: give `binary` (the default) or `json`"
            ))),
        }
    }
}

/// The binary format's version byte.
pub(crate) const VERSION: u8 = 2;
/// Frame type: an envelope.
const ENVELOPE: u8 = 1;
/// Frame type: a reply.
const REPLY: u8 = 2;
/// Flag: the body is zstd-compressed.
const COMPRESSED: u8 = 1;
/// Flag: a session tag of [`TAG_LEN`] bytes follows the body.
const TAGGED: u8 = 2;
/// Flag (replies): this node could not check the session tag; send signed JSON instead.
const SEND_SIGNED: u8 = 4;
/// Length of a session tag.
pub(crate) const TAG_LEN: usize = 16;
/// A session tag (see `security/session.rs`).
pub(crate) type Tag = [u8; TAG_LEN];
/// Bodies longer than this are compressed when that makes them smaller.
const COMPRESS_OVER: usize = 512;
/// Most bytes a compressed body may expand to (a zstd bomb is refused, not inflated).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// Why a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A format version this node does not read.
    #[error("wire format version {0} is not known to this node (it reads JSON, version 1, and binary version {VERSION}); upgrade it")]
    UnknownVersion(u8),
    /// Not a well-formed frame of its version.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

fn bad(what: &'static str, why: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        what,
        why: why.into(),
    }
}

/// Which format a payload is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// JSON text (version 1, what every version reads).
    Json,
    /// The binary frame of [`VERSION`].
    Binary,
}

/// Tells the format from the first byte: JSON, this version's binary frame, a later version's
/// (a first byte from 3 to 31), or neither (malformed). `what` names the payload for errors.
pub(crate) fn sniff(payload: &[u8], what: &'static str) -> Result<Format, FrameError> {
    match payload.first() {
        None => Err(bad(what, "it is empty")),
        Some(b'{' | b' ' | b'\t' | b'\r' | b'\n') => Ok(Format::Json),
        Some(&VERSION) => Ok(Format::Binary),
        Some(&v) if (VERSION + 1..32).contains(&v) => Err(FrameError::UnknownVersion(v)),
        Some(&v) => Err(bad(
            what,
            format!("neither JSON nor a binary frame (it starts with byte {v:#04x})"),
        )),
    }
}

/// A message id: a ULID in its 16 bytes, anything else as text.
#[derive(Serialize, Deserialize)]
enum Id<'a> {
    Ulid([u8; 16]),
    Text(&'a str),
}

impl<'a> Id<'a> {
    fn of(s: &'a str) -> Id<'a> {
        match ulid::Ulid::from_string(s) {
            Ok(u) if s.len() == 26 && u.to_string() == s => Id::Ulid(u.to_bytes()),
            _ => Id::Text(s),
        }
    }
    fn text(&self) -> String {
        match self {
            Id::Ulid(b) => ulid::Ulid::from_bytes(*b).to_string(),
            Id::Text(s) => (*s).to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ResultBody<'a> {
    status: ResultStatus,
    exit_code: Option<i32>,
    stdout: &'a [u8],
    stderr: &'a [u8],
    truncated: bool,
    duration_ms: u64,
    /// `None`: the node that sent the frame (nearly always).
    node: Option<&'a str>,
    error: Option<&'a str>,
}

impl<'a> ResultBody<'a> {
    fn of(r: &'a MethodResult, sender: &str) -> ResultBody<'a> {
        ResultBody {
            status: r.status,
            exit_code: r.exit_code,
            stdout: r.stdout.as_bytes(),
            stderr: r.stderr.as_bytes(),
            truncated: r.truncated,
            duration_ms: r.duration_ms,
            node: (r.node != sender).then_some(r.node.as_str()),
            error: r.error.as_deref(),
        }
    }
    fn owned(&self, sender: &str) -> Result<MethodResult, FrameError> {
        Ok(MethodResult {
            status: self.status,
            exit_code: self.exit_code,
            stdout: text("result stdout", self.stdout)?,
            stderr: text("result stderr", self.stderr)?,
            truncated: self.truncated,
            duration_ms: self.duration_ms,
            node: self.node.unwrap_or(sender).to_owned(),
            error: self.error.map(str::to_owned),
        })
    }
}

fn text(what: &'static str, b: &[u8]) -> Result<String, FrameError> {
    String::from_utf8(b.to_vec()).map_err(|_| {
        bad(
            "envelope",
            format!("{what} is not UTF-8 text, which this version cannot hand to its methods"),
        )
    })
}

#[derive(Serialize, Deserialize)]
struct EnvelopeBody<'a> {
    #[serde(borrow)]
    id: Id<'a>,
    from: &'a str,
    kind: WireKind,
    #[serde(borrow)]
    data: Vec<&'a [u8]>,
    epoch: u64,
    seq: u64,
    ack: bool,
    expires_ms: Option<u64>,
    method_timeout_ms: u64,
    #[serde(borrow)]
    result_of: Option<Id<'a>>,
    #[serde(borrow)]
    result: Option<ResultBody<'a>>,
    outcome: Option<ReplyStatus>,
    /// The sender's lowest unfinished sequence number on the stream (JSON: a header).
    floor: u64,
}

#[derive(Serialize, Deserialize)]
struct ReplyBody<'a> {
    #[serde(borrow)]
    id: Id<'a>,
    status: ReplyStatus,
    expected: Option<u64>,
    reason: Option<&'a str>,
    #[serde(borrow)]
    result: Option<ResultBody<'a>>,
    refusal: Option<&'a str>,
}

fn frame(kind: u8, body: Vec<u8>, tag: Option<&Tag>, extra_flags: u8) -> Vec<u8> {
    let mut flags = extra_flags;
    let mut body = body;
    if body.len() > COMPRESS_OVER {
        if let Ok(z) = zstd::bulk::compress(&body, 3) {
            if z.len() < body.len() {
                body = z;
                flags |= COMPRESSED;
            }
        }
    }
    if tag.is_some() {
        flags |= TAGGED;
    }
    let mut out = Vec::with_capacity(3 + body.len() + TAG_LEN);
    out.extend_from_slice(&[VERSION, kind, flags]);
    out.extend_from_slice(&body);
    if let Some(t) = tag {
        out.extend_from_slice(t);
    }
    out
}

/// A frame's parts: its flags, its (decompressed) body and its tag.
struct Parts {
    flags: u8,
    body: Vec<u8>,
    tag: Option<Tag>,
}

fn parts(payload: &[u8], want: u8, what: &'static str) -> Result<Parts, FrameError> {
    if sniff(payload, what)? != Format::Binary {
        return Err(bad(what, "not a binary frame"));
    }
    let (&kind, rest) = payload[1..]
        .split_first()
        .ok_or_else(|| bad(what, "cut short"))?;
    if kind != want {
        return Err(bad(
            what,
            format!("frame type {kind} where {want} was expected"),
        ));
    }
    let (&flags, mut rest) = rest.split_first().ok_or_else(|| bad(what, "cut short"))?;
    if flags & !(COMPRESSED | TAGGED | SEND_SIGNED) != 0 {
        return Err(bad(what, format!("unknown flags {flags:#04x}")));
    }
    let mut tag = None;
    if flags & TAGGED != 0 {
        let split = rest
            .len()
            .checked_sub(TAG_LEN)
            .ok_or_else(|| bad(what, "cut short before its tag"))?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&rest[split..]);
        tag = Some(t);
        rest = &rest[..split];
    }
    let body = if flags & COMPRESSED != 0 {
        let size = zstd::zstd_safe::get_frame_content_size(rest)
            .ok()
            .flatten()
            .ok_or_else(|| bad(what, "compressed body without its size"))?;
        if size > MAX_BODY as u64 {
            return Err(bad(
                what,
                format!("the body would expand to {size} bytes, more than {MAX_BODY}"),
            ));
        }
        let body = zstd::bulk::decompress(rest, size as usize)
            .map_err(|e| bad(what, format!("compressed body does not expand: {e}")))?;
        if body.len() as u64 != size {
            return Err(bad(
                what,
                "compressed body expands to another size than it says",
            ));
        }
        body
    } else {
        rest.to_vec()
    };
    Ok(Parts { flags, body, tag })
}

/// Reads a whole body: bytes left over are an error, not ignored.
fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, FrameError> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(bad(what, format!("{} bytes after the body", rest.len()))),
        Err(e) => Err(bad(what, e.to_string())),
    }
}

/// Decodes `data` as an envelope (on a fixed subject) and as a reply, and checks that what
/// decodes encodes back to the same values. For the fuzz targets; never panics on any input
/// unless a decoded frame does not survive the way back.
#[doc(hidden)]
pub fn fuzz_frame(data: &[u8]) {
    const SUBJECT: &str = "ship1.command.echo";
    if let Ok(read) = decode_envelope(data, SUBJECT) {
        let again = encode_envelope(&read.env, read.floor, read.tag.as_ref());
        let back = decode_envelope(&again, SUBJECT).expect("a decoded envelope encodes back");
        assert_eq!(
            serde_json::to_value(&back.env).ok(),
            serde_json::to_value(&read.env).ok()
        );
        assert_eq!((back.floor, back.tag), (read.floor, read.tag));
    }
    if let Ok(r) = decode_reply(data, "ship1") {
        let again = encode_reply(&r, "ship1", r.tag.as_ref(), r.send_signed);
        let back = decode_reply(&again, "ship1").expect("a decoded reply encodes back");
        assert_eq!(
            serde_json::to_value(&back).ok(),
            serde_json::to_value(&r).ok()
        );
    }
}

/// Encodes an envelope for `floor`, with a session tag when given. The destination, kind and
/// method travel in the subject.
pub(crate) fn encode_envelope(env: &Envelope, floor: u64, tag: Option<&Tag>) -> Vec<u8> {
    let body = EnvelopeBody {
        id: Id::of(&env.id),
        from: &env.from,
        kind: env.kind,
        data: env.data.iter().map(|d| d.as_bytes()).collect(),
        epoch: env.epoch,
        seq: env.seq,
        ack: env.ack,
        expires_ms: env.expires_ms,
        method_timeout_ms: env.method_timeout_ms,
        result_of: env.result_of.as_deref().map(Id::of),
        result: env.result.as_ref().map(|r| ResultBody::of(r, &env.from)),
        outcome: env.outcome,
        floor,
    };
    frame(
        ENVELOPE,
        postcard::to_allocvec(&body).unwrap_or_default(),
        tag,
        0,
    )
}

/// A binary envelope as read: the envelope, the floor it carried and its tag.
#[derive(Debug)]
pub(crate) struct ReadEnvelope {
    /// The envelope (destination, kind and method from the subject).
    pub env: Envelope,
    /// The sender's floor on the stream.
    pub floor: u64,
    /// The session tag, when the frame has one.
    pub tag: Option<Tag>,
}

/// Decodes a binary envelope that arrived on `subject` (`<to>.<command|event>.<method>`).
pub(crate) fn decode_envelope(payload: &[u8], subject: &str) -> Result<ReadEnvelope, FrameError> {
    const WHAT: &str = "envelope";
    let p = parts(payload, ENVELOPE, WHAT)?;
    let b: EnvelopeBody<'_> = body(&p.body, WHAT)?;
    let mut tokens = subject.split('.');
    let (Some(to), Some(token), Some(method), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(bad(
            WHAT,
            format!("subject {subject:?} is not <node>.<kind>.<method>"),
        ));
    };
    if token != b.kind.subject_token() {
        return Err(bad(
            WHAT,
            format!("a {:?} frame on a {token} subject", b.kind),
        ));
    }
    let data = b
        .data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            String::from_utf8(d.to_vec()).map_err(|_| {
                bad(
                    WHAT,
                    format!("data element {i} is not UTF-8 text, which this version cannot hand to its methods"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let env = Envelope {
        id: b.id.text(),
        from: b.from.to_owned(),
        to: to.to_owned(),
        kind: b.kind,
        method: method.to_owned(),
        data,
        epoch: b.epoch,
        seq: b.seq,
        ack: b.ack,
        expires_ms: b.expires_ms,
        method_timeout_ms: b.method_timeout_ms,
        result_of: b.result_of.as_ref().map(Id::text),
        result: b.result.as_ref().map(|r| r.owned(b.from)).transpose()?,
        outcome: b.outcome,
        sig: None,
        wire: Some(VERSION),
        authentic: None,
    };
    Ok(ReadEnvelope {
        env,
        floor: b.floor,
        tag: p.tag,
    })
}

/// Encodes a reply from `responder`, with a session tag when given; `send_signed` asks the
/// sender to send signed JSON instead (this node could not check its tag).
pub(crate) fn encode_reply(
    r: &Reply,
    responder: &str,
    tag: Option<&Tag>,
    send_signed: bool,
) -> Vec<u8> {
    let body = ReplyBody {
        id: Id::of(&r.id),
        status: r.status,
        expected: r.expected,
        reason: r.reason.as_deref(),
        result: r.result.as_ref().map(|x| ResultBody::of(x, responder)),
        refusal: r.refusal.as_deref(),
    };
    frame(
        REPLY,
        postcard::to_allocvec(&body).unwrap_or_default(),
        tag,
        if send_signed { SEND_SIGNED } else { 0 },
    )
}

/// Reads a reply in either format; `responder` is the node the message went to.
pub(crate) fn decode_reply(payload: &[u8], responder: &str) -> Result<Reply, FrameError> {
    const WHAT: &str = "reply";
    if sniff(payload, WHAT)? == Format::Json {
        return serde_json::from_slice::<Reply>(payload).map_err(|e| bad(WHAT, e.to_string()));
    }
    let p = parts(payload, REPLY, WHAT)?;
    let b: ReplyBody<'_> = body(&p.body, WHAT)?;
    Ok(Reply {
        id: b.id.text(),
        status: b.status,
        expected: b.expected,
        reason: b.reason.map(str::to_owned),
        result: b.result.as_ref().map(|r| r.owned(responder)).transpose()?,
        refusal: b.refusal.map(str::to_owned),
        sig: None,
        wire: Some(VERSION),
        tag: p.tag,
        send_signed: p.flags & SEND_SIGNED != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            id: ulid::Ulid::new().to_string(),
            from: "central".into(),
            to: "ship1".into(),
            kind: WireKind::Command,
            method: "echo".into(),
            data: vec!["hi".into(), "ü".into(), String::new()],
            epoch: 1_700_000_000_123,
            seq: 42,
            ack: true,
            expires_ms: Some(1_900_000_000_000),
            method_timeout_ms: 10_000,
            result_of: None,
            result: None,
            outcome: None,
            sig: None,
            wire: None,
            authentic: None,
        }
    }

    /// Every field, as JSON (`wire` aside: a binary frame says its version).
    fn fields(e: &Envelope) -> serde_json::Value {
        let mut v = serde_json::to_value(e).unwrap();
        v.as_object_mut().unwrap().remove("wire");
        v
    }

    #[test]
    fn envelopes_round_trip_and_are_small() {
        let e = env();
        let bytes = encode_envelope(&e, 40, Some(&[7; TAG_LEN]));
        assert!(bytes.len() < 80, "{} bytes", bytes.len());
        let back = decode_envelope(&bytes, &e.subject()).unwrap();
        assert_eq!((back.floor, back.tag), (40, Some([7; TAG_LEN])));
        // Bytes after the body are refused, not ignored.
        let mut longer = encode_envelope(&e, 40, None);
        longer.push(0);
        assert!(decode_envelope(&longer, &e.subject()).is_err());
        fuzz_frame(&bytes);
        assert_eq!(fields(&back.env), fields(&e));
        // Text ids and results (with the sender's node name implied) come back unchanged.
        let mut r = env();
        r.id = "my-id".into();
        r.kind = WireKind::Result;
        r.method = "_result".into();
        r.result_of = Some("other id".into());
        r.result = Some(MethodResult {
            exit_code: Some(-3),
            node: "central".into(),
            ..MethodResult::ok("out")
        });
        let back = decode_envelope(&encode_envelope(&r, 0, None), &r.subject()).unwrap();
        assert_eq!(fields(&back.env), fields(&r));
        r.result.as_mut().unwrap().node = String::new();
        let back = decode_envelope(&encode_envelope(&r, 0, None), &r.subject()).unwrap();
        assert_eq!(back.env.result, r.result);
    }

    #[test]
    fn the_subject_gives_destination_and_method_and_must_agree_on_kind() {
        let e = env();
        let bytes = encode_envelope(&e, 0, None);
        let back = decode_envelope(&bytes, "ship2.command.other").unwrap();
        assert_eq!(
            (back.env.to.as_str(), back.env.method.as_str()),
            ("ship2", "other")
        );
        assert!(decode_envelope(&bytes, "ship1.event.echo").is_err());
        assert!(decode_envelope(&bytes, "ship1.command").is_err());
        assert!(decode_envelope(&bytes, "a.command.b.c").is_err());
    }

    #[test]
    fn large_bodies_are_compressed_and_bombs_refused() {
        let mut e = env();
        e.data = vec!["x".repeat(100_000)];
        let bytes = encode_envelope(&e, 0, None);
        assert!(bytes.len() < 1_000, "{} bytes", bytes.len());
        assert_eq!(
            decode_envelope(&bytes, &e.subject()).unwrap().env.data,
            e.data
        );
        // A body claiming to expand past the limit is refused before any expansion.
        let big = zstd::bulk::compress(&vec![0u8; MAX_BODY + 1], 19).unwrap();
        let mut f = vec![VERSION, ENVELOPE, COMPRESSED];
        f.extend_from_slice(&big);
        assert!(matches!(
            decode_envelope(&f, "a.command.b"),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_versions_and_junk_are_clear_errors() {
        assert_eq!(sniff(b"{}", "m"), Ok(Format::Json));
        assert_eq!(sniff(&[VERSION], "m"), Ok(Format::Binary));
        assert!(matches!(
            sniff(&[0, 1], "m"),
            Err(FrameError::Malformed { .. })
        ));
        assert!(matches!(
            sniff(b"not json", "m"),
            Err(FrameError::Malformed { .. })
        ));
        assert_eq!(sniff(&[31], "m"), Err(FrameError::UnknownVersion(31)));
        let e = sniff(&[3, 1, 0], "m").unwrap_err();
        assert_eq!(e, FrameError::UnknownVersion(3));
        assert!(e.to_string().contains("version 3"), "{e}");
        for junk in [
            &[][..],
            &[VERSION],
            &[VERSION, ENVELOPE],
            &[VERSION, REPLY, 0],
            &[VERSION, ENVELOPE, 0x80, 1],
            &[VERSION, ENVELOPE, TAGGED, 1, 2],
            &[VERSION, ENVELOPE, COMPRESSED, 1, 2, 3],
            &[VERSION, ENVELOPE, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            fuzz_frame(junk);
            assert!(decode_envelope(junk, "a.command.b").is_err(), "{junk:?}");
        }
        // Data that is not text is refused by name, not garbled.
        let mut e = env();
        e.data = vec!["ab".into()];
        let mut bytes = encode_envelope(&e, 0, None);
        let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
        bytes[at] = 0xff;
        let err = decode_envelope(&bytes, &e.subject()).unwrap_err();
        assert!(err.to_string().contains("data element 0"), "{err}");
    }

    #[test]
    fn mutated_frames_decode_or_fail_cleanly() {
        // A cheap stand-in for `scripts/fuzz.sh` in every test run: single and double byte
        // changes, cuts and insertions of real frames never panic, and whatever still decodes
        // survives the way back.
        let mut e = env();
        e.result = Some(MethodResult::ok("out"));
        let frames = [
            encode_envelope(&e, 7, Some(&[9; TAG_LEN])),
            encode_reply(&Reply::new("x", ReplyStatus::Gap), "n", None, false),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for f in &frames {
            for _ in 0..20_000 {
                let mut m = f.clone();
                match next() % 4 {
                    0 => {
                        let i = (next() as usize) % m.len();
                        m[i] = next() as u8;
                    }
                    1 => m.truncate((next() as usize) % m.len()),
                    2 => {
                        let i = (next() as usize) % m.len();
                        m.insert(i, next() as u8);
                    }
                    _ => {
                        let (i, j) = ((next() as usize) % m.len(), (next() as usize) % m.len());
                        m[i] = next() as u8;
                        m[j] ^= 0x80;
                    }
                }
                fuzz_frame(&m);
            }
        }
    }

    #[test]
    fn replies_round_trip_in_both_formats() {
        let mut r = Reply::new(&ulid::Ulid::new().to_string(), ReplyStatus::Done);
        r.result = Some(MethodResult {
            node: "ship1".into(),
            ..MethodResult::ok("hi")
        });
        r.refusal = Some("someNewCode".into());
        let bytes = encode_reply(&r, "ship1", Some(&[1; TAG_LEN]), true);
        assert!(bytes.len() < 70, "{} bytes", bytes.len());
        let back = decode_reply(&bytes, "ship1").unwrap();
        assert_eq!(
            (&back.id, back.status, &back.result, &back.refusal),
            (&r.id, r.status, &r.result, &r.refusal)
        );
        assert_eq!((back.tag, back.send_signed), (Some([1; TAG_LEN]), true));
        let json = serde_json::to_vec(&r).unwrap();
        let back = decode_reply(&json, "ship1").unwrap();
        assert_eq!(
            (back.tag, back.send_signed, back.result),
            (None, false, r.result)
        );
    }
}
