//! Layer 5, the runtime: the link to the broker (connect, reconnect, refusals), the node's
//! tasks and its stop signal, listeners and their thread, metrics, and the embedded nats-server.

pub(crate) mod broker;
pub(crate) mod connect;
pub(crate) mod link;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod tasks;
