//! Central's key registry from C: list, approve and revoke the keys nodes sign with.

use std::ffi::c_char;

use steward::{KeyInfo, KeyState, PublicKey};

use crate::boundary::{arg_str, guard_value, out_arg, Text};
use crate::error::{steward_result, FfiError};
use crate::node::{block, steward_node, with_node};

/// Where a key stands in central's registry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum steward_key_state {
    /// Registered by its node, waiting for an operator's approval.
    STEWARD_KEY_PENDING = 0,
    /// Trusted: sent to every node in the trust bundle.
    STEWARD_KEY_APPROVED = 1,
    /// No longer trusted: messages signed with it are refused.
    STEWARD_KEY_REVOKED = 2,
}

struct Key {
    node: Text,
    key: Text,
    state: steward_key_state,
    since_ms: u64,
}

/// The keys in central's registry (opaque list).
///
/// Returned by `steward_node_keys`; owned by the caller, free with `steward_key_list_free`.
/// Immutable, so safe to read from several threads.
pub struct steward_key_list {
    items: Vec<Key>,
}

impl steward_key_list {
    fn new(items: &[KeyInfo]) -> steward_key_list {
        steward_key_list {
            items: items
                .iter()
                .map(|k| Key {
                    node: Text::new(&k.node),
                    key: Text::new(&k.key.to_string()),
                    state: match k.state {
                        KeyState::Pending => steward_key_state::STEWARD_KEY_PENDING,
                        KeyState::Approved => steward_key_state::STEWARD_KEY_APPROVED,
                        KeyState::Revoked => steward_key_state::STEWARD_KEY_REVOKED,
                    },
                    since_ms: k.since_ms,
                })
                .collect(),
        }
    }
}

fn key<'a>(list: *const steward_key_list, i: usize) -> Option<&'a Key> {
    // SAFETY: the caller passes a live list; the reference does not outlive this call chain.
    unsafe { list.as_ref() }.and_then(|l| l.items.get(i))
}

/// Central only: every key in the registry. On `STEWARD_RESULT_OK` writes a list to `*out`
/// (owned by the caller, free with `steward_key_list_free`). On another node returns
/// `STEWARD_RESULT_CONFIG` saying keys are managed on central. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_keys(
    node: *const steward_node,
    out: *mut *mut steward_key_list,
) -> steward_result {
    with_node(node, |_, _, live| {
        let out = out_arg(out, "out")?;
        let list = live.keys()?;
        unsafe { *out = Box::into_raw(Box::new(steward_key_list::new(&list))) };
        Ok(())
    })
}

fn opt_key(key: *const c_char) -> Result<Option<PublicKey>, FfiError> {
    if key.is_null() {
        return Ok(None);
    }
    let text = unsafe { arg_str(key, "key") }?;
    Ok(Some(PublicKey::parse(text)?))
}

/// Central only: approves `node_name`'s key — `key` (base64), or with `key` NULL its only
/// pending key — and sends every node a new trust bundle. On `STEWARD_RESULT_OK` writes the
/// new trust version to `*out_version` when it is not NULL. Errors name what to do (no pending
/// key, several pending keys, a malformed key). Thread-safe; blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_approve_key(
    node: *const steward_node,
    node_name: *const c_char,
    key: *const c_char,
    out_version: *mut u64,
) -> steward_result {
    change_key(node, node_name, key, out_version, Change::Approve)
}

/// Central only: revokes `node_name`'s key — `key` (base64), or with `key` NULL its approved
/// key — and sends every node a new trust bundle; messages signed with it are refused from
/// then on. On `STEWARD_RESULT_OK` writes the new trust version to `*out_version` when it is
/// not NULL. Thread-safe; blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_revoke_key(
    node: *const steward_node,
    node_name: *const c_char,
    key: *const c_char,
    out_version: *mut u64,
) -> steward_result {
    change_key(node, node_name, key, out_version, Change::Revoke)
}

#[derive(Clone, Copy)]
enum Change {
    Approve,
    Revoke,
}

fn change_key(
    node: *const steward_node,
    node_name: *const c_char,
    key: *const c_char,
    out_version: *mut u64,
    change: Change,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let name = unsafe { arg_str(node_name, "node_name") }?.to_owned();
        let key = opt_key(key)?;
        let v = block(&handle, async move {
            match change {
                Change::Approve => live.approve_key(&name, key).await,
                Change::Revoke => live.revoke_key(&name, key).await,
            }
        })??;
        if let Some(out) = unsafe { out_version.as_mut() } {
            *out = v;
        }
        Ok(())
    })
}

/// The number of keys (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_len(list: *const steward_key_list) -> usize {
    guard_value(0, || unsafe { list.as_ref() }.map_or(0, |l| l.items.len()))
}

/// The node key `i` belongs to; NULL if `i` is out of range. Owned by `list`.
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_node(
    list: *const steward_key_list,
    i: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        key(list, i).map_or(std::ptr::null(), |k| k.node.ptr())
    })
}

/// Key `i` (base64); NULL if `i` is out of range. Owned by `list`.
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_key(
    list: *const steward_key_list,
    i: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        key(list, i).map_or(std::ptr::null(), |k| k.key.ptr())
    })
}

/// Where key `i` stands (`STEWARD_KEY_PENDING` if `i` is out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_state(
    list: *const steward_key_list,
    i: usize,
) -> steward_key_state {
    guard_value(steward_key_state::STEWARD_KEY_PENDING, || {
        key(list, i).map_or(steward_key_state::STEWARD_KEY_PENDING, |k| k.state)
    })
}

/// When key `i` entered its state (ms since the Unix epoch; 0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_since_ms(list: *const steward_key_list, i: usize) -> u64 {
    guard_value(0, || key(list, i).map_or(0, |k| k.since_ms))
}

/// Frees a key list. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_key_list_free(list: *mut steward_key_list) {
    guard_value((), || {
        if !list.is_null() {
            drop(unsafe { Box::from_raw(list) });
        }
    })
}
