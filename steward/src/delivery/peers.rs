//! What each peer node reads on the wire, learned from what it sends: a binary frame, or JSON
//! with a `wire` field, says it reads binary; JSON without one says it reads only JSON (a node
//! of an older version, or one rolled back to it). Until a peer has said, it gets JSON, which
//! every version reads. So a fleet upgraded node by node keeps talking: each pair moves to
//! binary after the first answer, and back to JSON when a peer is rolled back (its next hello
//! or answer says so; resends alternate formats meanwhile, see `publisher.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::frame::VERSION;

/// Peers remembered at most (a central of 100,000 nodes remembers them all); when full the
/// table starts over, which costs each peer one JSON message.
const MAX_PEERS: usize = 1 << 18;
/// How long a peer that could not check a session tag gets signed JSON.
const SIGNED_FOR: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Default)]
struct Peer {
    /// The binary version it reads (0: only JSON).
    wire: u8,
    /// It could not check a session tag: signed JSON until then.
    signed_until: Option<Instant>,
}

/// The wire version of each peer.
#[derive(Default)]
pub(crate) struct Peers(Mutex<HashMap<String, Peer>>);

impl Peers {
    /// Notes what a message from `node` said it reads: `Some(version)` for binary, `None` for
    /// JSON only.
    pub(crate) fn heard(&self, node: &str, wire: Option<u8>) {
        let wire = wire.unwrap_or(0);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get_mut(node) {
            p.wire = wire;
            return;
        }
        if wire == 0 {
            return;
        }
        if map.len() >= MAX_PEERS {
            map.clear();
        }
        map.insert(
            node.to_owned(),
            Peer {
                wire,
                signed_until: None,
            },
        );
    }

    /// Whether `node` reads this version's binary frames (and takes its session tags).
    pub(crate) fn reads_binary(&self, node: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(node).is_some_and(|p| {
            p.wire >= VERSION && p.signed_until.is_none_or(|t| t <= Instant::now())
        })
    }

    /// `node` could not check a session tag (it holds another key than this node trusts for
    /// it, or does not trust this node's): it gets signed JSON for a while, whose answer says
    /// exactly what is wrong.
    pub(crate) fn tag_refused(&self, node: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get_mut(node) {
            p.signed_until = Some(Instant::now() + SIGNED_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_from_what_peers_send() {
        let p = Peers::default();
        assert!(!p.reads_binary("a"));
        p.heard("a", None);
        assert!(!p.reads_binary("a"));
        p.heard("a", Some(VERSION));
        assert!(p.reads_binary("a"));
        // Rolled back: JSON without the field.
        p.heard("a", None);
        assert!(!p.reads_binary("a"));
        p.heard("a", Some(VERSION));
        p.tag_refused("a");
        assert!(!p.reads_binary("a"));
        // A newer version reads this one's frames too.
        p.heard("b", Some(VERSION + 1));
        assert!(p.reads_binary("b"));
    }
}
