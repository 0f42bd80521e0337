//! Node settings from flags, `STEWARD_*` environment variables (folded into the flags by clap),
//! a TOML config file and the defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use steward::{BrokerAuth, BrokerTls, Secret};

use crate::cli::{Common, Conn, LogFormat, RunOpts, Security, Tuning};

/// Default broker when none is given.
pub const DEFAULT_BROKER: &str = "nats://127.0.0.1:4222";
/// Default address of `--embedded-broker` given without a value.
pub const DEFAULT_EMBEDDED: &str = "127.0.0.1:4222";
/// Default `hello` interval of the command (the library's default is off).
pub const DEFAULT_HELLO_SECS: u64 = 60;

/// Everything the command needs to start a node, fully resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: Option<String>,
    pub brokers: Option<Vec<String>>,
    pub data_dir: PathBuf,
    pub central: String,
    pub hello_interval: Option<Duration>,
    pub ack_timeout: Duration,
    pub retries: Option<u32>,
    pub retry_wait: Duration,
    pub retry_wait_max: Duration,
    pub method_timeout: Duration,
    pub ttl: Option<Duration>,
    pub output_limit: usize,
    pub allow: Vec<(String, String)>,
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    pub embedded_broker: Option<String>,
    pub profiling_port: Option<u16>,
    pub broker_auth: BrokerAuth,
    pub broker_tls: BrokerTls,
    pub metrics_address: Option<SocketAddr>,
    pub signatures: steward::SignaturePolicy,
    pub wire_format: steward::WireFormat,
    pub key_file: Option<PathBuf>,
    pub central_key: Option<steward::PublicKey>,
    pub trusted_keys: Vec<steward::TrustedKey>,
    /// The join token (`--join`, `--join-file`, or the file's `join` / `join_file`).
    pub join: Option<steward::JoinToken>,
    /// Central approves every new key (`--auto-approve`).
    pub auto_approve: bool,
    /// The access list from the config file (`access = [...]`), replacing the default.
    pub access: Option<steward::AccessList>,
}

/// The TOML config file: the same settings as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    node: Option<String>,
    broker_address: Option<OneOrMany>,
    data_dir: Option<PathBuf>,
    central: Option<String>,
    hello_interval: Option<Num>,
    ack_timeout: Option<Num>,
    retries: Option<Num>,
    retry_wait: Option<Num>,
    retry_wait_max: Option<Num>,
    method_timeout: Option<Num>,
    ttl: Option<Num>,
    output_limit: Option<Num>,
    #[serde(default)]
    allow: Vec<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    embedded_broker: Option<String>,
    profiling_port: Option<u16>,
    broker_user: Option<String>,
    broker_password: Option<Secret>,
    broker_token: Option<Secret>,
    broker_nkey_seed: Option<Secret>,
    broker_nkey_seed_file: Option<PathBuf>,
    broker_creds: Option<PathBuf>,
    broker_tls_ca: Option<PathBuf>,
    broker_tls_cert: Option<PathBuf>,
    broker_tls_key: Option<PathBuf>,
    broker_require_tls: Option<bool>,
    metrics_address: Option<String>,
    signatures: Option<String>,
    wire_format: Option<String>,
    key_file: Option<PathBuf>,
    central_key: Option<String>,
    central_key_file: Option<PathBuf>,
    join: Option<Secret>,
    join_file: Option<PathBuf>,
    auto_approve: Option<bool>,
    /// NODE = "KEY" pairs.
    #[serde(default)]
    trusted_keys: std::collections::BTreeMap<String, String>,
    access: Option<steward::AccessList>,
}

/// A string or a list of strings (`broker_address = "a,b"` or `["a", "b"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A number, or a string with a unit (`"500ms"`, `"1MiB"`, `"unlimited"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Num {
    fn text(&self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => f.to_string(),
            Num::Text(s) => s.clone(),
        }
    }
}

/// Parses seconds: `10`, `1.5`, `500ms`, `10s`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, mult) = [
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
    ]
    .iter()
    .find_map(|(suffix, mult)| t.strip_suffix(suffix).map(|n| (n.trim(), *mult)))
    .unwrap_or((t, 1.0));
    let value: f64 = num.parse().map_err(|_| {
        format!(
            "{text:?} is not a duration; give seconds (10, 1.5) or a number with ms, s, m, h or d"
        )
    })?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: a duration must be 0 or more"));
    }
    Duration::try_from_secs_f64(value * mult).map_err(|_| format!("{text:?} is out of range"))
}

/// A parsed `--retries` value (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries(pub Option<u32>);

/// A parsed `--ttl` value (`None`: never expire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

/// `parse_retries` for clap.
pub fn retries_arg(text: &str) -> Result<Retries, String> {
    parse_retries(text).map(Retries)
}

/// `parse_ttl` for clap.
pub fn ttl_arg(text: &str) -> Result<Ttl, String> {
    parse_ttl(text).map(Ttl)
}

/// Parses a retry count: a number, or `unlimited` (also `none`, `inf`).
pub fn parse_retries(text: &str) -> Result<Option<u32>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "unlimited" | "none" | "inf" | "infinite" => Ok(None),
        n => n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{text:?} is not a retry count; give a number or `unlimited`")),
    }
}

/// Parses a TTL: a duration, or `none`/`0` for messages that never expire.
pub fn parse_ttl(text: &str) -> Result<Option<Duration>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" | "never" => Ok(None),
        _ => parse_duration(text).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// Parses a byte count: `1048576`, `512k`, `1MiB`, `2M`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("kib", 1usize << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, mult)| t.strip_suffix(suffix).map(|n| (n.trim().to_owned(), *mult)))
    .unwrap_or((t.clone(), 1));
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("{text:?} is not a byte count; give bytes (1048576) or a number with k or MiB")
        })
}

/// Parses `FROM:METHOD` (either may be `*`).
pub fn parse_allow(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((from, method)) if !from.is_empty() && !method.is_empty() => {
            Ok((from.to_owned(), method.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: give FROM:METHOD, e.g. ship1:echo or *:textLogging"
        )),
    }
}

/// The credentials one source gives (the flags with the environment, or the config file).
struct AuthSource<'a> {
    /// Name the settings as flags (`--broker-user`) rather than file keys (`broker_user`).
    flags: bool,
    user: Option<&'a String>,
    password: Option<&'a Secret>,
    token: Option<&'a Secret>,
    seed: Option<&'a Secret>,
    seed_file: Option<&'a PathBuf>,
    creds: Option<&'a PathBuf>,
}

impl AuthSource<'_> {
    fn name(&self, key: &str) -> String {
        if self.flags {
            format!("--broker-{}", key.replace('_', "-"))
        } else {
            format!("broker_{key}")
        }
    }

    /// The one way to authenticate this source gives, if any.
    fn auth(&self) -> Result<Option<BrokerAuth>, String> {
        let mut found = Vec::new();
        if self.user.is_some() || self.password.is_some() {
            let (Some(user), Some(password)) = (self.user, self.password) else {
                return Err(format!(
                    "give {} and {} together",
                    self.name("user"),
                    self.name("password")
                ));
            };
            found.push((
                self.name("user"),
                BrokerAuth::UserPassword {
                    user: user.clone(),
                    password: password.clone(),
                },
            ));
        }
        if let Some(t) = self.token {
            found.push((self.name("token"), BrokerAuth::Token(t.clone())));
        }
        if let Some(s) = self.seed {
            found.push((self.name("nkey_seed"), BrokerAuth::NkeySeed(s.clone())));
        }
        if let Some(f) = self.seed_file {
            found.push((
                self.name("nkey_seed_file"),
                BrokerAuth::NkeySeedFile(f.clone()),
            ));
        }
        if let Some(f) = self.creds {
            found.push((self.name("creds"), BrokerAuth::CredentialsFile(f.clone())));
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(|(_, a)| a)),
            _ => Err(format!(
                "give one way to authenticate to the broker, not {}",
                found
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        }
    }
}

/// Credentials and TLS: the flags' (and environment's) credentials replace the file's as a
/// whole; each TLS setting is taken from the flags, else from the file.
fn broker_security(
    flags: Option<&Security>,
    file: &FileConfig,
) -> Result<(BrokerAuth, BrokerTls), String> {
    let dflt = Security::default();
    let f = flags.unwrap_or(&dflt);
    let from_flags = AuthSource {
        flags: true,
        user: f.broker_user.as_ref(),
        password: f.broker_password.as_ref(),
        token: f.broker_token.as_ref(),
        seed: f.broker_nkey_seed.as_ref(),
        seed_file: f.broker_nkey_seed_file.as_ref(),
        creds: f.broker_creds.as_ref(),
    }
    .auth()?;
    let from_file = AuthSource {
        flags: false,
        user: file.broker_user.as_ref(),
        password: file.broker_password.as_ref(),
        token: file.broker_token.as_ref(),
        seed: file.broker_nkey_seed.as_ref(),
        seed_file: file.broker_nkey_seed_file.as_ref(),
        creds: file.broker_creds.as_ref(),
    }
    .auth()
    .map_err(|e| format!("config file: {e}"))?;
    let tls = BrokerTls {
        ca_file: f.broker_tls_ca.clone().or(file.broker_tls_ca.clone()),
        client_cert: f.broker_tls_cert.clone().or(file.broker_tls_cert.clone()),
        client_key: f.broker_tls_key.clone().or(file.broker_tls_key.clone()),
        required: f.broker_require_tls || file.broker_require_tls.unwrap_or(false),
    };
    Ok((from_flags.or(from_file).unwrap_or_default(), tls))
}

/// Parses `text` or `json`.
pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    <LogFormat as clap::ValueEnum>::from_str(text.trim(), true)
        .map_err(|_| format!("{text:?} is not a log format; give text or json"))
}

/// Parses an `IP:PORT` socket address such as `127.0.0.1:9090` or `[::1]:9090`.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address; give IP:PORT, e.g. 127.0.0.1:9090 or 0.0.0.0:9090")
    })
}

/// Splits comma-separated broker lists and drops empty entries.
fn split_brokers<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    items
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads and parses a config file.
pub fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

fn from_file<T>(
    value: &Option<Num>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    value
        .as_ref()
        .map(|v| parse(&v.text()).map_err(|e| format!("config file, {key}: {e}")))
        .transpose()
}

/// The flag's value, else the file's, else `default`.
fn pick<T>(
    flag: Option<T>,
    file: &Option<Num>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    default: T,
) -> Result<T, String> {
    match flag {
        Some(v) => Ok(v),
        None => Ok(from_file(file, key, parse)?.unwrap_or(default)),
    }
}

/// Resolves settings: flags (and env) first, then the config file, then the defaults.
pub fn resolve(
    common: &Common,
    conn: Option<&Conn>,
    tuning: Option<&Tuning>,
    run: Option<&RunOpts>,
    security: Option<&Security>,
) -> Result<Settings, String> {
    let file = match &common.config {
        Some(p) => load_file(p)?,
        None => FileConfig::default(),
    };
    let mut allow = Vec::new();
    for a in &file.allow {
        allow.push(parse_allow(a).map_err(|e| format!("config file, allow: {e}"))?);
    }
    let (broker_auth, broker_tls) = broker_security(security, &file)?;
    let dflt = Tuning::default();
    let t = tuning.unwrap_or(&dflt);
    allow.extend(t.allow.iter().cloned());
    let brokers = conn
        .map(|c| split_brokers(&c.broker_address))
        .filter(|b| !b.is_empty())
        .or_else(|| {
            file.broker_address.as_ref().map(|b| match b {
                OneOrMany::One(s) => split_brokers([s]),
                OneOrMany::Many(v) => split_brokers(v),
            })
        })
        .filter(|b| !b.is_empty());
    let embedded = run
        .and_then(|r| r.embedded_broker.clone())
        .or(file.embedded_broker.clone())
        .map(|a| {
            if a.is_empty() {
                DEFAULT_EMBEDDED.to_owned()
            } else {
                a
            }
        });
    let signatures = match t.signatures {
        Some(p) => p,
        None => match &file.signatures {
            Some(text) => text
                .parse()
                .map_err(|e: steward::Error| format!("config file, signatures: {e}"))?,
            None => steward::SignaturePolicy::Required,
        },
    };
    let wire_format = match t.wire_format {
        Some(w) => w,
        None => match &file.wire_format {
            Some(text) => text
                .parse()
                .map_err(|e: steward::Error| format!("config file, wire_format: {e}"))?,
            None => steward::WireFormat::Binary,
        },
    };
    let central_key = match (&t.central_key, &t.central_key_file) {
        (Some(k), _) => Some(*k),
        (None, Some(p)) => Some(steward::PublicKey::from_file(p).map_err(|e| e.to_string())?),
        (None, None) => match (&file.central_key, &file.central_key_file) {
            (Some(_), Some(_)) => {
                return Err("config file: give central_key or central_key_file, not both".into())
            }
            (Some(k), None) => Some(
                steward::PublicKey::parse(k)
                    .map_err(|e| format!("config file, central_key: {e}"))?,
            ),
            (None, Some(p)) => Some(
                steward::PublicKey::from_file(p)
                    .map_err(|e| format!("config file, central_key_file: {e}"))?,
            ),
            (None, None) => None,
        },
    };
    let mut trusted_keys = Vec::new();
    for (node, key) in &file.trusted_keys {
        steward::validate_name("node", node)
            .map_err(|e| format!("config file, trusted_keys: {e}"))?;
        trusted_keys.push(steward::TrustedKey {
            node: node.clone(),
            key: steward::PublicKey::parse(key)
                .map_err(|e| format!("config file, trusted_keys.{node}: {e}"))?,
        });
    }
    trusted_keys.extend(t.trust_key.iter().cloned());
    let join = match (&t.join, &t.join_file) {
        (Some(j), _) => Some(j.clone()),
        (None, Some(p)) => Some(steward::JoinToken::from_file(p).map_err(|e| e.to_string())?),
        (None, None) => match (&file.join, &file.join_file) {
            (Some(_), Some(_)) => {
                return Err("config file: give join or join_file, not both".into())
            }
            (Some(j), None) => Some(
                steward::JoinToken::parse(j.expose())
                    .map_err(|e| format!("config file, join: {e}"))?,
            ),
            (None, Some(p)) => Some(
                steward::JoinToken::from_file(p)
                    .map_err(|e| format!("config file, join_file: {e}"))?,
            ),
            (None, None) => None,
        },
    };
    Ok(Settings {
        auto_approve: t.auto_approve || file.auto_approve.unwrap_or(false),
        signatures,
        wire_format,
        key_file: t.key_file.clone().or(file.key_file.clone()),
        central_key,
        trusted_keys,
        access: file.access.clone(),
        node: conn.and_then(|c| c.node.clone()).or(file.node.clone()),
        brokers,
        data_dir: common
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".")),
        central: conn
            .and_then(|c| c.central.clone())
            .or(file.central.clone())
            .or_else(|| join.as_ref().map(|j| j.central().to_owned()))
            .unwrap_or_else(|| "central".into()),
        join,
        hello_interval: {
            let d = match t.hello_interval {
                Some(d) => d,
                None => from_file(&file.hello_interval, "hello_interval", parse_duration)?
                    .unwrap_or(Duration::from_secs(DEFAULT_HELLO_SECS)),
            };
            (!d.is_zero()).then_some(d)
        },
        ack_timeout: pick(
            t.ack_timeout,
            &file.ack_timeout,
            "ack_timeout",
            parse_duration,
            Duration::from_secs(10),
        )?,
        retries: match t.retries {
            Some(Retries(r)) => r,
            None => from_file(&file.retries, "retries", parse_retries)?.unwrap_or(None),
        },
        retry_wait: pick(
            t.retry_wait,
            &file.retry_wait,
            "retry_wait",
            parse_duration,
            Duration::from_secs(1),
        )?,
        retry_wait_max: pick(
            t.retry_wait_max,
            &file.retry_wait_max,
            "retry_wait_max",
            parse_duration,
            Duration::from_secs(30),
        )?,
        method_timeout: pick(
            t.method_timeout,
            &file.method_timeout,
            "method_timeout",
            parse_duration,
            Duration::from_secs(300),
        )?,
        ttl: match t.ttl {
            Some(Ttl(d)) => d,
            None => from_file(&file.ttl, "ttl", parse_ttl)?.unwrap_or(None),
        },
        output_limit: pick(
            t.output_limit,
            &file.output_limit,
            "output_limit",
            parse_bytes,
            1 << 20,
        )?,
        allow,
        log_level: common.log_level.clone().or(file.log_level.clone()),
        log_format: match (common.log_format, &file.log_format) {
            (Some(f), _) => f,
            (None, Some(text)) => {
                parse_log_format(text).map_err(|e| format!("config file, log_format: {e}"))?
            }
            (None, None) => LogFormat::Text,
        },
        embedded_broker: embedded,
        profiling_port: run.and_then(|r| r.profiling_port).or(file.profiling_port),
        broker_auth,
        broker_tls,
        metrics_address: match run.and_then(|r| r.metrics_address) {
            Some(a) => Some(a),
            None => file
                .metrics_address
                .as_deref()
                .map(parse_socket_addr)
                .transpose()
                .map_err(|e| format!("config file, metrics_address: {e}"))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_plain_seconds() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn retries_ttl_bytes_and_allow_parse() {
        assert_eq!(parse_retries("unlimited").unwrap(), None);
        assert_eq!(parse_retries("3").unwrap(), Some(3));
        assert!(parse_retries("-3").is_err());
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("none").unwrap(), None);
        assert_eq!(parse_ttl("1h").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_bytes("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("0").is_err());
        assert_eq!(
            parse_allow("ship1:echo").unwrap(),
            ("ship1".into(), "echo".into())
        );
        assert!(parse_allow("ship1").is_err());
    }

    #[test]
    fn config_file_rejects_unknown_keys_and_accepts_units() {
        let f: FileConfig = toml::from_str(
            "node = \"ship1\"\nbroker_address = [\"nats://127.0.0.1:1\"]\nack_timeout = \"2s\"\nretries = 3\n",
        )
        .unwrap();
        assert_eq!(f.node.as_deref(), Some("ship1"));
        assert_eq!(
            from_file(&f.ack_timeout, "ack_timeout", parse_duration).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert!(toml::from_str::<FileConfig>("nod = \"x\"").is_err());
    }

    #[test]
    fn flag_credentials_replace_the_files_and_tls_merges_per_key() {
        let file: FileConfig = toml::from_str(
            "broker_token = \"file-token\"\nbroker_tls_ca = \"ca.pem\"\nbroker_tls_cert = \"c.pem\"\nbroker_tls_key = \"k.pem\"\n",
        )
        .unwrap();
        // The file alone.
        let (auth, tls) = broker_security(None, &file).unwrap();
        assert_eq!(auth, BrokerAuth::Token("file-token".into()));
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert!(tls.is_required());
        // A flag's user and password replace the file's token; a flag's CA replaces the file's.
        let flags = Security {
            broker_user: Some("u".into()),
            broker_password: Some("p".into()),
            broker_tls_ca: Some("other-ca.pem".into()),
            ..Security::default()
        };
        let (auth, tls) = broker_security(Some(&flags), &file).unwrap();
        assert_eq!(
            auth,
            BrokerAuth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(tls.ca_file, Some(PathBuf::from("other-ca.pem")));
        assert_eq!(tls.client_cert, Some(PathBuf::from("c.pem")));
        // Debug output of the settings never shows a secret.
        let shown = format!("{file:?} {auth:?}");
        assert!(
            !shown.contains("file-token") && !shown.contains("\"p\""),
            "{shown}"
        );
    }

    #[test]
    fn metrics_address_and_log_format_come_from_flags_else_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        std::fs::write(
            &path,
            "metrics_address = \"127.0.0.1:9464\"\nlog_format = \"JSON\"\n",
        )
        .unwrap();
        let common = Common {
            config: Some(path.clone()),
            ..Common::default()
        };
        let s = resolve(&common, None, None, Some(&RunOpts::default()), None).unwrap();
        assert_eq!(s.metrics_address, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(s.log_format, LogFormat::Json);
        let flags = RunOpts {
            metrics_address: Some("[::1]:0".parse().unwrap()),
            ..RunOpts::default()
        };
        let common = Common {
            config: Some(path.clone()),
            log_format: Some(LogFormat::Text),
            ..Common::default()
        };
        let s = resolve(&common, None, None, Some(&flags), None).unwrap();
        assert_eq!(s.metrics_address, Some("[::1]:0".parse().unwrap()));
        assert_eq!(s.log_format, LogFormat::Text);
        std::fs::write(&path, "metrics_address = \"localhost\"\n").unwrap();
        let err = resolve(&common, None, None, None, None).unwrap_err();
        assert!(
            err.contains("metrics_address") && err.contains("IP:PORT"),
            "{err}"
        );
        std::fs::write(&path, "log_format = \"xml\"\n").unwrap();
        let common = Common {
            config: Some(path),
            ..Common::default()
        };
        let err = resolve(&common, None, None, None, None).unwrap_err();
        assert!(err.contains("text or json"), "{err}");
        assert_eq!(
            resolve(&Common::default(), None, None, None, None)
                .unwrap()
                .log_format,
            LogFormat::Text
        );
    }

    #[test]
    fn config_file_takes_signatures_keys_and_access_rules() {
        let f: FileConfig = toml::from_str(
            r#"
signatures = "required"
wire_format = "json"
central_key = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
access = [
    { from = "central", method = "shellCommand", argv_prefix = ["systemctl", "status"] },
    { from = "central", method = "shellCommand", argv = ["uptime"] },
]
[trusted_keys]
ship9 = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
"#,
        )
        .unwrap();
        assert_eq!(f.signatures.as_deref(), Some("required"));
        assert_eq!(f.wire_format.as_deref(), Some("json"));
        assert_eq!(f.access.as_ref().unwrap().rules().len(), 2);
        assert_eq!(f.trusted_keys.len(), 1);
        assert!(toml::from_str::<FileConfig>(
            "access = [{ from = \"central\", method = \"x\", argv = [], argv_prefix = [] }]"
        )
        .is_err());
    }
}
