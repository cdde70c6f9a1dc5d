//! The acceptor: promises ballots, votes for values, answers catch-up requests, trims.
//! Every state change it makes is returned as a `Change` to persist; its replies are only
//! valid once those changes are durable (see `actions`).

use super::actions::{Actions, Change};
use super::config::{Membership, ProtocolConfig};
use super::limits as sizes;
use super::message::Message;
use super::types::{AcceptedEntry, Ballot, Batch, InstanceId, NodeId};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

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

/// One frame's share of an answer: the range `[start, end)` it covers and its votes there.
type Chunk = (InstanceId, InstanceId, Vec<AcceptedEntry>);

/// What an acceptor refused or put off, and where its log stands, for the node's JSON
/// summary and stop summary (and the simulator's report).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AcceptorCounters {
    /// 2a's whose batch would not fit a 1b page or a catch-up reply: storing one would make
    /// every later election fail to encode its answer.
    pub refused_oversized: u64,
    /// Prepares and 2a's at the top round (u32::MAX): no proposer could ever outbid it.
    pub refused_top_round: u64,
    /// Prepares from another proposer while the promised one was still heard from (the
    /// leader lease): a standby that only missed heartbeats does not depose a live leader.
    pub deferred_prepares: u64,
    /// Where the log stood when these were taken: the trim point, and how many votes the
    /// acceptor holds (in memory and on disk) above it.
    pub trim: InstanceId,
    pub votes_held: u64,
}

pub struct Acceptor {
    id: NodeId,
    members: Membership,
    max_payload: usize,
    max_batch: usize,
    catchup_max: u64,
    answer_max_frames: usize,
    lease: Duration,
    /// `relay_decisions`: 2b votes go to the leader only.
    relay: bool,
    /// When the proposer that owns the promised ballot was last heard from.
    leader_heard: Option<Duration>,
    state: AcceptorState,
    counters: AcceptorCounters,
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
            max_batch: cfg.max_batch_bytes(),
            catchup_max: cfg.catchup_max_instances,
            answer_max_frames: cfg.answer_max_frames.clamp(1, usize::MAX as u64) as usize,
            lease: cfg.leader_lease(),
            relay: cfg.relay_decisions,
            leader_heard: None,
            state,
            counters: AcceptorCounters::default(),
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

    /// Its counters, with the log's trim point and size as they are now.
    pub fn counters(&self) -> AcceptorCounters {
        AcceptorCounters {
            trim: self.state.trim,
            votes_held: self.state.accepted.len() as u64,
            ..self.counters.clone()
        }
    }

    pub fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        match msg {
            Message::Prepare {
                ballot,
                from: start,
            } if self.sent_by_owner(from, ballot) => self.on_prepare(now, ballot, start, out),
            Message::Accept {
                ballot,
                instance,
                value,
            } if self.sent_by_owner(from, ballot) => {
                self.on_accept(now, ballot, instance, value, out)
            }
            Message::Heartbeat { ballot, .. } if self.sent_by_owner(from, ballot) => {
                self.heard(now, ballot);
            }
            Message::CatchupRequest { from: start, to } => self.on_catchup(from, start, to, out),
            Message::Trim { below } if self.members.proposers.contains(&from) => {
                if from == self.state.promised.proposer {
                    self.leader_heard = Some(now);
                }
                if below > self.state.trim {
                    let change = Change::Trim(below);
                    self.state.apply(&change);
                    out.change(change);
                }
            }
            _ => {}
        }
    }

    /// Notes that the proposer owning `ballot` spoke, if it is the one we follow.
    fn heard(&mut self, now: Duration, ballot: Ballot) {
        if ballot == self.state.promised {
            self.leader_heard = Some(now);
        }
    }

    /// A ballot at the top round is refused outright: it could never be outbid, and the
    /// next round would wrap.
    fn top_round(&mut self, ballot: Ballot) -> bool {
        let top = ballot.round == u32::MAX;
        if top {
            self.counters.refused_top_round += 1;
        }
        top
    }

    fn on_prepare(&mut self, now: Duration, ballot: Ballot, start: InstanceId, out: &mut Actions) {
        if self.top_round(ballot) || self.rejects(ballot, out) {
            return;
        }
        if ballot > self.state.promised {
            let leased = self
                .leader_heard
                .is_some_and(|t| now.saturating_sub(t) < self.lease);
            if leased && ballot.proposer != self.state.promised.proposer {
                // No answer at all: the asker retries, and gets one once the lease lapses.
                self.counters.deferred_prepares += 1;
                return;
            }
            let change = Change::Promise(ballot);
            self.state.apply(&change);
            out.change(change);
        }
        self.leader_heard = Some(now);
        let log_end = self
            .state
            .accepted
            .last_key_value()
            .map_or(start, |(i, _)| (*i + 1).max(start));
        let trim = self.state.trim;
        let budget = self.chunk_budget(sizes::PROMISE_FIXED);
        let (chunks, page_end) = self.page(start, log_end, budget);
        for (chunk_start, chunk_end, entries) in chunks {
            out.send(
                ballot.proposer,
                Message::Promise {
                    ballot,
                    from: start,
                    end: page_end,
                    log_end,
                    chunk_start,
                    chunk_end,
                    trim,
                    entries,
                },
            );
        }
    }

    fn on_accept(
        &mut self,
        now: Duration,
        ballot: Ballot,
        instance: InstanceId,
        value: Batch,
        out: &mut Actions,
    ) {
        if self.top_round(ballot) || self.rejects(ballot, out) {
            return;
        }
        if sizes::batch(&value) > self.max_batch {
            // It fits a 2a but not the 1b page or catch-up reply that must carry it later.
            self.counters.refused_oversized += 1;
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
            out.change(change);
        }
        self.heard(now, ballot);
        let msg = Message::Accepted {
            ballot,
            instances: vec![instance],
        };
        if !self.relay {
            out.send_all(&self.members.learners, &msg);
        }
        out.send(ballot.proposer, msg);
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
        let budget = self.chunk_budget(sizes::CATCHUP_REPLY_FIXED);
        let (chunks, _) = self.page(start, to, budget);
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

    /// The first page of `[start, end)`: at most `answer_max_frames` chunks of at most
    /// `budget` entry bytes each, and where the page ends (`end` if it holds everything).
    /// Instances below the trim point are covered, with no entries.
    fn page(&self, start: InstanceId, end: InstanceId, budget: usize) -> (Vec<Chunk>, InstanceId) {
        let mut chunks = Vec::new();
        let mut cur = Vec::new();
        let mut cur_start = start;
        let mut used = 0;
        let from = start.max(self.state.trim);
        if from < end {
            let range = self
                .state
                .accepted
                .range((Bound::Included(from), Bound::Excluded(end)));
            for (i, (b, v)) in range {
                let e = AcceptedEntry {
                    instance: *i,
                    ballot: *b,
                    value: v.clone(),
                };
                let size = sizes::entry(&e);
                if !cur.is_empty() && used + size > budget {
                    chunks.push((cur_start, *i, std::mem::take(&mut cur)));
                    cur_start = *i;
                    used = 0;
                    if chunks.len() == self.answer_max_frames {
                        return (chunks, cur_start);
                    }
                }
                used += size;
                cur.push(e);
            }
        }
        let page_end = end.max(cur_start);
        chunks.push((cur_start, page_end, cur));
        (chunks, page_end)
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

    fn chunk_budget(&self, fixed: usize) -> usize {
        self.max_payload.saturating_sub(fixed)
    }
}
