//! `steward --node NAME`: run a node until SIGINT/SIGTERM.

use std::time::Duration;

use steward::{AccessList, EmbeddedBroker, ErrorKind, Node, NodeBuilder, NodeConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::output::{self, EXIT_BROKER_REFUSED, EXIT_UNAVAILABLE};
use crate::profiling;
use crate::settings::{Settings, DEFAULT_BROKER};

/// Exit status when the node could not start.
const EXIT_START_FAILED: i32 = 1;
/// Exit status for unusable settings.
const EXIT_USAGE: i32 = 2;
/// How long a stop may take before the process exits anyway.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A node builder with every setting applied.
pub fn builder(s: &Settings, name: &str, brokers: Vec<String>) -> NodeBuilder {
    let mut cfg = NodeConfig::new(name);
    cfg.brokers = brokers;
    cfg.data_dir = s.data_dir.clone();
    cfg.central = s.central.clone();
    cfg.ack_timeout = s.ack_timeout;
    cfg.retries = s.retries;
    cfg.retry_wait = s.retry_wait;
    cfg.retry_wait_max = s.retry_wait_max;
    cfg.method_timeout = s.method_timeout;
    cfg.ttl = s.ttl;
    cfg.hello_interval = s.hello_interval;
    cfg.output_limit = s.output_limit;
    cfg.broker_auth = s.broker_auth.clone();
    cfg.broker_tls = s.broker_tls.clone();
    cfg.signatures = s.signatures;
    cfg.wire_format = s.wire_format;
    cfg.key_file = s.key_file.clone();
    cfg.central_key = s.central_key;
    cfg.trusted_keys = s.trusted_keys.clone();
    cfg.join = s.join.clone();
    cfg.auto_approve = s.auto_approve;
    let mut access = s
        .access
        .clone()
        .unwrap_or_else(|| AccessList::default_for_node(&cfg.name, &s.central));
    for (from, method) in &s.allow {
        access = access.allow(from, method);
    }
    cfg.access = access;
    NodeBuilder::from_config(cfg)
}

/// Runs the node; returns the process exit status.
pub async fn run(s: Settings) -> i32 {
    // Take over SIGINT/SIGTERM first, so one that arrives during start-up still stops cleanly.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("steward: cannot handle signals: {e}");
            return EXIT_START_FAILED;
        }
    };
    let Some(name) = s.node.clone() else {
        eprintln!("steward: give the node's name with --node NAME (or STEWARD_NODE, or `node = \"NAME\"` in the --config file); see steward --help");
        return EXIT_USAGE;
    };
    // 0700: the data directory holds every command, its output and the node's key.
    if let Err(e) =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&s.data_dir)
    {
        eprintln!(
            "steward: cannot create the data directory {}: {e}",
            s.data_dir.display()
        );
        return EXIT_START_FAILED;
    }
    let mut broker = None;
    let brokers = match &s.embedded_broker {
        Some(addr) => {
            if s.brokers.is_some() {
                eprintln!("steward: --embedded-broker and --broker-address were both given; use one (the embedded broker's URL is used for the node)");
                return EXIT_USAGE;
            }
            let addr = addr.clone();
            let log = s.data_dir.join("nats-server.log");
            match tokio::task::spawn_blocking(move || EmbeddedBroker::start(&addr, Some(&log)))
                .await
            {
                Ok(Ok(b)) => {
                    tracing::info!(url = %b.url(), bin = %b.binary().display(), "embedded nats-server running");
                    let url = b.url();
                    broker = Some(b);
                    vec![url]
                }
                Ok(Err(e)) => {
                    eprintln!("steward: cannot start the embedded broker: {e}");
                    return EXIT_UNAVAILABLE;
                }
                Err(e) => {
                    eprintln!("steward: cannot start the embedded broker: {e}");
                    return EXIT_UNAVAILABLE;
                }
            }
        }
        None => s
            .brokers
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_BROKER.to_owned()]),
    };
    if let Some(port) = s.profiling_port {
        match profiling::start(port).await {
            Ok(addr) => tracing::info!(
                "profiling: CPU flamegraphs at http://{addr}/debug/pprof/profile?seconds=30"
            ),
            Err(e) => {
                eprintln!("steward: cannot serve profiles on 127.0.0.1:{port}: {e}; choose another --profiling-port");
                stop_broker(broker).await;
                return EXIT_START_FAILED;
            }
        }
    }
    let node = match start_with_retry(|| {
        builder(&s, &name, brokers.clone())
            .watch_inmsg(true)
            .control_socket(true)
            .metrics_address(s.metrics_address)
    })
    .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("steward: the node could not start: {e}");
            stop_broker(broker).await;
            return match e.kind() {
                ErrorKind::BrokerAuth => EXIT_BROKER_REFUSED,
                // Bad settings: a key others can read, a malformed file, a wrong central key.
                ErrorKind::Config => EXIT_USAGE,
                _ => EXIT_START_FAILED,
            };
        }
    };
    node.on_finished(output::print_finished);
    if let Some(addr) = node.metrics_address() {
        tracing::info!(
            "metrics: Prometheus text at http://{addr}{}",
            steward::METRICS_PATH
        );
    }
    let dir = std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone());
    tracing::info!(
        "node {name} running: broker {}, data dir {}; append JSON messages to {} or use `steward send --data-dir {}`",
        brokers.join(","),
        dir.display(),
        dir.join(steward::INMSG).display(),
        dir.display()
    );
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{why}: stopping node {name}");
    stop_node(&node).await;
    // Let the broker client go before the broker, so its departure is not logged as a loss.
    drop(node);
    stop_broker(broker).await;
    tracing::info!("stopped");
    0
}

/// How long a data directory held by a short-lived reader (`steward status` or `cancel` on a
/// stopped node) is waited for before "in use" is final.
const IN_USE_PATIENCE: Duration = Duration::from_secs(3);

/// Starts a node; while the data directory is briefly held by another steward process that
/// only inspects it, tries again.
pub async fn start_with_retry(make: impl Fn() -> NodeBuilder) -> steward::Result<Node> {
    let start = std::time::Instant::now();
    loop {
        match make().start().await {
            Err(e) if e.kind() == ErrorKind::DataDirInUse && start.elapsed() < IN_USE_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Stops the node, bounded in time (a broker that vanished must not keep the process alive).
pub async fn stop_node(node: &Node) {
    if tokio::time::timeout(STOP_LIMIT, node.stop()).await.is_err() {
        tracing::warn!(
            "the node did not stop within {STOP_LIMIT:?}; exiting anyway (accepted messages are on disk)"
        );
    }
}

async fn stop_broker(broker: Option<EmbeddedBroker>) {
    if let Some(mut b) = broker {
        let _ = tokio::task::spawn_blocking(move || b.stop()).await;
        tracing::info!("embedded nats-server stopped");
    }
}
