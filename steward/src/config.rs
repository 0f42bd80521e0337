//! Node configuration with hand-written defaults, built through [`NodeBuilder`](crate::NodeBuilder).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::security::access::AccessList;
use crate::security::broker_auth::{BrokerAuth, BrokerTls};
use crate::security::join::JoinToken;
use crate::security::keys::PublicKey;
use crate::security::trust::{SignaturePolicy, TrustedKey};
use crate::wire::frame::WireFormat;

/// Everything a node needs to run. Use [`crate::Node::builder`] to make one.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name.
    pub name: String,
    /// Broker URLs; several for a NATS cluster.
    pub brokers: Vec<String>,
    /// How the node authenticates to the broker (none by default).
    pub broker_auth: BrokerAuth,
    /// TLS towards the broker: CA bundle, client certificate, whether TLS is required.
    pub broker_tls: BrokerTls,
    /// Where the store, logs and `inmsg.txt` live.
    pub data_dir: PathBuf,
    /// The central node, which receives error reports and hellos.
    pub central: String,
    /// Default ACK timeout (10 s).
    pub ack_timeout: Duration,
    /// Default number of resends (`None`: unlimited).
    pub retries: Option<u32>,
    /// Base wait between resends (1 s); doubles with jitter per attempt.
    pub retry_wait: Duration,
    /// Cap for the wait between resends (30 s).
    pub retry_wait_max: Duration,
    /// Default method run-time limit (300 s).
    pub method_timeout: Duration,
    /// Default time to live (`None`: messages never expire).
    pub ttl: Option<Duration>,
    /// Clock skew tolerated between nodes when checking expiry (60 s).
    pub clock_skew: Duration,
    /// Messages in flight per subject before sending waits for results (1024).
    pub window: usize,
    /// Interval of `hello` events to central (`None`: off).
    pub hello_interval: Option<Duration>,
    /// Output capture limit for `shellCommand`, per stream (1 MiB).
    pub output_limit: usize,
    /// Who may call what on this node.
    pub access: AccessList,
    /// Watch `<data_dir>/inmsg.txt` for messages to send.
    pub watch_inmsg: bool,
    /// How long finished messages are remembered: sent ones for [`crate::Node::message`], received
    /// ones to answer resends with the stored result (7 days). Older resends are still never run
    /// again (sequence numbers tell), they just get no stored result.
    pub retention: Duration,
    /// Serve the built-in methods (`shellCommand`, `textLogging`, `echo`, `hello`, `errorLog`).
    pub builtin_methods: bool,
    /// Serve `<data_dir>/steward.sock` for `steward send|status|cancel` (see [`crate::CONTROL_SOCKET`]).
    pub control_socket: bool,
    /// Serve `GET /metrics` (Prometheus text format) on this address (`None`: off). Port 0
    /// picks a free port; [`crate::Node::metrics_address`] tells which.
    pub metrics_address: Option<SocketAddr>,
    /// Whether incoming messages must be signed by a trusted key ([`SignaturePolicy::Required`]:
    /// closed by default).
    pub signatures: SignaturePolicy,
    /// This node's private key file (`None`: `<data_dir>/node.key`, created on first start).
    pub key_file: Option<PathBuf>,
    /// Central's public key, pinned: trust updates must be signed with it, and messages from
    /// central are verified with it. Needed to take part in central's key approval.
    pub central_key: Option<PublicKey>,
    /// Keys trusted locally for other nodes, in addition to those central approved.
    pub trusted_keys: Vec<TrustedKey>,
    /// A join token from central (`steward keys token`): pins central's key and proves the
    /// right to have this node's key approved at once (see [`JoinToken`]).
    pub join: Option<JoinToken>,
    /// What this node sends in (see [`WireFormat`]).
    pub wire_format: WireFormat,
    /// Central only: approve every new key that registers, without a token (labs only; each
    /// approval is logged as a warning).
    pub auto_approve: bool,
}

impl NodeConfig {
    /// Defaults for a node called `name` on a local broker, data in the current directory.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        NodeConfig {
            access: AccessList::default_for_node(&name, "central"),
            name,
            brokers: vec!["nats://127.0.0.1:4222".into()],
            broker_auth: BrokerAuth::None,
            broker_tls: BrokerTls::default(),
            data_dir: PathBuf::from("."),
            central: "central".into(),
            ack_timeout: Duration::from_secs(10),
            retries: None,
            retry_wait: Duration::from_secs(1),
            retry_wait_max: Duration::from_secs(30),
            method_timeout: Duration::from_secs(300),
            ttl: None,
            clock_skew: Duration::from_secs(60),
            window: 1024,
            hello_interval: None,
            output_limit: 1 << 20,
            watch_inmsg: false,
            retention: Duration::from_secs(7 * 24 * 3600),
            builtin_methods: true,
            control_socket: false,
            metrics_address: None,
            signatures: SignaturePolicy::Required,
            key_file: None,
            central_key: None,
            trusted_keys: Vec::new(),
            join: None,
            auto_approve: false,
            wire_format: WireFormat::Binary,
        }
    }
}
