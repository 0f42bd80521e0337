//! Python bindings for steward: the private extension module `steward._steward`, re-exported
//! by the `steward` package (see `python/steward/__init__.py` and the `.pyi` stubs).
//!
//! * [`node`]: `Node` (lifecycle, send, serve) and the method decorator.
//! * [`receipt`]: `Receipt` (blocking and `await` waits for results).
//! * [`runtime`]: a started node (its tokio runtime, core node, callback thread and embedded
//!   broker), the blocking helpers `Node` and `Receipt` share, and how it stops.
//! * [`dispatch`]: the per-node Python callback thread fed by a queue; tokio threads never
//!   touch the interpreter.
//! * [`types`]: value objects (`Result`, `MessageStatus`, `DestinationStatus`, `ErrorReport`,
//!   `Request`).
//! * [`errors`]: `StewardError` and one subclass per core error kind.
//! * [`logging`]: Rust `tracing` events forwarded to Python `logging`.
//! * [`options`]: the options of `Node()`, checked into the core's configuration.
//! * [`security`]: the broker credentials and TLS options of `Node()`.
//! * [`convert`]: argument checks with errors that name the argument.

mod convert;
mod dispatch;
mod errors;
mod logging;
mod node;
mod options;
mod receipt;
mod runtime;
mod security;
mod types;

use pyo3::prelude::*;

#[pymodule]
fn _steward(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    errors::register(m)?;
    m.add_class::<node::PyNode>()?;
    m.add_class::<node::MethodDecorator>()?;
    m.add_class::<receipt::PyReceipt>()?;
    m.add_class::<types::PyMethodResult>()?;
    m.add_class::<types::PyMessageStatus>()?;
    m.add_class::<types::PyDestinationStatus>()?;
    m.add_class::<types::PyErrorReport>()?;
    m.add_class::<types::PyRequest>()?;
    m.add_function(wrap_pyfunction!(node::_stop_all, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("INSTALL_HINT", steward::INSTALL_HINT)?;
    logging::install(py)?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("_stop_all")?,))?;
    Ok(())
}
