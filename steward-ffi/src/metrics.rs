//! Prometheus metrics from C: the builder option that serves `GET /metrics`, the bound address,
//! and a snapshot of the metrics text for programs that expose it their own way.

use std::ffi::c_char;
use std::net::SocketAddr;

use crate::boundary::{arg_str, guard, guard_value, out_arg, text_out, write_text, Text};
use crate::config::{steward_node_builder, with_builder};
use crate::error::{steward_result, FfiError};
use crate::node::{live_node, steward_node};

/// Serves Prometheus metrics at `GET http://<address>/metrics` while the node runs (off by
/// default). `address` is `IP:PORT`, e.g. `"127.0.0.1:9464"`, `"0.0.0.0:9464"` or
/// `"[::1]:9464"`; port 0 picks a free port (ask `steward_node_metrics_address` which). It is
/// copied. Returns `STEWARD_RESULT_INVALID_ARGUMENT` for text that is not such an address;
/// `steward_node_start` returns `STEWARD_RESULT_CONFIG` when the address is taken.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_metrics_address(
    builder: *mut steward_node_builder,
    address: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let text = unsafe { arg_str(address, "address") }?;
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            FfiError::invalid(format!(
                "{text:?} is not a metrics address; pass IP:PORT, e.g. 127.0.0.1:9464"
            ))
        })?;
        b.cfg.metrics_address = Some(addr);
        Ok(())
    })
}

/// Writes the address `GET /metrics` is served on (`IP:PORT`, with the port actually bound) to
/// `buf`, a caller buffer of `len` bytes (64 is always enough), NUL-terminated, and its length
/// to `*written`. Writes "" (length 0) when the node serves no metrics. Returns
/// `STEWARD_RESULT_BUFFER_TOO_SMALL` (with what fit written) or `STEWARD_RESULT_STOPPED`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_metrics_address(
    node: *const steward_node,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> steward_result {
    guard(|| {
        let live = unsafe { live_node(node) }?;
        let text = live
            .metrics_address()
            .map(|a| a.to_string())
            .unwrap_or_default();
        unsafe { write_text(&text, buf, len, written) }
    })
}

/// A snapshot of a node's metrics in the Prometheus text format, version 0.0.4 (opaque).
///
/// Returned by `steward_node_metrics`; owned by the caller, free with `steward_metrics_free`.
/// Immutable, so safe to read from several threads.
pub struct steward_metrics {
    text: Text,
}

/// Takes a snapshot of every metric of `node` in the Prometheus text format (what
/// `GET /metrics` answers), with or without a metrics address. On `STEWARD_RESULT_OK` writes
/// it to `*out` (owned by the caller, free with `steward_metrics_free`). Returns
/// `STEWARD_RESULT_STOPPED` or argument errors. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_metrics(
    node: *const steward_node,
    out: *mut *mut steward_metrics,
) -> steward_result {
    guard(|| {
        let live = unsafe { live_node(node) }?;
        let out = out_arg(out, "out")?;
        let m = steward_metrics {
            text: Text::new(&live.metrics_text()),
        };
        unsafe { *out = Box::into_raw(Box::new(m)) };
        Ok(())
    })
}

/// The metrics text, NUL-terminated; its length in bytes goes to `*len` when `len` is not
/// NULL. Owned by `metrics`, valid until `steward_metrics_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_metrics_text(
    metrics: *const steward_metrics,
    len: *mut usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || match unsafe { metrics.as_ref() } {
        Some(m) => unsafe { text_out(&m.text, len) },
        None => std::ptr::null(),
    })
}

/// Frees a metrics snapshot. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_metrics_free(metrics: *mut steward_metrics) {
    guard_value((), || {
        if !metrics.is_null() {
            drop(unsafe { Box::from_raw(metrics) });
        }
    })
}
