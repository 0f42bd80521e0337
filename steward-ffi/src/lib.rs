//! C ABI for steward: start a node, send messages, get results and errors through callbacks,
//! serve methods in C, and query message and destination state.
//!
//! The header `include/steward.h` is generated from this crate by cbindgen (see `build.rs`)
//! and committed; `scripts/test-c.sh` fails when it is stale.
//!
//! Conventions, as in rustls-ffi and zenoh-c:
//! - Opaque handles; every `_new` (or function returning an owned object) has a `_free`.
//! - Every fallible function returns a [`steward_result`] with stable numbers; out-parameters
//!   are written only on `STEWARD_RESULT_OK`; `steward_last_error_message` explains a failure.
//! - No panic crosses the boundary; every pointer is checked for NULL and every string for
//!   UTF-8.
//! - Callbacks are `{context, call, drop}` triples; `drop` runs exactly once after the last
//!   `call`, and after `steward_node_stop` returns no callback runs.

#![allow(clippy::missing_safety_doc)]
// Types carry their C names (steward_node, steward_result, ...), as the header shows them.
#![allow(non_camel_case_types)]

mod boundary;
mod callback;
mod config;
mod enrol;
mod error;
mod explain;
mod keys;
mod message;
mod method;
mod metrics;
mod node;
mod slot;
mod status;

pub use callback::{
    steward_error_callback, steward_event_callback, steward_method_callback,
    steward_status_callback,
};
pub use config::*;
pub use enrol::*;
pub use error::steward_result;
pub use explain::{
    steward_last_error_code, steward_last_error_message, steward_result_message,
    steward_result_name,
};
pub use message::*;
pub use method::*;
pub use metrics::*;
pub use node::*;
pub use status::*;

/// The version of this library as a static NUL-terminated string (never free it).
#[no_mangle]
pub extern "C" fn steward_version() -> *const std::ffi::c_char {
    boundary::guard_value(std::ptr::null(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}
