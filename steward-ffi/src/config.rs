//! The node builder: a configuration assembled with setters, so new options never break the ABI.

use std::ffi::c_char;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steward::{BrokerAuth, Kind, NodeConfig, MAX_ACK_TIMEOUT, MAX_METHOD_TIMEOUT, MAX_TTL};

use crate::boundary::{arg_millis, arg_mut, arg_str, guard, guard_value, out_arg};
use crate::callback::{
    steward_error_callback, steward_event_callback, steward_method_callback,
    steward_status_callback, ErrorCall, StatusCall,
};
use crate::error::{steward_result, FfiError};
use crate::method::{kind_arg, EventCall, MethodCall, Served};
use crate::slot::{take, Slot};

/// Upper bound for waits between resends (the core's limit for `retryWait`).
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Upper bound for the clock skew and the hello interval.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A fresh node id (ids are never reused within a process).
pub(crate) fn next_node_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A node configuration being assembled (opaque). Create with `steward_node_builder_new`, set
/// options, then either pass it to `steward_node_start` (which always takes it, also when the
/// start fails) or free it with `steward_node_builder_free`. Not thread-safe: use one builder
/// from one thread at a time.
pub struct steward_node_builder {
    pub(crate) id: u64,
    pub(crate) cfg: NodeConfig,
    pub(crate) brokers_set: bool,
    pub(crate) allow: Vec<steward::Rule>,
    /// Start from an empty access list instead of the default one.
    pub(crate) access_cleared: bool,
    pub(crate) methods: Vec<(String, Kind, Arc<Served>)>,
    pub(crate) finished: Vec<Arc<Slot<StatusCall>>>,
    pub(crate) errors: Vec<Arc<Slot<ErrorCall>>>,
}

fn name_arg(s: &str, what: &'static str) -> Result<(), FfiError> {
    steward::validate_name(what, s).map_err(FfiError::from)
}

/// Validates a method name a C callback will serve.
pub(crate) fn method_name_arg(s: &str) -> Result<(), FfiError> {
    name_arg(s, "method")?;
    if s.starts_with('_') {
        return Err(FfiError::new(
            steward_result::STEWARD_RESULT_INVALID_NAME,
            format!("invalid method name {s:?}: names starting with '_' are reserved for steward"),
        ));
    }
    Ok(())
}

/// Creates a builder for a node called `name` (1-64 characters of `A-Z a-z 0-9 _ -`) with
/// default settings: broker `nats://127.0.0.1:4222`, data directory ".", central "central",
/// ACK timeout 10 s, unlimited retries, retry wait 1 s (max 30 s), method timeout 300 s, no
/// TTL, window 1024, no hello, output limit 1 MiB, built-in methods on, `inmsg.txt` not
/// watched, no broker credentials and TLS only if the broker asks for it, signatures required
/// (closed: the node runs nothing from central until it joined with
/// `steward_node_builder_set_join_token` or was given central's key), and the default access
/// list (central may call every method; every node may send `errorLog` and `hello`).
///
/// On success writes a new builder to `*out`; the caller owns it and must pass it to
/// `steward_node_start` or `steward_node_builder_free`. `name` is copied. Returns
/// `STEWARD_RESULT_NULL_PARAMETER`, `STEWARD_RESULT_INVALID_UTF8` or
/// `STEWARD_RESULT_INVALID_NAME` on bad arguments. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_new(
    name: *const c_char,
    out: *mut *mut steward_node_builder,
) -> steward_result {
    guard(|| {
        let name = unsafe { arg_str(name, "name") }?;
        let out = out_arg(out, "out")?;
        name_arg(name, "node")?;
        let b = steward_node_builder {
            id: next_node_id(),
            cfg: NodeConfig::new(name),
            brokers_set: false,
            allow: Vec::new(),
            access_cleared: false,
            methods: Vec::new(),
            finished: Vec::new(),
            errors: Vec::new(),
        };
        unsafe { *out = Box::into_raw(Box::new(b)) };
        Ok(())
    })
}

/// Frees a builder that was not passed to `steward_node_start`, calling the `drop` of every
/// callback it holds. NULL is ignored. Never call it after `steward_node_start`, whatever that
/// returned: the start already freed the builder.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_free(builder: *mut steward_node_builder) {
    guard_value((), || {
        if !builder.is_null() {
            drop(unsafe { Box::from_raw(builder) });
        }
    })
}

/// Runs `f` on a builder argument inside the panic boundary.
pub(crate) fn with_builder(
    builder: *mut steward_node_builder,
    f: impl FnOnce(&mut steward_node_builder) -> Result<(), FfiError>,
) -> steward_result {
    guard(|| {
        let b = unsafe { arg_mut(builder, "builder") }?;
        f(b)
    })
}

/// Adds a broker URL such as `nats://127.0.0.1:4222` (several for a NATS cluster). The first
/// call replaces the default URL. `url` is copied. Returns `STEWARD_RESULT_INVALID_ARGUMENT`
/// for an empty URL.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_add_broker(
    builder: *mut steward_node_builder,
    url: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let url = unsafe { arg_str(url, "url") }?.trim();
        if url.is_empty() {
            return Err(FfiError::invalid(
                "the broker URL is empty; pass e.g. nats://127.0.0.1:4222",
            ));
        }
        if !b.brokers_set {
            b.cfg.brokers.clear();
            b.brokers_set = true;
        }
        b.cfg.brokers.push(url.to_owned());
        Ok(())
    })
}

/// A non-empty string argument (copied by the caller of this helper).
unsafe fn text_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, FfiError> {
    let s = unsafe { arg_str(p, name) }?;
    if s.is_empty() {
        return Err(FfiError::invalid(format!("argument `{name}` is empty")));
    }
    Ok(s)
}

/// Authenticates to the broker with a user name and password (nats-server
/// `authorization { users = [...] }`), replacing any earlier choice of credentials. Both strings
/// are copied; the password never appears in messages or logs. A broker that does not accept
/// them makes `steward_node_start` return `STEWARD_RESULT_BROKER_AUTH`. Returns
/// `STEWARD_RESULT_INVALID_ARGUMENT` for an empty user name.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_user_password(
    builder: *mut steward_node_builder,
    user: *const c_char,
    password: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let user = unsafe { text_arg(user, "user") }?;
        let password = unsafe { arg_str(password, "password") }?;
        b.cfg.broker_auth = BrokerAuth::UserPassword {
            user: user.to_owned(),
            password: password.into(),
        };
        Ok(())
    })
}

/// Authenticates to the broker with a token (nats-server `authorization { token: ... }`),
/// replacing any earlier choice of credentials. `token` is copied and never appears in messages
/// or logs. Returns `STEWARD_RESULT_INVALID_ARGUMENT` for an empty token.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_token(
    builder: *mut steward_node_builder,
    token: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let token = unsafe { text_arg(token, "token") }?;
        b.cfg.broker_auth = BrokerAuth::Token(token.into());
        Ok(())
    })
}

/// Authenticates to the broker with an nkey seed (`SU...`, 58 characters), replacing any earlier
/// choice of credentials: the node signs the broker's challenge with it. `seed` is copied and
/// never appears in messages or logs; a malformed seed makes `steward_node_start` return
/// `STEWARD_RESULT_CONFIG`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_nkey_seed(
    builder: *mut steward_node_builder,
    seed: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let seed = unsafe { text_arg(seed, "seed") }?;
        b.cfg.broker_auth = BrokerAuth::NkeySeed(seed.into());
        Ok(())
    })
}

/// Authenticates to the broker with the nkey seed held in the file at `path` (read at start),
/// replacing any earlier choice of credentials. `path` is copied. An unreadable file or a
/// malformed seed makes `steward_node_start` return `STEWARD_RESULT_CONFIG`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_nkey_seed_file(
    builder: *mut steward_node_builder,
    path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let path = unsafe { text_arg(path, "path") }?;
        b.cfg.broker_auth = BrokerAuth::NkeySeedFile(path.into());
        Ok(())
    })
}

/// Authenticates to the broker with a NATS credentials file (user JWT and nkey seed, as
/// `nsc generate creds` writes it; brokers in operator mode), replacing any earlier choice of
/// credentials. `path` is copied; the file is read at start (an unreadable or malformed one
/// makes `steward_node_start` return `STEWARD_RESULT_CONFIG`).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_credentials_file(
    builder: *mut steward_node_builder,
    path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let path = unsafe { text_arg(path, "path") }?;
        b.cfg.broker_auth = BrokerAuth::CredentialsFile(path.into());
        Ok(())
    })
}

/// Connects without credentials again (the default), forgetting any set before.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_clear_broker_auth(
    builder: *mut steward_node_builder,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.broker_auth = BrokerAuth::None;
        Ok(())
    })
}

/// Trusts the CA certificate(s) in the PEM file at `path` for the broker's certificate,
/// instead of the system's roots. Makes TLS mandatory: a broker without TLS is refused at
/// start. `path` is copied; the file is read at start (`STEWARD_RESULT_CONFIG` if it holds no
/// certificate).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_tls_ca_file(
    builder: *mut steward_node_builder,
    path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let path = unsafe { text_arg(path, "path") }?;
        b.cfg.broker_tls.ca_file = Some(path.into());
        Ok(())
    })
}

/// Presents the client certificate in the PEM file `cert_path`, with the private key in
/// `key_path`, to a broker that verifies clients (mutual TLS). Makes TLS mandatory. Both paths
/// are copied; the files are read at start (`STEWARD_RESULT_CONFIG` if unusable).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_tls_client_cert(
    builder: *mut steward_node_builder,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let cert = unsafe { text_arg(cert_path, "cert_path") }?;
        let key = unsafe { text_arg(key_path, "key_path") }?;
        b.cfg.broker_tls.client_cert = Some(cert.into());
        b.cfg.broker_tls.client_key = Some(key.into());
        Ok(())
    })
}

/// With `on`, refuses a broker that does not offer TLS (off by default; a CA file or client
/// certificate turns it on regardless).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_broker_require_tls(
    builder: *mut steward_node_builder,
    on: bool,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.broker_tls.required = on;
        Ok(())
    })
}

/// Sets the data directory (created if missing) holding the store, logs and `inmsg.txt`. Only
/// one running node may use a directory. `path` is copied.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_data_dir(
    builder: *mut steward_node_builder,
    path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let path = unsafe { arg_str(path, "path") }?;
        if path.is_empty() {
            return Err(FfiError::invalid("the data directory path is empty"));
        }
        b.cfg.data_dir = path.into();
        Ok(())
    })
}

/// Sets the central node's name (receives error reports and hellos, and may call every method
/// here by the default access list). `name` is copied.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_central(
    builder: *mut steward_node_builder,
    name: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let name = unsafe { arg_str(name, "name") }?;
        name_arg(name, "node")?;
        b.cfg.central = name.to_owned();
        Ok(())
    })
}

/// Sets the default ACK timeout in ms (0: fire-and-forget; at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_ack_timeout_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.ack_timeout = arg_millis(ms, "ack timeout", MAX_ACK_TIMEOUT)?;
        Ok(())
    })
}

/// Sets the default number of resends, 0 to 4294967295 (see
/// `steward_node_builder_set_retries_unlimited`).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_retries(
    builder: *mut steward_node_builder,
    retries: i64,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.retries = Some(retries_arg(retries)?);
        Ok(())
    })
}

/// Resends without limit until the ACK comes or the message expires (the default).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_retries_unlimited(
    builder: *mut steward_node_builder,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.retries = None;
        Ok(())
    })
}

pub(crate) fn retries_arg(n: i64) -> Result<u32, FfiError> {
    u32::try_from(n)
        .map_err(|_| FfiError::invalid(format!("retries must be from 0 to {}, got {n}", u32::MAX)))
}

/// Sets the base wait between resends in ms (doubles with jitter per attempt; at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_retry_wait_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.retry_wait = arg_millis(ms, "retry wait", MAX_RETRY_WAIT)?;
        Ok(())
    })
}

/// Sets the cap of the wait between resends in ms (at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_retry_wait_max_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.retry_wait_max = arg_millis(ms, "maximum retry wait", MAX_RETRY_WAIT)?;
        Ok(())
    })
}

/// Sets the default method run-time limit in ms (more than 0, at most 7 days).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_method_timeout_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        let d = arg_millis(ms, "method timeout", MAX_METHOD_TIMEOUT)?;
        if d.is_zero() {
            return Err(FfiError::invalid("method timeout must be more than 0 ms"));
        }
        b.cfg.method_timeout = d;
        Ok(())
    })
}

/// Sets the default time to live in ms (0: messages never expire, the default; at most 10
/// years).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_ttl_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        let d = arg_millis(ms, "ttl", MAX_TTL)?;
        b.cfg.ttl = (!d.is_zero()).then_some(d);
        Ok(())
    })
}

/// Sets the clock skew tolerated between nodes when checking expiry, in ms (at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_clock_skew_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.clock_skew = arg_millis(ms, "clock skew", MAX_INTERVAL)?;
        Ok(())
    })
}

/// Sets how many messages may be in flight per subject (1 to 1000000).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_window(
    builder: *mut steward_node_builder,
    window: i64,
) -> steward_result {
    with_builder(builder, |b| {
        if !(1..=1_000_000).contains(&window) {
            return Err(FfiError::invalid(format!(
                "window must be from 1 to 1000000, got {window}"
            )));
        }
        b.cfg.window = window as usize;
        Ok(())
    })
}

/// Sends `hello` to central every `ms` milliseconds (0: never, the default; at most 24 h).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_hello_interval_ms(
    builder: *mut steward_node_builder,
    ms: i64,
) -> steward_result {
    with_builder(builder, |b| {
        let d = arg_millis(ms, "hello interval", MAX_INTERVAL)?;
        b.cfg.hello_interval = (!d.is_zero()).then_some(d);
        Ok(())
    })
}

/// Sets the output capture limit of `shellCommand`, in bytes per stream (0 to 1 GiB).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_output_limit(
    builder: *mut steward_node_builder,
    bytes: i64,
) -> steward_result {
    with_builder(builder, |b| {
        if !(0..=1 << 30).contains(&bytes) {
            return Err(FfiError::invalid(format!(
                "output limit must be from 0 to 1073741824 bytes, got {bytes}"
            )));
        }
        b.cfg.output_limit = bytes as usize;
        Ok(())
    })
}

/// Watches `<data dir>/inmsg.txt` for messages to send (off by default).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_watch_inmsg(
    builder: *mut steward_node_builder,
    on: bool,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.watch_inmsg = on;
        Ok(())
    })
}

/// Serves the built-in methods `shellCommand`, `echo`, `textLogging`, `errorLog` and `hello`
/// (on by default).
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_builtin_methods(
    builder: *mut steward_node_builder,
    on: bool,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.builtin_methods = on;
        Ok(())
    })
}

/// Adds an access rule: node `from` may call `method` on this node. `"*"` matches every node
/// or method. Rules add to the default list (central may call everything; everyone may send
/// `errorLog` and `hello`); a node may always call itself. Both strings are copied.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_allow(
    builder: *mut steward_node_builder,
    from: *const c_char,
    method: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let from = unsafe { arg_str(from, "from") }?;
        let method = unsafe { arg_str(method, "method") }?;
        if from != "*" {
            name_arg(from, "node")?;
        }
        if method != "*" {
            name_arg(method, "method")?;
        }
        b.allow.push(steward::Rule {
            from: steward::Pattern::parse(from),
            method: steward::Pattern::parse(method),
            argv: steward::Argv::Any,
        });
        Ok(())
    })
}

/// Adds an access rule that also restricts the data (for `shellCommand`: the argv): node
/// `from` may call `method` only with exactly the `argc` strings of `argv` (`prefix` false), or
/// with data that starts with them (`prefix` true: `{"systemctl", "status"}` allows
/// `systemctl status nginx`, not `systemctl stop nginx`). Elements are compared whole. Never
/// allow a prefix after which an argument can change what runs (`{"bash", "-c"}`). `"*"` for
/// `from`/`method` matches every node/method. Everything is copied; `argv` may be NULL only when
/// `argc` is 0. Returns `STEWARD_RESULT_NULL_PARAMETER` for a NULL element.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_allow_argv(
    builder: *mut steward_node_builder,
    from: *const c_char,
    method: *const c_char,
    argv: *const *const c_char,
    argc: usize,
    prefix: bool,
) -> steward_result {
    with_builder(builder, |b| {
        let from = unsafe { arg_str(from, "from") }?;
        let method = unsafe { arg_str(method, "method") }?;
        if from != "*" {
            name_arg(from, "node")?;
        }
        if method != "*" {
            name_arg(method, "method")?;
        }
        let mut list = Vec::with_capacity(argc);
        if argc > 0 {
            if argv.is_null() {
                return Err(FfiError::null("argv"));
            }
            for i in 0..argc {
                let p = unsafe { *argv.add(i) };
                list.push(unsafe { arg_str(p, "argv element") }?.to_owned());
            }
        }
        b.allow.push(steward::Rule {
            from: steward::Pattern::parse(from),
            method: steward::Pattern::parse(method),
            argv: if prefix {
                steward::Argv::Prefix(list)
            } else {
                steward::Argv::Exact(list)
            },
        });
        Ok(())
    })
}

/// Starts the access list empty instead of the default one (which lets central call every
/// method and every node send `errorLog` and `hello`): only the rules added with
/// `steward_node_builder_allow` / `_allow_argv` apply (and a node may always call itself);
/// everything else is refused.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_clear_access(
    builder: *mut steward_node_builder,
) -> steward_result {
    with_builder(builder, |b| {
        b.access_cleared = true;
        b.allow.clear();
        Ok(())
    })
}

/// Whether every incoming message must be signed by a key this node trusts (its own, central's
/// pinned key for central, keys added with `steward_node_builder_trust_key`, and keys central
/// approved); anything else is refused and never runs. Required by default (closed): a node
/// runs nothing from central until it joined (`steward_node_builder_set_join_token`) or was
/// given central's key (`steward_node_builder_set_central_key`), and central takes results
/// only from nodes whose key it approved.
///
/// `false` turns checking off (signatures = off): the node then runs what its access list
/// allows from anyone who can publish on the broker, under any name, and warns so at start.
/// It still signs what it sends and accepts only signed trust updates. `true` restores the
/// default.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_require_signatures(
    builder: *mut steward_node_builder,
    on: bool,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.signatures = if on {
            steward::SignaturePolicy::Required
        } else {
            steward::SignaturePolicy::Off
        };
        Ok(())
    })
}

fn key_arg(key: *const c_char) -> Result<steward::PublicKey, FfiError> {
    let key = unsafe { arg_str(key, "key") }?;
    steward::PublicKey::parse(key)
        .map_err(|e| FfiError::invalid(e.to_string().trim_start_matches("invalid configuration: ")))
}

/// Pins central's public key (base64, as `steward_node_public_key` of central gives it): trust
/// updates must be signed with it, and messages from central are verified with it. `key` is
/// copied. Returns `STEWARD_RESULT_INVALID_ARGUMENT` for a malformed key.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_central_key(
    builder: *mut steward_node_builder,
    key: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        b.cfg.central_key = Some(key_arg(key)?);
        Ok(())
    })
}

/// Trusts `key` (base64) for messages from `node`, in addition to the keys central approved.
/// Both are copied. Returns `STEWARD_RESULT_INVALID_NAME` or `STEWARD_RESULT_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_trust_key(
    builder: *mut steward_node_builder,
    node: *const c_char,
    key: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let node = unsafe { arg_str(node, "node") }?;
        name_arg(node, "node")?;
        let key = key_arg(key)?;
        b.cfg.trusted_keys.push(steward::TrustedKey {
            node: node.to_owned(),
            key,
        });
        Ok(())
    })
}

/// Sets this node's private key file (default: `node.key` in the data directory, created with
/// mode 0600 on first start; the public key goes beside it). `path` is copied.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_set_key_file(
    builder: *mut steward_node_builder,
    path: *const c_char,
) -> steward_result {
    with_builder(builder, |b| {
        let path = unsafe { arg_str(path, "path") }?;
        if path.is_empty() {
            return Err(FfiError::invalid("the key file path is empty"));
        }
        b.cfg.key_file = Some(path.into());
        Ok(())
    })
}

/// Serves `method` (a `steward_kind`: command or event) with a C callback from the moment the
/// node starts, so messages resumed at start find it. Serving the same name again replaces the
/// earlier callback (whose `drop` then runs right away).
///
/// On success the builder owns `callback` (its `drop` runs exactly once: when the node stops,
/// the callback is replaced, or the builder is freed or fails to start). On failure the
/// callback is not taken: `drop` is not called. Returns `STEWARD_RESULT_INVALID_NAME` for a bad
/// or reserved (`_`-prefixed) name, `STEWARD_RESULT_INVALID_ARGUMENT` for a bad kind,
/// `STEWARD_RESULT_NULL_PARAMETER` if `callback.call` is NULL.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_serve(
    builder: *mut steward_node_builder,
    method: *const c_char,
    kind: u32,
    callback: steward_method_callback,
) -> steward_result {
    with_builder(builder, |b| {
        let method = unsafe { arg_str(method, "method") }?;
        method_name_arg(method)?;
        let kind = kind_arg(kind)?;
        let slot = take::<MethodCall>(callback.context, callback.call, callback.drop, b.id)?;
        b.methods.retain(|(m, _, _)| m != method);
        b.methods
            .push((method.to_owned(), kind, Arc::new(Served::Method(slot))));
        Ok(())
    })
}

/// Handles incoming events of `method` with a C callback from the moment the node starts (the
/// event is ACKed as handled when the callback returns). Ownership rules as for
/// `steward_node_builder_serve`.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_on_event(
    builder: *mut steward_node_builder,
    method: *const c_char,
    callback: steward_event_callback,
) -> steward_result {
    with_builder(builder, |b| {
        let method = unsafe { arg_str(method, "method") }?;
        method_name_arg(method)?;
        let slot = take::<EventCall>(callback.context, callback.call, callback.drop, b.id)?;
        b.methods.retain(|(m, _, _)| m != method);
        b.methods.push((
            method.to_owned(),
            Kind::Event,
            Arc::new(Served::Event(slot)),
        ));
        Ok(())
    })
}

/// Registers a final-state callback as the node starts (see `steward_status_callback`). A final
/// state reached during the start itself (a message that expired while the node was down) may
/// come before the callback is registered: query such messages with
/// `steward_node_message_status`. On success the builder owns `callback`; on failure `drop` is
/// not called.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_on_finished(
    builder: *mut steward_node_builder,
    callback: steward_status_callback,
) -> steward_result {
    with_builder(builder, |b| {
        let slot = take::<StatusCall>(callback.context, callback.call, callback.drop, b.id)?;
        b.finished.push(Arc::new(slot));
        Ok(())
    })
}

/// Registers an error-report callback from the moment the node starts (see
/// `steward_error_callback`). On success the builder owns `callback`; on failure `drop` is not
/// called.
#[no_mangle]
pub unsafe extern "C" fn steward_node_builder_on_error(
    builder: *mut steward_node_builder,
    callback: steward_error_callback,
) -> steward_result {
    with_builder(builder, |b| {
        let slot = take::<ErrorCall>(callback.context, callback.call, callback.drop, b.id)?;
        b.errors.push(Arc::new(slot));
        Ok(())
    })
}
