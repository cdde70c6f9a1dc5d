//! The acceptor: promises ballots, votes for values, answers catch-up requests, trims.
//! Every state change it makes is returned as a `Change` to persist; its replies are only
//! valid once those changes are durable (see `actions`).

use super::actions::{Actions, Change};
use super::config::{Membership, ProtocolConfig};
use super::message::Message;
use super::types::{AcceptedEntry, Ballot, Batch, InstanceId, NodeId};
use crate::wire::sizes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// What an acceptor's storage holds, and what it loads after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptorState {
    pub promised: Ballot,
    pub accepted: BTreeMap<InstanceId, (Ballot, Batch)>,
    pub trim: InstanceId,
}

impl AcceptorState {
    /// Applies one persisted change, as storage does.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Promise(b) => self.promised = self.promised.max(*b),
            Change::Accept(e) => {
                self.promised = self.promised.max(e.ballot);
                if e.instance >= self.trim {
                    self.accepted
                        .insert(e.instance, (e.ballot, e.value.clone()));
                }
            }
            Change::Trim(t) => {
                if *t > self.trim {
                    self.trim = *t;
                    self.accepted = self.accepted.split_off(t);
                }
            }
            Change::ProposerRound(_) => {}
        }
    }
}

pub struct Acceptor {
    id: NodeId,
    members: Membership,
    max_payload: usize,
    catchup_max: u64,
    state: AcceptorState,
}

impl Acceptor {
    pub fn new(id: NodeId, cfg: &ProtocolConfig, members: Membership) -> Self {
        Self::restore(id, cfg, members, AcceptorState::default())
    }

    /// An acceptor that resumes from what its storage made durable.
    pub fn restore(
        id: NodeId,
        cfg: &ProtocolConfig,
        members: Membership,
        state: AcceptorState,
    ) -> Self {
        Acceptor {
            id,
            members,
            max_payload: cfg.max_payload(),
            catchup_max: cfg.catchup_max_instances,
            state,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn state(&self) -> &AcceptorState {
        &self.state
    }

    pub fn promised(&self) -> Ballot {
        self.state.promised
    }

    pub fn handle(&mut self, from: NodeId, msg: Message, out: &mut Actions) {
        match msg {
            Message::Prepare {
                ballot,
                from: start,
            } if self.sent_by_owner(from, ballot) => self.on_prepare(ballot, start, out),
            Message::Accept {
                ballot,
                instance,
                value,
            } if self.sent_by_owner(from, ballot) => self.on_accept(ballot, instance, value, out),
            Message::CatchupRequest { from: start, to } => self.on_catchup(from, start, to, out),
            Message::Trim { below }
                if self.members.proposers.contains(&from) && below > self.state.trim =>
            {
                let change = Change::Trim(below);
                self.state.apply(&change);
                out.persist.push(change);
            }
            _ => {}
        }
    }

    fn on_prepare(&mut self, ballot: Ballot, start: InstanceId, out: &mut Actions) {
        if self.rejects(ballot, out) {
            return;
        }
        if ballot > self.state.promised {
            let change = Change::Promise(ballot);
            self.state.apply(&change);
            out.persist.push(change);
        }
        let end = self
            .state
            .accepted
            .last_key_value()
            .map_or(start, |(i, _)| (*i + 1).max(start));
        let trim = self.state.trim;
        let entries = self.entries(start.max(trim), end);
        for (chunk_start, chunk_end, entries) in
            chunk(start, end, entries, self.chunk_budget(sizes::PROMISE_FIXED))
        {
            out.send(
                ballot.proposer,
                Message::Promise {
                    ballot,
                    from: start,
                    end,
                    chunk_start,
                    chunk_end,
                    trim,
                    entries,
                },
            );
        }
    }

    fn on_accept(&mut self, ballot: Ballot, instance: InstanceId, value: Batch, out: &mut Actions) {
        if self.rejects(ballot, out) {
            return;
        }
        // Below the trim point the instance was delivered by every learner; the vote (not
        // stored) only lets a leader whose promise quorum had trimmed less close the instance.
        let already = instance < self.state.trim
            || matches!(self.state.accepted.get(&instance), Some((b, _)) if *b == ballot);
        if !already {
            let change = Change::Accept(AcceptedEntry {
                instance,
                ballot,
                value,
            });
            self.state.apply(&change);
            out.persist.push(change);
        }
        let msg = Message::Accepted {
            ballot,
            instances: vec![instance],
        };
        out.send(ballot.proposer, msg.clone());
        out.send_all(&self.members.learners, &msg);
    }

    fn on_catchup(
        &mut self,
        learner: NodeId,
        start: InstanceId,
        to: InstanceId,
        out: &mut Actions,
    ) {
        if !self.members.learners.contains(&learner) || to < start {
            return;
        }
        let to = to.min(start.saturating_add(self.catchup_max));
        let trim = self.state.trim;
        let entries = self.entries(start.max(trim), to);
        let budget = self.chunk_budget(sizes::CATCHUP_REPLY_FIXED);
        let chunks = chunk(start, to, entries, budget);
        if chunks.iter().all(|c| c.2.is_empty()) {
            // Answer even with nothing, so a learner below the trim point learns it at once.
            out.send(
                learner,
                Message::CatchupReply {
                    trim,
                    entries: Vec::new(),
                },
            );
            return;
        }
        for (_, _, entries) in chunks.into_iter().filter(|c| !c.2.is_empty()) {
            out.send(learner, Message::CatchupReply { trim, entries });
        }
    }

    /// Phase 1a and 2a count only from the member proposer that owns the ballot.
    fn sent_by_owner(&self, from: NodeId, ballot: Ballot) -> bool {
        ballot.proposer == from && self.members.proposers.contains(&from)
    }

    /// Answers a ballot below our promise with the promise, so its proposer steps down.
    fn rejects(&self, ballot: Ballot, out: &mut Actions) -> bool {
        let stale = ballot < self.state.promised;
        if stale {
            out.send(
                ballot.proposer,
                Message::Reject {
                    promised: self.state.promised,
                    rejected: ballot,
                },
            );
        }
        stale
    }

    fn entries(&self, start: InstanceId, end: InstanceId) -> Vec<AcceptedEntry> {
        if start >= end {
            return Vec::new();
        }
        self.state
            .accepted
            .range((Bound::Included(start), Bound::Excluded(end)))
            .map(|(i, (b, v))| AcceptedEntry {
                instance: *i,
                ballot: *b,
                value: v.clone(),
            })
            .collect()
    }

    fn chunk_budget(&self, fixed: usize) -> usize {
        self.max_payload.saturating_sub(fixed)
    }
}

/// Splits `entries` (sorted, inside `[start, end)`) into frames of at most `budget` entry bytes,
/// returning each chunk's covered range. Always at least one chunk, so an empty answer is sent.
fn chunk(
    start: InstanceId,
    end: InstanceId,
    entries: Vec<AcceptedEntry>,
    budget: usize,
) -> Vec<(InstanceId, InstanceId, Vec<AcceptedEntry>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_start = start;
    let mut used = 0;
    for e in entries {
        let size = sizes::entry(&e);
        if !cur.is_empty() && used + size > budget {
            let next_start = e.instance;
            out.push((cur_start, next_start, std::mem::take(&mut cur)));
            cur_start = next_start;
            used = 0;
        }
        used += size;
        cur.push(e);
    }
    out.push((cur_start, end.max(cur_start), cur));
    out
}
