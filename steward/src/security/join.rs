//! Join tokens: central's name and key, and the secret half of a join key whose public half
//! central keeps; the proof a joining node adds to its registration. How they are used:
//! `central/enrol.rs` (the node's side at start) and `central/registry.rs` (approval).

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::security::keys::{KeyPair, PublicKey};

/// What every join token starts with (and its format version).
const TOKEN_PREFIX: &str = "sjt1";
/// Domain tag of a join proof.
const JOIN_DOMAIN: &str = "steward/join/v1";
/// How long a join token is valid unless said otherwise.
pub const DEFAULT_TOKEN_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A join token: central's name and key, and the secret half of a join key central knows.
/// Printed as `sjt1.<central>.<central key>.<join secret>`; treat it as a secret until it
/// expires (whoever has it can enrol a new node name). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    central: String,
    central_key: PublicKey,
    seed: [u8; 32],
}

impl JoinToken {
    /// Parses a token as printed by `steward keys token` (surrounding whitespace ignored).
    ///
    /// # Examples
    /// ```
    /// let bad = steward::JoinToken::parse("hello");
    /// assert_eq!(bad.unwrap_err().kind(), steward::ErrorKind::Config);
    /// ```
    pub fn parse(text: &str) -> Result<JoinToken> {
        let text = text.trim();
        let bad = |why: &str| {
            Error::config(format!(
                "not a join token ({why}); copy the whole line `steward keys token` printed on central (it starts with {TOKEN_PREFIX}.)"
            ))
        };
        let parts: Vec<&str> = text.split('.').collect();
        let [prefix, central, key, seed] = parts.as_slice() else {
            return Err(bad("it must have four parts separated by dots"));
        };
        if *prefix != TOKEN_PREFIX {
            return Err(bad(&format!("it starts with {prefix:?}")));
        }
        crate::wire::names::node(central).map_err(|e| bad(&format!("central's name: {e}")))?;
        let key_bytes: [u8; 32] = B64URL
            .decode(key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("central's key is damaged"))?;
        let central_key = PublicKey::parse(&PublicKey(key_bytes).to_string())
            .map_err(|_| bad("central's key is not a valid ed25519 key"))?;
        let seed: [u8; 32] = B64URL
            .decode(seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("its secret is damaged"))?;
        Ok(JoinToken {
            central: central.to_string(),
            central_key,
            seed,
        })
    }

    /// Reads a token from a file (such as one written with `steward keys token > join.token`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<JoinToken> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        JoinToken::parse(&text).map_err(|e| match e {
            Error::Config { reason, source } => Error::Config {
                reason: format!("{}: {reason}", path.display()),
                source,
            },
            other => other,
        })
    }

    /// The central node the token is for.
    pub fn central(&self) -> &str {
        &self.central
    }

    /// Central's public key, which a joining node pins.
    pub fn central_key(&self) -> PublicKey {
        self.central_key
    }

    /// The id central lists the token under (`steward keys tokens`).
    pub fn id(&self) -> String {
        token_id(&self.join_keys().public())
    }

    fn join_keys(&self) -> KeyPair {
        KeyPair::from_seed(self.seed)
    }

    /// A new token for `central`; returns it and the join key's public half for the registry.
    pub(crate) fn generate(central: &str, central_key: PublicKey) -> Result<JoinToken> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::storage_from(format!("no randomness for a join token: {e}"), e))?;
        Ok(JoinToken {
            central: central.to_owned(),
            central_key,
            seed,
        })
    }

    /// The join key's public half (what central keeps).
    pub(crate) fn public(&self) -> PublicKey {
        self.join_keys().public()
    }

    /// The proof a node sends with its registration.
    pub(crate) fn prove(&self, node: &str, node_key: &PublicKey) -> JoinProof {
        let keys = self.join_keys();
        JoinProof {
            key: keys.public(),
            sig: crate::security::signing::sign_domain(
                &keys,
                JOIN_DOMAIN,
                &proof_bytes(&self.central, node, node_key),
            ),
        }
    }
}

impl std::fmt::Display for JoinToken {
    /// The token as a single line: `sjt1.<central>.<central key>.<join secret>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.central,
            B64URL.encode(self.central_key.0),
            B64URL.encode(self.seed)
        )
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("central", &self.central)
            .field("central_key", &self.central_key)
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for JoinToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<JoinToken> {
        JoinToken::parse(s)
    }
}

/// The short id of a join key: the hex of its first four bytes.
pub(crate) fn token_id(key: &PublicKey) -> String {
    key.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a joining node adds to its registration: the join key and its signature over
/// central's name, the node's name and the node's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JoinProof {
    pub key: PublicKey,
    pub sig: String,
}

impl JoinProof {
    /// Whether the proof holds for `node` registering `node_key` with `central`.
    pub(crate) fn holds(&self, central: &str, node: &str, node_key: &PublicKey) -> bool {
        crate::security::signing::verify_domain(
            &self.key,
            JOIN_DOMAIN,
            &proof_bytes(central, node, node_key),
            &self.sig,
        )
        .is_ok()
    }
}

fn proof_bytes(central: &str, node: &str, node_key: &PublicKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    for part in [central.as_bytes(), node.as_bytes(), &node_key.0[..]] {
        b.extend_from_slice(&(part.len() as u64).to_le_bytes());
        b.extend_from_slice(part);
    }
    b
}

/// A join token as central lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenInfo {
    /// Its id (the first bytes of its join key, in hex).
    pub id: String,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it stops enrolling nodes (`None`: never).
    pub expires_ms: Option<u64>,
    /// How many keys it approved so far.
    pub approved: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_hides_its_secret() {
        let central = KeyPair::random();
        let t = JoinToken::generate("central", central.public()).unwrap();
        let text = t.to_string();
        assert!(text.starts_with("sjt1.central."), "{text}");
        let back = JoinToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.central_key(), central.public());
        let shown = format!("{t:?}");
        assert!(!shown.contains(text.rsplit('.').next().unwrap()), "{shown}");
    }

    #[test]
    fn damaged_tokens_are_refused_with_the_reason() {
        let t = JoinToken::generate("central", KeyPair::random().public())
            .unwrap()
            .to_string();
        for (bad, why) in [
            ("", "four parts"),
            (&t.replacen("sjt1", "sjt9", 1)[..], "starts with"),
            (&t.replacen("central", "cen tral", 1)[..], "central's name"),
            (&format!("{}x", t), "secret is damaged"),
        ] {
            let e = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_node_key_and_central() {
        let t = JoinToken::generate("central", KeyPair::random().public()).unwrap();
        let ship = KeyPair::random().public();
        let p = t.prove("ship1", &ship);
        assert!(p.holds("central", "ship1", &ship));
        assert!(!p.holds("central", "ship2", &ship));
        assert!(!p.holds("central", "ship1", &KeyPair::random().public()));
        assert!(!p.holds("central2", "ship1", &ship));
        let other = JoinToken::generate("central", KeyPair::random().public()).unwrap();
        assert_ne!(other.prove("ship1", &ship).key, p.key);
    }
}
