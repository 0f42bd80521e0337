//! Checked conversions of Python arguments, with errors that name the argument.
//!
//! Arguments are taken as `Bound<PyAny>` and converted here rather than by PyO3's automatic
//! extraction, so a wrong type raises the steward exception of the call (`InvalidMessage` for
//! message fields, `ConfigError` for node options) with a message that says what to pass.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PySet, PyString,
};

/// Builds the error for one argument (e.g. [`crate::errors::invalid_message`]).
pub(crate) type ErrFn = fn(&str, String) -> PyErr;

pub(crate) fn invalid_message(field: &str, reason: String) -> PyErr {
    crate::errors::invalid_message(field, reason)
}

pub(crate) fn config_error(option: &str, reason: String) -> PyErr {
    crate::errors::config_error(option, reason)
}

/// The Python type name of `v`, for messages.
pub(crate) fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A number of seconds (int or float, or a `datetime.timedelta`), at least zero and finite.
pub(crate) fn seconds(v: &Bound<'_, PyAny>, name: &str, err: ErrFn) -> PyResult<Duration> {
    let secs: f64 = if v.is_instance_of::<PyBool>() {
        return Err(err(
            name,
            "expected a number of seconds, found a bool".into(),
        ));
    } else if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
        v.extract()
            .map_err(|_| err(name, format!("{v} seconds is out of range")))?
    } else if v.hasattr("total_seconds")? && type_name(v) == "timedelta" {
        v.call_method0("total_seconds")?.extract()?
    } else {
        return Err(err(
            name,
            format!(
                "expected a number of seconds, found {} {}",
                article(v),
                type_name(v)
            ),
        ));
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(err(name, format!("expected seconds >= 0, found {secs}")));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| err(name, format!("{secs} seconds is out of range")))
}

/// Like [`seconds`], with `None` allowed.
pub(crate) fn opt_seconds(
    v: Option<&Bound<'_, PyAny>>,
    name: &str,
    err: ErrFn,
) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => seconds(v, name, err).map(Some),
    }
}

/// A whole number from 0 to `max`.
pub(crate) fn whole(v: &Bound<'_, PyAny>, name: &str, err: ErrFn, max: u64) -> PyResult<u64> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(err(
            name,
            format!(
                "expected a whole number, found {} {}",
                article(v),
                type_name(v)
            ),
        ));
    }
    match v.extract::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(err(
            name,
            format!("expected a whole number from 0 to {max}, found {v}"),
        )),
    }
}

/// A `str` argument.
pub(crate) fn string(v: &Bound<'_, PyAny>, name: &str, err: ErrFn) -> PyResult<String> {
    let s = v.cast::<PyString>().map_err(|_| {
        err(
            name,
            format!("expected a str, found {} {}", article(v), type_name(v)),
        )
    })?;
    s.extract::<String>().map_err(|_| {
        err(
            name,
            "the string is not valid Unicode (lone surrogate)".into(),
        )
    })
}

/// A list (or tuple, or other non-string iterable) of `str`.
pub(crate) fn strings(v: &Bound<'_, PyAny>, name: &str, err: ErrFn) -> PyResult<Vec<String>> {
    if v.is_instance_of::<PyString>() {
        return Err(err(
            name,
            format!(
                "expected a list of str, found a str; wrap it in a list: [{}]",
                v.repr()?
            ),
        ));
    }
    // Iterable but surely a mistake: bytes iterate as ints, mappings as their keys, sets in
    // no particular order.
    if v.is_instance_of::<PyBytes>()
        || v.is_instance_of::<PyByteArray>()
        || v.is_instance_of::<PyDict>()
        || v.is_instance_of::<PySet>()
        || v.is_instance_of::<PyFrozenSet>()
    {
        return Err(err(
            name,
            format!(
                "expected a list of str, found {} {}",
                article(v),
                type_name(v)
            ),
        ));
    }
    let iter = v.try_iter().map_err(|_| {
        err(
            name,
            format!(
                "expected a list of str, found {} {}",
                article(v),
                type_name(v)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        out.push(string(&item, &format!("{name}[{i}]"), err)?);
    }
    Ok(out)
}

fn article(v: &Bound<'_, PyAny>) -> &'static str {
    match type_name(v).chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}
