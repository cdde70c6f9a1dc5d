//! The learner: an instance is decided when a quorum of acceptors voted for it at one ballot
//! and the learner holds that ballot's value. Decided instances are delivered in instance order;
//! no-ops are skipped and a client value is delivered once however often it was proposed.
//! Gaps are filled by asking acceptors for whole ranges at once. What acceptors have trimmed
//! is fetched from peer learners' journals instead (`PeerFetch`), in order, an answer of up to
//! `answer_max_frames` frames at a time.

use super::actions::{Actions, Delivery, Event, Install};
use super::config::{Membership, ProtocolConfig};
use super::image::{self, Image, MAX_IMAGE};
use super::message::Message;
use super::types::{Ballot, Batch, ClientId, ClientValue, InstanceId, NodeId, Position};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Per client: every sequence number below `below` and those in `above` were delivered.
/// Clients keep a bounded number of values outstanding, so `above` stays small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientDedup {
    pub below: u64,
    pub above: BTreeSet<u64>,
}

impl ClientDedup {
    /// Whether `seq` was delivered.
    pub fn holds(&self, seq: u64) -> bool {
        seq < self.below || self.above.contains(&seq)
    }

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

/// Fetching from peer learners what acceptors trimmed.
#[derive(Debug)]
struct PeerCatchup {
    /// Values of instance `next` received so far (an instance larger than one answer).
    partial: Vec<(u32, ClientValue)>,
    /// Where the next answer must start.
    want: Position,
    /// When the last fetch went out; None: ask at the next tick.
    asked: Option<Duration>,
    /// Which peer to ask next (an index into the other learners).
    turn: usize,
    /// The peer asked last, and per peer how many fetches in a row it left unanswered: one
    /// silent `STALLS` times (down, or cut off) counts as lacking.
    asked_peer: Option<NodeId>,
    silent: BTreeMap<NodeId, u32>,
    /// Peers whose journals no longer hold `want`.
    lacking: BTreeSet<NodeId>,
    /// Every peer's journal and snapshot lack what this learner needs.
    stranded: bool,
    /// Answers that arrived before their turn, by where they start.
    early: BTreeMap<Position, Page>,
    /// Every peer's journal lacks `want`: fetching a peer's snapshot image instead.
    image: Option<ImageFetch>,
}

impl PeerCatchup {
    fn at(instance: InstanceId) -> PeerCatchup {
        PeerCatchup {
            partial: Vec::new(),
            want: Position { instance, index: 0 },
            asked: None,
            turn: 0,
            asked_peer: None,
            silent: BTreeMap::new(),
            lacking: BTreeSet::new(),
            stranded: false,
            early: BTreeMap::new(),
            image: None,
        }
    }
}

/// Fetching one peer's snapshot image in chunks. A lost chunk is asked for again from where
/// the image stands (resumable); a peer silent `STALLS` times in a row, or whose image is
/// damaged, is left for the next.
#[derive(Debug, Default)]
struct ImageFetch {
    peer: Option<NodeId>,
    /// The image being received: where it stands and its size (zero until its first chunk).
    below: Position,
    total: u64,
    bytes: Vec<u8>,
    /// Chunks that arrived ahead of their turn, by offset.
    early: BTreeMap<u64, Bytes>,
    asked: Option<Duration>,
    stalls: u32,
    turn: usize,
    /// Peers that hold no image covering what this learner needs (or sent a bad one).
    lacking: BTreeSet<NodeId>,
    /// When this image's first chunk was asked for.
    started: Option<Duration>,
}

/// A peer silent this many catch-up intervals in a row is left for the next.
const STALLS: u32 = 3;

impl ImageFetch {
    fn restart(&mut self) {
        self.peer = None;
        self.below = Position::default();
        self.total = 0;
        self.bytes = Vec::new();
        self.early.clear();
        self.asked = None;
        self.stalls = 0;
        self.started = None;
    }
}

/// What a peer's answer carries (`Message::PeerValues`).
#[derive(Debug)]
struct Page {
    through: InstanceId,
    values: Vec<(Position, ClientValue)>,
    last: bool,
}

/// Answers from peers held while an earlier one is missing: a fetch's worth and more.
const EARLY_ANSWERS: usize = 256;

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
    peer: Option<PeerCatchup>,
    /// Values delivered from peers' journals.
    peer_values: u64,
    /// The newest durable snapshot this learner holds covers every instance below this (0:
    /// none); reported to proposers, which trim by it.
    snapshot_held: InstanceId,
    /// Installed images must carry the application's state (its application hands the
    /// learner its snapshots: an image without one would leave it with nothing to restore).
    needs_app_state: bool,
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
            peer: None,
            peer_values: 0,
            snapshot_held: 0,
            needs_app_state: false,
        }
    }

    /// Refuses peers' snapshot images that carry no application state.
    pub fn needing_app_state(mut self) -> Self {
        self.require_app_state();
        self
    }

    pub fn require_app_state(&mut self) {
        self.needs_app_state = true;
    }

    /// The newest durable snapshot this learner holds covers every instance below `below`.
    pub fn holds_snapshot(&mut self, below: InstanceId) {
        self.snapshot_held = self.snapshot_held.max(below);
    }

    /// Whether `id` is another learner of the cluster (whose fetches this node answers).
    pub fn is_peer(&self, id: NodeId) -> bool {
        id != self.id && self.members.learners.contains(&id)
    }

    /// Every peer learner's journal lacks what this learner needs (it needs a snapshot).
    pub fn stranded(&self) -> bool {
        self.peer.as_ref().is_some_and(|p| p.stranded)
    }

    /// Values this learner delivered out of peers' journals.
    pub fn peer_values(&self) -> u64 {
        self.peer_values
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
    /// It is missing decided instances or fetching from peers: it asks for each next page
    /// at its next tick, so its driver must tick it at the fine rate.
    pub fn catching_up(&self) -> bool {
        self.has_gap() || self.gap_since.is_some() || self.trimmed.is_some() || self.peer.is_some()
    }

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
            Message::Decided { ballot, instances }
                if ballot.proposer == from && self.members.proposers.contains(&from) =>
            {
                // The leader counted a quorum of votes at its own ballot: as good as the
                // votes themselves, for the value its 2a at that ballot carries.
                for i in instances {
                    self.record_quorum(i, ballot);
                }
                self.deliver(now, out);
            }
            Message::CatchupReply { trim, entries } => {
                let Some(idx) = self.members.acceptor_index(from) else {
                    return;
                };
                if trim > self.snapshot.next {
                    self.trimmed = Some(self.trimmed.unwrap_or(0).max(trim));
                    if self.peer.is_none() {
                        out.events.push(Event::Trimmed {
                            needed: self.snapshot.next,
                            trim,
                        });
                        self.peer = Some(PeerCatchup::at(self.snapshot.next));
                    }
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
            Message::PeerValues {
                from: at,
                through,
                values,
                last,
                ..
            } if from != self.id && self.members.learners.contains(&from) => {
                let page = Page {
                    through,
                    values,
                    last,
                };
                self.peer_answer(now, from, at, page, out);
            }
            Message::SnapshotChunk {
                below,
                total,
                offset,
                last,
                data,
            } if from != self.id && self.members.learners.contains(&from) => {
                self.image_chunk(now, from, (below, total), offset, last, data, out);
            }
            _ => {}
        }
    }

    /// One answer of a peer learner. It is applied once it starts where this learner stands;
    /// answers that arrive ahead of their turn (the network reorders) wait, a few at most.
    fn peer_answer(
        &mut self,
        now: Duration,
        peer: NodeId,
        at: Position,
        page: Page,
        out: &mut Actions,
    ) {
        let Some(p) = self.peer.as_mut() else { return };
        p.silent.remove(&peer);
        if page.values.is_empty() && page.through == at.instance {
            // It does not hold `at`: gone from its journal, or not there yet (it is behind
            // the acceptors' trim too, and may itself be waiting on this learner): ask
            // another at once, and once none holds it, a snapshot.
            if p.want == at {
                p.lacking.insert(peer);
                p.asked = None;
            }
            return;
        }
        if at != p.want {
            if at > p.want && p.early.len() < EARLY_ANSWERS {
                p.early.insert(at, page);
            }
            return;
        }
        let mut page = Some(page);
        while let Some(this) = page.take() {
            self.apply_peer_page(this, out);
            let Some(p) = self.peer.as_mut() else { break };
            let want = p.want;
            p.early = p.early.split_off(&want);
            page = p.early.remove(&want);
        }
        self.deliver(now, out);
    }

    /// Applies one answer that starts where this learner stands.
    fn apply_peer_page(&mut self, page: Page, out: &mut Actions) {
        let Page {
            through,
            values,
            last,
        } = page;
        for (pos, v) in values {
            while self.snapshot.next < pos.instance && self.snapshot.next < through {
                self.complete_from_peer(out);
            }
            if let Some(p) = self
                .peer
                .as_mut()
                .filter(|_| pos.instance == self.snapshot.next)
            {
                p.partial.push((pos.index, v));
            }
        }
        while self.snapshot.next < through {
            self.complete_from_peer(out);
        }
        let next = self.snapshot.next;
        let Some(p) = self.peer.as_mut() else { return };
        p.want = Position {
            instance: next,
            index: p.partial.last().map_or(0, |(i, _)| i + 1),
        };
        p.lacking.clear();
        p.stranded = false;
        // A journal answers again: no image needed.
        p.image = None;
        if last {
            // Its answer is in: ask for the next at once.
            p.asked = None;
        }
    }

    /// After the delivery point moved: a peer fetch follows it, and ends once past what
    /// acceptors trimmed (they have the rest). Instances decided the usual way (votes that
    /// arrived meanwhile) may move it past an instance a peer's answer had only begun.
    fn follow_peer(&mut self) {
        let next = self.snapshot.next;
        let Some(p) = self.peer.as_mut() else { return };
        if p.want.instance < next {
            p.partial.clear();
            p.early.clear();
            p.want = Position {
                instance: next,
                index: 0,
            };
            p.asked = None;
        }
        if self.trimmed.is_none_or(|t| next >= t) && p.partial.is_empty() {
            self.peer = None;
            self.trimmed = None;
            self.last_catchup = None;
        }
    }

    /// Instance `next` is complete from a peer's journal: deliver what of it is new here.
    fn complete_from_peer(&mut self, out: &mut Actions) {
        let instance = self.snapshot.next;
        let partial = self
            .peer
            .as_mut()
            .map(|p| std::mem::take(&mut p.partial))
            .unwrap_or_default();
        let dedup = &mut self.snapshot.dedup;
        let (mut values, mut indexes) = (Vec::new(), Vec::new());
        for (index, v) in partial {
            if dedup.entry(v.client).or_default().insert(v.seq) {
                values.push(v);
                indexes.push(index);
            }
        }
        self.peer_values += values.len() as u64;
        self.snapshot.next += 1;
        self.known_decided = self.known_decided.max(self.snapshot.next);
        self.undecided.remove(&instance);
        self.decided.remove(&instance);
        out.events.push(Event::FromPeer { instance });
        if !values.is_empty() {
            out.deliver.push(Delivery {
                instance,
                values,
                indexes,
            });
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
            if self.snapshot_held > 0 {
                out.send_all(
                    &self.members.proposers,
                    &Message::SnapshotHeld {
                        below: self.snapshot_held,
                    },
                );
            }
        }
        self.maybe_catch_up(now, out);
    }

    /// A quorum voted for `instance` at `ballot` (the leader says so): recorded as the votes
    /// of as many acceptors.
    fn record_quorum(&mut self, instance: InstanceId, ballot: Ballot) {
        for idx in 0..self.members.quorum() {
            self.record(instance, ballot, None, Some(idx));
        }
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
        self.follow_peer();
    }

    /// The next instance is missing while later ones are decided or known decided.
    fn has_gap(&self) -> bool {
        self.known_decided > self.snapshot.next || !self.decided.is_empty()
    }

    /// Asks the next peer learner for what acceptors trimmed, once an answer is in or the
    /// catch-up interval passed.
    fn maybe_fetch_from_peer(&mut self, now: Duration, out: &mut Actions) {
        let interval = ProtocolConfig::ms(self.cfg.catchup_interval_ms);
        let me = self.id;
        let Some(p) = self.peer.as_mut() else { return };
        if p.image.is_some() {
            self.maybe_fetch_image(now, out);
            return;
        }
        if p.asked.is_some_and(|t| now.saturating_sub(t) < interval) {
            return;
        }
        if let (Some(_), Some(peer)) = (p.asked, p.asked_peer) {
            // Its answer did not come in (or not whole) within the interval.
            let silent = p.silent.entry(peer).or_default();
            *silent += 1;
            if *silent >= STALLS {
                p.silent.remove(&peer);
                p.lacking.insert(peer);
            }
        }
        let peers: Vec<NodeId> = self
            .members
            .learners
            .iter()
            .copied()
            .filter(|l| *l != me && !p.lacking.contains(l))
            .collect();
        if peers.is_empty() {
            // No peer's journal holds it: a peer's snapshot image must.
            p.image.get_or_insert_with(ImageFetch::default);
            self.maybe_fetch_image(now, out);
            return;
        }
        let to = peers[p.turn % peers.len()];
        p.turn = p.turn.wrapping_add(1);
        p.asked = Some(now);
        p.asked_peer = Some(to);
        out.send(to, Message::PeerFetch { from: p.want });
    }

    /// Asks a peer for (the rest of) a snapshot image; once every peer lacks one, the
    /// learner is stranded and asks them all again, journals first, every learner timeout.
    fn maybe_fetch_image(&mut self, now: Duration, out: &mut Actions) {
        let interval = ProtocolConfig::ms(self.cfg.catchup_interval_ms);
        let me = self.id;
        let learners = &self.members.learners;
        let Some(p) = self.peer.as_mut() else { return };
        let need = p.want.instance;
        let Some(f) = p.image.as_mut() else { return };
        if f.asked.is_some_and(|t| now.saturating_sub(t) < interval) {
            return;
        }
        if f.asked.is_some() {
            f.stalls += 1;
            if f.stalls >= STALLS {
                if let Some(peer) = f.peer {
                    f.lacking.insert(peer);
                }
                f.restart();
            }
        }
        if f.peer.is_none() {
            let peers: Vec<NodeId> = learners
                .iter()
                .copied()
                .filter(|l| *l != me && !f.lacking.contains(l))
                .collect();
            if peers.is_empty() {
                if !p.stranded {
                    p.stranded = true;
                    out.events.push(Event::Stranded { needed: need });
                }
                // Peers' journals and snapshots move on, and a peer that was down may come
                // back: ask them all again, slowly.
                p.image = None;
                p.lacking.clear();
                p.asked = Some(now + ProtocolConfig::ms(self.cfg.learner_timeout_ms));
                return;
            }
            f.peer = Some(peers[f.turn % peers.len()]);
            f.turn = f.turn.wrapping_add(1);
        }
        let to = f.peer.expect("chosen above");
        f.asked = Some(now);
        f.started.get_or_insert(now);
        out.send(
            to,
            Message::SnapshotFetch {
                at_least: need,
                below: f.below,
                offset: f.bytes.len() as u64,
            },
        );
    }

    /// A chunk of the image a peer sends. Taken in order (early ones wait); the whole image
    /// is checked, then installed.
    #[allow(clippy::too_many_arguments)]
    fn image_chunk(
        &mut self,
        now: Duration,
        peer: NodeId,
        (below, total): (Position, u64),
        offset: u64,
        last: bool,
        data: Bytes,
        out: &mut Actions,
    ) {
        let Some(f) = self
            .peer
            .as_mut()
            .and_then(|p| p.image.as_mut())
            .filter(|f| f.peer == Some(peer))
        else {
            return;
        };
        if total == 0 {
            // It holds no image that covers what this learner needs.
            f.lacking.insert(peer);
            f.restart();
            return;
        }
        if f.total == 0 && offset == 0 && total <= MAX_IMAGE {
            f.below = below;
            f.total = total;
        }
        if (below, total) != (f.below, f.total) {
            // Its image changed (it took a newer one): start over with that.
            if offset == 0 {
                f.restart();
                f.peer = Some(peer);
                f.below = below;
                f.total = total;
            } else {
                f.bytes.clear();
                f.early.clear();
                f.asked = None;
                return;
            }
        }
        if offset > f.bytes.len() as u64 {
            if f.early.len() < EARLY_ANSWERS {
                f.early.insert(offset, data);
            }
            return;
        }
        if offset == f.bytes.len() as u64 {
            f.bytes.extend_from_slice(&data);
            while let Some(next) = f.early.remove(&(f.bytes.len() as u64)) {
                f.bytes.extend_from_slice(&next);
            }
            let at = f.bytes.len() as u64;
            f.early = f.early.split_off(&at);
            f.stalls = 0;
            if last {
                f.asked = None;
            }
        }
        if (f.bytes.len() as u64) < f.total {
            if f.asked.is_none() {
                // Its answer is in: ask for the next part now, not at the next tick.
                self.maybe_fetch_image(now, out);
            }
            return;
        }
        let bytes = std::mem::take(&mut f.bytes);
        let took = now.saturating_sub(f.started.unwrap_or(now));
        f.restart();
        match self.check_image(&bytes) {
            Ok(img) => self.install(now, peer, (img, bytes, took), out),
            Err(why) => {
                if let Some(f) = self.peer.as_mut().and_then(|p| p.image.as_mut()) {
                    f.lacking.insert(peer);
                }
                out.events.push(Event::SnapshotRefused { from: peer, why });
            }
        }
    }

    fn check_image(&self, bytes: &[u8]) -> Result<Image, String> {
        let img = image::decode(bytes, self.cfg.cluster_id).map_err(|e| e.to_string())?;
        if self.needs_app_state && img.app.is_none() {
            return Err(format!(
                "the image at {} holds no application state, and this learner's application \
                 needs one (its peer takes snapshots without its application's)",
                img.below
            ));
        }
        Ok(img)
    }

    /// Stands at a peer's image: the next instance to deliver is the image's, its
    /// exactly-once table the image's. Values before it are never delivered here.
    fn install(
        &mut self,
        now: Duration,
        peer: NodeId,
        (img, bytes, took): (Image, Vec<u8>, Duration),
        out: &mut Actions,
    ) {
        let next = img.below.instance;
        if next <= self.snapshot.next {
            // Delivered past it meanwhile: nothing to gain.
            return;
        }
        self.snapshot = img.learner.clone();
        self.known_decided = self.known_decided.max(next);
        self.undecided = self.undecided.split_off(&next);
        self.decided = self.decided.split_off(&next);
        self.peer = None;
        self.trimmed = None;
        self.last_catchup = None;
        self.gap_since = None;
        out.events.push(Event::Installed {
            below: img.below,
            from: peer,
            bytes: bytes.len() as u64,
            took,
        });
        out.installs.push(Install {
            at: out.deliver.len(),
            image: Arc::new(img),
            bytes: Arc::new(bytes),
        });
        self.deliver(now, out);
    }

    fn maybe_catch_up(&mut self, now: Duration, out: &mut Actions) {
        if self.trimmed.is_some() {
            self.maybe_fetch_from_peer(now, out);
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
