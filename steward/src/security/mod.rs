//! Layer 3, security: this node's keys, what is signed, who may call what (access lists), which
//! keys are trusted for which sender, the session tags between pairs of nodes, and how the node
//! authenticates to the broker.

pub(crate) mod access;
pub(crate) mod broker_auth;
pub(crate) mod join;
pub(crate) mod keys;
pub(crate) mod session;
pub(crate) mod signing;
pub(crate) mod trust;
