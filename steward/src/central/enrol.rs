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

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::security::keys::PublicKey;

/// File in a node's data directory that holds central's pinned key, written when the node
/// joins with a token and read at every later start that gives no central key.
pub const CENTRAL_KEY_FILE: &str = "central.pub";
/// Where central's key for this node comes from, decided once at start: the configured key,
/// the join token's (which must agree with it, and names central), or the key pinned by an
/// earlier join in `<data_dir>/central.pub`. A join writes that file.
pub(crate) fn resolve(mut cfg: NodeConfig) -> Result<NodeConfig> {
    let file = cfg.data_dir.join(CENTRAL_KEY_FILE);
    if cfg.auto_approve && cfg.name != cfg.central {
        return Err(Error::Config(format!(
            "auto_approve is a setting of central ({}), and {} is not central",
            cfg.central, cfg.name
        )));
    }
    if let Some(token) = cfg.join.clone() {
        if cfg.name == token.central() {
            return Err(Error::Config(format!(
                "{} is the central node of this join token; a join token is for the other nodes",
                cfg.name
            )));
        }
        if cfg.central != token.central() {
            return Err(Error::Config(format!(
                "the join token is for central {:?}, but this node's central is {:?}; drop --central or use a token from {}",
                token.central(), cfg.central, cfg.central
            )));
        }
        if let Some(k) = cfg.central_key.filter(|k| *k != token.central_key()) {
            return Err(Error::Config(format!(
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
                    Error::Config(format!(
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
        SignaturePolicy::Required if !is_central && cfg.central_key.is_none() => tracing::warn!(
            "{} trusts no key of {} yet, so it runs nothing {} sends: start it with --join TOKEN (print one on {} with `steward keys token`), or pin central's key with --central-key-file",
            cfg.name, cfg.central, cfg.central, cfg.central
        ),
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
