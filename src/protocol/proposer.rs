//! The proposer. One leads at a time: it runs phase 1 once for every instance from its known
//! decided point on, then phase 2 per instance with up to `window` instances open, batching
//! client values. Standbys follow the leader's heartbeats and take over after a timeout that
//! grows with their rank, so two standbys never duel.

use super::actions::{Actions, Change, Event};
use super::config::{Membership, ProtocolConfig};
use super::limits as sizes;
use super::message::Message;
use super::types::{Ballot, Batch, ClientValue, InstanceId, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

enum Role {
    Follower {
        leader: Option<NodeId>,
        last_heard: Duration,
    },
    Preparing(Box<Preparing>),
    Leading {
        ballot: Ballot,
    },
}

struct Preparing {
    ballot: Ballot,
    from: InstanceId,
    /// When phase 1 started: acceptors that never answered are asked again a retransmit
    /// timeout after this (or after their last ask).
    started: Duration,
    /// Per acceptor: how much of its log has arrived, page by page.
    answers: HashMap<NodeId, Answer>,
    /// Highest-ballot vote reported per instance.
    votes: BTreeMap<InstanceId, (Ballot, Batch)>,
    end: InstanceId,
    trim: InstanceId,
}

/// One acceptor's paged phase-1 answer.
struct Answer {
    /// Every chunk of `[from, covered)` has arrived.
    covered: InstanceId,
    /// Chunks that arrived past a gap, merged once it fills.
    ahead: Vec<(InstanceId, InstanceId)>,
    /// The end of the acceptor's log, as it last reported (None before its first chunk).
    log_end: Option<InstanceId>,
    /// The start of the page last asked for, and when.
    asked: InstanceId,
    asked_at: Duration,
    /// When any chunk last arrived.
    heard: Option<Duration>,
}

impl Answer {
    fn new(from: InstanceId, now: Duration) -> Self {
        Answer {
            covered: from,
            ahead: Vec::new(),
            log_end: None,
            asked: from,
            asked_at: now,
            heard: None,
        }
    }

    /// Merges a chunk's range into what is covered.
    fn add(&mut self, start: InstanceId, end: InstanceId) {
        if start > self.covered {
            self.ahead.push((start, end));
            self.ahead.sort_unstable();
        } else {
            self.covered = self.covered.max(end);
        }
        while let Some(&(s, e)) = self.ahead.first() {
            if s > self.covered {
                break;
            }
            self.covered = self.covered.max(e);
            self.ahead.remove(0);
        }
    }

    fn complete(&self) -> bool {
        self.log_end.is_some_and(|e| self.covered >= e)
    }
}

struct Open {
    value: Batch,
    votes: u64,
    sent_at: Duration,
    proposed_at: Duration,
}

/// What a proposer has done, for metrics: counts since it started, and phase-2 latencies
/// when asked to keep them (`record_phase2`), until the driver takes them.
#[derive(Clone, Debug, Default)]
pub struct ProposerCounters {
    /// Instances this proposer proposed a value in (phase 2 started), re-proposals included.
    pub instances_opened: u64,
    /// Instances that reached a quorum of votes for this proposer.
    pub instances_decided: u64,
    /// Accept and Prepare messages sent again after the retransmit timeout.
    pub retransmissions: u64,
    /// Times the leader this proposer knows of changed (itself included).
    pub leader_changes: u64,
    /// Phase-2 latencies: from an instance's first Accept to its quorum.
    pub phase2: Vec<Duration>,
    pub record_phase2: bool,
}

pub struct Proposer {
    id: NodeId,
    rank: u32,
    cfg: ProtocolConfig,
    members: Membership,
    /// Other proposers (heartbeat targets).
    peers: Vec<NodeId>,
    max_round: u32,
    highest_seen: Ballot,
    role: Role,
    decided_below: InstanceId,
    decided_above: BTreeSet<InstanceId>,
    next_instance: InstanceId,
    open: BTreeMap<InstanceId, Open>,
    recovered: VecDeque<(InstanceId, Batch)>,
    pending: VecDeque<ClientValue>,
    pending_bytes: usize,
    pending_since: Duration,
    /// Per learner: the delivery point it last reported, and when.
    progress: HashMap<NodeId, (InstanceId, Duration)>,
    /// Per learner: where the newest snapshot it holds stands, and when it said so.
    snapshots: HashMap<NodeId, (InstanceId, Duration)>,
    /// The highest trim point this proposer sent or an acceptor reported: phase 1 never
    /// starts below it.
    known_trim: InstanceId,
    last_heartbeat: Duration,
    last_trim: Duration,
    batch_bytes: usize,
    max_value: usize,
    counters: ProposerCounters,
    /// Set on becoming leader, cleared at the first instance decided under that ballot.
    awaiting_first_decision: bool,
}

impl Proposer {
    /// A proposer starting fresh, or after a restart with the highest round its storage kept.
    pub fn new(
        id: NodeId,
        cfg: &ProtocolConfig,
        members: Membership,
        now: Duration,
        max_round: u32,
    ) -> Self {
        let rank = members.proposers.iter().position(|p| *p == id).unwrap_or(0) as u32;
        let peers = members
            .proposers
            .iter()
            .copied()
            .filter(|p| *p != id)
            .collect();
        let progress = members.learners.iter().map(|l| (*l, (0, now))).collect();
        Proposer {
            id,
            rank,
            cfg: cfg.clone(),
            members,
            peers,
            max_round,
            highest_seen: Ballot::ZERO,
            role: Role::Follower {
                leader: None,
                last_heard: now,
            },
            decided_below: 0,
            decided_above: BTreeSet::new(),
            next_instance: 0,
            open: BTreeMap::new(),
            recovered: VecDeque::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_since: now,
            // Until it reports, a learner counts as at 0 and heard now: one that never
            // reports stops holding trim back a learner timeout after we start.
            progress,
            snapshots: HashMap::new(),
            known_trim: 0,
            last_heartbeat: Duration::ZERO,
            last_trim: now,
            batch_bytes: cfg.effective_batch_bytes(),
            max_value: cfg.max_value_bytes(),
            counters: ProposerCounters::default(),
            awaiting_first_decision: false,
        }
    }

    pub fn counters(&self) -> &ProposerCounters {
        &self.counters
    }

    /// Keep phase-2 latencies from now on (the driver must take them: `take_phase2`).
    pub fn record_phase2(&mut self) {
        self.counters.record_phase2 = true;
    }

    /// The phase-2 latencies recorded since the last call.
    pub fn take_phase2(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.counters.phase2)
    }

    /// The leader this proposer knows of: itself when leading, the sender of the heartbeats
    /// it follows, or none.
    pub fn known_leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Follower { leader, .. } => *leader,
            Role::Preparing(_) => None,
            Role::Leading { .. } => Some(self.id),
        }
    }

    /// The highest ballot this proposer has seen or used.
    pub fn highest_ballot(&self) -> Ballot {
        self.highest_seen
            .max(self.current_ballot().unwrap_or(Ballot::ZERO))
    }

    /// Sets the role, counting a change of the known leader.
    fn set_role(&mut self, role: Role) {
        let before = self.known_leader();
        self.role = role;
        let after = self.known_leader();
        if after.is_some() && after != before {
            self.counters.leader_changes += 1;
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leading { .. })
    }

    /// The ballot this proposer leads with, if it leads.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match self.role {
            Role::Leading { ballot } => Some(ballot),
            _ => None,
        }
    }

    pub fn decided_below(&self) -> InstanceId {
        self.decided_below
    }

    pub fn open_instances(&self) -> usize {
        self.open.len()
    }

    pub fn pending_values(&self) -> usize {
        self.pending.len()
    }

    pub fn max_round(&self) -> u32 {
        self.max_round
    }

    pub fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        match msg {
            Message::ClientRequest { values } => self.on_client(now, from, values, out),
            msg @ Message::Promise { .. } => self.on_promise(now, from, msg, out),
            Message::Accepted { ballot, instances } => {
                self.on_accepted(now, from, ballot, &instances, out)
            }
            Message::Reject { promised, rejected }
                if self.members.acceptor_index(from).is_some() =>
            {
                if self.current_ballot() == Some(rejected) && promised > rejected {
                    self.step_down(now, promised, out);
                }
                self.highest_seen = self.highest_seen.max(promised);
            }
            Message::Heartbeat {
                ballot,
                decided_below,
                ..
            } => self.on_heartbeat(now, from, ballot, decided_below, out),
            Message::Progress { delivered_below } if self.members.learners.contains(&from) => {
                // A learner that restarted reports less than before: it is where it says.
                self.progress.insert(from, (delivered_below, now));
                self.mark_decided_below(delivered_below);
                self.pump(now, out);
            }
            Message::SnapshotHeld { below } if self.members.learners.contains(&from) => {
                self.snapshots.insert(from, (below, now));
            }
            _ => {}
        }
    }

    pub fn tick(&mut self, now: Duration, out: &mut Actions) {
        match &mut self.role {
            Role::Follower { last_heard, .. } => {
                let wait = ProtocolConfig::ms(self.cfg.leader_timeout_ms.saturating_add(
                    (self.rank as u64).saturating_mul(self.cfg.takeover_backoff_ms),
                ));
                if now.saturating_sub(*last_heard) >= wait {
                    self.start_phase1(now, out);
                }
            }
            Role::Preparing(p) => {
                let retransmit = ProtocolConfig::ms(self.cfg.retransmit_timeout_ms);
                let ballot = p.ballot;
                let own_waits = !Self::may_ask_own(self.id, &self.members, p);
                for a in &self.members.acceptors {
                    if *a == self.id && own_waits {
                        continue;
                    }
                    // Only the missing part: from where this acceptor's answer stops.
                    let (from, asked_at) = match p.answers.get(a) {
                        Some(x) if x.complete() => continue,
                        Some(x) => (x.covered, x.asked_at),
                        None => (p.from, p.started),
                    };
                    if now.saturating_sub(asked_at) < retransmit {
                        continue;
                    }
                    let x = p
                        .answers
                        .entry(*a)
                        .or_insert_with(|| Answer::new(from, now));
                    x.asked = from;
                    x.asked_at = now;
                    self.counters.retransmissions += 1;
                    out.send(*a, Message::Prepare { ballot, from });
                }
                // While a quorum is answering, keep the standbys quiet: phase 1 over a long
                // history takes many pages, and a standby that timed out meanwhile would
                // prepare a higher ballot and the two would duel.
                let lively = ProtocolConfig::ms(self.cfg.leader_timeout_ms);
                let answering = p
                    .answers
                    .values()
                    .filter(|x| x.heard.is_some_and(|t| now.saturating_sub(t) < lively))
                    .count();
                if answering >= self.members.quorum()
                    && now.saturating_sub(self.last_heartbeat)
                        >= ProtocolConfig::ms(self.cfg.heartbeat_interval_ms)
                {
                    self.send_heartbeat(now, ballot, out);
                }
            }
            Role::Leading { ballot } => {
                let ballot = *ballot;
                if now.saturating_sub(self.last_heartbeat)
                    >= ProtocolConfig::ms(self.cfg.heartbeat_interval_ms)
                {
                    self.send_heartbeat(now, ballot, out);
                }
                self.retransmit(now, ballot, out);
                self.maybe_trim(now, out);
                self.pump(now, out);
            }
        }
    }

    /// Learners heard from within `learner_timeout_ms` and not left behind by trim: the
    /// ones whose delivery points hold trim back and where phase 1 starts.
    fn live_learner_points(&self, now: Duration) -> impl Iterator<Item = InstanceId> + '_ {
        let timeout = ProtocolConfig::ms(self.cfg.learner_timeout_ms);
        self.members.learners.iter().filter_map(move |l| {
            let (point, heard) = self.progress.get(l)?;
            (now.saturating_sub(*heard) < timeout && *point >= self.known_trim).then_some(*point)
        })
    }

    fn current_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Follower { .. } => None,
            Role::Preparing(p) => Some(p.ballot),
            Role::Leading { ballot } => Some(*ballot),
        }
    }

    fn on_client(
        &mut self,
        now: Duration,
        from: NodeId,
        values: Vec<ClientValue>,
        out: &mut Actions,
    ) {
        if !self.is_leader() {
            let leader = match &self.role {
                Role::Follower { leader, .. } => *leader,
                _ => None,
            };
            let mut clients: Vec<_> = values.iter().map(|v| v.client).collect();
            clients.sort_unstable();
            clients.dedup();
            for client in clients {
                out.send(from, Message::Redirect { client, leader });
            }
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = now;
        }
        let mut shed = 0;
        for v in values {
            if v.payload.len() > self.max_value {
                // A client that checked at submission never sends one; a forged one is dropped.
                shed += 1;
                continue;
            }
            if self.pending.len() >= self.cfg.max_pending_values {
                shed += 1;
                continue;
            }
            self.pending_bytes += sizes::value(&v);
            self.pending.push_back(v);
        }
        if shed > 0 {
            out.events.push(Event::Shed { values: shed });
        }
        self.pump(now, out);
    }

    fn start_phase1(&mut self, now: Duration, out: &mut Actions) {
        // The top round is never used: acceptors refuse it, and the next would wrap.
        let round = self.max_round.max(self.highest_seen.round).checked_add(1);
        let Some(round) = round.filter(|r| *r < u32::MAX) else {
            if let Role::Follower { last_heard, .. } = &mut self.role {
                // Say so once per timeout, not every tick.
                *last_heard = now;
            }
            out.events.push(Event::NoRoundLeft {
                highest: self.highest_seen,
            });
            return;
        };
        self.max_round = round;
        out.change(Change::ProposerRound(round));
        let ballot = Ballot::new(round, self.id);
        // From the slowest live learner's delivery point, not our own decided point: an
        // instance decided long ago may be held by acceptors under different ballots (a leader
        // that re-proposed it died half way), and a lagging learner can only catch up on it
        // once a leader re-proposes it to a quorum at one ballot. A learner gone silent, or
        // left behind by trim, does not hold it back (it will need state transfer), and
        // nothing below the trim point is asked for again.
        let from = self
            .live_learner_points(now)
            .min()
            .unwrap_or(self.decided_below)
            .min(self.decided_below)
            .max(self.known_trim);
        self.set_role(Role::Preparing(Box::new(Preparing {
            ballot,
            from,
            started: now,
            answers: HashMap::new(),
            votes: BTreeMap::new(),
            end: from,
            trim: 0,
        })));
        let msg = Message::Prepare { ballot, from };
        for a in &self.members.acceptors {
            if *a != self.id || self.members.quorum() <= 1 {
                out.send(*a, msg.clone());
            }
        }
    }

    /// A replica asks its own acceptor only once the others' promises would make a quorum
    /// with it: a replica cut off from the rest would otherwise raise its own acceptor's
    /// promise (no leader's heartbeat reaches it to hold the lease), and once the link is
    /// back that acceptor would reject the healthy leader's 2a's and force an election.
    fn may_ask_own(id: NodeId, members: &Membership, p: &Preparing) -> bool {
        let others = p
            .answers
            .iter()
            .filter(|(a, x)| **a != id && x.heard.is_some())
            .count();
        others + 1 >= members.quorum()
    }

    fn on_promise(&mut self, now: Duration, acceptor: NodeId, msg: Message, out: &mut Actions) {
        let Message::Promise {
            ballot,
            from,
            end,
            log_end,
            chunk_start,
            chunk_end,
            trim,
            entries,
        } = msg
        else {
            return;
        };
        let Role::Preparing(p) = &mut self.role else {
            return;
        };
        if p.ballot != ballot || from < p.from || self.members.acceptor_index(acceptor).is_none() {
            return;
        }
        for e in entries {
            let slot = p
                .votes
                .entry(e.instance)
                .or_insert((e.ballot, e.value.clone()));
            if e.ballot > slot.0 {
                *slot = (e.ballot, e.value);
            }
        }
        p.end = p.end.max(log_end);
        p.trim = p.trim.max(trim);
        let start = p.from;
        let x = p
            .answers
            .entry(acceptor)
            .or_insert_with(|| Answer::new(start, now));
        x.heard = Some(now);
        x.log_end = Some(x.log_end.unwrap_or(0).max(log_end));
        x.add(chunk_start, chunk_end);
        // The page is in and more of the log remains: ask for the next page at once.
        if !x.complete() && x.covered >= end && x.covered > x.asked {
            x.asked = x.covered;
            x.asked_at = now;
            out.send(
                acceptor,
                Message::Prepare {
                    ballot,
                    from: x.covered,
                },
            );
        }
        if self.members.acceptor_index(self.id).is_some()
            && !p.answers.contains_key(&self.id)
            && Self::may_ask_own(self.id, &self.members, p)
        {
            let from = p.from;
            p.answers.insert(self.id, Answer::new(from, now));
            out.send(self.id, Message::Prepare { ballot, from });
        }
        let complete = p.answers.values().filter(|a| a.complete()).count();
        if complete >= self.members.quorum() {
            self.become_leader(now, out);
        }
    }

    fn become_leader(&mut self, now: Duration, out: &mut Actions) {
        let Role::Preparing(p) = std::mem::replace(
            &mut self.role,
            Role::Follower {
                leader: None,
                last_heard: now,
            },
        ) else {
            return;
        };
        let ballot = p.ballot;
        // Instances below an acceptor's trim point were delivered by every learner. Starting
        // at the highest trim reported also keeps us from choosing a value for an instance
        // some quorum member could no longer report on.
        self.mark_decided_below(p.trim);
        self.known_trim = self.known_trim.max(p.trim);
        let start = p.from.max(p.trim);
        self.recovered.clear();
        self.open.clear();
        let mut votes = p.votes;
        for i in start..p.end.max(start) {
            // Decided instances too: re-proposing the highest-ballot value is safe, and leaves
            // a quorum at one ballot for learners that still need them.
            let value = votes.remove(&i).map_or_else(Batch::noop, |(_, v)| v);
            self.recovered.push_back((i, value));
        }
        self.next_instance = p.end.max(start);
        self.highest_seen = self.highest_seen.max(ballot);
        self.set_role(Role::Leading { ballot });
        self.pending_since = now;
        out.events.push(Event::BecameLeader { ballot });
        self.awaiting_first_decision = true;
        self.send_heartbeat(now, ballot, out);
        self.pump(now, out);
    }

    fn step_down(&mut self, now: Duration, higher: Ballot, out: &mut Actions) {
        if self.current_ballot().is_some() {
            out.events.push(Event::SteppedDown { higher });
        }
        self.highest_seen = self.highest_seen.max(higher);
        self.set_role(Role::Follower {
            leader: Some(higher.proposer),
            last_heard: now,
        });
        self.open.clear();
        self.recovered.clear();
        self.pending.clear();
        self.pending_bytes = 0;
    }

    fn on_heartbeat(
        &mut self,
        now: Duration,
        from: NodeId,
        ballot: Ballot,
        decided_below: InstanceId,
        out: &mut Actions,
    ) {
        if ballot.proposer != from || !self.members.proposers.contains(&from) {
            return;
        }
        if let Role::Preparing(p) = &self.role {
            // Leader stickiness: we timed out (our link flapped, or we were paused) but the
            // leader is alive. If no acceptor has answered us, which the leader lease makes
            // likely, follow it again rather than keep asking.
            if ballot < p.ballot && p.answers.values().all(|x| x.heard.is_none()) {
                self.set_role(Role::Follower {
                    leader: Some(from),
                    last_heard: now,
                });
                self.mark_decided_below(decided_below);
                return;
            }
        }
        if ballot < self.highest_seen {
            return;
        }
        let mine = self.current_ballot();
        if mine.is_some_and(|b| b >= ballot) {
            return;
        }
        if mine.is_some() {
            self.step_down(now, ballot, out);
        }
        self.highest_seen = ballot;
        self.set_role(Role::Follower {
            leader: Some(from),
            last_heard: now,
        });
        self.mark_decided_below(decided_below);
    }

    fn on_accepted(
        &mut self,
        now: Duration,
        acceptor: NodeId,
        ballot: Ballot,
        instances: &[InstanceId],
        out: &mut Actions,
    ) {
        let Role::Leading { ballot: mine } = self.role else {
            return;
        };
        let Some(idx) = self.members.acceptor_index(acceptor) else {
            return;
        };
        if ballot != mine {
            return;
        }
        let quorum = self.members.quorum() as u32;
        let mut decided = Vec::new();
        for i in instances {
            let Some(open) = self.open.get_mut(i) else {
                continue;
            };
            open.votes |= 1 << idx;
            if open.votes.count_ones() >= quorum {
                decided.push(*i);
                self.counters.instances_decided += 1;
                if std::mem::take(&mut self.awaiting_first_decision) {
                    out.events.push(Event::FirstDecision {
                        ballot: mine,
                        instance: *i,
                    });
                }
                if self.counters.record_phase2 {
                    self.counters
                        .phase2
                        .push(now.saturating_sub(open.proposed_at));
                }
                self.open.remove(i);
                if *i >= self.decided_below {
                    self.decided_above.insert(*i);
                }
            }
        }
        if self.cfg.relay_decisions && !decided.is_empty() {
            // A quorum voted at our ballot: learners that hold our 2a decide its value. The
            // driver merges a turn's worth into one message per learner.
            out.send_all(
                &self.members.learners,
                &Message::Decided {
                    ballot: mine,
                    instances: decided,
                },
            );
        }
        self.advance_decided();
        self.pump(now, out);
    }

    /// Learns that every instance below `below` is decided. Open re-proposals below it stay
    /// open until a quorum votes at our ballot (see `start_phase1`).
    fn mark_decided_below(&mut self, below: InstanceId) {
        if below <= self.decided_below {
            return;
        }
        self.decided_below = below;
        self.decided_above = self.decided_above.split_off(&below);
        self.next_instance = self.next_instance.max(below);
        self.advance_decided();
    }

    fn advance_decided(&mut self) {
        while self.decided_above.remove(&self.decided_below) {
            self.decided_below += 1;
        }
    }

    /// Opens instances while the window has room: recovered ones first, then client batches.
    /// A batch goes out when it is full, when its oldest value has waited the maximum delay, or
    /// at once when nothing is open (so a lone value is never held).
    fn pump(&mut self, now: Duration, out: &mut Actions) {
        let Role::Leading { ballot } = self.role else {
            return;
        };
        while self.open.len() < self.cfg.window {
            if let Some((instance, value)) = self.recovered.pop_front() {
                self.propose(now, ballot, instance, value, out);
                continue;
            }
            if self.pending.is_empty() {
                break;
            }
            let full = self.pending.len() >= self.cfg.batch_max_values
                || self.pending_bytes >= self.batch_bytes;
            let waited = now.saturating_sub(self.pending_since)
                >= Duration::from_micros(self.cfg.batch_max_delay_us);
            if !(full || waited || self.open.is_empty()) {
                break;
            }
            let mut values = Vec::with_capacity(self.pending.len().min(self.cfg.batch_max_values));
            let mut bytes = sizes::BATCH_FIXED;
            while let Some(v) = self.pending.front() {
                let size = sizes::value(v);
                if values.len() >= self.cfg.batch_max_values
                    || (!values.is_empty() && bytes + size > self.batch_bytes)
                {
                    break;
                }
                bytes += size;
                self.pending_bytes -= size;
                values.extend(self.pending.pop_front());
            }
            self.pending_since = now;
            let instance = self.next_instance;
            self.next_instance += 1;
            self.propose(now, ballot, instance, Batch::new(values), out);
        }
    }

    fn propose(
        &mut self,
        now: Duration,
        ballot: Ballot,
        instance: InstanceId,
        value: Batch,
        out: &mut Actions,
    ) {
        let msg = Message::Accept {
            ballot,
            instance,
            value: value.clone(),
        };
        out.send_all(&self.members.acceptors, &msg);
        out.send_all(&self.members.learners, &msg);
        self.counters.instances_opened += 1;
        self.open.insert(
            instance,
            Open {
                value,
                votes: 0,
                sent_at: now,
                proposed_at: now,
            },
        );
    }

    fn retransmit(&mut self, now: Duration, ballot: Ballot, out: &mut Actions) {
        let timeout = ProtocolConfig::ms(self.cfg.retransmit_timeout_ms);
        for (instance, open) in self.open.iter_mut() {
            if now.saturating_sub(open.sent_at) < timeout {
                continue;
            }
            open.sent_at = now;
            let msg = Message::Accept {
                ballot,
                instance: *instance,
                value: open.value.clone(),
            };
            for (idx, a) in self.members.acceptors.iter().enumerate() {
                if open.votes & (1 << idx) == 0 {
                    self.counters.retransmissions += 1;
                    out.send(*a, msg.clone());
                }
            }
            out.send_all(&self.members.learners, &msg);
        }
    }

    fn send_heartbeat(&mut self, now: Duration, ballot: Ballot, out: &mut Actions) {
        self.last_heartbeat = now;
        let msg = Message::Heartbeat {
            ballot,
            decided_below: self.decided_below,
            next_instance: self.next_instance,
        };
        out.send_all(&self.peers, &msg);
        // Acceptors too: it renews the leader lease that keeps standbys from preparing.
        out.send_all(&self.members.acceptors, &msg);
        out.send_all(&self.members.learners, &msg);
    }

    /// Tells acceptors to drop what the newest snapshot a live learner holds covers, minus
    /// `trim_keep`. No learner holds trim back, dead or slow: one that needs what acceptors
    /// dropped fetches it from a peer's journal or installs a peer's snapshot. A snapshot
    /// only counts while its learner is heard from (it serves it to peers).
    fn maybe_trim(&mut self, now: Duration, out: &mut Actions) {
        if self.cfg.trim_interval_ms == 0
            || now.saturating_sub(self.last_trim) < ProtocolConfig::ms(self.cfg.trim_interval_ms)
        {
            return;
        }
        self.last_trim = now;
        let timeout = ProtocolConfig::ms(self.cfg.learner_timeout_ms);
        let newest = self
            .snapshots
            .values()
            .filter(|(_, heard)| now.saturating_sub(*heard) < timeout)
            .map(|(below, _)| *below)
            .max();
        if let Some(below) = newest.and_then(|s| s.checked_sub(self.cfg.trim_keep)) {
            if below > 0 {
                self.known_trim = self.known_trim.max(below);
                out.send_all(&self.members.acceptors, &Message::Trim { below });
            }
        }
    }
}
