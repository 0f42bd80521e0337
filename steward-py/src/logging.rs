//! Rust `tracing` events reach Python's `logging` (loggers `steward.<module>`).
//!
//! Events can fire on any thread, including tokio workers, which must never wait for the
//! interpreter. So the layer only formats the event and pushes it onto a bounded queue, then
//! wakes the running nodes' callback threads (each registered as a [`Wake`]); whichever attached
//! thread drains next (a callback thread, or a Python thread returning from `start()`/`stop()`)
//! hands the records to `logging`.
//! The level that Python's `steward` logger lets through is mirrored in an atomic, so disabled
//! events cost one comparison and are never formatted.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Records kept while no thread drains them; older ones are dropped (and counted) beyond this.
const QUEUE_CAPACITY: usize = 10_000;

/// Python logging levels.
const PY_ERROR: u8 = 40;
const PY_WARNING: u8 = 30;
const PY_INFO: u8 = 20;
const PY_DEBUG: u8 = 10;
const PY_TRACE: u8 = 5;

/// The lowest Python level the `steward` logger lets through (refreshed on every drain).
static MIN_LEVEL: AtomicU8 = AtomicU8::new(PY_WARNING);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUE: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());
static WAKERS: Mutex<Vec<Weak<dyn Wake>>> = Mutex::new(Vec::new());

/// A thread that can drain the queue (a node's callback thread), woken when records arrive.
pub(crate) trait Wake: Send + Sync {
    /// True while the thread runs and will drain when woken.
    fn is_running(&self) -> bool;
    /// Asks the thread to drain soon; never blocks and never touches Python.
    fn wake(&self);
}

struct Record {
    level: u8,
    logger: String,
    message: String,
    file: Option<&'static str>,
    line: Option<u32>,
}

fn py_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => PY_ERROR,
        Level::WARN => PY_WARNING,
        Level::INFO => PY_INFO,
        Level::DEBUG => PY_DEBUG,
        Level::TRACE => PY_TRACE,
    }
}

/// `steward::publisher` becomes `steward.publisher`; other crates go under `steward.`.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    if dotted == "steward" || dotted.starts_with("steward.") {
        dotted
    } else {
        format!("steward.{dotted}")
    }
}

/// The layer that queues events for Python.
struct PythonLogLayer;

impl<S: Subscriber> Layer<S> for PythonLogLayer {
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        py_level(meta.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // The Python level can change at any time, so decide per event.
        tracing::subscriber::Interest::sometimes()
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        if !visitor.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&visitor.fields);
        }
        push(Record {
            level: py_level(meta.level()),
            logger: logger_name(meta.target()),
            message,
            file: meta.file(),
            line: meta.line(),
        });
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl MessageVisitor {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={}", field.name(), value);
    }
}

fn push(record: Record) {
    if let Ok(mut q) = QUEUE.lock() {
        if q.len() >= QUEUE_CAPACITY {
            q.pop_front();
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(record);
    }
    let waker = WAKERS
        .lock()
        .ok()
        .and_then(|w| w.iter().filter_map(Weak::upgrade).find(|d| d.is_running()));
    if let Some(d) = waker {
        d.wake();
    }
}

/// Installs the layer as the process's global subscriber (once; a no-op if the embedding
/// program already installed one) and reads the `steward` logger's level.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(PythonLogLayer),
    );
    refresh_level(py)
}

/// Lets a running callback thread drain the log queue (held weakly: dropping it unregisters).
pub(crate) fn add_waker<W: Wake + 'static>(waker: &Arc<W>) {
    let waker: Weak<dyn Wake> = Arc::<W>::downgrade(waker);
    if let Ok(mut w) = WAKERS.lock() {
        w.retain(|x| x.strong_count() > 0);
        w.push(waker);
    }
}

/// Mirrors the effective level of Python's `steward` logger.
pub(crate) fn refresh_level(py: Python<'_>) -> PyResult<()> {
    let level: i64 = steward_logger(py)?
        .call_method0("getEffectiveLevel")?
        .extract()?;
    MIN_LEVEL.store(level.clamp(0, 255) as u8, Ordering::Relaxed);
    Ok(())
}

fn steward_logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?
        .call_method1("getLogger", ("steward",))
}

/// Hands every queued record to Python's `logging`. Call on an attached thread.
pub(crate) fn drain(py: Python<'_>) {
    let records: Vec<Record> = match QUEUE.lock() {
        Ok(mut q) => q.drain(..).collect(),
        Err(_) => return,
    };
    if let Err(e) = emit(py, records) {
        // Logging itself failed (a broken handler); print it like Python's logging would.
        e.print(py);
    }
    let _ = refresh_level(py);
}

fn emit(py: Python<'_>, records: Vec<Record>) -> PyResult<()> {
    let logging = py.import("logging")?;
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        steward_logger(py)?.call_method1(
            "warning",
            (format!("{dropped} log records from steward's Rust core were dropped while no thread could forward them"),),
        )?;
    }
    for r in records {
        let logger = logging.call_method1("getLogger", (r.logger.as_str(),))?;
        if !logger
            .call_method1("isEnabledFor", (r.level,))?
            .is_truthy()?
        {
            continue;
        }
        let args = PyTuple::empty(py);
        let record = logger.call_method1(
            "makeRecord",
            (
                r.logger.as_str(),
                r.level,
                r.file.unwrap_or("<rust>"),
                r.line.unwrap_or(0),
                r.message.as_str(),
                args,
                py.None(),
            ),
        )?;
        logger.call_method1("handle", (record,))?;
    }
    Ok(())
}
