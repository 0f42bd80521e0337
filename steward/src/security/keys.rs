//! This node's ed25519 key pair and the public keys it trusts.
//!
//! The private key is created on the node's first start in its data directory (`node.key`,
//! created with mode 0600 and never widened) and loaded on every start after; the public key is
//! written beside it (`node.pub`) so an operator can compare it with what central shows before
//! approving it. A private key file that group or others can read is refused, like ssh does.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};

/// File name of the private key in the data directory (unless configured elsewhere).
pub const KEY_FILE: &str = "node.key";
/// File name of the public key, beside the private key.
pub const PUBLIC_KEY_FILE: &str = "node.pub";

/// How many parsed keys [`PublicKey::verifying`] keeps at most.
const PARSED_KEYS: usize = 4096;

/// An ed25519 public key; written and parsed as standard base64 (44 characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub(crate) [u8; 32]);

impl PublicKey {
    /// Parses base64 (as in `node.pub`, surrounding whitespace ignored).
    ///
    /// # Examples
    /// ```
    /// let k = steward::PublicKey::parse("O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=").unwrap();
    /// assert_eq!(k.to_string(), "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=");
    /// ```
    pub fn parse(text: &str) -> Result<PublicKey> {
        let bad = |why: String| {
            Error::config(format!(
                "{:?} is not an ed25519 public key ({why}); give the 44 base64 characters of the node's node.pub",
                shorten(text.trim())
            ))
        };
        let bytes = B64
            .decode(text.trim().as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("{} bytes instead of 32", b.len())))?;
        // Refuse points that are not on the curve or are weak, once, here.
        let vk = VerifyingKey::from_bytes(&arr).map_err(|e| bad(e.to_string()))?;
        if vk.is_weak() {
            return Err(bad("a weak key".into()));
        }
        Ok(PublicKey(arr))
    }

    /// Reads a public key from a file (such as another node's `node.pub`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<PublicKey> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        PublicKey::parse(&text).map_err(|e| match e {
            Error::Config { reason, source } => Error::Config {
                reason: format!("{}: {reason}", path.display()),
                source,
            },
            other => Error::config_from(format!("{}: {other}", path.display()), other),
        })
    }

    /// The key as a point on the curve, or `None` if it is not one. Parsing is a point
    /// decompression (a field exponentiation, the cost of a third of a signature check), so
    /// parsed keys are kept: a node checks a few keys millions of times. At most
    /// [`PARSED_KEYS`] are kept; when full the set starts over, so keys made up by strangers
    /// cost what they cost without it.
    pub(crate) fn verifying(&self) -> Option<VerifyingKey> {
        static PARSED: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> =
            LazyLock::new(Mutex::default);
        if let Some(vk) = PARSED.lock().ok().and_then(|m| m.get(&self.0).copied()) {
            return Some(vk);
        }
        let vk = VerifyingKey::from_bytes(&self.0).ok()?;
        if let Ok(mut m) = PARSED.lock() {
            if m.len() >= PARSED_KEYS {
                m.clear();
            }
            m.insert(self.0, vk);
        }
        Some(vk)
    }
}

/// At most 60 characters of a bad value, for an error message.
fn shorten(s: &str) -> String {
    s.chars().take(60).collect()
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<PublicKey> {
        PublicKey::parse(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// This node's key pair. The private half never leaves this struct (nor is it logged).
pub(crate) struct KeyPair {
    signing: SigningKey,
    public: PublicKey,
    /// The public key in base64, as it travels in every signature.
    pub public_b64: String,
}

impl KeyPair {
    /// Loads the key at `path`, or creates it (mode 0600) if there is none; writes `node.pub`.
    pub(crate) fn load_or_create(path: &Path) -> Result<KeyPair> {
        // Follows a symlink (a key kept on a secrets mount); the mode checked is the target's.
        let seed = match std::fs::metadata(path) {
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(Error::config(format!(
                        "{} is not a regular file; it must hold this node's private key",
                        path.display()
                    )));
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(Error::config(format!(
                        "the private key {} can be read by other users (mode {mode:04o}); run `chmod 600 {}` (and consider the key leaked if others could read it)",
                        path.display(),
                        path.display()
                    )));
                }
                read_seed(path)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(Error::io(path, e)),
        };
        let kp = KeyPair::from_seed(seed);
        write_public(&public_key_path(path), &kp.public_b64)?;
        Ok(kp)
    }

    pub(crate) fn from_seed(seed: [u8; 32]) -> KeyPair {
        let signing = SigningKey::from_bytes(&seed);
        let public = PublicKey(signing.verifying_key().to_bytes());
        KeyPair {
            public_b64: public.to_string(),
            signing,
            public,
        }
    }

    /// A fresh random key pair (not stored anywhere).
    #[cfg(test)]
    pub(crate) fn random() -> KeyPair {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("OS random numbers");
        KeyPair::from_seed(seed)
    }

    pub(crate) fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn sign(&self, bytes: &[u8]) -> Signature {
        self.signing.sign(bytes)
    }

    /// The secret this node shares with the holder of `peer`: X25519 of this key's scalar and
    /// the peer's point in Montgomery form (the conversion libsodium's
    /// `crypto_sign_ed25519_*_to_curve25519` makes). Both ends compute the same value from
    /// their own private key and the other's public key, with no message exchanged. `None` for
    /// a key that is not a point or gives the all-zero secret (a low-order point).
    pub(crate) fn agree(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let point = peer.verifying()?.to_montgomery();
        let shared = point.mul_clamped(self.signing.to_scalar_bytes()).to_bytes();
        (shared != [0u8; 32]).then_some(shared)
    }
}

/// Where a node writes its public key, given its private key file: `node.key` → `node.pub`
/// beside it, any other name `x` → `x.pub`.
pub fn public_key_path(key: &Path) -> PathBuf {
    if key.file_name().is_some_and(|n| n == KEY_FILE) {
        key.with_file_name(PUBLIC_KEY_FILE)
    } else {
        let mut p = key.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    }
}

fn read_seed(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bytes = B64.decode(text.trim().as_bytes()).ok();
    bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        Error::config(format!(
            "{} does not hold an ed25519 private key (32 bytes in base64); restore it from a backup, or move it aside to create a new key (which central must approve again)",
            path.display()
        ))
    })
}

fn create(path: &Path) -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| {
        Error::config_from(
            format!("cannot get random numbers from the OS to create a key: {e}"),
            e,
        )
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    // create_new + mode 0600 at creation: the key is never readable by others, not even briefly.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut line = B64.encode(seed);
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    sync_dir(path);
    tracing::info!(key = %path.display(), "created this node's key pair");
    Ok(seed)
}

fn write_public(path: &Path, b64: &str) -> Result<()> {
    let want = format!("{b64}\n");
    if std::fs::read_to_string(path).is_ok_and(|s| s == want) {
        return Ok(());
    }
    write_atomic(path, want.as_bytes(), 0o644)
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the folder).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_keys_are_kept_and_stay_right() {
        let keys = KeyPair::random();
        let public = keys.public();
        let first = public.verifying().expect("on the curve");
        let again = public.verifying().expect("kept");
        assert_eq!(first, again);
        let sig = keys.sign(b"hello");
        assert!(again.verify_strict(b"hello", &sig).is_ok());
        // Not a point: refused every time, never kept as one.
        let mut off = [0u8; 32];
        off[0] = 2;
        off[31] = 0x7f;
        let off = PublicKey(off);
        if VerifyingKey::from_bytes(&off.0).is_err() {
            assert!(off.verifying().is_none());
            assert!(off.verifying().is_none());
        }
        // More keys than are kept: each still parses to itself.
        for _ in 0..(PARSED_KEYS + 10) {
            let k = KeyPair::random().public();
            assert_eq!(k.verifying().unwrap().to_bytes(), k.0);
        }
        assert_eq!(public.verifying(), Some(first));
    }

    #[test]
    fn created_once_with_mode_0600_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = KeyPair::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = KeyPair::load_or_create(&path).unwrap();
        assert_eq!(a.public(), b.public());
        let published = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(PublicKey::parse(&published).unwrap(), a.public());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        KeyPair::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyPair::load_or_create(&path).err().unwrap();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_damaged_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = KeyPair::load_or_create(&path).err().unwrap();
        assert!(e.to_string().contains("does not hold"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn public_keys_parse_strictly() {
        let k = KeyPair::random().public();
        assert_eq!(PublicKey::parse(&format!(" {k}\n")).unwrap(), k);
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(PublicKey::parse("not base64!").is_err());
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(PublicKey::parse(&B64.encode(weak)).is_err());
    }
}
