//! The options of `Node(...)`, checked when the node is configured: a wrong type or a bad value
//! is a `ConfigError` naming the option. The broker credentials and TLS options are checked by
//! [`crate::security`]; the result is the core's `NodeConfig` plus what the binding adds.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyString;

use steward::{AccessList, NodeConfig};

use crate::convert;
use crate::errors::{config_error, py_result};
use crate::security::SecurityArgs;

/// Address of the embedded broker for `embedded_broker=True`.
const DEFAULT_EMBEDDED_ADDRESS: &str = "127.0.0.1:4222";

/// The keyword arguments of `Node()`, as given (`None` when left out).
pub(crate) struct NodeArgs<'a, 'py> {
    pub name: &'a Bound<'py, PyAny>,
    pub brokers: Option<&'a Bound<'py, PyAny>>,
    pub data_dir: Option<&'a Bound<'py, PyAny>>,
    pub central: Option<&'a Bound<'py, PyAny>>,
    pub ack_timeout: Option<&'a Bound<'py, PyAny>>,
    pub retries: Option<&'a Bound<'py, PyAny>>,
    pub retry_wait: Option<&'a Bound<'py, PyAny>>,
    pub retry_wait_max: Option<&'a Bound<'py, PyAny>>,
    pub method_timeout: Option<&'a Bound<'py, PyAny>>,
    pub ttl: Option<&'a Bound<'py, PyAny>>,
    pub clock_skew: Option<&'a Bound<'py, PyAny>>,
    pub window: Option<&'a Bound<'py, PyAny>>,
    pub hello_interval: Option<&'a Bound<'py, PyAny>>,
    pub output_limit: Option<&'a Bound<'py, PyAny>>,
    pub allow: Option<&'a Bound<'py, PyAny>>,
    pub default_access: bool,
    pub signatures: Option<&'a Bound<'py, PyAny>>,
    pub central_key: Option<&'a Bound<'py, PyAny>>,
    pub trusted_keys: Option<&'a Bound<'py, PyAny>>,
    pub key_file: Option<&'a Bound<'py, PyAny>>,
    pub join: Option<&'a Bound<'py, PyAny>>,
    pub auto_approve: bool,
    pub watch_inmsg: bool,
    pub builtin_methods: bool,
    pub embedded_broker: Option<&'a Bound<'py, PyAny>>,
    /// The `broker_*` options.
    pub security: SecurityArgs<'a, 'py>,
    pub metrics_address: Option<&'a Bound<'py, PyAny>>,
}

/// The options of `Node()`, checked.
pub(crate) struct NodeOptions {
    pub cfg: NodeConfig,
    /// True when `brokers` was given: an embedded broker then does not replace them.
    pub brokers_given: bool,
    /// The address of the embedded broker to start with the node, if any.
    pub embedded: Option<String>,
}

impl NodeArgs<'_, '_> {
    /// Checks the options into a [`NodeOptions`], raising for the first bad one.
    pub(crate) fn parse(self) -> PyResult<NodeOptions> {
        let NodeArgs {
            name,
            brokers,
            data_dir,
            central,
            ack_timeout,
            retries,
            retry_wait,
            retry_wait_max,
            method_timeout,
            ttl,
            clock_skew,
            window,
            hello_interval,
            output_limit,
            allow,
            default_access,
            signatures,
            central_key,
            trusted_keys,
            key_file,
            join,
            auto_approve,
            watch_inmsg,
            builtin_methods,
            embedded_broker,
            security,
            metrics_address,
        } = self;
        let err = convert::config_error as convert::ErrFn;
        let name = convert::string(name, "name", err)?;
        py_result(steward::validate_name("node", &name))?;
        let mut cfg = NodeConfig::new(name);
        let brokers_given = brokers.is_some_and(|b| !b.is_none());
        if let Some(b) = brokers.filter(|b| !b.is_none()) {
            cfg.brokers = if b.is_instance_of::<PyString>() {
                vec![convert::string(b, "brokers", err)?]
            } else {
                convert::strings(b, "brokers", err)?
            };
            if cfg.brokers.is_empty() {
                return Err(config_error("brokers", "give at least one broker URL"));
            }
        }
        if let Some(d) = data_dir.filter(|d| !d.is_none()) {
            let path = d
                .py()
                .import("os")?
                .call_method1("fspath", (d,))
                .map_err(|_| {
                    config_error(
                        "data_dir",
                        format!(
                            "expected a path (str or os.PathLike), found {}",
                            convert::type_name(d)
                        ),
                    )
                })?;
            cfg.data_dir = PathBuf::from(convert::string(&path, "data_dir", err)?);
        }
        if let Some(c) = central.filter(|c| !c.is_none()) {
            cfg.central = convert::string(c, "central", err)?;
            steward::validate_name("node", &cfg.central).map_err(|e| config_error("central", e))?;
        }
        if let Some(t) = join.filter(|t| !t.is_none()) {
            let token = steward::JoinToken::parse(&convert::string(t, "join", err)?)
                .map_err(|e| config_error("join", without_prefix(e)))?;
            if central.is_some_and(|c| !c.is_none()) && cfg.central != token.central() {
                return Err(config_error(
                    "join",
                    format!(
                        "the token is for central {:?}, but central={:?}; leave out central= (the token names it) or use a token from {}",
                        token.central(),
                        cfg.central,
                        cfg.central
                    ),
                ));
            }
            cfg.central = token.central().to_owned();
            cfg.join = Some(token);
        }
        if auto_approve && cfg.name != cfg.central {
            return Err(config_error(
                "auto_approve",
                format!(
                    "is a setting of central ({}), and {} is not central",
                    cfg.central, cfg.name
                ),
            ));
        }
        cfg.auto_approve = auto_approve;
        cfg.access = AccessList::default_for_node(&cfg.name, &cfg.central);
        if let Some(d) = convert::opt_seconds(ack_timeout, "ack_timeout", err)? {
            cfg.ack_timeout = d;
        }
        if let Some(r) = retries.filter(|r| !r.is_none()) {
            cfg.retries = Some(convert::whole(r, "retries", err, u32::MAX as u64)? as u32);
        }
        if let Some(d) = convert::opt_seconds(retry_wait, "retry_wait", err)? {
            cfg.retry_wait = d;
        }
        if let Some(d) = convert::opt_seconds(retry_wait_max, "retry_wait_max", err)? {
            cfg.retry_wait_max = d;
        }
        if let Some(d) = convert::opt_seconds(method_timeout, "method_timeout", err)? {
            if d.is_zero() {
                return Err(config_error(
                    "method_timeout",
                    "must be more than 0 seconds",
                ));
            }
            cfg.method_timeout = d;
        }
        cfg.ttl = convert::opt_seconds(ttl, "ttl", err)?;
        if let Some(d) = convert::opt_seconds(clock_skew, "clock_skew", err)? {
            cfg.clock_skew = d;
        }
        if let Some(w) = window.filter(|w| !w.is_none()) {
            let w = convert::whole(w, "window", err, u32::MAX as u64)?;
            if w == 0 {
                return Err(config_error("window", "must be at least 1"));
            }
            cfg.window = w as usize;
        }
        cfg.hello_interval = convert::opt_seconds(hello_interval, "hello_interval", err)?;
        if cfg.hello_interval == Some(Duration::ZERO) {
            return Err(config_error(
                "hello_interval",
                "must be more than 0 seconds (or None for off)",
            ));
        }
        if let Some(o) = output_limit.filter(|o| !o.is_none()) {
            cfg.output_limit = convert::whole(o, "output_limit", err, u32::MAX as u64)? as usize;
        }
        if !default_access {
            cfg.access = AccessList::empty();
        }
        if let Some(rules) = allow.filter(|a| !a.is_none()) {
            cfg.access = parse_allow(rules, cfg.access)?;
        }
        if let Some(p) = signatures.filter(|p| !p.is_none()) {
            let text = convert::string(p, "signatures", err)?;
            cfg.signatures = text.parse().map_err(|_| {
                config_error(
                    "signatures",
                    "expected \"required\", \"off\" (sign, don't check) or \"unsigned\"",
                )
            })?;
        }
        if let Some(k) = central_key.filter(|k| !k.is_none()) {
            let text = convert::string(k, "central_key", err)?;
            cfg.central_key =
                Some(steward::PublicKey::parse(&text).map_err(|e| config_error("central_key", e))?);
        }
        if let Some(t) = trusted_keys.filter(|t| !t.is_none()) {
            let map = t.cast::<pyo3::types::PyDict>().map_err(|_| {
                config_error(
                    "trusted_keys",
                    format!(
                        "expected a dict of node name to base64 key, found {}",
                        convert::type_name(t)
                    ),
                )
            })?;
            for (node, key) in map.iter() {
                let node = convert::string(&node, "trusted_keys", err)?;
                steward::validate_name("node", &node)
                    .map_err(|e| config_error("trusted_keys", e))?;
                let key = convert::string(&key, &format!("trusted_keys[{node:?}]"), err)?;
                let key = steward::PublicKey::parse(&key)
                    .map_err(|e| config_error(&format!("trusted_keys[{node:?}]"), e))?;
                cfg.trusted_keys.push(steward::TrustedKey { node, key });
            }
        }
        if let Some(k) = key_file.filter(|k| !k.is_none()) {
            let path = k
                .py()
                .import("os")?
                .call_method1("fspath", (k,))
                .map_err(|_| {
                    config_error(
                        "key_file",
                        format!(
                            "expected a path (str or os.PathLike), found {}",
                            convert::type_name(k)
                        ),
                    )
                })?;
            cfg.key_file = Some(PathBuf::from(convert::string(&path, "key_file", err)?));
        }
        cfg.watch_inmsg = watch_inmsg;
        cfg.builtin_methods = builtin_methods;
        (cfg.broker_auth, cfg.broker_tls) = security.resolve()?;
        if let Some(a) = metrics_address.filter(|a| !a.is_none()) {
            let text = convert::string(a, "metrics_address", err)?;
            cfg.metrics_address = Some(text.trim().parse().map_err(|_| {
                config_error(
                    "metrics_address",
                    format!("{text:?} is not an address; give \"IP:PORT\", e.g. \"127.0.0.1:9464\" (port 0 picks a free port)"),
                )
            })?);
        }
        let embedded = match embedded_broker {
            None => None,
            Some(e) if e.is_none() => None,
            Some(e) if e.is_instance_of::<pyo3::types::PyBool>() => {
                if e.is_truthy()? {
                    Some(DEFAULT_EMBEDDED_ADDRESS.to_owned())
                } else {
                    None
                }
            }
            Some(e) => Some(convert::string(e, "embedded_broker", err)?),
        };
        Ok(NodeOptions {
            cfg,
            brokers_given,
            embedded,
        })
    }
}

/// The reason of a configuration error, without the core's "invalid configuration: " (the
/// Python message adds its own, naming the option).
fn without_prefix(e: steward::Error) -> String {
    match e {
        steward::Error::Config { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn parse_allow(rules: &Bound<'_, PyAny>, mut access: AccessList) -> PyResult<AccessList> {
    const SHAPE: &str = "expected a (from_node, method) pair such as (\"ship2\", \"echo\"), or (from_node, method, {\"argv\": [...]}) / (from_node, method, {\"argv_prefix\": [...]})";
    if rules.is_instance_of::<PyString>() {
        return Err(config_error(
            "allow",
            "expected a list of (from_node, method) pairs, found a str",
        ));
    }
    let iter = rules.try_iter().map_err(|_| {
        config_error(
            "allow",
            format!(
                "expected a list of (from_node, method) pairs, found {}",
                convert::type_name(rules)
            ),
        )
    })?;
    for (i, rule) in iter.enumerate() {
        let rule = rule?;
        let at = format!("allow[{i}]");
        let items: Vec<Bound<'_, PyAny>> = if rule.is_instance_of::<PyString>() {
            Vec::new()
        } else {
            match rule.try_iter() {
                Ok(it) => it.collect::<PyResult<_>>()?,
                Err(_) => Vec::new(),
            }
        };
        if items.len() != 2 && items.len() != 3 {
            return Err(config_error(&at, SHAPE));
        }
        let from = convert::string(&items[0], &at, convert::config_error)?;
        let method = convert::string(&items[1], &at, convert::config_error)?;
        for (what, name) in [("node", &from), ("method", &method)] {
            if name != "*" {
                steward::validate_name(what, name).map_err(|e| config_error(&at, e))?;
            }
        }
        let argv = match items.get(2).filter(|a| !a.is_none()) {
            None => steward::Argv::Any,
            Some(spec) => {
                let d = spec
                    .cast::<pyo3::types::PyDict>()
                    .map_err(|_| config_error(&at, SHAPE))?;
                let exact = d.get_item("argv")?;
                let prefix = d.get_item("argv_prefix")?;
                if d.len() != usize::from(exact.is_some()) + usize::from(prefix.is_some()) {
                    return Err(config_error(
                        &at,
                        "the argv restriction takes only the keys \"argv\" or \"argv_prefix\"",
                    ));
                }
                match (exact, prefix) {
                    (Some(a), None) => steward::Argv::Exact(convert::strings(
                        &a,
                        &format!("{at}.argv"),
                        convert::config_error,
                    )?),
                    (None, Some(p)) => steward::Argv::Prefix(convert::strings(
                        &p,
                        &format!("{at}.argv_prefix"),
                        convert::config_error,
                    )?),
                    _ => {
                        return Err(config_error(
                            &at,
                            "give exactly one of \"argv\" and \"argv_prefix\"",
                        ))
                    }
                }
            }
        };
        access = access.allow_argv(&from, &method, argv);
    }
    Ok(access)
}
