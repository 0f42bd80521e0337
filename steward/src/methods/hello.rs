//! `hello` (event, no ACK): "I'm here" to central at a fixed interval; central records last seen.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::sync::watch;

use crate::security::trust::Security;
use crate::wire::envelope::{now_ms, Envelope, WireKind};
use crate::wire::handler::Request;
use crate::wire::result::MethodResult;

/// Central notes the sender as seen (the receiver already touched `last_seen` for every sender).
pub(crate) async fn handle(_req: Request) -> MethodResult {
    MethodResult::ok("")
}

/// What the hello sender needs of the node.
#[derive(Clone)]
pub(crate) struct Hello {
    /// This node's name and its central's.
    pub name: String,
    pub central: String,
    /// This node's store epoch.
    pub epoch: u64,
    /// Signs the hellos; says when a joining node's registration was answered.
    pub security: Arc<Security>,
    pub client: async_nats::Client,
    pub connected: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

/// Publishes a `hello` to central every `every`; fire-and-forget, so nothing piles up offline.
pub(crate) async fn run(h: Hello, every: Duration) -> crate::Result<()> {
    let mut shutdown = h.shutdown.clone();
    // A joining node says hello once central knows its key (else central refuses the first
    // hello as signed by an unknown key); at most 10 s, central may be away.
    let mut registered = h.security.registered.subscribe();
    tokio::select! {
        _ = tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| *r)) => {}
        _ = shutdown.changed() => return Ok(()),
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if !*h.connected.borrow() {
            continue;
        }
        let mut env = Envelope {
            id: ulid::Ulid::new().to_string(),
            from: h.name.clone(),
            to: h.central.clone(),
            kind: WireKind::Event,
            method: "hello".into(),
            data: Vec::new(),
            epoch: h.epoch,
            seq: 0,
            ack: false,
            expires_ms: Some(now_ms() + every.as_millis() as u64),
            method_timeout_ms: 1000,
            result_of: None,
            result: None,
            outcome: None,
            sig: None,
            wire: Some(crate::wire::frame::VERSION),
            authentic: None,
        };
        crate::security::signing::sign(&h.security, &mut env);
        let payload = Bytes::from(serde_json::to_vec(&env).unwrap_or_default());
        if let Err(e) = h.client.publish(env.subject(), payload).await {
            tracing::debug!("hello not sent: {e}");
        }
    }
}
