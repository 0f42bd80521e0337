//! Python bindings for steward (in progress).
