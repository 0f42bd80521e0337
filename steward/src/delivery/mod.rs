//! Layer 6, delivery: the publisher per destination subject (window, order, resend, give-up),
//! the receiver (decide, deduplicate, record), the executor per inbound stream, and the
//! confirmation of stream positions after a reconnect.

pub(crate) mod confirm;
pub(crate) mod executor;
pub(crate) mod outbox;
pub(crate) mod publisher;
pub(crate) mod receiver;
pub(crate) mod screen;
