//! Layer 10, the node: a cheap-to-clone handle in front of the tasks that deliver, receive and
//! run messages; the only place that wires the layers together. Also the ways into a running
//! node from outside: the control socket and `inmsg.txt`.

pub(crate) mod control;
pub(crate) mod ingest;
pub(crate) mod supervisor;
mod trust;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::NodeConfig;
use crate::delivery::publisher;
use crate::delivery::publisher::PubEvent;
use crate::error::{Error, Result};
use crate::runtime::notify::{Dispatcher, ErrorReport, ErrorReportKind, ListenerId, Notification};
use crate::security::access::AccessList;
use crate::security::broker_auth::{BrokerAuth, BrokerTls, Secret};
use crate::security::trust::TrustSettings;
use crate::store::{self, Enqueued, MessageRecord, NewMessage, Store};
use crate::wire::envelope::now_ms;
use crate::wire::handler::Method;
use crate::wire::message::{Message, ParsedBatch};
use crate::wire::names;
use crate::wire::result::{DestinationStatus, MessageState, MessageStatus, MethodResult};

/// Builds and starts a [`Node`].
///
/// # Examples
/// ```no_run
/// # async fn demo() -> steward::Result<()> {
/// use steward::{Message, Node};
/// let node = Node::builder("central")
///     .brokers(["nats://127.0.0.1:4222"])
///     .data_dir("/var/lib/steward")
///     .start()
///     .await?;
/// let receipt = node.send(Message::command("ship1", "shellCommand", ["uptime"])).await?;
/// println!("{}", receipt.result().await?.stdout);
/// node.stop().await;
/// # Ok(()) }
/// ```
pub struct NodeBuilder {
    cfg: NodeConfig,
    access_set: bool,
    methods: Vec<(String, Method)>,
    listeners: Vec<crate::runtime::notify::Listener>,
}

impl NodeBuilder {
    /// Starts from an existing configuration.
    pub fn from_config(cfg: NodeConfig) -> Self {
        NodeBuilder {
            cfg,
            access_set: true,
            methods: Vec::new(),
            listeners: Vec::new(),
        }
    }
    /// Broker URLs (several for a cluster).
    pub fn brokers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.cfg.brokers = urls.into_iter().map(Into::into).collect();
        self
    }
    /// How the node authenticates to the broker (replaces any earlier choice). A broker that
    /// refuses it makes [`NodeBuilder::start`] fail with [`crate::ErrorKind::BrokerAuth`].
    pub fn broker_auth(mut self, auth: BrokerAuth) -> Self {
        self.cfg.broker_auth = auth;
        self
    }
    /// Authenticates with a user name and password.
    pub fn broker_user_password(
        self,
        user: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.broker_auth(BrokerAuth::UserPassword {
            user: user.into(),
            password: password.into(),
        })
    }
    /// Authenticates with a token.
    pub fn broker_token(self, token: impl Into<Secret>) -> Self {
        self.broker_auth(BrokerAuth::Token(token.into()))
    }
    /// Authenticates with an nkey seed (`SU...`).
    pub fn broker_nkey_seed(self, seed: impl Into<Secret>) -> Self {
        self.broker_auth(BrokerAuth::NkeySeed(seed.into()))
    }
    /// Authenticates with the nkey seed held in a file (read at start).
    pub fn broker_nkey_seed_file(self, path: impl Into<PathBuf>) -> Self {
        self.broker_auth(BrokerAuth::NkeySeedFile(path.into()))
    }
    /// Authenticates with a NATS credentials file (user JWT and seed; operator mode).
    pub fn broker_credentials_file(self, path: impl Into<PathBuf>) -> Self {
        self.broker_auth(BrokerAuth::CredentialsFile(path.into()))
    }
    /// All TLS settings at once (see [`BrokerTls`]).
    pub fn broker_tls(mut self, tls: BrokerTls) -> Self {
        self.cfg.broker_tls = tls;
        self
    }
    /// Trusts the CA certificate(s) in this PEM file for the broker's certificate (instead
    /// of the system's roots). Makes TLS mandatory.
    pub fn broker_tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.broker_tls.ca_file = Some(path.into());
        self
    }
    /// Presents this client certificate and key (PEM files) to a broker that verifies
    /// clients (mutual TLS). Makes TLS mandatory.
    pub fn broker_tls_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.cfg.broker_tls.client_cert = Some(cert.into());
        self.cfg.broker_tls.client_key = Some(key.into());
        self
    }
    /// Refuses a broker that does not offer TLS (implied by a CA file or client certificate).
    pub fn broker_require_tls(mut self, on: bool) -> Self {
        self.cfg.broker_tls.required = on;
        self
    }
    /// The data directory (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.data_dir = dir.into();
        self
    }
    /// The central node's name (also the default access list's trusted sender).
    pub fn central(mut self, name: impl Into<String>) -> Self {
        self.cfg.central = name.into();
        if !self.access_set {
            self.cfg.access = AccessList::default_for_node(&self.cfg.name, &self.cfg.central);
        }
        self
    }
    /// Default ACK timeout.
    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.cfg.ack_timeout = d;
        self
    }
    /// Default resends (`None`: unlimited).
    pub fn retries(mut self, n: Option<u32>) -> Self {
        self.cfg.retries = n;
        self
    }
    /// Base wait between resends.
    pub fn retry_wait(mut self, d: Duration) -> Self {
        self.cfg.retry_wait = d;
        self
    }
    /// Cap of the wait between resends.
    pub fn retry_wait_max(mut self, d: Duration) -> Self {
        self.cfg.retry_wait_max = d;
        self
    }
    /// Default method run-time limit.
    pub fn method_timeout(mut self, d: Duration) -> Self {
        self.cfg.method_timeout = d;
        self
    }
    /// Default time to live.
    pub fn ttl(mut self, d: Option<Duration>) -> Self {
        self.cfg.ttl = d;
        self
    }
    /// Clock skew tolerated when checking expiry.
    pub fn clock_skew(mut self, d: Duration) -> Self {
        self.cfg.clock_skew = d;
        self
    }
    /// Messages in flight per subject.
    pub fn window(mut self, n: usize) -> Self {
        self.cfg.window = n;
        self
    }
    /// Send `hello` to central at this interval (`None`: never).
    pub fn hello_interval(mut self, d: Option<Duration>) -> Self {
        self.cfg.hello_interval = d;
        self
    }
    /// Output capture limit for `shellCommand`.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.cfg.output_limit = bytes;
        self
    }
    /// Replaces the access list.
    pub fn access(mut self, list: AccessList) -> Self {
        self.cfg.access = list;
        self.access_set = true;
        self
    }
    /// Adds one rule to the access list (`"*"` matches all).
    pub fn allow(mut self, from: &str, method: &str) -> Self {
        self.cfg.access =
            std::mem::replace(&mut self.cfg.access, AccessList::empty()).allow(from, method);
        self
    }
    /// Watch `<data_dir>/inmsg.txt` for messages.
    pub fn watch_inmsg(mut self, on: bool) -> Self {
        self.cfg.watch_inmsg = on;
        self
    }
    /// How long finished messages are remembered (7 days).
    pub fn retention(mut self, d: Duration) -> Self {
        self.cfg.retention = d;
        self
    }
    /// Serve the built-in methods (on by default).
    pub fn builtin_methods(mut self, on: bool) -> Self {
        self.cfg.builtin_methods = on;
        self
    }
    /// Serve the control socket `<data_dir>/steward.sock` (off by default).
    pub fn control_socket(mut self, on: bool) -> Self {
        self.cfg.control_socket = on;
        self
    }
    /// Serves Prometheus metrics at `GET http://<addr>/metrics` while the node runs (`None`:
    /// off, the default). Port 0 picks a free port (see [`Node::metrics_address`]). Starting
    /// fails with [`ErrorKind::Config`](crate::ErrorKind::Config) if the address is taken.
    pub fn metrics_address(mut self, addr: Option<SocketAddr>) -> Self {
        self.cfg.metrics_address = addr;
        self
    }
    /// Whether incoming messages must be signed by a trusted key (default:
    /// [`SignaturePolicy::Required`](crate::SignaturePolicy::Required); `Off` and `Unsigned`
    /// are warned about at start).
    pub fn signatures(mut self, policy: crate::SignaturePolicy) -> Self {
        self.cfg.signatures = policy;
        self
    }
    /// Joins central's fleet with a token from central (`steward keys token`, or
    /// [`Node::join_token`]): sets the central node, pins its key (kept in
    /// `<data_dir>/central.pub` for later starts) and has this node's key approved at its
    /// registration. Starting fails with [`ErrorKind::Config`](crate::ErrorKind::Config) if
    /// the token contradicts a configured central key.
    pub fn join(mut self, token: crate::JoinToken) -> Self {
        self.cfg.central = token.central().to_owned();
        self.cfg.join = Some(token);
        self
    }
    /// Central only: approves every new key that registers, without a token. For labs: anyone
    /// on the broker can then enrol a name nobody holds yet; each approval is logged as a
    /// warning. Never replaces an approved key or brings back a revoked one.
    pub fn auto_approve(mut self, on: bool) -> Self {
        self.cfg.auto_approve = on;
        self
    }
    /// This node's private key file (default `<data_dir>/node.key`, created on first start).
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.key_file = Some(path.into());
        self
    }
    /// Pins central's public key: trust updates must be signed with it.
    pub fn central_key(mut self, key: crate::PublicKey) -> Self {
        self.cfg.central_key = Some(key);
        self
    }
    /// Trusts `key` for messages from `node`, in addition to the keys central approved.
    pub fn trust_key(mut self, node: impl Into<String>, key: crate::PublicKey) -> Self {
        self.cfg.trusted_keys.push(crate::TrustedKey {
            node: node.into(),
            key,
        });
        self
    }
    /// Serves a method from the start (so messages resumed after a restart find it).
    pub fn method(mut self, name: impl Into<String>, method: Method) -> Self {
        self.methods.push((name.into(), method));
        self
    }
    /// Registers a listener before the node starts, so it also hears what happens while the
    /// node resumes unfinished work (see [`Node::on_notification`]).
    pub fn on_notification(mut self, f: impl Fn(&Notification) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(f));
        self
    }
    /// The configuration so far.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }
    /// Opens the store, connects to the broker (retrying in the background if it is down),
    /// resumes unfinished work and starts serving. Must be called inside a tokio runtime.
    ///
    /// A broker that answers but refuses the node (credentials not accepted, untrusted
    /// certificate, TLS refused) fails the start with [`crate::ErrorKind::BrokerAuth`], and
    /// nothing runs; unreadable credential or certificate files fail it with
    /// [`crate::ErrorKind::Config`].
    pub async fn start(self) -> Result<Node> {
        Node::start(self.cfg, self.methods, self.listeners).await
    }
}

/// A running steward node. Clone it freely; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: NodeConfig,
    /// The runtime the node started on; tasks are spawned here even from the store's thread.
    pub rt: tokio::runtime::Handle,
    pub store: Store,
    pub client: async_nats::Client,
    pub reply_prefix: String,
    pub publishers: Mutex<HashMap<u64, mpsc::UnboundedSender<PubEvent>>>,
    pub executors: Mutex<HashMap<String, crate::delivery::executor::ExecutorHandle>>,
    /// Repeatable methods that once ran too long to be run by the receiver itself.
    pub slow_methods: Mutex<std::collections::HashSet<String>>,
    /// Inbox keys of messages whose resend was answered "received": their senders now wait
    /// for a result message, so a result that went out inline must also go as a message.
    pub promised: Mutex<std::collections::HashSet<String>>,
    pub methods: RwLock<HashMap<String, Method>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<MessageStatus>>>>,
    pub dispatcher: Dispatcher,
    pub shutdown: watch::Sender<bool>,
    pub connected: watch::Receiver<bool>,
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub error_log: Mutex<()>,
    /// Wakes the audit writer when a message reaches a final state.
    pub audit_wake: Arc<tokio::sync::Notify>,
    /// Counters, gauges and histograms (see `metrics.rs`).
    pub metrics: Arc<crate::runtime::metrics::Metrics>,
    /// Where `GET /metrics` is served, once bound.
    pub metrics_address: Option<SocketAddr>,
    /// This node's keys, the keys it trusts and its signature policy.
    pub security: Arc<crate::security::trust::Security>,
    /// The key registry, on central only.
    pub registry: Option<crate::central::registry::Registry>,
    /// Queues messages and wakes their publishers (the only way to queue; see `outbox.rs`).
    pub outbox: crate::delivery::outbox::Outbox,
    /// Streams whose position the sender confirmed since the last connect (see `confirm.rs`).
    pub confirm: crate::delivery::confirm::Confirmations,
}

/// Proof that a message was durably accepted; await its result through it.
#[derive(Clone)]
pub struct Receipt {
    /// The message id.
    pub id: String,
    /// Its destination.
    pub to_node: String,
    /// Its subject.
    pub subject: String,
    node: Node,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .finish()
    }
}

impl Receipt {
    /// Waits for the final state (completed, failed, expired, rejected or cancelled).
    pub async fn wait(&self) -> Result<MessageStatus> {
        self.node.wait(&self.id).await
    }
    /// Waits for the result; delivery failures, expiry and rejection are errors.
    pub async fn result(&self) -> Result<MethodResult> {
        self.node.result(&self.id).await
    }
    /// The current state.
    pub async fn status(&self) -> Result<MessageStatus> {
        self.node
            .message(&self.id)
            .await?
            .ok_or_else(|| Error::NotFound(self.id.clone()))
    }
}

/// What [`Node::send_json`] did with each element of a JSON batch.
#[derive(Debug)]
pub struct SendReport {
    /// Receipts of the accepted messages, with the index of the array element each came from.
    pub accepted: Vec<(usize, Receipt)>,
    /// Errors for the refused elements (each names its index and field).
    pub rejected: Vec<Error>,
}

impl Node {
    /// A builder for a node called `name` with default settings.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            cfg: NodeConfig::new(name),
            access_set: false,
            methods: Vec::new(),
            listeners: Vec::new(),
        }
    }

    async fn start(
        cfg: NodeConfig,
        extra: Vec<(String, Method)>,
        listeners: Vec<crate::runtime::notify::Listener>,
    ) -> Result<Node> {
        names::node(&cfg.name)?;
        names::node(&cfg.central).map_err(|e| Error::config_from(format!("central: {e}"), e))?;
        if cfg.brokers.is_empty() {
            return Err(Error::config("no broker URL given"));
        }
        if cfg.window == 0 {
            return Err(Error::config("window must be at least 1"));
        }
        for (name, _) in &extra {
            names::method(name)?;
        }
        let metrics_listener = match cfg.metrics_address {
            Some(addr) => Some(crate::runtime::metrics::bind(addr).await?),
            None => None,
        };
        let metrics_address = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|e| {
                Error::config_from(format!("cannot read the bound metrics address: {e}"), e)
            })?),
            None => None,
        };
        // Keys and trust first: a refusal (a key others can read, a trust.json that does not
        // verify) must not leave the store open behind it.
        let (cfg, security, registry) = tokio::task::spawn_blocking(move || {
            let cfg = crate::central::enrol::resolve(cfg)?;
            let security = crate::security::trust::Security::open(&TrustSettings {
                name: &cfg.name,
                central: &cfg.central,
                data_dir: &cfg.data_dir,
                key_file: cfg.key_file.as_deref(),
                central_key: cfg.central_key,
                trusted_keys: &cfg.trusted_keys,
                policy: cfg.signatures,
                joining: cfg.join.is_some(),
            })?;
            // Central keeps the key registry; its own trust is the registry's current bundle.
            let registry = if cfg.name == cfg.central {
                let reg = crate::central::registry::Registry::open(&cfg.data_dir)?;
                security.set_state(reg.state(&cfg.name, &security.keys));
                Some(reg)
            } else {
                None
            };
            Ok::<_, Error>((cfg, security, registry))
        })
        .await
        .map_err(|e| Error::config_from(e.to_string(), e))??;
        crate::central::enrol::say_how_trust_stands(&cfg);
        let store = {
            let dir = cfg.data_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir))
                .await
                .map_err(|e| Error::storage_from(e.to_string(), e))??
        };
        // From here on a failed start closes the store first, so the data directory is free
        // for a corrected start at once.
        macro_rules! or_close {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => {
                        store.close().await;
                        return Err(e);
                    }
                }
            };
        }
        let control = or_close!(crate::node::control::bind(&cfg));
        let (conn_tx, conn_rx) = watch::channel(false);
        let conn_tx = Arc::new(conn_tx);
        // A broker that refuses us fails the start here; an unreachable one does not.
        let crate::runtime::connect::Connected {
            client,
            watch: conn_watch,
        } = match crate::runtime::connect::connect(&cfg, conn_tx.clone()).await {
            Ok(c) => c,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        if client.connection_state() == async_nats::connection::State::Connected {
            let _ = conn_tx.send(true);
        }
        // A sender that checks signatures asks for signed answers by its reply subjects.
        let reply_prefix = if security.policy == crate::security::trust::SignaturePolicy::Required {
            format!(
                "{}.{}.{}",
                client.new_inbox(),
                cfg.name,
                crate::security::signing::SIGNED_REPLIES
            )
        } else {
            format!("{}.{}", client.new_inbox(), cfg.name)
        };
        let ack_sub = or_close!(client
            .subscribe(format!("{reply_prefix}.>"))
            .await
            .map_err(|e| Error::broker_unavailable_from(e.to_string(), e)));
        let cmd_sub = or_close!(client
            .subscribe(format!("{}.command.*", cfg.name))
            .await
            .map_err(|e| Error::broker_unavailable_from(e.to_string(), e)));
        let ev_sub = or_close!(client
            .subscribe(format!("{}.event.*", cfg.name))
            .await
            .map_err(|e| Error::broker_unavailable_from(e.to_string(), e)));
        let dispatcher = or_close!(Dispatcher::start()
            .map_err(|e| Error::config_from(format!("cannot start the callback thread: {e}"), e)));
        for l in listeners {
            dispatcher.add(l);
        }
        let (shutdown, _) = watch::channel(false);
        let mut methods = HashMap::new();
        if cfg.builtin_methods {
            for (name, m) in crate::methods::builtins() {
                methods.insert(name.to_owned(), m);
            }
        }
        for (name, m) in extra {
            methods.insert(name, m);
        }
        let metrics = Arc::new(crate::runtime::metrics::Metrics::new(
            store.clone(),
            conn_rx.clone(),
        ));
        let inner = Arc::new_cyclic(|me: &std::sync::Weak<Inner>| Inner {
            outbox: {
                let me = me.clone();
                crate::delivery::outbox::Outbox::new(
                    store.clone(),
                    Arc::new(move |e: &Enqueued| {
                        if let Some(i) = me.upgrade() {
                            i.metrics.accepted(&e.to_node, &e.subject);
                            i.publisher_event(e.stream_id, &e.subject, PubEvent::Enqueued(e.seq));
                        }
                    }),
                    Arc::new(cfg.clone()),
                    client.clone(),
                )
            },
            cfg,
            rt: tokio::runtime::Handle::current(),
            store,
            client,
            reply_prefix,
            publishers: Mutex::default(),
            executors: Mutex::default(),
            slow_methods: Mutex::default(),
            promised: Mutex::default(),
            methods: RwLock::new(methods),
            waiters: Mutex::default(),
            dispatcher,
            shutdown,
            connected: conn_rx.clone(),
            tasks: Mutex::default(),
            error_log: Mutex::new(()),
            audit_wake: Arc::new(tokio::sync::Notify::new()),
            metrics,
            metrics_address,
            security: Arc::new(security),
            registry,
            confirm: crate::delivery::confirm::Confirmations::new(conn_rx.clone()),
        });
        {
            // A refusal while reconnecting is reported like any error (log, listeners, central).
            let me = Arc::downgrade(&inner);
            let handle = conn_watch.spawn(
                inner.shutdown.subscribe(),
                Box::new(move |text| {
                    if let Some(i) = me.upgrade() {
                        i.report(None, ErrorReportKind::BrokerAuth, text);
                    }
                }),
            );
            if let Ok(mut t) = inner.tasks.lock() {
                t.push(handle);
            }
        }
        let started = async {
            // Resume unfinished received messages (in arrival order) before the receiver
            // starts, so a new message of the same stream can never overtake them; then the
            // outbox.
            crate::delivery::executor::resume(&inner).await?;
            let ev = futures::stream::select(cmd_sub, ev_sub);
            supervisor::spawn_core_tasks(&inner, ack_sub, ev)?;
            crate::central::enrol::start(&inner);
            for (stream_id, subject) in inner.store.active_streams()? {
                inner.publisher(stream_id, &subject);
            }
            if let Some(bound) = control {
                crate::node::control::serve(&inner, bound)?;
            }
            Ok::<(), Error>(())
        };
        if let Err(e) = started.await {
            // Whatever started is stopped and the store closed, as by `stop`.
            Node {
                inner: inner.clone(),
            }
            .stop()
            .await;
            return Err(e);
        }
        if let Some(listener) = metrics_listener {
            let handle = crate::runtime::metrics::serve(
                inner.metrics.clone(),
                inner.shutdown.subscribe(),
                listener,
            );
            if let Ok(mut t) = inner.tasks.lock() {
                t.push(handle);
            }
            tracing::info!(node = %inner.cfg.name, address = ?inner.metrics_address, "metrics served at {}", crate::runtime::metrics::METRICS_PATH);
        }
        tracing::info!(node = %inner.cfg.name, data_dir = %inner.cfg.data_dir.display(), "node started");
        Ok(Node { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    /// Where `GET /metrics` is served (the bound address, so port 0 shows the port picked), or
    /// `None` when no metrics address was configured.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.inner.metrics_address
    }

    /// Every metric in the Prometheus text format (version 0.0.4), exactly what
    /// `GET /metrics` answers; works with or without a metrics address.
    pub fn metrics_text(&self) -> String {
        self.inner
            .metrics
            .encode(crate::runtime::metrics::Format::Prometheus)
    }

    /// True while connected to a broker.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Durably accepts one message (fsync'd) and returns its receipt; delivery runs in the background.
    pub async fn send(&self, msg: Message) -> Result<Receipt> {
        let mut r = self.send_batch(vec![msg]).await?;
        r.pop().ok_or_else(|| Error::storage("no receipt returned"))
    }

    /// Durably accepts several messages in one disk commit. All or none are accepted.
    pub async fn send_batch(&self, msgs: Vec<Message>) -> Result<Vec<Receipt>> {
        let mut prepared = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.into_iter().enumerate() {
            let index = if prepared.is_empty() && i == 0 {
                None
            } else {
                Some(i)
            };
            prepared.push(self.inner.outbox.prepare(m, index, false)?);
        }
        self.enqueue(prepared).await
    }

    /// Accepts messages in the original JSON format (an array, or one object). Valid elements
    /// are sent even when others are invalid; each invalid one is reported with its index.
    pub async fn send_json(&self, text: &str) -> Result<SendReport> {
        let parsed = crate::wire::message::parse_json(text)?;
        self.send_parsed(parsed).await
    }

    /// Sends an already parsed batch (see [`crate::parse_json`]).
    pub async fn send_parsed(&self, parsed: ParsedBatch) -> Result<SendReport> {
        let mut rejected = parsed.errors;
        let mut prepared = Vec::new();
        let mut indices = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, m) in parsed.messages {
            if let Some(id) = &m.id {
                if !ids.insert(id.clone()) {
                    rejected.push(Error::invalid(
                        Some(i),
                        Some("id"),
                        format!("id {id} is used twice in this batch"),
                    ));
                    continue;
                }
            }
            match self.inner.outbox.prepare(m, Some(i), false) {
                Ok(p) => {
                    prepared.push(p);
                    indices.push(i);
                }
                Err(e) => rejected.push(e),
            }
        }
        let receipts = if prepared.is_empty() {
            Vec::new()
        } else {
            self.enqueue(prepared).await?
        };
        for e in &rejected {
            self.inner
                .report(None, ErrorReportKind::BadInput, e.to_string());
        }
        Ok(SendReport {
            accepted: indices.into_iter().zip(receipts).collect(),
            rejected,
        })
    }

    async fn enqueue(&self, prepared: Vec<NewMessage>) -> Result<Vec<Receipt>> {
        let done: Vec<Enqueued> = self.inner.outbox.queue(prepared).await?;
        let receipts = done
            .into_iter()
            .map(|e| Receipt {
                id: e.id,
                to_node: e.to_node,
                subject: e.subject,
                node: self.clone(),
            })
            .collect();
        Ok(receipts)
    }

    /// The state of a message this node sent, or `None` if unknown.
    pub async fn message(&self, id: &str) -> Result<Option<MessageStatus>> {
        let Some(rec) = self.inner.store.message(id)? else {
            return Ok(None);
        };
        Ok(Some(self.inner.live_status(rec).await))
    }

    /// The store writer's counters (jobs, commits, time applying and committing).
    pub fn store_stats(&self) -> crate::StoreStats {
        self.inner.store.stats()
    }

    /// Recently sent messages, newest first.
    pub fn recent_messages(&self, limit: usize) -> Result<Vec<MessageStatus>> {
        self.inner.store.recent_messages(limit)
    }

    /// What this node knows of every destination (pending, completed, failed, last ACK, last seen).
    pub fn destinations(&self) -> Result<Vec<DestinationStatus>> {
        self.inner.store.destinations()
    }

    /// Waits until the message reaches a final state.
    pub async fn wait(&self, id: &str) -> Result<MessageStatus> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.inner.waiters.lock().map_err(|_| Error::Stopped)?;
            let list = waiters.entry(id.to_owned()).or_default();
            // Waits given up earlier (timed out, dropped) leave closed senders behind.
            list.retain(|w| !w.is_closed());
            list.push(tx);
        }
        // Only the state here: the body is read only for a message already final.
        match self.inner.store.message_state(id)? {
            None => {
                drop(rx);
                self.inner.prune_waiters(id);
                return Err(Error::NotFound(id.to_owned()));
            }
            Some(state) if state.is_final() => {
                drop(rx);
                self.inner.prune_waiters(id);
                let rec = self
                    .inner
                    .store
                    .message(id)?
                    .ok_or_else(|| Error::NotFound(id.to_owned()))?;
                return Ok(rec.into_status());
            }
            Some(_) => {}
        }
        let mut stop = self.inner.shutdown.subscribe();
        tokio::select! {
            r = rx => r.map_err(|_| Error::Stopped),
            _ = stop.wait_for(|s| *s) => Err(Error::Stopped),
        }
    }

    /// Waits for the message's result. `Ok` for every method run (check `status`); `Err` when
    /// it failed to be delivered, expired, was rejected or cancelled, or was sent without ACK.
    pub async fn result(&self, id: &str) -> Result<MethodResult> {
        let st = self.wait(id).await?;
        status_to_result(st)
    }

    /// Cancels a message not yet received by its destination. Returns false if it is too late.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let owned = id.to_owned();
        let rec = self
            .inner
            .store
            .write(move |txn| {
                store::finalize(
                    txn,
                    &owned,
                    MessageState::Cancelled,
                    None,
                    Some("cancelled by the operator".into()),
                    0,
                )
            })
            .await?;
        match rec {
            Some(rec) => {
                self.inner.publisher_event(
                    rec.stream_id,
                    &rec.status.subject,
                    PubEvent::Finished(rec.seq),
                );
                self.inner.after_final(rec.into_status());
                Ok(true)
            }
            None => match self.inner.store.message(id)? {
                None => Err(Error::NotFound(id.to_owned())),
                Some(_) => Ok(false),
            },
        }
    }

    /// Serves (or replaces) a method while running.
    pub fn serve(&self, name: &str, method: Method) -> Result<()> {
        names::method(name)?;
        if name.starts_with('_') {
            return Err(Error::invalid(
                None,
                Some("method"),
                "names starting with '_' are reserved for steward",
            ));
        }
        self.inner
            .methods
            .write()
            .map_err(|_| Error::Stopped)?
            .insert(name.to_owned(), method);
        Ok(())
    }

    /// Forgets finished messages older than the retention period now (this also runs hourly).
    /// Returns how many receiver dedup records and sent-message records were removed.
    pub async fn prune(&self) -> Result<(usize, usize)> {
        crate::ops::retention::prune_now(&self.inner.store, self.inner.cfg.retention).await
    }

    /// Stops serving a method; later messages for it are rejected.
    pub fn unserve(&self, name: &str) -> bool {
        self.inner
            .methods
            .write()
            .map(|mut m| m.remove(name).is_some())
            .unwrap_or(false)
    }

    /// Calls `f` for every notification (final states and errors) on the callback thread.
    pub fn on_notification(&self, f: impl Fn(&Notification) + Send + Sync + 'static) -> ListenerId {
        self.inner.dispatcher.add(Arc::new(f))
    }

    /// Calls `f` with every message that reaches a final state.
    pub fn on_finished(&self, f: impl Fn(&MessageStatus) + Send + Sync + 'static) -> ListenerId {
        self.on_notification(move |n| {
            if let Notification::Finished(s) = n {
                f(s)
            }
        })
    }

    /// Calls `f` with every error report.
    pub fn on_error(&self, f: impl Fn(&ErrorReport) + Send + Sync + 'static) -> ListenerId {
        self.on_notification(move |n| {
            if let Notification::Error(e) = n {
                f(e)
            }
        })
    }

    /// Removes a listener; when it returns, no call to it is running (unless called from one).
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.inner.dispatcher.remove(id)
    }

    /// A channel of every notification from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Notification> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.on_notification(move |n| {
            let _ = tx.send(n.clone());
        });
        rx
    }

    /// Stops the node: no new input, running methods get a short grace period, unfinished work
    /// stays on disk to resume at the next start, every listener has finished when this returns.
    pub async fn stop(&self) {
        if self.inner.shutdown.send_replace(true) {
            return;
        }
        let tasks: Vec<_> = self
            .inner
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let grace = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(grace);
        for mut t in tasks {
            tokio::select! {
                _ = &mut t => {}
                _ = &mut grace => t.abort(),
            }
        }
        if let Ok(mut p) = self.inner.publishers.lock() {
            p.clear();
        }
        if let Ok(mut e) = self.inner.executors.lock() {
            e.clear();
        }
        // Bounded: with the broker gone, a flush would wait for a reconnect that never comes.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.client.flush()).await;
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.dispatcher.shutdown()).await;
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.clear();
        }
        self.inner.store.close().await;
        tracing::info!(node = %self.inner.cfg.name, "node stopped");
    }
}

pub(crate) fn status_to_result(st: MessageStatus) -> Result<MethodResult> {
    let reason = st.reason.clone().unwrap_or_default();
    match st.state {
        MessageState::Completed => st.result.ok_or(Error::NoResult(st.id)),
        MessageState::Failed => Err(Error::DeliveryFailed {
            id: st.id,
            node: st.to_node,
            reason,
        }),
        MessageState::Expired => Err(Error::Expired {
            id: st.id,
            stage: if reason.contains("run") {
                "run".into()
            } else {
                "delivered".into()
            },
        }),
        MessageState::Rejected => Err(Error::Rejected {
            id: st.id,
            node: st.to_node,
            reason,
        }),
        MessageState::Cancelled => Err(Error::Cancelled(st.id)),
        _ => Err(Error::Stopped),
    }
}

impl Inner {
    /// Returns the publisher of a stream, starting it if needed.
    pub(crate) fn publisher(
        self: &Arc<Self>,
        stream_id: u64,
        subject: &str,
    ) -> mpsc::UnboundedSender<PubEvent> {
        let mut map = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        self.publisher_locked(&mut map, stream_id, subject)
    }

    fn publisher_locked(
        self: &Arc<Self>,
        map: &mut HashMap<u64, mpsc::UnboundedSender<PubEvent>>,
        stream_id: u64,
        subject: &str,
    ) -> mpsc::UnboundedSender<PubEvent> {
        if let Some(tx) = map.get(&stream_id) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let tx = publisher::spawn(self.clone(), stream_id, subject.to_owned());
        map.insert(stream_id, tx.clone());
        tx
    }

    /// Sends an event to a stream's publisher (starting it if needed). The send happens under
    /// the map lock, so a publisher retiring while idle can never miss it.
    pub(crate) fn publisher_event(self: &Arc<Self>, stream_id: u64, subject: &str, ev: PubEvent) {
        if *self.shutdown.borrow() {
            return;
        }
        let mut map = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.publisher_locked(&mut map, stream_id, subject);
        let _ = tx.send(ev);
    }

    /// Whether this node serves `method` now.
    pub(crate) fn serves(&self, method: &str) -> bool {
        self.methods
            .read()
            .map(|m| m.contains_key(method))
            .unwrap_or(false)
    }

    /// The status with the publisher's live view (sent / attempts) merged in.
    pub(crate) async fn live_status(&self, rec: MessageRecord) -> MessageStatus {
        let (stream_id, seq) = (rec.stream_id, rec.seq);
        let mut st = rec.into_status();
        if st.state.is_final() {
            return st;
        }
        let tx = self
            .publishers
            .lock()
            .ok()
            .and_then(|m| m.get(&stream_id).cloned());
        if let Some(tx) = tx {
            let (otx, orx) = oneshot::channel();
            if tx.send(PubEvent::Query(seq, otx)).is_ok() {
                if let Ok(Some((state, attempts))) = orx.await {
                    if st.state != MessageState::Received || state == MessageState::Received {
                        st.state = state;
                    }
                    st.attempts = st.attempts.max(attempts);
                }
            }
        }
        st
    }

    /// Removes the waiters of `id` whose receiving side is gone (only those: others may still wait).
    fn prune_waiters(&self, id: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            if let Some(list) = w.get_mut(id) {
                list.retain(|s| !s.is_closed());
                if list.is_empty() {
                    w.remove(id);
                }
            }
        }
    }

    /// Everything that follows a final state: waiters, listeners, error reports.
    pub(crate) fn after_final(self: &Arc<Self>, st: MessageStatus) {
        self.metrics.finished(&st);
        if let Some(ws) = self.waiters.lock().ok().and_then(|mut w| w.remove(&st.id)) {
            for w in ws {
                let _ = w.send(st.clone());
            }
        }
        if st.subject.ends_with(".event._result") {
            if st.state != MessageState::Completed {
                tracing::error!(msg_id = %st.id, to = %st.to_node, "a result could not be delivered: {:?}", st.reason);
            }
            return;
        }
        let failure = match st.state {
            MessageState::Failed => Some((
                ErrorReportKind::DeliveryFailed,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Expired => Some((
                ErrorReportKind::Expired,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Rejected => Some((
                ErrorReportKind::Rejected,
                st.reason.clone().unwrap_or_default(),
            )),
            MessageState::Completed => match &st.result {
                Some(r) if r.status != crate::ResultStatus::Ok => Some((
                    ErrorReportKind::MethodFailed,
                    r.error.clone().unwrap_or_else(|| match r.exit_code {
                        Some(c) => format!("exit status {c}"),
                        None => "method failed".into(),
                    }),
                )),
                _ => None,
            },
            _ => None,
        };
        self.audit_wake.notify_one();
        let about_error_log = st.subject.ends_with(".event.errorLog");
        if self.dispatcher.has_listeners() {
            self.dispatcher.notify(Notification::Finished(st.clone()));
        }
        if let Some((kind, reason)) = failure {
            let reason = format!("{} on {}: {reason}", st.subject, st.to_node);
            if about_error_log {
                // Never report the failure of an error report to central: that could loop.
                tracing::error!(msg_id = %st.id, to = %st.to_node, method = "errorLog", "error report to central failed: {reason}");
                self.dispatcher
                    .notify(Notification::Error(self.error_report(
                        Some(st.id),
                        kind,
                        reason,
                    )));
            } else {
                self.report(Some(st.id), kind, reason);
            }
        }
    }

    fn error_report(
        &self,
        message_id: Option<String>,
        kind: ErrorReportKind,
        reason: String,
    ) -> ErrorReport {
        ErrorReport {
            time_ms: now_ms(),
            node: self.cfg.name.clone(),
            message_id,
            kind,
            reason,
        }
    }
}

impl Inner {
    /// The error kernel's reporting half: local listeners, the log, and central's `errorLog`.
    pub(crate) fn report(
        self: &Arc<Self>,
        message_id: Option<String>,
        kind: ErrorReportKind,
        reason: String,
    ) {
        let report = self.error_report(message_id, kind, reason);
        tracing::warn!(msg_id = report.message_id.as_deref(), kind = ?report.kind, "{}", report.reason);
        self.dispatcher.notify(Notification::Error(report.clone()));
        crate::methods::error_log::forward(&self.outbox, &self.cfg, &self.error_log, report);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
