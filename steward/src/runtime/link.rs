//! The link to the broker as the delivery layer sees it: the client, whether it is connected,
//! and the subject prefix answers to this node arrive on.

use tokio::sync::watch;

/// The broker connection and what belongs to it.
pub(crate) struct Link {
    /// The NATS client (reconnects by itself).
    pub client: async_nats::Client,
    /// Answers to this node's messages arrive on `<reply_prefix>.<stream>.…`.
    pub reply_prefix: String,
    /// `true` while connected to a broker.
    pub connected: watch::Receiver<bool>,
}

impl Link {
    /// True while connected to a broker.
    pub(crate) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}
