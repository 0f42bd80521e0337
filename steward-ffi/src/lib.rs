//! C ABI for steward (in progress).
