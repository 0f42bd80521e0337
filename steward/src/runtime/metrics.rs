//! Prometheus metrics of a node, and the optional HTTP endpoint serving them.
//!
//! Counters, gauges and histograms live here; the places where things happen (publisher,
//! receiver, executor, node) call one hook each. Label values are node and method names, never
//! message ids, so the number of series is bounded by the nodes and methods a node deals with
//! (the `destinations` table already keeps one row per node). Histograms carry only the method
//! label: their buckets multiply every series by about twenty.
//!
//! State the store already keeps (outbox depth per destination, last seen, last ACK) is read
//! from the `destinations` table at scrape time rather than mirrored in memory.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method as HttpMethod, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::wire::envelope::{now_ms, Envelope, ReplyStatus};
use crate::wire::result::{MessageState, MessageStatus, MethodResult, ResultStatus};

/// The path the metrics endpoint answers on.
pub const METRICS_PATH: &str = "/metrics";

/// Content type of the Prometheus text format (version 0.0.4), the endpoint's default.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Content type of the OpenMetrics text format, served when the scraper asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms: 0.5 ms to 30 min. A message queued while
/// its destination was offline for longer lands in `+Inf`.
const LATENCY_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// How long the endpoint waits for a request's headers before closing the connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A message on its way to a destination: which node, which method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    destination: String,
    method: String,
}

/// A message that came in: from which node, for which method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Origin {
    sender: String,
    method: String,
}

/// A method run: who asked, which method, how it ended (`ok`, `failed`, `unknown`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Execution {
    sender: String,
    method: String,
    status: &'static str,
}

/// An incoming message answered without running it (`rejected` or `expired`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    sender: String,
    method: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type Histograms = Family<MethodLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn histograms() -> Histograms {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// The method of a subject `<to>.<kind>.<method>`.
fn subject_method(subject: &str) -> &str {
    subject.splitn(3, '.').nth(2).unwrap_or_default()
}

/// Protocol traffic (`_result`) is not a message anyone sent: it is not counted.
fn is_protocol(method: &str) -> bool {
    method.starts_with('_')
}

fn result_status(r: &MethodResult) -> &'static str {
    match r.status {
        ResultStatus::Ok => "ok",
        ResultStatus::Failed => "failed",
        ResultStatus::Unknown => "unknown",
    }
}

/// Every metric of one node.
pub(crate) struct Metrics {
    accepted: Family<Route, Counter>,
    sent: Family<Route, Counter>,
    retried: Family<Route, Counter>,
    completed: Family<Route, Counter>,
    method_failed: Family<Route, Counter>,
    failed: Family<Route, Counter>,
    expired: Family<Route, Counter>,
    rejected: Family<Route, Counter>,
    cancelled: Family<Route, Counter>,
    in_flight: Family<Route, Gauge>,
    delivery: Histograms,
    end_to_end: Histograms,
    received: Family<Origin, Counter>,
    executed: Family<Execution, Counter>,
    refused: Family<Refusal, Counter>,
    execution: Histograms,
    state: StateCollector,
}

/// The output format of [`Metrics::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Metrics {
    pub(crate) fn new(store: Store, connected: watch::Receiver<bool>) -> Self {
        Metrics {
            accepted: Family::default(),
            sent: Family::default(),
            retried: Family::default(),
            completed: Family::default(),
            method_failed: Family::default(),
            failed: Family::default(),
            expired: Family::default(),
            rejected: Family::default(),
            cancelled: Family::default(),
            in_flight: Family::default(),
            delivery: histograms(),
            end_to_end: histograms(),
            received: Family::default(),
            executed: Family::default(),
            refused: Family::default(),
            execution: histograms(),
            state: StateCollector { store, connected },
        }
    }

    /// A message to `to` on `subject` was durably accepted.
    pub(crate) fn accepted(&self, to: &str, subject: &str) {
        let method = subject_method(subject);
        if !is_protocol(method) {
            self.accepted.get_or_create(&route(to, method)).inc();
        }
    }

    /// The handles of one outgoing stream, looked up once when its publisher starts.
    pub(crate) fn stream(&self, subject: &str) -> StreamMetrics {
        let to = subject.split('.').next().unwrap_or_default();
        let method = subject_method(subject);
        if is_protocol(method) {
            return StreamMetrics(None);
        }
        let r = route(to, method);
        StreamMetrics(Some(StreamHandles {
            sent: self.sent.get_or_create_owned(&r),
            retried: self.retried.get_or_create_owned(&r),
            in_flight: self.in_flight.get_or_create_owned(&r),
            delivery: self.delivery.get_or_create_owned(&MethodLabel {
                method: method.to_owned(),
            }),
        }))
    }

    /// A sent message reached its final state.
    pub(crate) fn finished(&self, st: &MessageStatus) {
        let method = subject_method(&st.subject);
        if is_protocol(method) {
            return;
        }
        let r = route(&st.to_node, method);
        let family = match st.state {
            MessageState::Completed => {
                if st
                    .result
                    .as_ref()
                    .is_some_and(|r| r.status != ResultStatus::Ok)
                {
                    self.method_failed.get_or_create(&r).inc();
                }
                // Fire-and-forget messages complete when published: no result, no latency.
                if st.result.is_some() {
                    let secs = now_ms().saturating_sub(st.created_ms) as f64 / 1000.0;
                    self.end_to_end
                        .get_or_create(&MethodLabel {
                            method: method.to_owned(),
                        })
                        .observe(secs);
                }
                &self.completed
            }
            MessageState::Failed => &self.failed,
            MessageState::Expired => &self.expired,
            MessageState::Rejected => &self.rejected,
            MessageState::Cancelled => &self.cancelled,
            MessageState::Queued | MessageState::Sent | MessageState::Received => return,
        };
        family.get_or_create(&r).inc();
    }

    /// An incoming message was recorded and handed to its executor.
    pub(crate) fn received(&self, env: &Envelope) {
        self.received
            .get_or_create(&Origin {
                sender: env.from.clone(),
                method: env.method.clone(),
            })
            .inc();
    }

    /// An incoming message was answered without running it. Methods this node does not serve
    /// (`served` false) are counted as `_unserved`, so a sender cannot grow the label set at
    /// will.
    pub(crate) fn refused(&self, served: bool, env: &Envelope, status: ReplyStatus) {
        let reason = match status {
            ReplyStatus::Expired => "expired",
            _ => "rejected",
        };
        self.refused
            .get_or_create(&Refusal {
                sender: env.from.clone(),
                method: if served {
                    env.method.clone()
                } else {
                    "_unserved".to_owned()
                },
                reason,
            })
            .inc();
    }

    /// A method ran for `took` and ended with `result`.
    pub(crate) fn executed(&self, env: &Envelope, result: &MethodResult, took: Duration) {
        self.executed
            .get_or_create(&Execution {
                sender: env.from.clone(),
                method: env.method.clone(),
                status: result_status(result),
            })
            .inc();
        self.execution
            .get_or_create(&MethodLabel {
                method: env.method.clone(),
            })
            .observe(took.as_secs_f64());
    }

    /// Every metric in the given text format.
    pub(crate) fn encode(&self, format: Format) -> String {
        let mut reg = Registry::with_prefix("steward");
        let counters: [(&str, &str, &Family<Route, Counter>); 9] = [
            ("messages_accepted", "Messages durably accepted for sending (in this process)", &self.accepted),
            ("messages_sent", "Messages published for the first time (in this process)", &self.sent),
            ("messages_retried", "Resends: publishes after the first one, after a missing ACK or a gap", &self.retried),
            ("messages_completed", "Messages whose result came back (whatever the method's own outcome)", &self.completed),
            ("messages_method_failed", "Completed messages whose method failed (non-zero exit, error, timeout, unknown outcome)", &self.method_failed),
            ("messages_failed", "Messages given up after their retries ran out", &self.failed),
            ("messages_expired", "Messages whose time to live ran out before delivery or execution", &self.expired),
            ("messages_rejected", "Messages the receiver refused (access list, unknown method, ...)", &self.rejected),
            ("messages_cancelled", "Messages cancelled by the operator before delivery", &self.cancelled),
        ];
        for (name, help, family) in counters {
            reg.register(name, help, family.clone());
        }
        reg.register(
            "messages_in_flight",
            "Messages published and not yet finished (waiting for the ACK or the result)",
            self.in_flight.clone(),
        );
        reg.register_with_unit(
            "delivery_latency",
            "From durable acceptance to the receiver's ACK",
            Unit::Seconds,
            self.delivery.clone(),
        );
        reg.register_with_unit(
            "end_to_end_latency",
            "From durable acceptance to the result, for completed messages",
            Unit::Seconds,
            self.end_to_end.clone(),
        );
        reg.register(
            "incoming_received",
            "Incoming messages accepted, recorded and queued to run",
            self.received.clone(),
        );
        reg.register(
            "incoming_executed",
            "Incoming messages run, by how the method ended",
            self.executed.clone(),
        );
        reg.register(
            "incoming_refused",
            "Incoming messages answered without running them (rejected or expired)",
            self.refused.clone(),
        );
        reg.register_with_unit(
            "execution_duration",
            "Run time of methods at this node",
            Unit::Seconds,
            self.execution.clone(),
        );
        reg.register_collector(Box::new(self.state.clone()));
        let mut out = String::new();
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &reg),
        };
        if let Err(e) = encoded {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }
}

fn route(to: &str, method: &str) -> Route {
    Route {
        destination: to.to_owned(),
        method: method.to_owned(),
    }
}

/// The counters of one outgoing stream (none for protocol traffic).
pub(crate) struct StreamMetrics(Option<StreamHandles>);

struct StreamHandles {
    sent: Counter,
    retried: Counter,
    in_flight: Gauge,
    delivery: Histogram,
}

impl StreamMetrics {
    /// A message was published (its `attempts`-th time in this process); from its first
    /// publish until it leaves the publisher, `in_flight` holds it in the in-flight gauge.
    pub(crate) fn published(&self, in_flight: &mut Option<InFlight>, attempts: u32) {
        let Some(h) = &self.0 else { return };
        if attempts <= 1 {
            h.sent.inc();
        } else {
            h.retried.inc();
        }
        if in_flight.is_none() {
            h.in_flight.inc();
            *in_flight = Some(InFlight(h.in_flight.clone()));
        }
    }

    /// The receiver ACKed a message accepted at `accepted_ms` (0: unknown, not observed).
    pub(crate) fn delivered(&self, accepted_ms: u64) {
        let Some(h) = &self.0 else { return };
        if accepted_ms > 0 {
            h.delivery
                .observe(now_ms().saturating_sub(accepted_ms) as f64 / 1000.0);
        }
    }
}

/// A message counted in the in-flight gauge; dropping it (the message finished, or its
/// publisher stopped) takes it out again, so the gauge can never leak.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Gauges read at scrape time from what the node already keeps: the broker link, the store's
/// writer counters and the `destinations` table.
#[derive(Clone)]
struct StateCollector {
    store: Store,
    connected: watch::Receiver<bool>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        encode_const(
            &mut encoder,
            "broker_connected",
            "1 while the node is connected to a NATS server.",
            ConstGauge::new(i64::from(*self.connected.borrow())),
        )?;
        let stats = self.store.stats();
        encode_const(
            &mut encoder,
            "store_commits",
            "Store transactions committed (each one fsync).",
            ConstCounter::new(stats.commits),
        )?;
        encode_const(
            &mut encoder,
            "store_write_jobs",
            "Store write jobs applied (several share one commit).",
            ConstCounter::new(stats.jobs),
        )?;
        // A stopped node's store is closed: only the in-memory metrics remain.
        let Ok(destinations) = self.store.destinations() else {
            return Ok(());
        };
        let depth = Family::<DestinationLabel, Gauge>::default();
        let seen = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
        let acked = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
        for d in destinations {
            if d.pending + d.completed + d.failed > 0 {
                depth
                    .get_or_create(&DestinationLabel {
                        destination: d.node.clone(),
                    })
                    .set(i64::try_from(d.pending).unwrap_or(i64::MAX));
            }
            let node = NodeLabel { node: d.node };
            if let Some(ms) = d.last_seen_ms {
                seen.get_or_create(&node).set(ms as f64 / 1000.0);
            }
            if let Some(ms) = d.last_ack_ms {
                acked.get_or_create(&node).set(ms as f64 / 1000.0);
            }
        }
        let e = encoder.encode_descriptor(
            "outbox_depth",
            "Messages accepted for a destination and not yet finished (from the store).",
            None,
            depth.metric_type(),
        )?;
        depth.encode(e)?;
        let e = encoder.encode_descriptor(
            "node_last_seen",
            "When a message of any kind (including hello) last came from the node, Unix time.",
            Some(&Unit::Seconds),
            seen.metric_type(),
        )?;
        seen.encode(e)?;
        let e = encoder.encode_descriptor(
            "node_last_ack",
            "When the node last ACKed or answered a message from this node, Unix time.",
            Some(&Unit::Seconds),
            acked.metric_type(),
        )?;
        acked.encode(e)
    }
}

// ----- the HTTP endpoint -----

/// Binds the metrics address before anything else starts, so a taken address fails the start
/// with a clear error.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::config_from(
            format!(
                "cannot serve metrics on {addr}: {e}; choose a free address and port for the \
                 metrics address (port 0 picks any free port), or stop what is using it"
            ),
            e,
        )
    })
}

/// Serves `GET /metrics` from `metrics` on the bound listener until `shutdown` turns true;
/// the caller keeps the task's handle with the node's other tasks.
pub(crate) fn serve(
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    listener: TcpListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: wait instead of spinning.
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => return,
            };
            let (m, stop) = (metrics.clone(), shutdown.clone());
            tokio::spawn(async move { connection(m, stop, stream).await });
        }
    })
}

/// Resolves once the node is stopping (also if it already was when subscribing).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn connection(
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    stream: tokio::net::TcpStream,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = respond(&metrics, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("metrics endpoint: connection ended: {e}");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != METRICS_PATH {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found; the metrics are at {METRICS_PATH}\n"),
        );
    }
    if req.method() != HttpMethod::GET && req.method() != HttpMethod::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{METRICS_PATH} answers GET only\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let wants_openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (format, content_type) = if wants_openmetrics {
        (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE)
    } else {
        (Format::Prometheus, PROMETHEUS_CONTENT_TYPE)
    };
    let body = metrics.encode(format);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_method_takes_the_third_token() {
        assert_eq!(subject_method("ship1.command.echo"), "echo");
        assert_eq!(subject_method("ship1.event._result"), "_result");
        assert_eq!(subject_method("broken"), "");
    }

    #[test]
    fn in_flight_guard_counts_once_and_leaves_on_drop() {
        let gauge = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let stream = StreamMetrics(Some(StreamHandles {
            sent: Counter::default(),
            retried: Counter::default(),
            in_flight: gauge.clone(),
            delivery: latency_histogram(),
        }));
        let mut slot = None;
        stream.published(&mut slot, 1);
        stream.published(&mut slot, 2);
        assert_eq!(gauge.get(), 1);
        drop(slot);
        assert_eq!(gauge.get(), 0);
    }
}
