//! Starting steward nodes for tests: short timeouts so failures show fast.

use std::path::Path;
use std::time::Duration;

use steward::{Node, NodeBuilder};

/// A builder for a test node on `url` with data in `dir`: short ACK timeout and backoff.
pub fn test_node(name: &str, urls: &[String], dir: &Path) -> NodeBuilder {
    init_tracing();
    Node::builder(name)
        .brokers(urls.iter().cloned())
        .data_dir(dir.join(name))
        .ack_timeout(Duration::from_millis(500))
        .retry_wait(Duration::from_millis(50))
        .retry_wait_max(Duration::from_millis(400))
}

/// Initializes tracing once for tests (RUST_LOG controls it; quiet by default).
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
