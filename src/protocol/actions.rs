//! What a state machine asks its driver to do. The one rule every driver must keep:
//! messages in `send` may leave only once `persist` of the same call, and of every earlier
//! call, is durable (tikv raft-rs calls these "persisted messages"). A vote is never sent
//! before the vote is safe on storage.

use super::message::{Envelope, Message};
use super::types::{AcceptedEntry, Ballot, Batch, ClientValue, InstanceId, NodeId};

/// A change to durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An acceptor promised this ballot.
    Promise(Ballot),
    /// An acceptor accepted a value (this also promises its ballot).
    Accept(AcceptedEntry),
    /// An acceptor dropped every instance below this point.
    Trim(InstanceId),
    /// A proposer used this round; after a restart it must use a higher one, or it could
    /// propose two values under one ballot.
    ProposerRound(u32),
}

/// Client values a learner delivers from one decided instance: no-ops are skipped and a value
/// a client resent is delivered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub instance: InstanceId,
    pub values: Vec<ClientValue>,
}

/// Things worth telling the operator or the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    BecameLeader {
        ballot: Ballot,
    },
    /// The first instance a new leader got a quorum for: the leader change is complete.
    FirstDecision {
        ballot: Ballot,
        instance: InstanceId,
    },
    SteppedDown {
        higher: Ballot,
    },
    /// A learner decided this instance (in instance order, no-ops included).
    Decided {
        instance: InstanceId,
        value: Batch,
    },
    /// A learner needs instances acceptors have trimmed; it cannot catch up by itself.
    Trimmed {
        needed: InstanceId,
        trim: InstanceId,
    },
    /// The leader shed client values because its queue was full (clients retry them).
    Shed {
        values: usize,
    },
    /// A proposer cannot prepare: `highest` is at the top of the round range (a forged or
    /// runaway ballot). Rounds never wrap; an operator must reset the acceptors' promise.
    NoRoundLeft {
        highest: Ballot,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Actions {
    pub persist: Vec<Change>,
    pub send: Vec<Envelope>,
    pub deliver: Vec<Delivery>,
    pub events: Vec<Event>,
}

impl Actions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.deliver.is_empty()
            && self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.persist.clear();
        self.send.clear();
        self.deliver.clear();
        self.events.clear();
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        self.send.push(Envelope { to, msg });
    }

    pub(crate) fn send_all(&mut self, to: &[NodeId], msg: &Message) {
        for t in to {
            self.send.push(Envelope {
                to: *t,
                msg: msg.clone(),
            });
        }
    }
}

impl Actions {
    /// Merges 2b votes for one ballot to one destination into as few messages as fit a frame
    /// of `max_payload` bytes; an acceptor that handled a burst of 2a's then sends one vote
    /// message per destination instead of one per instance.
    pub fn coalesce_accepted(&mut self, max_payload: usize) {
        let per_msg = (max_payload.saturating_sub(crate::wire::sizes::ACCEPTED_FIXED) / 8).max(1);
        let mut merged: Vec<Envelope> = Vec::with_capacity(self.send.len());
        let mut open: std::collections::HashMap<(NodeId, Ballot), usize> = Default::default();
        for env in self.send.drain(..) {
            if let Message::Accepted { ballot, instances } = &env.msg {
                if let Some(&k) = open.get(&(env.to, *ballot)) {
                    if let Message::Accepted {
                        instances: into, ..
                    } = &mut merged[k].msg
                    {
                        if into.len() + instances.len() <= per_msg {
                            into.extend_from_slice(instances);
                            continue;
                        }
                    }
                }
                open.insert((env.to, *ballot), merged.len());
            }
            merged.push(env);
        }
        self.send = merged;
    }
}
