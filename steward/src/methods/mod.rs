//! The built-in methods every node serves.

pub(crate) mod echo;
pub(crate) mod error_log;
pub(crate) mod hello;
pub(crate) mod shell;
pub(crate) mod text_logging;

use crate::wire::handler::Method;
use crate::wire::message::Kind;

/// Name and definition of every built-in method.
pub(crate) fn builtins() -> Vec<(&'static str, Method)> {
    vec![
        ("shellCommand", Method::new(Kind::Command, shell::handle)),
        (
            "echo",
            Method::new(Kind::Command, echo::handle).repeatable(),
        ),
        (
            "textLogging",
            Method::new(Kind::Event, text_logging::handle),
        ),
        ("errorLog", Method::new(Kind::Event, error_log::handle)),
        (
            "hello",
            Method::new(Kind::Event, hello::handle).repeatable(),
        ),
    ]
}
