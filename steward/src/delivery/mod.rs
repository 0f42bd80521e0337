//! Layer 6, delivery: the publisher per destination subject (window, order, resend, give-up),
//! the receiver (decide, deduplicate, record), the executor per inbound stream, and the
//! confirmation of stream positions after a reconnect.
//!
//! [`Delivery`] holds the handles these tasks share — each a narrow type of its own (see
//! `ARCHITECTURE.md`): the node layer builds it once and hands it to them; nothing here knows
//! the node.

pub(crate) mod confirm;
pub(crate) mod executor;
pub(crate) mod finals;
pub(crate) mod method_table;
pub(crate) mod outbox;
pub(crate) mod peers;
pub(crate) mod publisher;
pub(crate) mod publishers;
pub(crate) mod receiver;
pub(crate) mod report;
pub(crate) mod screen;

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;

use crate::config::NodeConfig;
use crate::runtime::link::Link;
use crate::runtime::metrics::Metrics;
use crate::runtime::tasks::Tasks;
use crate::security::trust::Security;
use crate::store::Store;
use crate::wire::envelope::Envelope;

/// Takes a `_keyRegister` envelope (and where to answer it) off the receiver: installed by
/// central's registry, absent on every other node.
pub(crate) type Registrar =
    Arc<dyn Fn(Envelope, Option<receiver::ReplyTo>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The handles the delivery tasks share (publishers, receiver, executors, confirmations).
pub(crate) struct Delivery {
    /// The node's settings.
    pub cfg: Arc<NodeConfig>,
    /// Spawning, keeping and stopping tasks.
    pub tasks: Tasks,
    /// The broker connection.
    pub link: Link,
    /// The durable store.
    pub store: Store,
    /// Keys, trust and the signature policy.
    pub security: Arc<Security>,
    /// Counters, gauges and histograms.
    pub metrics: Arc<Metrics>,
    /// The methods this node serves.
    pub methods: method_table::MethodTable,
    /// The only way to queue a message.
    pub outbox: outbox::Outbox,
    /// Error reports: log, listeners, central.
    pub reporter: Arc<report::Reporter>,
    /// Waiters and what follows a final state.
    pub finals: finals::Finals,
    /// The publisher of each outbound stream.
    pub publishers: publishers::PublisherSet,
    /// The executor of each inbound stream.
    pub executors: executor::Executors,
    /// Streams whose position the sender confirmed since the last connect.
    pub confirm: confirm::Confirmations,
    /// What each peer reads on the wire.
    pub peers: peers::Peers,
    /// Central's handler of key registrations (set once, on central only).
    pub registrar: OnceLock<Registrar>,
}
