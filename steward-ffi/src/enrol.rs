//! Enrolment from C: a node joins central's fleet with a join token; central makes, lists and
//! revokes the tokens (and may approve every new key, in labs).

use std::ffi::c_char;

use steward::{JoinToken, JoinTokenInfo, MAX_TTL};

use crate::boundary::{arg_millis, arg_str, guard_value, out_arg, text_out, Text};
use crate::config::{steward_node_builder, with_builder};
use crate::error::{steward_result, FfiError};
use crate::node::{block, steward_node, with_node};

/// Joins central's fleet with a join token (the text of `steward_join_token_text` on central,
/// or the line `steward keys token` prints there): sets the central node to the token's, pins
/// central's key (kept in `<data dir>/central.pub`, so later starts need no token) and has this
/// node's key approved by central when it registers at start. Nodes require signatures by
/// default, so a node runs nothing from central until it joined this way or was given central's
/// key (`steward_node_builder_set_central_key`).
///
/// `token` is copied (surrounding whitespace is ignored); treat it as a secret until it
/// expires. Returns `STEWARD_RESULT_INVALID_ARGUMENT` for text that is not a join token (the
/// last error says what is wrong with it, never showing it). `steward_node_start` returns
/// `STEWARD_RESULT_CONFIG` when the token is for this node itself (central), when
/// `steward_node_builder_set_central` later named another central, or when
/// `steward_node_builder_set_central_key` gave another key.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_join_token(
    builder: *mut steward_node_builder,
    token: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let text = unsafe { arg_str(token, "token") }?;
        let token = JoinToken::parse(text).map_err(|e| {
            FfiError::invalid(
                e.to_string()
                    .trim_start_matches("invalid configuration: ")
                    .to_owned(),
            )
        })?;
        b.cfg.central = token.central().to_owned();
        b.cfg.join = Some(token);
        Ok(())
    })
}

/// Central only: with `on`, approves every new key that registers, without a token (off by
/// default). For labs: anyone who can publish on the broker can then enrol a node name that
/// has no key yet; the node warns at start and logs each approval. It never replaces an
/// approved key nor brings back a revoked one. On a node that is not central,
/// `steward_node_start` returns `STEWARD_RESULT_CONFIG`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_auto_approve(
    builder: *mut steward_node_builder,
    on: bool,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.auto_approve = on;
        Ok(())
    })
}

/// A join token made by central (opaque): its text for the new node, and its id.
///
/// Returned by `steward_node_join_token`; owned by the caller, free with
/// `steward_join_token_free`. Immutable, so safe to read from several threads.
pub struct steward_join_token {
    text: Text,
    id: Text,
}

/// Central only: makes a join token valid for `valid_for_ms` milliseconds (0: until revoked
/// with `steward_node_revoke_join_token`; at most 10 years). A node started with its text
/// (`steward_node_builder_set_join_token`) pins central's key and has its key approved when it
/// registers, unless its name has an approved key already. Central keeps only the public half
/// of the token's join key.
///
/// On `STEWARD_RESULT_OK` writes the token to `*out` (owned by the caller, free with
/// `steward_join_token_free`). On another node returns `STEWARD_RESULT_CONFIG` saying tokens
/// are made on central; `STEWARD_RESULT_INVALID_ARGUMENT` for a negative or too long validity.
/// Thread-safe; blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_join_token(
    node: *const steward_node,
    valid_for_ms: i64,
    out: *mut *mut steward_join_token,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let out = out_arg(out, "out")?;
        let valid_for = arg_millis(valid_for_ms, "token validity", MAX_TTL)?;
        let valid_for = (!valid_for.is_zero()).then_some(valid_for);
        let token = block(&handle, async move { live.join_token(valid_for).await })??;
        let t = steward_join_token {
            text: Text::new(&token.to_string()),
            id: Text::new(&token.id()),
        };
        unsafe { *out = Box::into_raw(Box::new(t)) };
        Ok(())
    })
}

/// The token as one line of text (`sjt1.<central>.<key>.<secret>`), NUL-terminated, for
/// `steward_node_builder_set_join_token` on the new node; its length in bytes goes to `*len`
/// when `len` is not NULL. A secret: whoever has it can enrol a new node name until it expires
/// or is revoked. Owned by `token`, valid until `steward_join_token_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_text(
    token: *const steward_join_token,
    len: *mut usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || match unsafe { token.as_ref() } {
        Some(t) => unsafe { text_out(&t.text, len) },
        None => std::ptr::null(),
    })
}

/// The token's id (8 hex digits; not secret), as `steward_node_join_tokens` lists it and
/// `steward_node_revoke_join_token` takes it. Owned by `token`, valid until
/// `steward_join_token_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_id(token: *const steward_join_token) -> *const c_char {
    guard_value(std::ptr::null(), || match unsafe { token.as_ref() } {
        Some(t) => t.id.ptr(),
        None => std::ptr::null(),
    })
}

/// Frees a join token (the token stays valid on central). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_free(token: *mut steward_join_token) {
    guard_value((), || {
        if !token.is_null() {
            drop(unsafe { Box::from_raw(token) });
        }
    })
}

/// Central only: revokes the join token `id` (as `steward_join_token_id` gives it or
/// `steward_node_join_tokens` lists it): it enrols no node from then on; nodes already enrolled
/// with it stay approved. `id` is copied. Returns `STEWARD_RESULT_NOT_FOUND` for an unknown id,
/// `STEWARD_RESULT_CONFIG` on a node that is not central. Thread-safe; blocks until stored.
#[no_mangle]
pub unsafe extern "C" fn steward_node_revoke_join_token(
    node: *const steward_node,
    id: *const c_char,
) -> steward_result {
    with_node(node, |_, handle, live| {
        let id = unsafe { arg_str(id, "id") }?.to_owned();
        block(&handle, async move { live.revoke_join_token(&id).await })??;
        Ok(())
    })
}

struct TokenItem {
    id: Text,
    created_ms: u64,
    expires_ms: u64,
    approved: u64,
}

/// The join tokens that can still enrol nodes on central (opaque list; expired and revoked ones
/// are left out; no secrets).
///
/// Returned by `steward_node_join_tokens`; owned by the caller, free with
/// `steward_join_token_list_free`. Immutable, so safe to read from several threads.
pub struct steward_join_token_list {
    items: Vec<TokenItem>,
}

impl steward_join_token_list {
    fn new(items: &[JoinTokenInfo]) -> steward_join_token_list {
        steward_join_token_list {
            items: items
                .iter()
                .map(|t| TokenItem {
                    id: Text::new(&t.id),
                    created_ms: t.created_ms,
                    expires_ms: t.expires_ms.unwrap_or(0),
                    approved: t.approved,
                })
                .collect(),
        }
    }
}

fn item<'a>(list: *const steward_join_token_list, i: usize) -> Option<&'a TokenItem> {
    // SAFETY: the caller passes a live list; the reference does not outlive this call chain.
    unsafe { list.as_ref() }.and_then(|l| l.items.get(i))
}

/// Central only: the join tokens that can still enrol nodes. On `STEWARD_RESULT_OK` writes a
/// list to `*out` (owned by the caller, free with `steward_join_token_list_free`). On another
/// node returns `STEWARD_RESULT_CONFIG` saying tokens are managed on central. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_join_tokens(
    node: *const steward_node,
    out: *mut *mut steward_join_token_list,
) -> steward_result {
    with_node(node, |_, _, live| {
        let out = out_arg(out, "out")?;
        let list = live.join_tokens()?;
        unsafe { *out = Box::into_raw(Box::new(steward_join_token_list::new(&list))) };
        Ok(())
    })
}

/// The number of tokens (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_len(
    list: *const steward_join_token_list,
) -> usize {
    guard_value(0, || unsafe { list.as_ref() }.map_or(0, |l| l.items.len()))
}

/// The id of token `i`; NULL if `i` is out of range. Owned by `list`.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_id(
    list: *const steward_join_token_list,
    i: usize,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        item(list, i).map_or(std::ptr::null(), |t| t.id.ptr())
    })
}

/// When token `i` was made (ms since the Unix epoch; 0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_created_ms(
    list: *const steward_join_token_list,
    i: usize,
) -> u64 {
    guard_value(0, || item(list, i).map_or(0, |t| t.created_ms))
}

/// When token `i` stops enrolling nodes (ms since the Unix epoch); 0 if it never expires or
/// `i` is out of range.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_expires_ms(
    list: *const steward_join_token_list,
    i: usize,
) -> u64 {
    guard_value(0, || item(list, i).map_or(0, |t| t.expires_ms))
}

/// How many keys token `i` approved so far (0 if out of range).
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_approved(
    list: *const steward_join_token_list,
    i: usize,
) -> u64 {
    guard_value(0, || item(list, i).map_or(0, |t| t.approved))
}

/// Frees a join token list. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn steward_join_token_list_free(list: *mut steward_join_token_list) {
    guard_value((), || {
        if !list.is_null() {
            drop(unsafe { Box::from_raw(list) });
        }
    })
}
