//! `Node(..., broker_user=..., broker_tls_ca=...)`: the broker credentials and TLS options,
//! checked here so a wrong type or a contradictory choice is a `ConfigError` naming the option.

use std::path::PathBuf;

use pyo3::prelude::*;

use steward::{BrokerAuth, BrokerTls, Secret};

use crate::convert;
use crate::errors::config_error;

/// The security keyword arguments of `Node()`, as given (`None` when left out).
pub(crate) struct SecurityArgs<'a, 'py> {
    pub user: Option<&'a Bound<'py, PyAny>>,
    pub password: Option<&'a Bound<'py, PyAny>>,
    pub token: Option<&'a Bound<'py, PyAny>>,
    pub nkey_seed: Option<&'a Bound<'py, PyAny>>,
    pub nkey_seed_file: Option<&'a Bound<'py, PyAny>>,
    pub creds: Option<&'a Bound<'py, PyAny>>,
    pub tls_ca: Option<&'a Bound<'py, PyAny>>,
    pub tls_cert: Option<&'a Bound<'py, PyAny>>,
    pub tls_key: Option<&'a Bound<'py, PyAny>>,
    pub require_tls: bool,
}

fn given<'a, 'py>(v: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    v.filter(|v| !v.is_none())
}

/// A `str` option (the message never shows the value: it may be a secret).
fn text(v: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<String>> {
    let err = convert::config_error as convert::ErrFn;
    match given(v) {
        None => Ok(None),
        Some(v) => {
            let s = convert::string(v, name, err)?;
            if s.is_empty() {
                return Err(config_error(name, "is empty"));
            }
            Ok(Some(s))
        }
    }
}

/// A path option: `str` or `os.PathLike`.
fn path(v: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<PathBuf>> {
    let Some(v) = given(v) else { return Ok(None) };
    let fspath = v
        .py()
        .import("os")?
        .call_method1("fspath", (v,))
        .map_err(|_| {
            config_error(
                name,
                format!(
                    "expected a path (str or os.PathLike), found {}",
                    convert::type_name(v)
                ),
            )
        })?;
    let s = convert::string(&fspath, name, convert::config_error)?;
    if s.is_empty() {
        return Err(config_error(name, "is empty"));
    }
    Ok(Some(PathBuf::from(s)))
}

impl SecurityArgs<'_, '_> {
    /// The one way to authenticate, and the TLS settings.
    pub(crate) fn resolve(&self) -> PyResult<(BrokerAuth, BrokerTls)> {
        let user = text(self.user, "broker_user")?;
        let password = match given(self.password) {
            // An empty password is a password: only the type is checked.
            Some(v) => Some(convert::string(
                v,
                "broker_password",
                convert::config_error,
            )?),
            None => None,
        };
        let mut found: Vec<(&str, BrokerAuth)> = Vec::new();
        match (user, password) {
            (Some(user), Some(password)) => found.push((
                "broker_user",
                BrokerAuth::UserPassword {
                    user,
                    password: Secret::new(password),
                },
            )),
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "broker_user",
                    "give broker_user and broker_password together",
                ))
            }
        }
        if let Some(t) = text(self.token, "broker_token")? {
            found.push(("broker_token", BrokerAuth::Token(Secret::new(t))));
        }
        if let Some(s) = text(self.nkey_seed, "broker_nkey_seed")? {
            found.push(("broker_nkey_seed", BrokerAuth::NkeySeed(Secret::new(s))));
        }
        if let Some(p) = path(self.nkey_seed_file, "broker_nkey_seed_file")? {
            found.push(("broker_nkey_seed_file", BrokerAuth::NkeySeedFile(p)));
        }
        if let Some(p) = path(self.creds, "broker_creds")? {
            found.push(("broker_creds", BrokerAuth::CredentialsFile(p)));
        }
        let auth = match found.len() {
            0 => BrokerAuth::None,
            1 => found.pop().map(|(_, a)| a).unwrap_or_default(),
            _ => {
                let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
                return Err(config_error(
                    names[1],
                    format!(
                        "give one way to authenticate to the broker, not {}",
                        names.join(" and ")
                    ),
                ));
            }
        };
        let tls = BrokerTls {
            ca_file: path(self.tls_ca, "broker_tls_ca")?,
            client_cert: path(self.tls_cert, "broker_tls_cert")?,
            client_key: path(self.tls_key, "broker_tls_key")?,
            required: self.require_tls,
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(config_error(
                "broker_tls_cert",
                "give broker_tls_cert and broker_tls_key together",
            ));
        }
        Ok((auth, tls))
    }
}
