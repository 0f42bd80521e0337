//! The publisher of each outbound stream: started on demand, woken by events, asked for its
//! live view of a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::delivery::publisher::{self, PubEvent};
use crate::delivery::Delivery;
use crate::store::MessageRecord;
use crate::wire::result::{MessageState, MessageStatus};

/// The running publishers, by stream id.
#[derive(Default)]
pub(crate) struct PublisherSet {
    map: Mutex<HashMap<u64, mpsc::UnboundedSender<PubEvent>>>,
}

impl PublisherSet {
    /// Forgets a publisher that ended (it is started again on demand).
    pub(crate) fn forget(&self, stream_id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&stream_id);
        }
    }

    /// Forgets a retiring publisher unless an event reached it meanwhile: `retire` runs under
    /// the map lock (senders hold it while sending) and says whether the publisher may go.
    pub(crate) fn retire_if(&self, stream_id: u64, retire: impl FnOnce() -> bool) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if retire() {
            map.remove(&stream_id);
            true
        } else {
            false
        }
    }

    /// Forgets every publisher (at stop).
    pub(crate) fn clear(&self) {
        if let Ok(mut p) = self.map.lock() {
            p.clear();
        }
    }

    /// The running publisher of a stream, if any.
    pub(crate) fn get(&self, stream_id: u64) -> Option<mpsc::UnboundedSender<PubEvent>> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(&stream_id).cloned())
    }
}

impl Delivery {
    /// Returns the publisher of a stream, starting it if needed.
    pub(crate) fn publisher(
        self: &Arc<Self>,
        stream_id: u64,
        subject: &str,
    ) -> mpsc::UnboundedSender<PubEvent> {
        let mut map = self
            .publishers
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.publisher_locked(&mut map, stream_id, subject)
    }

    fn publisher_locked(
        self: &Arc<Self>,
        map: &mut HashMap<u64, mpsc::UnboundedSender<PubEvent>>,
        stream_id: u64,
        subject: &str,
    ) -> mpsc::UnboundedSender<PubEvent> {
        if let Some(tx) = map.get(&stream_id) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let tx = publisher::spawn(self.clone(), stream_id, subject.to_owned());
        map.insert(stream_id, tx.clone());
        tx
    }

    /// Sends an event to a stream's publisher (starting it if needed). The send happens under
    /// the map lock, so a publisher retiring while idle can never miss it.
    pub(crate) fn publisher_event(self: &Arc<Self>, stream_id: u64, subject: &str, ev: PubEvent) {
        if self.tasks.stopping() {
            return;
        }
        let mut map = self
            .publishers
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let tx = self.publisher_locked(&mut map, stream_id, subject);
        let _ = tx.send(ev);
    }

    /// The status with the publisher's live view (sent / attempts) merged in.
    /// `finishing`: its result if it came before its final-state commit, looked up before
    /// `rec` was read.
    pub(crate) async fn live_status(
        &self,
        rec: MessageRecord,
        finishing: Option<crate::delivery::finals::Finishing>,
    ) -> MessageStatus {
        let (stream_id, seq) = (rec.stream_id, rec.seq);
        let mut st = rec.into_status();
        if st.state.is_final() {
            return st;
        }
        if let Some(f) = finishing {
            // Its result is in; the final state is being committed.
            st.state = MessageState::Completed;
            st.result = Some(f.result);
            st.attempts = st.attempts.max(f.attempts);
            st.updated_ms = f.at_ms;
            return st;
        }
        if let Some(tx) = self.publishers.get(stream_id) {
            let (otx, orx) = oneshot::channel();
            if tx.send(PubEvent::Query(seq, otx)).is_ok() {
                if let Ok(Some((state, attempts))) = orx.await {
                    if st.state != MessageState::Received || state == MessageState::Received {
                        st.state = state;
                    }
                    st.attempts = st.attempts.max(attempts);
                }
            }
        }
        st
    }
}
