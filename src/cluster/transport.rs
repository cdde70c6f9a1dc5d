//! The in-memory transport: one unbounded channel per node. Messages travel as values, not
//! frames; the simulator and the real transports exercise the codec.

use crate::protocol::{Envelope, Message, NodeId};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Inbound {
    pub from: NodeId,
    pub msg: Message,
}

#[derive(Clone)]
pub struct MemTransport {
    peers: Arc<HashMap<NodeId, Sender<Inbound>>>,
    /// Messages sent to a known node, by every node (what frames would be on a network).
    sent: Arc<AtomicU64>,
}

impl MemTransport {
    /// A transport joining `ids`, and each node's inbox.
    pub fn new(ids: &[NodeId]) -> (Self, HashMap<NodeId, Receiver<Inbound>>) {
        let mut peers = HashMap::new();
        let mut inboxes = HashMap::new();
        for id in ids {
            let (tx, rx) = crossbeam_channel::unbounded();
            peers.insert(*id, tx);
            inboxes.insert(*id, rx);
        }
        (
            MemTransport {
                peers: Arc::new(peers),
                sent: Arc::new(AtomicU64::new(0)),
            },
            inboxes,
        )
    }

    /// Sends each envelope; messages to unknown or stopped nodes are dropped, as on a network.
    pub fn send_all(&self, from: NodeId, envelopes: impl Iterator<Item = Envelope>) {
        for env in envelopes {
            if let Some(tx) = self.peers.get(&env.to) {
                self.sent.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(Inbound { from, msg: env.msg });
            }
        }
    }

    /// Messages every node has sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
