//! Layer 9, operations: the audit log and the pruning of finished records.

pub(crate) mod audit;
pub(crate) mod retention;
