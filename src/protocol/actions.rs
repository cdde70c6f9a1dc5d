//! What a state machine asks its driver to do, and the rule every driver keeps as a type:
//! a message leaves only once the changes of its own call, and of every earlier call, are
//! durable (tikv raft-rs calls these "persisted messages"). A vote is never sent before the
//! vote is safe on storage.
//!
//! The messages a state machine produced can be taken out of `Actions` only as a [`Pending`],
//! and out of a `Pending` only by [`Pending::commit`], which hands its changes to a
//! [`Persist`] store first and returns the messages only if the store says they are durable.
//! A driver that tried to send before committing would not compile.

use super::limits;
use super::message::{Envelope, Message};
use super::types::{AcceptedEntry, Ballot, Batch, ClientValue, InstanceId, NodeId, Position};

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
/// a client resent is delivered once. `indexes[k]` is `values[k]`'s index in the instance's
/// batch (duplicates skipped keep their place), so its position is `(instance, indexes[k])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub instance: InstanceId,
    pub values: Vec<ClientValue>,
    pub indexes: Vec<u32>,
}

impl Delivery {
    /// Each value with its position.
    pub fn positioned(&self) -> impl Iterator<Item = (Position, &ClientValue)> {
        self.indexes.iter().zip(&self.values).map(|(index, v)| {
            (
                Position {
                    instance: self.instance,
                    index: *index,
                },
                v,
            )
        })
    }
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
    /// A learner delivered this instance out of a peer learner's journal (acceptors had
    /// trimmed it).
    FromPeer {
        instance: InstanceId,
    },
    /// A learner needs instances that acceptors trimmed and no peer learner's journal still
    /// holds: it needs a snapshot.
    Stranded {
        needed: InstanceId,
    },
    /// A learner installed a peer's snapshot image: it now stands at `below`; the values
    /// before it were never delivered here.
    Installed {
        below: Position,
        from: NodeId,
        bytes: u64,
        /// From its first chunk asked for to the whole image checked.
        took: std::time::Duration,
    },
    /// A learner refused a peer's snapshot image (damaged, another cluster's, or without the
    /// application state this learner needs) and asks another peer.
    SnapshotRefused {
        from: NodeId,
        why: String,
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

/// A snapshot image a learner installed, between its deliveries: the ones before `at` in
/// `Actions::deliver` came before it, the rest after. Its driver makes it durable (snapshot
/// store, journal) and hands it to the application.
#[derive(Clone, Debug)]
pub struct Install {
    pub at: usize,
    pub image: std::sync::Arc<super::image::Image>,
    /// The image as received (what the driver stores).
    pub bytes: std::sync::Arc<Vec<u8>>,
}

#[derive(Clone, Debug, Default)]
pub struct Actions {
    persist: Vec<Change>,
    send: Vec<Envelope>,
    pub deliver: Vec<Delivery>,
    pub installs: Vec<Install>,
    pub events: Vec<Event>,
}

/// Durable storage as the protocol needs it: `persist` returns once `changes` (and every
/// earlier call's) are as durable as the node's fsync policy promises, or fails.
pub trait Persist {
    type Error;
    fn persist(&mut self, now: std::time::Duration, changes: &[Change]) -> Result<(), Self::Error>;
}

/// Storage for tests and fsync policy `none` callers that keep nothing: every change is
/// "durable" at once because nothing is promised across a restart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Volatile;

impl Persist for Volatile {
    type Error = std::convert::Infallible;
    fn persist(&mut self, _: std::time::Duration, _: &[Change]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Changes, and the messages that may leave only once they are durable.
#[derive(Clone, Debug, Default)]
#[must_use = "a Pending holds changes that must be committed and messages that must be sent"]
pub struct Pending {
    changes: Vec<Change>,
    sends: Vec<Envelope>,
}

impl Pending {
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    pub fn sends(&self) -> &[Envelope] {
        &self.sends
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.sends.is_empty()
    }

    /// Appends a later turn's output: one commit then covers both, in order.
    pub fn append(&mut self, mut later: Pending) {
        self.changes.append(&mut later.changes);
        self.sends.append(&mut later.sends);
    }

    /// Makes the changes durable in `store`, then gives the messages that waited for them.
    /// A store that fails keeps the messages from ever leaving.
    pub fn commit<S: Persist + ?Sized>(
        self,
        store: &mut S,
        now: std::time::Duration,
    ) -> Result<Vec<Envelope>, S::Error> {
        store.persist(now, &self.changes)?;
        Ok(self.sends)
    }
}

impl Actions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.deliver.is_empty()
            && self.installs.is_empty()
            && self.events.is_empty()
    }

    /// The changes asked for so far (to look at; they leave only through `take_pending`).
    pub fn changes(&self) -> &[Change] {
        &self.persist
    }

    /// The messages asked for so far (to look at; they leave only through `take_pending`).
    pub fn sends(&self) -> &[Envelope] {
        &self.send
    }

    /// Takes the changes and the messages that wait for them.
    pub fn take_pending(&mut self) -> Pending {
        Pending {
            changes: std::mem::take(&mut self.persist),
            sends: std::mem::take(&mut self.send),
        }
    }

    /// Gives back an emptied message buffer (one a commit released and the driver sent), so
    /// the next turn does not grow a fresh one.
    pub fn reuse_send_buffer(&mut self, mut buf: Vec<Envelope>) {
        if self.send.capacity() == 0 {
            buf.clear();
            self.send = buf;
        }
    }

    pub(crate) fn change(&mut self, change: Change) {
        self.persist.push(change);
    }

    pub fn clear(&mut self) {
        self.persist.clear();
        self.send.clear();
        self.deliver.clear();
        self.installs.clear();
        self.events.clear();
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        self.send.push(Envelope { to, msg });
    }

    /// `msg` to each of `to`: cloned for all but the last, which takes it.
    pub(crate) fn send_each(&mut self, to: &[NodeId], msg: Message) {
        if let Some((last, rest)) = to.split_last() {
            self.send_all(rest, &msg);
            self.send(*last, msg);
        }
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

/// Merges what can share a frame into as few messages as fit a frame of `max_payload` bytes,
/// each to its destination: 2b votes for one ballot (an acceptor that handled a burst of 2a's
/// sends one vote message per destination instead of one per instance), the leader's
/// decisions for one ballot likewise, and client requests
/// (a node's client sessions send their values to the leader in a few frames, not one frame
/// per session). A merged message takes the place of the first it absorbed. Every driver
/// applies it to what it releases.
pub fn coalesce(sends: &mut Vec<Envelope>, max_payload: usize) {
    let mergeable = sends
        .iter()
        .filter(|e| {
            matches!(
                e.msg,
                Message::Accepted { .. } | Message::ClientRequest { .. }
            )
        })
        .count();
    if mergeable < 2 {
        return;
    }
    let votes_per_msg = (max_payload.saturating_sub(limits::ACCEPTED_FIXED) / 8).max(1);
    let request_budget = max_payload.saturating_sub(limits::CLIENT_REQUEST_FIXED);
    let mut merged: Vec<Envelope> = Vec::with_capacity(sends.len());
    // The open message per destination (and ballot, for votes), and for requests its size.
    let mut open_votes: std::collections::HashMap<(NodeId, Ballot, bool), usize> =
        Default::default();
    let mut open_requests: std::collections::HashMap<NodeId, (usize, usize)> = Default::default();
    for mut env in sends.drain(..) {
        let decided = matches!(env.msg, Message::Decided { .. });
        match &mut env.msg {
            Message::Accepted { ballot, instances } | Message::Decided { ballot, instances } => {
                if let Some(&k) = open_votes.get(&(env.to, *ballot, decided)) {
                    if let Message::Accepted {
                        instances: into, ..
                    }
                    | Message::Decided {
                        instances: into, ..
                    } = &mut merged[k].msg
                    {
                        if into.len() + instances.len() <= votes_per_msg {
                            into.extend_from_slice(instances);
                            continue;
                        }
                    }
                }
                open_votes.insert((env.to, *ballot, decided), merged.len());
            }
            Message::ClientRequest { values } => {
                let size: usize = values.iter().map(limits::value).sum();
                if let Some((k, used)) = open_requests.get_mut(&env.to) {
                    if let Message::ClientRequest { values: into } = &mut merged[*k].msg {
                        if *used + size <= request_budget {
                            into.append(values);
                            *used += size;
                            continue;
                        }
                    }
                }
                open_requests.insert(env.to, (merged.len(), size));
            }
            _ => {}
        }
        merged.push(env);
    }
    *sends = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::ClientValue;
    use bytes::Bytes;

    fn request(client: u64, n: usize, len: usize) -> Message {
        Message::ClientRequest {
            values: (0..n as u64)
                .map(|seq| ClientValue {
                    client,
                    seq,
                    payload: Bytes::from(vec![7u8; len]),
                })
                .collect(),
        }
    }

    #[test]
    fn client_requests_to_one_node_share_frames_and_each_fits_one() {
        let max_payload = 1500 - limits::FRAME_OVERHEAD;
        // 256 sessions with one 64-byte value each, to the leader (1), and one to node 2.
        let mut sends: Vec<Envelope> = (0..256)
            .map(|c| Envelope {
                to: 1,
                msg: request(c, 1, 64),
            })
            .collect();
        sends.insert(
            3,
            Envelope {
                to: 2,
                msg: request(999, 1, 64),
            },
        );
        coalesce(&mut sends, max_payload);
        let to_leader: Vec<&Message> = sends.iter().filter(|e| e.to == 1).map(|e| &e.msg).collect();
        let per_frame = (max_payload - limits::CLIENT_REQUEST_FIXED) / (limits::VALUE_FIXED + 64);
        assert_eq!(to_leader.len(), 256usize.div_ceil(per_frame));
        let mut clients = Vec::new();
        for m in &to_leader {
            assert!(limits::payload(m) <= max_payload, "{}", limits::payload(m));
            let Message::ClientRequest { values } = m else {
                panic!("a request became {m:?}")
            };
            clients.extend(values.iter().map(|v| v.client));
        }
        assert_eq!(
            clients,
            (0..256).collect::<Vec<u64>>(),
            "every value, in order"
        );
        assert_eq!(sends.iter().filter(|e| e.to == 2).count(), 1);
    }

    #[test]
    fn votes_merge_per_destination_and_ballot_only() {
        let b = |round| Ballot { round, proposer: 1 };
        let vote = |to, round, i| Envelope {
            to,
            msg: Message::Accepted {
                ballot: b(round),
                instances: vec![i],
            },
        };
        let mut sends = vec![
            vote(1, 5, 10),
            vote(21, 5, 10),
            vote(1, 5, 11),
            vote(1, 6, 12),
            Envelope {
                to: 1,
                msg: Message::Progress { delivered_below: 3 },
            },
            vote(21, 5, 11),
        ];
        coalesce(&mut sends, 1474);
        let got: Vec<(NodeId, Message)> = sends.into_iter().map(|e| (e.to, e.msg)).collect();
        let votes = |round, instances: Vec<u64>| Message::Accepted {
            ballot: b(round),
            instances,
        };
        assert_eq!(
            got,
            vec![
                (1, votes(5, vec![10, 11])),
                (21, votes(5, vec![10, 11])),
                (1, votes(6, vec![12])),
                (1, Message::Progress { delivered_below: 3 }),
            ]
        );
    }
}
