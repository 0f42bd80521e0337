//! Test fixtures for the broker-security tests: a throwaway PKI ([`Pki`]) and an operator-mode
//! trust chain with credentials files ([`Operator`]), plus the nats-server config text for
//! each way nats-server authenticates clients. Everything is generated per test in a tempdir.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// A test PKI in a tempdir: a CA with a server certificate for `127.0.0.1`/`localhost` and a
/// client certificate, and a second, unrelated CA ("rogue") with its own client certificate.
pub struct Pki {
    dir: TempDir,
    /// The trusted CA's certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate signed by the CA, valid for 127.0.0.1 and localhost.
    pub server: CertFiles,
    /// A client certificate signed by the CA (CN `steward-client`).
    pub client: CertFiles,
    /// Another CA's certificate, which did not sign the server's certificate.
    pub rogue_ca: PathBuf,
    /// A client certificate signed by the rogue CA.
    pub rogue_client: CertFiles,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("self-sign CA")
}

fn leaf(
    dir: &Path,
    stem: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> CertFiles {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, stem);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    fs::write(&files.cert, cert.pem()).expect("write cert");
    fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

impl Pki {
    /// Generates the PKI into a fresh tempdir.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("steward-pki-")
            .tempdir()
            .expect("tempdir for the test PKI");
        let d = dir.path();
        let trusted = ca("steward test CA");
        let rogue = ca("rogue test CA");
        let ca_path = d.join("ca.pem");
        fs::write(&ca_path, trusted.pem()).expect("write CA");
        let rogue_path = d.join("rogue-ca.pem");
        fs::write(&rogue_path, rogue.pem()).expect("write rogue CA");
        let server = leaf(
            d,
            "server",
            &trusted,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            d,
            "steward-client",
            &trusted,
            &["steward-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let rogue_client = leaf(
            d,
            "rogue-client",
            &rogue,
            &["rogue-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            dir,
            ca: ca_path,
            server,
            client,
            rogue_ca: rogue_path,
            rogue_client,
        }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A nats-server `tls { }` block serving the server certificate; with `verify_clients`,
    /// clients must present a certificate signed by the CA (mutual TLS).
    pub fn server_tls_config(&self, verify_clients: bool) -> String {
        let mut c = String::from("tls {\n");
        let _ = writeln!(c, "  cert_file: \"{}\"", self.server.cert.display());
        let _ = writeln!(c, "  key_file: \"{}\"", self.server.key.display());
        let _ = writeln!(c, "  ca_file: \"{}\"", self.ca.display());
        let _ = writeln!(c, "  verify: {verify_clients}");
        let _ = writeln!(c, "  timeout: 5");
        c.push('}');
        c
    }
}

// ---------------------------------------------------------------------------
// nkeys and JWTs
// ---------------------------------------------------------------------------

/// nats-server config text accepting one user with a password.
pub fn user_password_config(user: &str, password: &str) -> String {
    format!(
        "authorization {{\n  users = [ {{ user: {}, password: {} }} ]\n}}",
        json!(user),
        json!(password)
    )
}

/// nats-server config text accepting one token.
pub fn token_config(token: &str) -> String {
    format!("authorization {{\n  token: {}\n}}", json!(token))
}

/// nats-server config text accepting one nkey user (its public key).
pub fn nkey_config(public_key: &str) -> String {
    format!(
        "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}",
        json!(public_key)
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A unique JWT id (nats-server does not check how it was made, only that it is there).
fn jwt_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "T{:X}{:X}{:X}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
    .chars()
    .take(52)
    .collect()
}

/// Encodes and signs a NATS JWT (header `ed25519-nkey`) with the issuer's key.
pub fn encode_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    encode_jwt_with(issuer, subject, name, nats, None)
}

fn encode_jwt_with(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: Value,
    expires: Option<i64>,
) -> String {
    let mut claims = json!({
        "jti": jwt_id(),
        "iat": now_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    if let Some(exp) = expires {
        claims["exp"] = json!(exp);
    }
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).expect("sign JWT");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// An operator-mode trust chain: operator → account (with a signing key) → users.
pub struct Operator {
    /// The operator's key pair.
    pub operator: nkeys::KeyPair,
    /// The account's identity key pair.
    pub account: nkeys::KeyPair,
    /// The account's signing key (users are signed with it).
    pub account_signer: nkeys::KeyPair,
    /// The operator JWT.
    pub operator_jwt: String,
    /// The account JWT, signed by the operator.
    pub account_jwt: String,
}

impl Operator {
    /// A fresh operator with one account.
    pub fn new() -> Operator {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let account_signer = nkeys::KeyPair::new_account();
        let operator_jwt = encode_jwt(
            &operator,
            &operator.public_key(),
            "steward-test-operator",
            json!({ "type": "operator", "version": 2 }),
        );
        let account_jwt = encode_jwt(
            &operator,
            &account.public_key(),
            "steward-test-account",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1
                },
                "signing_keys": [account_signer.public_key()],
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2
            }),
        );
        Operator {
            operator,
            account,
            account_signer,
            operator_jwt,
            account_jwt,
        }
    }

    /// The nats-server config text for operator mode with this account preloaded in a memory
    /// resolver.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n}}",
            json!(self.operator_jwt),
            self.account.public_key(),
            json!(self.account_jwt)
        )
    }

    /// A user of the account; `expires` (Unix seconds) ends its JWT's validity.
    pub fn user(&self, name: &str, expires: Option<i64>) -> (nkeys::KeyPair, String) {
        let user = nkeys::KeyPair::new_user();
        let jwt = encode_jwt_with(
            &self.account_signer,
            &user.public_key(),
            name,
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "issuer_account": self.account.public_key(),
                "type": "user",
                "version": 2
            }),
            expires,
        );
        (user, jwt)
    }

    /// Writes a credentials file for a new user (as `nsc generate creds` does) to `path`.
    pub fn write_creds(&self, path: &Path, name: &str, expires: Option<i64>) -> PathBuf {
        let (user, jwt) = self.user(name, expires);
        fs::write(path, creds_text(&jwt, &user.seed().expect("user seed"))).expect("write creds");
        path.to_path_buf()
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator::new()
    }
}

/// A credentials file's text: the user JWT and its nkey seed.
pub fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}
