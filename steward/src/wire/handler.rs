//! Methods a node serves: the request they get and the trait they implement.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::message::Kind;
use crate::wire::result::MethodResult;

/// One incoming message, handed to the method that serves it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Message id (unique; the same on a resend).
    pub id: String,
    /// The sending node (set by the sender's steward, checked against the access list).
    pub from_node: String,
    /// This node.
    pub to_node: String,
    /// Command or event.
    pub kind: Kind,
    /// The method called.
    pub method: String,
    /// The arguments.
    pub data: Vec<String>,
    /// How long the method may run; it is stopped (and fails) after that.
    pub method_timeout: Duration,
    /// This node's data directory.
    pub data_dir: PathBuf,
    /// Capture limit for output, in bytes.
    pub output_limit: usize,
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = MethodResult> + Send>>;

/// Something that serves a method. Implemented for every `Fn(Request) -> impl Future<Output = MethodResult>`.
pub trait Handler: Send + Sync + 'static {
    /// Runs the method.
    fn call(&self, req: Request) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = MethodResult> + Send + 'static,
{
    fn call(&self, req: Request) -> HandlerFuture {
        Box::pin(self(req))
    }
}

/// How a method is served.
#[derive(Clone)]
pub struct Method {
    pub(crate) kind: Kind,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) repeatable: bool,
}

impl Method {
    /// A method of `kind` served by `handler`. By default it is recorded as started before it
    /// runs, so a crash mid-run reports "unknown" instead of running it twice.
    pub fn new(kind: Kind, handler: impl Handler) -> Self {
        Method {
            kind,
            handler: Arc::new(handler),
            repeatable: false,
        }
    }

    /// Declares the method free of side effects (like `echo`): it may be run again after a
    /// crash, which saves one disk write per message.
    pub fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }
}
