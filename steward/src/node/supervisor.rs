//! The long-lived tasks of a node and their supervision: a failed task is reported to the error
//! kernel and restarted with backoff; one that keeps failing is stopped and the operator told.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};

use crate::delivery::publisher::PubEvent;
use crate::delivery::Delivery;
use crate::node::Inner;
use crate::runtime::notify::ErrorReportKind;

/// Restarts allowed within [`RESTART_WINDOW`] before a task is stopped for good.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Runs `make()` and restarts it when it fails, until the node stops or it fails too often.
pub(crate) fn supervise<F, Fut>(d: &Arc<Delivery>, name: &'static str, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = crate::Result<()>> + Send + 'static,
{
    let kernel = d.clone();
    d.tasks.spawn(async move {
        let mut failures: Vec<Instant> = Vec::new();
        loop {
            let run = std::panic::AssertUnwindSafe(make()).catch_unwind().await;
            if kernel.tasks.stopping() {
                return;
            }
            let why = match run {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "panicked".to_owned(),
            };
            let now = Instant::now();
            failures.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            failures.push(now);
            if failures.len() > MAX_RESTARTS {
                kernel.reporter.report(
                    None,
                    ErrorReportKind::TaskFailed,
                    format!("{name} failed {} times within {RESTART_WINDOW:?} ({why}); stopped it — restart the node after fixing the cause", failures.len()),
                );
                return;
            }
            let wait = Duration::from_millis(200u64 << failures.len());
            kernel.reporter.report(None, ErrorReportKind::TaskFailed, format!("{name} failed ({why}); restarting it in {wait:?}"));
            tokio::time::sleep(wait).await;
        }
    });
}

/// Starts the tasks every node runs: ACK routing, receiving, audit log, hello, inmsg.txt.
pub(crate) fn spawn_core_tasks<A, E>(inner: &Arc<Inner>, acks: A, incoming: E) -> crate::Result<()>
where
    A: Stream<Item = async_nats::Message> + Unpin + Send + 'static,
    E: Stream<Item = async_nats::Message> + Unpin + Send + 'static,
{
    let acks = Arc::new(tokio::sync::Mutex::new(acks));
    let i = inner.d.clone();
    supervise(&inner.d, "ACK router", move || {
        let (i, acks) = (i.clone(), acks.clone());
        async move {
            let mut acks = acks.lock().await;
            route_acks(&i, &mut *acks).await;
            Ok(())
        }
    });
    let incoming = Arc::new(tokio::sync::Mutex::new(incoming));
    let i = inner.d.clone();
    supervise(&inner.d, "receiver", move || {
        let (i, incoming) = (i.clone(), incoming.clone());
        async move {
            let mut sub = incoming.lock().await;
            crate::delivery::receiver::run(i, &mut *sub).await;
            Ok(())
        }
    });
    let (store, dir, wake) = (
        inner.d.store.clone(),
        inner.d.cfg.data_dir.clone(),
        inner.d.finals.audit_wake.clone(),
    );
    let shutdown = inner.d.tasks.subscribe();
    supervise(&inner.d, "audit log writer", move || {
        crate::ops::audit::run(store.clone(), dir.clone(), wake.clone(), shutdown.clone())
    });
    let (store, retention) = (inner.d.store.clone(), inner.d.cfg.retention);
    let shutdown = inner.d.tasks.subscribe();
    supervise(&inner.d, "pruner", move || {
        crate::ops::retention::run(store.clone(), retention, shutdown.clone())
    });
    if let Some(every) = inner.d.cfg.hello_interval.filter(|d| !d.is_zero()) {
        let hello = crate::methods::hello::Hello {
            name: inner.d.cfg.name.clone(),
            central: inner.d.cfg.central.clone(),
            epoch: inner.d.store.epoch(),
            security: inner.d.security.clone(),
            client: inner.d.link.client.clone(),
            connected: inner.d.link.connected.clone(),
            shutdown: inner.d.tasks.subscribe(),
        };
        supervise(&inner.d, "hello sender", move || {
            crate::methods::hello::run(hello.clone(), every)
        });
    }
    if inner.d.cfg.watch_inmsg {
        let i = inner.clone();
        supervise(&inner.d, "inmsg.txt watcher", move || {
            crate::node::ingest::run(i.clone())
        });
    }
    Ok(())
}

/// Routes the receivers' answers (`<reply prefix>.<stream>.<seq>`) to the stream's publisher.
async fn route_acks<S>(d: &Arc<Delivery>, acks: &mut S)
where
    S: Stream<Item = async_nats::Message> + Unpin,
{
    let mut shutdown = d.tasks.subscribe();
    loop {
        let msg = tokio::select! {
            m = acks.next() => match m { Some(m) => m, None => return },
            _ = shutdown.changed() => return,
        };
        let mut parts = msg.subject.rsplitn(3, '.');
        let seq = parts.next().and_then(|s| s.parse::<u64>().ok());
        let stream = parts.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(seq), Some(stream)) = (seq, stream) else {
            continue;
        };
        let tx = d.publishers.get(stream);
        let Some(tx) = tx else { continue };
        let no_responders = msg.status == Some(async_nats::StatusCode::NO_RESPONDERS);
        let ev = if no_responders {
            PubEvent::NoResponders(seq)
        } else {
            PubEvent::Reply(seq, msg.payload)
        };
        let _ = tx.send(ev);
    }
}
