//! The learner: an instance is decided when a quorum of acceptors voted for it at one ballot
//! and the learner holds that ballot's value. Decided instances are delivered in instance order;
//! no-ops are skipped and a client value is delivered once however often it was proposed.
//! Gaps are filled by asking acceptors for whole ranges at once.

use super::actions::{Actions, Delivery, Event};
use super::config::{Membership, ProtocolConfig};
use super::message::Message;
use super::types::{Ballot, Batch, ClientId, InstanceId, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Per client: every sequence number below `below` and those in `above` were delivered.
/// Clients keep a bounded number of values outstanding, so `above` stays small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientDedup {
    pub below: u64,
    pub above: BTreeSet<u64>,
}

impl ClientDedup {
    /// Records `seq`; false if it was delivered before.
    fn insert(&mut self, seq: u64) -> bool {
        if seq == self.below {
            // The common case, values in order: no set to touch.
            self.below += 1;
            while !self.above.is_empty() && self.above.remove(&self.below) {
                self.below += 1;
            }
            return true;
        }
        seq > self.below && self.above.insert(seq)
    }
}

/// What a learner keeps durable so it resumes where it stopped: the next instance to deliver
/// and which client values it delivered (the exactly-once table). A learner's journal keeps it
/// at the head of every segment and replays its records onto it at a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearnerSnapshot {
    pub next: InstanceId,
    pub dedup: HashMap<ClientId, ClientDedup>,
}

impl LearnerSnapshot {
    /// Replays one delivered value: false if it was delivered before (a journal holding it
    /// twice is corrupt).
    pub fn replay_value(&mut self, client: ClientId, seq: u64) -> bool {
        self.dedup.entry(client).or_default().insert(seq)
    }

    /// Replays the delivery point: every instance below `next` was delivered.
    pub fn replay_through(&mut self, next: InstanceId) {
        self.next = self.next.max(next);
    }
}

#[derive(Default)]
struct Votes {
    /// Per ballot: its value once seen, and which acceptors voted for it.
    ballots: Vec<(Ballot, Option<Batch>, u64)>,
}

pub struct Learner {
    id: NodeId,
    cfg: ProtocolConfig,
    members: Membership,
    snapshot: LearnerSnapshot,
    undecided: BTreeMap<InstanceId, Votes>,
    decided: BTreeMap<InstanceId, Batch>,
    /// Every instance below this is known to be decided somewhere.
    known_decided: InstanceId,
    gap_since: Option<Duration>,
    last_catchup: Option<Duration>,
    last_progress: Duration,
    trimmed: Option<InstanceId>,
    /// Every instance below this is delivered and durable where the learner keeps its state:
    /// the only progress it reports (acceptors trim by it). Its driver says so after each
    /// sync (`made_durable`).
    durable: InstanceId,
}

impl Learner {
    pub fn new(id: NodeId, cfg: &ProtocolConfig, members: Membership, now: Duration) -> Self {
        Self::restore(id, cfg, members, now, LearnerSnapshot::default())
    }

    pub fn restore(
        id: NodeId,
        cfg: &ProtocolConfig,
        members: Membership,
        now: Duration,
        snapshot: LearnerSnapshot,
    ) -> Self {
        Learner {
            id,
            cfg: cfg.clone(),
            members,
            known_decided: snapshot.next,
            durable: snapshot.next,
            snapshot,
            undecided: BTreeMap::new(),
            decided: BTreeMap::new(),
            gap_since: None,
            last_catchup: None,
            last_progress: now,
            trimmed: None,
        }
    }

    /// Everything below `next` is durable (the driver's journal synced it). Never beyond what
    /// was delivered, never backwards.
    pub fn made_durable(&mut self, next: InstanceId) {
        self.durable = self.durable.max(next.min(self.snapshot.next));
    }

    /// The progress this learner reports: everything below it is delivered and durable.
    pub fn durable_below(&self) -> InstanceId {
        self.durable
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The next instance to deliver: everything below it was delivered.
    pub fn next_instance(&self) -> InstanceId {
        self.snapshot.next
    }

    /// Every instance below this one is known decided (delivered or not yet).
    pub fn known_decided(&self) -> InstanceId {
        self.known_decided
    }

    pub fn snapshot(&self) -> &LearnerSnapshot {
        &self.snapshot
    }

    /// Set once acceptors have trimmed instances this learner still needs.
    pub fn trimmed(&self) -> Option<InstanceId> {
        self.trimmed
    }

    pub fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        match msg {
            Message::Accept {
                ballot,
                instance,
                value,
            } if ballot.proposer == from && self.members.proposers.contains(&from) => {
                // A batch acceptors refuse as too large for a 1b page gets no vote: keeping
                // it would let a forged 2a at the leader's ballot stand in for the value the
                // leader really proposes there.
                if super::limits::batch(&value) > self.cfg.max_batch_bytes() {
                    return;
                }
                self.record(instance, ballot, Some(value), None);
                self.deliver(now, out);
            }
            Message::Accepted { ballot, instances } => {
                let Some(idx) = self.members.acceptor_index(from) else {
                    return;
                };
                for i in instances {
                    self.record(i, ballot, None, Some(idx));
                }
                self.deliver(now, out);
            }
            Message::CatchupReply { trim, entries } => {
                let Some(idx) = self.members.acceptor_index(from) else {
                    return;
                };
                if trim > self.snapshot.next && self.trimmed.is_none() {
                    self.trimmed = Some(trim);
                    out.events.push(Event::Trimmed {
                        needed: self.snapshot.next,
                        trim,
                    });
                }
                let before = self.snapshot.next;
                for e in entries {
                    self.record(e.instance, e.ballot, Some(e.value), Some(idx));
                }
                self.deliver(now, out);
                if self.snapshot.next > before {
                    // Answers are bounded pages: while they make progress, ask for the next
                    // at the next tick rather than after the full interval.
                    self.last_catchup = None;
                }
            }
            Message::Heartbeat {
                ballot,
                decided_below,
                ..
            } if ballot.proposer == from && self.members.proposers.contains(&from) => {
                self.known_decided = self.known_decided.max(decided_below);
            }
            _ => {}
        }
    }

    pub fn tick(&mut self, now: Duration, out: &mut Actions) {
        if now.saturating_sub(self.last_progress)
            >= ProtocolConfig::ms(self.cfg.progress_interval_ms)
        {
            self.last_progress = now;
            out.send_all(
                &self.members.proposers,
                &Message::Progress {
                    delivered_below: self.durable,
                },
            );
        }
        self.maybe_catch_up(now, out);
    }

    fn record(
        &mut self,
        instance: InstanceId,
        ballot: Ballot,
        value: Option<Batch>,
        voter: Option<usize>,
    ) {
        // Beyond the horizon the learner keeps nothing (bounded memory, whatever arrives); it
        // fetches those instances by catch-up once it gets closer.
        if instance < self.snapshot.next
            || instance - self.snapshot.next >= self.cfg.learner_max_ahead
            || self.decided.contains_key(&instance)
        {
            return;
        }
        let votes = self.undecided.entry(instance).or_default();
        let slot = match votes.ballots.iter_mut().position(|b| b.0 == ballot) {
            Some(p) => &mut votes.ballots[p],
            None => {
                votes.ballots.push((ballot, None, 0));
                votes.ballots.last_mut().expect("just pushed")
            }
        };
        if slot.1.is_none() {
            slot.1 = value;
        }
        if let Some(idx) = voter {
            slot.2 |= 1 << idx;
        }
        let quorum = self.members.quorum() as u32;
        if let (Some(v), true) = (&slot.1, slot.2.count_ones() >= quorum) {
            let v = v.clone();
            self.undecided.remove(&instance);
            self.decided.insert(instance, v);
        }
    }

    fn deliver(&mut self, now: Duration, out: &mut Actions) {
        while let Some(value) = self.decided.remove(&self.snapshot.next) {
            let instance = self.snapshot.next;
            self.snapshot.next += 1;
            out.events.push(Event::Decided {
                instance,
                value: value.clone(),
            });
            if value.is_noop() {
                continue;
            }
            let dedup = &mut self.snapshot.dedup;
            let (mut values, mut indexes) = (Vec::new(), Vec::new());
            for (k, v) in value.values().iter().enumerate() {
                if dedup.entry(v.client).or_default().insert(v.seq) {
                    values.push(v.clone());
                    indexes.push(k as u32);
                }
            }
            if !values.is_empty() {
                out.deliver.push(Delivery {
                    instance,
                    values,
                    indexes,
                });
            }
        }
        self.known_decided = self.known_decided.max(self.snapshot.next);
        if self.has_gap() {
            self.gap_since.get_or_insert(now);
        } else {
            self.gap_since = None;
        }
    }

    /// The next instance is missing while later ones are decided or known decided.
    fn has_gap(&self) -> bool {
        self.known_decided > self.snapshot.next || !self.decided.is_empty()
    }

    fn maybe_catch_up(&mut self, now: Duration, out: &mut Actions) {
        if self.trimmed.is_some() {
            return;
        }
        if self.has_gap() {
            self.gap_since.get_or_insert(now);
        }
        let Some(since) = self.gap_since else {
            return;
        };
        if now.saturating_sub(since) < ProtocolConfig::ms(self.cfg.catchup_delay_ms) {
            return;
        }
        if self.last_catchup.is_some_and(|t| {
            now.saturating_sub(t) < ProtocolConfig::ms(self.cfg.catchup_interval_ms)
        }) {
            return;
        }
        self.last_catchup = Some(now);
        let from = self.snapshot.next;
        let highest = self
            .decided
            .last_key_value()
            .map_or(0, |(i, _)| *i + 1)
            .max(self.known_decided)
            .max(self.undecided.last_key_value().map_or(0, |(i, _)| *i + 1));
        let to = highest.min(from.saturating_add(self.cfg.catchup_max_instances));
        out.send_all(
            &self.members.acceptors,
            &Message::CatchupRequest { from, to },
        );
    }
}
