//! Starting steward nodes for tests: short timeouts so failures show fast.

use std::path::Path;
use std::time::Duration;

use steward::{Node, NodeBuilder};

/// A builder for a test node on `url` with data in `dir`: short ACK timeout and backoff, and
/// signatures `off` — these nodes test delivery among names made up per test, not enrolment;
/// the default (`required`, closed) is what `tests/tests/signing.rs` and `enrol.rs` run, and
/// [`enrolled_node`] gives a default node joined to a central.
pub fn test_node(name: &str, urls: &[String], dir: &Path) -> NodeBuilder {
    default_node(name, urls, dir).signatures(steward::SignaturePolicy::Off)
}

/// Like [`test_node`] with steward's default signature policy (`required`): such a node runs
/// nothing from central until it joined (see [`enrolled_node`]).
pub fn default_node(name: &str, urls: &[String], dir: &Path) -> NodeBuilder {
    init_tracing();
    Node::builder(name)
        .brokers(urls.iter().cloned())
        .data_dir(dir.join(name))
        .ack_timeout(Duration::from_millis(500))
        .retry_wait(Duration::from_millis(50))
        .retry_wait_max(Duration::from_millis(400))
}

/// A default (closed) node that joins `central` with a fresh join token from it, and whose key
/// central has approved once this returns the builder's node started.
pub async fn enrolled_node(
    central: &Node,
    name: &str,
    urls: &[String],
    dir: &Path,
) -> steward::Result<Node> {
    let token = central.join_token(None).await?;
    let node = default_node(name, urls, dir).join(token).start().await?;
    let approved = crate::wait_until_async(Duration::from_secs(30), || {
        central.keys().is_ok_and(|ks| {
            ks.iter()
                .any(|k| k.node == name && k.state == steward::KeyState::Approved)
        }) && node.trust_version() > 0
    })
    .await;
    if !approved {
        return Err(steward::Error::Trust(format!(
            "{name} was not approved by central within 30 s"
        )));
    }
    Ok(node)
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
