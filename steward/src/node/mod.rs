//! Layer 10, the node: a cheap-to-clone handle in front of the tasks that deliver, receive and
//! run messages; the only place that wires the layers together. Also the ways into a running
//! node from outside: the control socket and `inmsg.txt`.

pub(crate) mod control;
pub(crate) mod ingest;
mod keys;
pub(crate) mod supervisor;
mod trust;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::central::Central;
use crate::config::NodeConfig;
use crate::delivery::confirm::Confirmations;
use crate::delivery::executor::Executors;
use crate::delivery::finals::Finals;
use crate::delivery::method_table::MethodTable;
use crate::delivery::outbox::Outbox;
use crate::delivery::publisher::PubEvent;
use crate::delivery::publishers::PublisherSet;
use crate::delivery::report::Reporter;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::runtime::link::Link;
use crate::runtime::notify::{Dispatcher, ErrorReport, ErrorReportKind, ListenerId, Notification};
use crate::runtime::tasks::Tasks;
use crate::security::access::AccessList;
use crate::security::broker_auth::{BrokerAuth, BrokerTls, Secret};
use crate::security::trust::TrustSettings;
use crate::store::{self, Enqueued, NewMessage, Store};
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
    /// What this node sends in (default: [`WireFormat::Binary`](crate::WireFormat::Binary) to
    /// peers that read it, JSON to the rest).
    pub fn wire_format(mut self, format: crate::WireFormat) -> Self {
        self.cfg.wire_format = format;
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

/// What a [`Node`] handle holds: the delivery layer's handles, the listeners' thread, central's
/// registry (on central), and where metrics are served.
pub(crate) struct Inner {
    /// The handles the delivery tasks share.
    pub d: Arc<Delivery>,
    /// Runs listeners on their own thread.
    pub dispatcher: Arc<Dispatcher>,
    /// Where `GET /metrics` is served, once bound.
    pub metrics_address: Option<SocketAddr>,
    /// The key registry, on central only.
    pub central: Option<Arc<Central>>,
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
        let cfg = Arc::new(cfg);
        let dispatcher = Arc::new(dispatcher);
        let link = Link {
            client: client.clone(),
            reply_prefix,
            connected: conn_rx.clone(),
        };
        let d = Arc::new_cyclic(|me: &Weak<Delivery>| {
            let wake = {
                let me = me.clone();
                Arc::new(move |e: &Enqueued| {
                    if let Some(d) = me.upgrade() {
                        d.metrics.accepted(&e.to_node, &e.subject);
                        d.publisher_event(e.stream_id, &e.subject, PubEvent::Enqueued(e.seq));
                    }
                })
            };
            let outbox = Outbox::new(store.clone(), wake, cfg.clone(), client.clone());
            let reporter = Arc::new(Reporter::new(
                cfg.clone(),
                dispatcher.clone(),
                outbox.clone(),
            ));
            Delivery {
                cfg: cfg.clone(),
                tasks: Tasks::new(),
                link,
                store,
                security: Arc::new(security),
                finals: Finals::new(metrics.clone(), dispatcher.clone(), reporter.clone()),
                metrics,
                methods: MethodTable::new(methods),
                outbox,
                reporter,
                publishers: PublisherSet::default(),
                executors: Executors::default(),
                confirm: Confirmations::new(conn_rx.clone()),
                peers: Default::default(),
                registrar: OnceLock::new(),
            }
        });
        let central = registry.map(|reg| Central::start(d.clone(), reg));
        let inner = Arc::new(Inner {
            d: d.clone(),
            dispatcher,
            metrics_address,
            central,
        });
        {
            // A refusal while reconnecting is reported like any error (log, listeners, central).
            let reporter = Arc::downgrade(&d.reporter);
            let handle = conn_watch.spawn(
                d.tasks.subscribe(),
                Box::new(move |text| {
                    if let Some(r) = reporter.upgrade() {
                        r.report(None, ErrorReportKind::BrokerAuth, text);
                    }
                }),
            );
            d.tasks.keep(handle);
        }
        let started = async {
            // Resume unfinished received messages (in arrival order) before the receiver
            // starts, so a new message of the same stream can never overtake them; then the
            // outbox.
            crate::delivery::executor::resume(&d).await?;
            let ev = futures::stream::select(cmd_sub, ev_sub);
            supervisor::spawn_core_tasks(&inner, ack_sub, ev)?;
            crate::central::enrol::start(&d);
            for (stream_id, subject) in inner.d.store.active_streams()? {
                inner.d.publisher(stream_id, &subject);
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
                inner.d.metrics.clone(),
                inner.d.tasks.subscribe(),
                listener,
            );
            inner.d.tasks.keep(handle);
            tracing::info!(node = %inner.d.cfg.name, address = ?inner.metrics_address, "metrics served at {}", crate::runtime::metrics::METRICS_PATH);
        }
        tracing::info!(node = %inner.d.cfg.name, data_dir = %inner.d.cfg.data_dir.display(), "node started");
        Ok(Node { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.d.cfg.name
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.d.cfg
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
            .d
            .metrics
            .encode(crate::runtime::metrics::Format::Prometheus)
    }

    /// True while connected to a broker.
    pub fn is_connected(&self) -> bool {
        self.inner.d.link.is_connected()
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
            prepared.push(self.inner.d.outbox.prepare(m, index, false)?);
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
            match self.inner.d.outbox.prepare(m, Some(i), false) {
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
                .d
                .reporter
                .report(None, ErrorReportKind::BadInput, e.to_string());
        }
        Ok(SendReport {
            accepted: indices.into_iter().zip(receipts).collect(),
            rejected,
        })
    }

    async fn enqueue(&self, prepared: Vec<NewMessage>) -> Result<Vec<Receipt>> {
        let done: Vec<Enqueued> = self.inner.d.outbox.queue(prepared).await?;
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
        // The result that came before the final-state commit is looked up first: once it is
        // gone from there, that commit is visible to the read that follows.
        let finishing = self.inner.d.finals.finishing(id);
        let Some(rec) = self.inner.d.store.message(id)? else {
            return Ok(None);
        };
        Ok(Some(self.inner.d.live_status(rec, finishing).await))
    }

    /// The store writer's counters (jobs, commits, time applying and committing).
    pub fn store_stats(&self) -> crate::StoreStats {
        self.inner.d.store.stats()
    }

    /// Recently sent messages, newest first.
    pub fn recent_messages(&self, limit: usize) -> Result<Vec<MessageStatus>> {
        self.inner.d.store.settle();
        self.inner.d.store.recent_messages(limit)
    }

    /// What this node knows of every destination (pending, completed, failed, last ACK, last seen).
    /// Reads after every write already on its way is committed: a result just returned by
    /// `result()` is counted as completed.
    pub fn destinations(&self) -> Result<Vec<DestinationStatus>> {
        self.inner.d.store.settle();
        self.inner.d.store.destinations()
    }

    /// Waits until the message reaches a final state.
    pub async fn wait(&self, id: &str) -> Result<MessageStatus> {
        let rx = self.inner.d.finals.wait_for(id)?;
        // Only the state here: the body is read only for a message already final.
        match self.inner.d.store.message_state(id)? {
            None => {
                drop(rx);
                self.inner.d.finals.prune(id);
                return Err(Error::NotFound(id.to_owned()));
            }
            Some(state) if state.is_final() => {
                drop(rx);
                self.inner.d.finals.prune(id);
                let rec = self
                    .inner
                    .d
                    .store
                    .message(id)?
                    .ok_or_else(|| Error::NotFound(id.to_owned()))?;
                return Ok(rec.into_status());
            }
            Some(_) => {}
        }
        let mut stop = self.inner.d.tasks.subscribe();
        tokio::select! {
            r = rx => r.map_err(|_| Error::Stopped),
            _ = stop.wait_for(|s| *s) => Err(Error::Stopped),
        }
    }

    /// Waits for the message's result. `Ok` for every method run (check `status`); `Err` when
    /// it failed to be delivered, expired, was rejected or cancelled, or was sent without ACK.
    pub async fn result(&self, id: &str) -> Result<MethodResult> {
        let finals = &self.inner.d.finals;
        let rx = finals.wait_result(id)?;
        if let Some(f) = finals.finishing(id) {
            drop(rx);
            finals.prune(id);
            return Ok(f.result);
        }
        match self.inner.d.store.message_state(id)? {
            None => {
                drop(rx);
                finals.prune(id);
                return Err(Error::NotFound(id.to_owned()));
            }
            Some(state) if state.is_final() => {
                drop(rx);
                finals.prune(id);
                let rec = self
                    .inner
                    .d
                    .store
                    .message(id)?
                    .ok_or_else(|| Error::NotFound(id.to_owned()))?;
                return status_to_result(rec.into_status());
            }
            Some(_) => {}
        }
        let mut stop = self.inner.d.tasks.subscribe();
        tokio::select! {
            r = rx => r.map_err(|_| Error::Stopped)?,
            _ = stop.wait_for(|s| *s) => Err(Error::Stopped),
        }
    }

    /// Cancels a message not yet received by its destination. Returns false if it is too late.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let owned = id.to_owned();
        let rec = self
            .inner
            .d
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
                self.inner.d.publisher_event(
                    rec.stream_id,
                    &rec.status.subject,
                    PubEvent::Finished(rec.seq),
                );
                self.inner.d.finals.after_final(rec.into_status());
                Ok(true)
            }
            None => match self.inner.d.store.message(id)? {
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
        if !self.inner.d.methods.insert(name, method) {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    /// Forgets finished messages older than the retention period now (this also runs hourly).
    /// Returns how many receiver dedup records and sent-message records were removed.
    pub async fn prune(&self) -> Result<(usize, usize)> {
        crate::ops::retention::prune_now(&self.inner.d.store, self.inner.d.cfg.retention).await
    }

    /// Stops serving a method; later messages for it are rejected.
    pub fn unserve(&self, name: &str) -> bool {
        self.inner.d.methods.remove(name)
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
        if !self.inner.d.tasks.stop() {
            return;
        }
        let tasks = self.inner.d.tasks.take();
        let grace = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(grace);
        for mut t in tasks {
            tokio::select! {
                _ = &mut t => {}
                _ = &mut grace => t.abort(),
            }
        }
        self.inner.d.publishers.clear();
        self.inner.d.executors.clear();
        // Bounded: with the broker gone, a flush would wait for a reconnect that never comes.
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.inner.d.link.client.flush()).await;
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.dispatcher.shutdown()).await;
        self.inner.d.finals.clear();
        self.inner.d.store.close().await;
        tracing::info!(node = %self.inner.d.cfg.name, "node stopped");
    }
}

pub(crate) use crate::delivery::finals::status_to_result;

impl Inner {
    /// The central handle, or why this node has none.
    fn central(&self) -> Result<&Arc<Central>> {
        self.central.as_ref().ok_or_else(|| {
            Error::Trust(format!(
                "{} is not central ({}); keys are listed, approved and revoked on the central node",
                self.d.cfg.name, self.d.cfg.central
            ))
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.d.tasks.shutdown.send(true);
    }
}
