//! How a node proves who it is to the broker ([`BrokerAuth`]) and how it checks the broker
//! ([`BrokerTls`]). Secrets are held in [`Secret`], which never shows its value in `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string (password, token, nkey seed): `Debug` and `Display` never show it.
///
/// # Examples
/// ```
/// let s = steward::Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(\"***\")");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// How the node authenticates to the broker: one of the ways nats-server accepts.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> steward::Result<()> {
/// use steward::{BrokerAuth, Node};
/// let node = Node::builder("ship1")
///     .brokers(["tls://broker.example:4222"])
///     .broker_auth(BrokerAuth::CredentialsFile("/etc/steward/ship1.creds".into()))
///     .broker_tls_ca("/etc/steward/ca.pem")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerAuth {
    /// No credentials (the default): for a broker without authorization, or one that
    /// identifies clients by their TLS certificate (`verify_and_map`).
    #[default]
    None,
    /// A user name and password (nats-server `authorization { users = [...] }`).
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token (nats-server `authorization { token: ... }`).
    Token(Secret),
    /// An nkey seed (`SU...`): the node signs the server's nonce with it; the broker knows the
    /// public key (`authorization { users = [{ nkey: U... }] }`).
    NkeySeed(Secret),
    /// A file holding an nkey seed (read at start; surrounding whitespace ignored).
    NkeySeedFile(PathBuf),
    /// A NATS credentials file (`.creds`: user JWT and nkey seed, as `nsc` writes it) for a
    /// broker in operator mode.
    CredentialsFile(PathBuf),
}

impl BrokerAuth {
    /// A short name of the method, for messages ("user and password", "token", ...).
    pub fn describe(&self) -> &'static str {
        match self {
            BrokerAuth::None => "no credentials",
            BrokerAuth::UserPassword { .. } => "user and password",
            BrokerAuth::Token(_) => "token",
            BrokerAuth::NkeySeed(_) | BrokerAuth::NkeySeedFile(_) => "nkey",
            BrokerAuth::CredentialsFile(_) => "credentials file",
        }
    }
}

/// TLS towards the broker.
///
/// TLS is used whenever the broker asks for it or a URL is `tls://`. Giving a CA bundle or a
/// client certificate, or setting `required`, makes TLS mandatory (as the Go client does): a
/// broker that does not offer TLS is then refused at start instead of being talked to in
/// plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// PEM file with the CA certificate(s) that signed the broker's certificate. `None`: the
    /// system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file with this node's client certificate (chain), for brokers that verify clients
    /// (`tls { verify: true }`). Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM file with the private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Refuse a broker that does not offer TLS.
    pub required: bool,
}

impl BrokerTls {
    /// True if TLS is mandatory: `required`, or a CA bundle or client certificate is given.
    pub fn is_required(&self) -> bool {
        self.required
            || self.ca_file.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
    }
}

/// The settings checked and ready: the NATS client's options with credentials and TLS
/// applied, and a description of the credentials for messages (never the secret itself).
pub(crate) struct Prepared {
    /// Options with credentials and TLS applied; the connect path adds the rest.
    pub options: async_nats::ConnectOptions,
    auth: AuthSummary,
    /// The client certificate presented, if any (named when the broker refuses it).
    client_cert: Option<PathBuf>,
}

/// What the credentials are, without the secret, for error messages.
enum AuthSummary {
    None,
    UserPassword {
        user: String,
    },
    Token,
    Nkey {
        public: String,
    },
    Credentials {
        path: PathBuf,
        public: String,
        /// When the user JWT expires (Unix seconds), if it says.
        expires: Option<u64>,
    },
}

fn config(msg: String) -> crate::Error {
    crate::Error::config(msg)
}

fn read(path: &Path, what: &str) -> crate::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        crate::Error::config_from(format!("cannot read the {what} {}: {e}", path.display()), e)
    })
}

fn nkey_public(seed: &str, origin: &str) -> crate::Result<String> {
    nkeys::KeyPair::from_seed(seed)
        .map(|k| k.public_key())
        .map_err(|e| {
            crate::Error::config_from(format!(
                "the broker nkey seed {origin}is not a valid nkey seed ({e}); it starts with S and is 58 characters long (nsc or `nk -gen user` make one)"
            ), e)
        })
}

/// The user's public key in a credentials file (the subject of its JWT).
fn creds_public(text: &str, path: &Path) -> crate::Result<String> {
    let seed = text
        .lines()
        .skip_while(|l| !l.contains("BEGIN USER NKEY SEED"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_default();
    nkeys::KeyPair::from_seed(seed)
        .map(|k| k.public_key())
        .map_err(|e| {
            crate::Error::config_from(format!(
                "the credentials file {} holds no valid user nkey seed ({e}); use a .creds file as `nsc generate creds` writes it",
                path.display()
            ), e)
        })
}

/// The `exp` claim (Unix seconds) of the user JWT in a credentials file, if it has one.
fn creds_expiry(text: &str) -> Option<u64> {
    let jwt = text
        .lines()
        .skip_while(|l| !l.contains("BEGIN NATS USER JWT"))
        .nth(1)?
        .trim();
    let claims = jwt.split('.').nth(1)?;
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(claims.trim_end_matches('=').as_bytes())
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_u64().filter(|e| *e > 0)
}

/// "3 min", "2 h", "5 days": how long ago `secs` was, roughly.
fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

fn check_pem_certs(path: &Path, what: &str) -> crate::Result<()> {
    use async_nats::rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            crate::Error::config_from(format!("cannot read the {what} {}: {e}", path.display()), e)
        })?;
    if certs.is_empty() {
        return Err(config(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(())
}

/// Checks the settings and reads the files they name, so that every local mistake is a
/// [`crate::Error::Config`] at start naming the file, never a connection failure.
pub(crate) fn prepare(auth: &BrokerAuth, tls: &BrokerTls) -> crate::Result<Prepared> {
    let o = async_nats::ConnectOptions::new();
    let (mut o, summary) = match auth {
        BrokerAuth::None => (o, AuthSummary::None),
        BrokerAuth::UserPassword { user, password } => {
            if user.is_empty() {
                return Err(config(
                    "the broker user name is empty; give the user name with its password".into(),
                ));
            }
            (
                o.user_and_password(user.clone(), password.expose().to_owned()),
                AuthSummary::UserPassword { user: user.clone() },
            )
        }
        BrokerAuth::Token(t) => {
            if t.is_empty() {
                return Err(config("the broker token is empty".into()));
            }
            (o.token(t.expose().to_owned()), AuthSummary::Token)
        }
        BrokerAuth::NkeySeed(s) => {
            let seed = s.expose().trim().to_owned();
            let public = nkey_public(&seed, "")?;
            (o.nkey(seed), AuthSummary::Nkey { public })
        }
        BrokerAuth::NkeySeedFile(path) => {
            let seed = read(path, "nkey seed file")?.trim().to_owned();
            let public = nkey_public(&seed, &format!("in {} ", path.display()))?;
            (o.nkey(seed), AuthSummary::Nkey { public })
        }
        BrokerAuth::CredentialsFile(path) => {
            let text = read(path, "credentials file")?;
            let public = creds_public(&text, path)?;
            let expires = creds_expiry(&text);
            // The client's own parser decides what it accepts: a bad file fails here, at start.
            let o = o.credentials(&text).map_err(|e| {
                crate::Error::config_from(format!(
                    "the credentials file {} is not usable ({e}); use a .creds file as `nsc generate creds` writes it",
                    path.display()
                ), e)
            })?;
            (
                o,
                AuthSummary::Credentials {
                    path: path.clone(),
                    public,
                    expires,
                },
            )
        }
    };
    if let Some(ca) = &tls.ca_file {
        check_pem_certs(ca, "TLS CA file")?;
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            use async_nats::rustls::pki_types::{pem::PemObject, PrivateKeyDer};
            check_pem_certs(cert, "TLS client certificate")?;
            PrivateKeyDer::from_pem_file(key).map_err(|e| {
                crate::Error::config_from(
                    format!(
                        "cannot read a private key from the TLS client key file {}: {e}",
                        key.display()
                    ),
                    e,
                )
            })?;
        }
        (Some(_), None) => {
            return Err(config(
                "a TLS client certificate was given without its private key; give the key file too"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(config(
                "a TLS client key was given without its certificate; give the certificate file too"
                    .into(),
            ))
        }
        (None, None) => {}
    }
    if let Some(ca) = &tls.ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(Prepared {
        options: o.require_tls(tls.is_required()),
        auth: summary,
        client_cert: tls.client_cert.clone(),
    })
}

impl Prepared {
    /// The client certificate presented, if any.
    pub(crate) fn client_cert(&self) -> Option<&Path> {
        self.client_cert.as_deref()
    }

    /// What the broker refused, in words that say what to check.
    pub(crate) fn auth_refused(&self, server_said: Option<&str>) -> String {
        let said = server_said
            .map(|s| format!(" (the broker said: {s})"))
            .unwrap_or_default();
        match &self.auth {
            AuthSummary::None => format!(
                "it requires authentication and none was given{said}; give a user and password, a token, an nkey seed or a credentials file"
            ),
            AuthSummary::UserPassword { user } => format!(
                "the user {user:?} and its password were not accepted{said}; check both against the broker's authorization settings"
            ),
            AuthSummary::Token => format!(
                "the token was not accepted{said}; check it against the broker's authorization token"
            ),
            AuthSummary::Nkey { public } => format!(
                "the nkey {public} was not accepted{said}; add this public key to the broker's authorization users, or give the right seed"
            ),
            AuthSummary::Credentials {
                path,
                public,
                expires,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                match expires {
                    Some(exp) if *exp <= now => format!(
                        "the user JWT in the credentials file {} (user {public}) expired {} ago{said}; issue fresh credentials (nsc generate creds), or check this machine's clock",
                        path.display(),
                        ago(now - exp)
                    ),
                    _ => format!(
                        "the credentials file {} (user {public}) was not accepted{said}; the user JWT may be revoked, or its account unknown to the broker: issue fresh credentials (nsc generate creds)",
                        path.display()
                    ),
                }
            }
        }
    }
}
