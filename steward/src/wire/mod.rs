//! Layer 1, the wire: what a message is — names, the original JSON format, results, how a
//! method is served, and the envelope and answers that travel, in JSON or binary frames. Uses nothing of steward but
//! `error`.

pub(crate) mod envelope;
pub(crate) mod frame;
pub(crate) mod handler;
pub(crate) mod message;
pub(crate) mod names;
pub(crate) mod result;
