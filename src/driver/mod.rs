//! The one driver: the roles one node plays, in any combination, and everything between
//! them and the outside world. Every runtime runs it: the node loop and the demo's threads
//! (`single::run`), the staged pipeline (a driver per role stage, one commit stage), and the
//! simulator (a driver per simulated node over a simulated disk and network).
//!
//! A turn: `top_up` (client sessions submit), `handle` a burst of messages (routed to the
//! roles by the one table, `takers`; the node's own messages first), `tick_if_due`, then
//! `end_turn`, which delivers decided values to the sessions, the application and the node's
//! outputs, accounts for events, and returns a [`Pending`]: the turn's changes and the
//! messages that wait for them. The runtime commits it to its store (`Pending::commit`, the
//! only way to get the messages out) and hands what comes back to `release`, which merges 2b
//! votes and keeps the node's messages to itself for the next turn; the rest goes on the
//! network.

#![forbid(unsafe_code)]

mod sessions;
pub mod single;
mod stats;
mod store;

pub use sessions::{client_id, Acked, Latency, Load, Sessions, APP_CLIENT};
pub use stats::{
    report_event, write_summary, JournalSummary, LearnerSummary, NodeStats, SnapshotSummary,
    STATUS_EVERY,
};
pub use store::{NodeStore, RoundStore, StoreError};

use crate::journal::{Journal, SnapshotStore};
use crate::metrics::Recorder;
use crate::protocol::image;
use crate::protocol::limits::{PEER_VALUES_FIXED, SNAPSHOT_CHUNK_FIXED};
use crate::protocol::{
    coalesce, Acceptor, AcceptorCounters, Actions, ClientValue, Envelope, Event, Install,
    InstanceId, Learner, Message, MessageKind, NodeId, Pending, Position, Proposer, ProtocolConfig,
};
use crate::storage::BatchBudget;
use crate::transport::TransportStats;
use std::collections::VecDeque;
use std::time::Duration;

/// Which of a node's roles take a message: the one routing table. The learner column also
/// covers the node's client sessions (redirects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takers {
    pub acceptor: bool,
    pub proposer: bool,
    pub learner: bool,
}

pub fn takers(msg: &Message) -> Takers {
    kind_takers(msg.kind())
}

/// `takers` by message type (what a transport needs to know who a group frame reaches).
pub fn kind_takers(kind: MessageKind) -> Takers {
    use MessageKind as K;
    let t = |acceptor, proposer, learner| Takers {
        acceptor,
        proposer,
        learner,
    };
    match kind {
        K::Prepare | K::CatchupRequest | K::Trim => t(true, false, false),
        K::Accept => t(true, false, true),
        K::Heartbeat => t(true, true, true),
        K::Accepted => t(false, true, true),
        K::Decided => t(false, false, true),
        K::Promise | K::Reject | K::ClientRequest | K::Progress | K::SnapshotHeld => {
            t(false, true, false)
        }
        // A peer's fetch is answered by the driver from the learner's journal or snapshots.
        K::CatchupReply
        | K::Redirect
        | K::PeerFetch
        | K::PeerValues
        | K::SnapshotFetch
        | K::SnapshotChunk => t(false, false, true),
    }
}

/// The acceptor a driver runs: the real one, or (in tests that prove the simulator's checker
/// bites) a deliberately broken one.
pub trait AcceptorLogic: Send {
    fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions);
    /// What it refused or put off.
    fn counters(&self) -> AcceptorCounters {
        AcceptorCounters::default()
    }
    /// The round it promised, for the metrics.
    fn promised_round(&self) -> u32 {
        0
    }
}

impl AcceptorLogic for Acceptor {
    fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        Acceptor::handle(self, now, from, msg, out)
    }
    fn counters(&self) -> AcceptorCounters {
        Acceptor::counters(self)
    }
    fn promised_round(&self) -> u32 {
        self.promised().round
    }
}

/// Where a node's delivered values, acknowledgements and events go besides the driver's own
/// accounting: output files, a stream socket, a demo's digest, the simulator's checker.
pub trait Sink {
    /// A value this node's learner delivered, at `position` in the cluster's order.
    fn delivered(
        &mut self,
        _now: Duration,
        _position: Position,
        _v: &ClientValue,
    ) -> std::io::Result<()> {
        Ok(())
    }
    fn acknowledged(&mut self, _ack: &Acked) -> std::io::Result<()> {
        Ok(())
    }
    /// By default, logs what an operator must see.
    fn event(&mut self, node: NodeId, e: &Event) {
        report_event(node, e)
    }
    /// The learner installed a snapshot image: it now stands at `below`, and the values
    /// before it will never be delivered here. `app` is the application's state in it.
    fn installed(
        &mut self,
        _now: Duration,
        _below: Position,
        _app: Option<&bytes::Bytes>,
    ) -> std::io::Result<()> {
        Ok(())
    }
    /// The turn's deliveries are all in: flush what must be on record.
    fn end_turn(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An application's state, kept by the node's learner thread: every delivered value is
/// applied to it in order, the learner's snapshots carry its state, and an installed peer's
/// snapshot replaces it. (The embedded API runs one; the simulator runs a digest of the
/// stream, so its checker compares applications at equal positions.)
pub trait StateMachine: Send {
    /// Applies one delivered value, at its position in the cluster's order.
    fn apply(&mut self, position: Position, v: &ClientValue);
    /// Its state after every value applied so far.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces its state with a snapshot's, taken after applying every value before
    /// `below`. An error names what is wrong with it.
    fn restore(&mut self, below: Position, state: &[u8]) -> Result<(), String>;
}

/// A sink that only logs events.
pub struct Logged;
impl Sink for Logged {}

pub struct Driver {
    pub id: NodeId,
    pub proposer: Option<Proposer>,
    pub acceptor: Option<Box<dyn AcceptorLogic>>,
    pub learner: Option<Learner>,
    /// Where the learner keeps what it delivered, so it resumes there after a restart and
    /// reports for trim only what is durable. None: it keeps nothing (a restart starts at 0).
    journal: Option<Journal>,
    /// The instance the learner started at.
    resumed_at: u64,
    /// Where the learner keeps its snapshot images (None: it keeps none and serves none).
    snapshots: Option<SnapshotStore>,
    /// The learner takes a snapshot of its own every this many instances (0: only its
    /// application hands it snapshots).
    snapshot_every: u64,
    /// Where the learner's last own snapshot stood.
    last_snapshot: InstanceId,
    snapshot_stats: SnapshotSummary,
    /// The application's state machine, if the node runs one.
    machine: Option<Box<dyn StateMachine>>,
    cluster: u32,
    pub sessions: Sessions,
    out: Actions,
    /// Messages this node sent itself, released by a commit: handled first next turn.
    own: VecDeque<Message>,
    tick: Duration,
    /// The tick while no proposer batches, no learner catches up and no application
    /// submits (`with_coarse_tick`).
    coarse_tick: Duration,
    /// When the roles last ticked (None: never).
    last_tick: Option<Duration>,
    max_payload: usize,
    /// Frames in one answer to a peer learner's fetch (`answer_max_frames`).
    answer_frames: usize,
    budget: BatchBudget,
    burst: BatchBudget,
    pub stats: NodeStats,
    /// This driver's metrics shard, when the node serves metrics.
    pub metrics: Option<Recorder>,
    /// Whether `handle` counts inbound messages (a staged node's RX stage counts them).
    count_inbound: bool,
}

impl Driver {
    /// A driver with no roles yet; `budget` bounds a burst by the group-commit batch.
    pub fn new(id: NodeId, protocol: &ProtocolConfig, budget: BatchBudget) -> Driver {
        Driver {
            id,
            proposer: None,
            acceptor: None,
            learner: None,
            journal: None,
            resumed_at: 0,
            snapshots: None,
            snapshot_every: 0,
            last_snapshot: 0,
            snapshot_stats: SnapshotSummary::default(),
            machine: None,
            cluster: protocol.cluster_id,
            sessions: Sessions::none(),
            out: Actions::new(),
            own: VecDeque::new(),
            tick: protocol.tick(),
            coarse_tick: protocol.tick(),
            last_tick: None,
            max_payload: protocol.max_payload(),
            answer_frames: protocol.answer_max_frames.max(1) as usize,
            budget,
            burst: budget.fresh(),
            stats: NodeStats::default(),
            metrics: None,
            count_inbound: true,
        }
    }

    /// Leaves counting inbound messages to whoever received them (a staged node's RX).
    pub fn counting_no_inbound(mut self) -> Driver {
        self.count_inbound = false;
        self
    }

    pub fn with_proposer(mut self, p: Proposer) -> Driver {
        self.proposer = Some(p);
        self
    }

    pub fn with_acceptor(mut self, a: Box<dyn AcceptorLogic>) -> Driver {
        self.acceptor = Some(a);
        self
    }

    pub fn with_learner(mut self, l: Learner) -> Driver {
        self.resumed_at = l.next_instance();
        self.learner = Some(l);
        self
    }

    /// The learner's journal; the learner must have been restored from what it opened to.
    pub fn with_journal(mut self, j: Journal) -> Driver {
        self.journal = Some(j);
        self
    }

    /// The learner's snapshot store; it takes one of its own every `every` instances (0:
    /// only those its application hands it).
    pub fn with_snapshots(mut self, store: SnapshotStore, every: u64) -> Driver {
        self.last_snapshot = store.newest_below();
        if let Some(l) = &mut self.learner {
            l.holds_snapshot(store.newest_below());
        }
        self.snapshots = Some(store);
        self.snapshot_every = every;
        self.hold_journal();
        self
    }

    /// Keeps in the journal what an application restoring the newest snapshot replays. A
    /// state machine's snapshots come every `snapshot_every` instances, so the journal holds
    /// from 0 until the first. A socket application's come when it hands them: until the
    /// first, the journal's retention applies as configured (a learner whose application
    /// never hands one must not fill its disk).
    fn hold_journal(&mut self) {
        let (Some(store), Some(j)) = (&self.snapshots, &mut self.journal) else {
            return;
        };
        let newest = store.newest_below();
        if self.machine.is_some() || (self.snapshot_every == 0 && newest > 0) {
            j.hold_from(newest);
        }
    }

    /// The application's state machine, brought to where the learner stands: restored from
    /// the newest snapshot at or before it, then the journal's values from there on applied.
    /// Its snapshots go with the learner's from then on (every `snapshot_every` instances),
    /// and an installed image must carry its state. Set after the learner, journal and
    /// snapshot store.
    pub fn with_machine(mut self, mut m: Box<dyn StateMachine>) -> Result<Driver, String> {
        let Some(l) = &mut self.learner else {
            return Err("a state machine needs the learner role".into());
        };
        let next = l.next_instance();
        let mut from = Position::default();
        if let Some(store) = &self.snapshots {
            if let Some((below, bytes)) = store.newest().filter(|(p, _)| p.instance <= next) {
                let img = image::decode(&bytes, self.cluster).map_err(|e| e.to_string())?;
                let state = img.app.ok_or_else(|| {
                    format!("the newest snapshot, at {below}, holds no application state")
                })?;
                m.restore(below, &state)
                    .map_err(|e| format!("the snapshot at {below}: {e}"))?;
                from = below;
            }
        }
        if from.instance < next {
            let Some(j) = &mut self.journal else {
                return Err(format!(
                    "the learner stands at instance {next} but keeps no journal to replay \
                     from {from}"
                ));
            };
            let budget = self.max_payload.saturating_sub(PEER_VALUES_FIXED);
            while from.instance < next {
                let page = j.peer_page(from, budget).map_err(|e| e.to_string())?;
                if page.values.is_empty() && page.through == from.instance {
                    return Err(format!(
                        "the journal no longer holds {from} (it holds instances {} to {}), \
                         where the application's state must be replayed from",
                        page.oldest, page.end
                    ));
                }
                for (p, v) in &page.values {
                    if p.instance < next {
                        m.apply(*p, v);
                    }
                }
                from = page.next();
            }
        }
        l.require_app_state();
        self.machine = Some(m);
        self.hold_journal();
        Ok(self)
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Makes everything the learner's journal holds durable (at a clean stop).
    pub fn sync_journal(&mut self, now: Duration) -> std::io::Result<()> {
        if let Some(j) = &mut self.journal {
            j.sync(now).map_err(std::io::Error::other)?;
            if let Some(l) = &mut self.learner {
                l.made_durable(j.durable());
            }
        }
        Ok(())
    }

    /// Ticks the node only every `every` (never more often than `protocol.tick_us`) unless
    /// its proposer holds values waiting for a batch (`batch_max_delay_us`), its learner is
    /// catching up (it asks for each next page at its next tick) or it serves an
    /// application, whose requests arrive on no socket. The other timers are tens of
    /// milliseconds or more (heartbeats, retransmits, a learner's catch-up, client resends)
    /// and an acceptor has none. A sleeping node wakes for every tick: each wake-up costs a
    /// core tens of microseconds on a small VM (docs/benchmarks.md).
    pub fn with_coarse_tick(mut self, every: Duration) -> Driver {
        self.coarse_tick = every.max(self.tick);
        self
    }

    /// How long after a tick the next is due.
    fn tick_period(&self) -> Duration {
        let batching = self
            .proposer
            .as_ref()
            .is_some_and(|p| p.pending_values() > 0);
        let catching_up = self.learner.as_ref().is_some_and(|l| l.catching_up());
        if batching || catching_up || self.sessions.has_app() {
            self.tick
        } else {
            self.coarse_tick
        }
    }

    pub fn with_sessions(mut self, s: Sessions) -> Driver {
        self.sessions = s;
        self
    }

    pub fn with_metrics(mut self, m: Option<Recorder>) -> Driver {
        if m.is_some() {
            if let Some(p) = &mut self.proposer {
                p.record_phase2();
            }
        }
        self.metrics = m;
        self
    }

    /// When the next tick is due.
    pub fn next_tick(&self) -> Duration {
        self.last_tick
            .map_or(Duration::ZERO, |t| t + self.tick_period())
    }

    /// Work is waiting (messages to itself, or output of this turn): the turn must not
    /// sleep.
    pub fn has_work(&self) -> bool {
        !self.own.is_empty() || !self.out.is_empty()
    }

    /// Starts a turn: a fresh burst budget, the client sessions topped up, and the node's
    /// messages to itself handled.
    pub fn begin_turn(&mut self, now: Duration) {
        self.burst = self.budget.fresh();
        self.stats.submitted += self.sessions.top_up(now, &mut self.out);
        while let Some(msg) = self.own.pop_front() {
            self.route(now, self.id, msg);
        }
    }

    /// Handles a message this node sent itself (a staged node's commit stage routes these).
    pub fn handle_own(&mut self, now: Duration, msg: Message) {
        self.route(now, self.id, msg);
    }

    /// Handles one message from the network; false once the burst fills a group-commit batch
    /// (the turn should end).
    pub fn handle(&mut self, now: Duration, from: NodeId, msg: Message) -> bool {
        if let Some(m) = self.metrics.as_mut().filter(|_| self.count_inbound) {
            m.message_in(msg.kind());
        }
        let before = self.out.changes().len();
        self.route(now, from, msg);
        self.burst.add(&self.out.changes()[before..])
    }

    fn route(&mut self, now: Duration, from: NodeId, msg: Message) {
        let t = takers(&msg);
        let out = &mut self.out;
        let acceptor = self.acceptor.as_mut().filter(|_| t.acceptor);
        let learner = self.learner.as_mut().filter(|_| t.learner);
        let proposer = self.proposer.as_mut().filter(|_| t.proposer);
        if let Message::Redirect { .. } = msg {
            self.sessions.redirect(&msg);
            return;
        }
        if let Message::PeerFetch { from: at } = msg {
            if self.learner.as_ref().is_some_and(|l| l.is_peer(from)) {
                self.answer_peer(from, at);
            }
            return;
        }
        if let Message::SnapshotFetch {
            at_least,
            below,
            offset,
        } = msg
        {
            if self.learner.as_ref().is_some_and(|l| l.is_peer(from)) {
                self.answer_image(from, at_least, below, offset);
            }
            return;
        }
        // Clones only for a message more than one role here takes.
        match (acceptor, learner, proposer) {
            (Some(a), None, None) => a.handle(now, from, msg, out),
            (None, Some(l), None) => l.handle(now, from, msg, out),
            (None, None, Some(p)) => p.handle(now, from, msg, out),
            (a, l, p) => {
                if let Some(a) = a {
                    a.handle(now, from, msg.clone(), out);
                }
                if let Some(l) = l {
                    l.handle(now, from, msg.clone(), out);
                }
                if let Some(p) = p {
                    p.handle(now, from, msg, out);
                }
            }
        }
    }

    /// Answers a peer learner's fetch out of the journal: up to `answer_max_frames` messages,
    /// each a frame of values in order. Without a journal it says it holds nothing (the peer
    /// asks another).
    fn answer_peer(&mut self, to: NodeId, mut from: Position) {
        let Some(j) = &mut self.journal else {
            self.out.send(
                to,
                Message::PeerValues {
                    from,
                    through: from.instance,
                    oldest: 0,
                    end: 0,
                    values: Vec::new(),
                    last: true,
                },
            );
            return;
        };
        let budget = self.max_payload.saturating_sub(PEER_VALUES_FIXED);
        for k in 0..self.answer_frames {
            let page = match j.peer_page(from, budget) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("node {}: cannot answer learner {to}: {e}", self.id);
                    return;
                }
            };
            let next = page.next();
            let last = (page.values.is_empty() && page.through == from.instance)
                || next.instance >= page.end
                || k + 1 == self.answer_frames;
            self.out.send(
                to,
                Message::PeerValues {
                    from,
                    through: page.through,
                    oldest: page.oldest,
                    end: page.end,
                    values: page.values,
                    last,
                },
            );
            if last {
                return;
            }
            from = next;
        }
    }

    /// Answers a peer learner's snapshot fetch: up to `answer_max_frames` chunks of the image
    /// it asks for (or the newest, if that one is gone) from `offset` on; total 0 if this
    /// learner holds none that covers `at_least`.
    fn answer_image(&mut self, to: NodeId, at_least: InstanceId, below: Position, offset: u64) {
        let held = self
            .snapshots
            .as_ref()
            .and_then(|s| s.serving(at_least, below));
        let Some((at, bytes)) = held else {
            self.out.send(
                to,
                Message::SnapshotChunk {
                    below,
                    total: 0,
                    offset,
                    last: true,
                    data: bytes::Bytes::new(),
                },
            );
            return;
        };
        // Another image than the one asked for is sent from its start.
        let mut from = if at == below { offset as usize } else { 0 };
        let chunk = self
            .max_payload
            .saturating_sub(SNAPSHOT_CHUNK_FIXED)
            .min(u16::MAX as usize)
            .max(1);
        let total = bytes.len();
        for k in 0..self.answer_frames {
            let end = (from + chunk).min(total);
            let last = end >= total || k + 1 == self.answer_frames;
            self.out.send(
                to,
                Message::SnapshotChunk {
                    below: at,
                    total: total as u64,
                    offset: from as u64,
                    last,
                    data: bytes::Bytes::copy_from_slice(bytes.get(from..end).unwrap_or(&[])),
                },
            );
            if last {
                return;
            }
            from = end;
        }
    }

    /// Ticks every role when a tick is due (the period is `protocol.tick_us`). Says whether
    /// it ticked.
    pub fn tick_if_due(&mut self, now: Duration) -> bool {
        if now < self.next_tick() {
            return false;
        }
        if let Some(p) = &mut self.proposer {
            p.tick(now, &mut self.out);
        }
        if let Some(l) = &mut self.learner {
            l.tick(now, &mut self.out);
        }
        self.sessions.tick(now, &mut self.out);
        self.last_tick = Some(now);
        true
    }

    /// Ends a turn: delivers decided values (to the sessions, the application, `sink` and
    /// the journal), makes the journal as durable as its policy says (stream readers of the
    /// journal see the turn once it is), accounts for events, and returns the changes to
    /// commit and the messages that wait on them.
    pub fn end_turn(&mut self, now: Duration, sink: &mut dyn Sink) -> std::io::Result<Pending> {
        let mut deliveries = std::mem::take(&mut self.out.deliver);
        let installs = std::mem::take(&mut self.out.installs);
        let mut installs = installs.into_iter().peekable();
        for (k, d) in deliveries.drain(..).enumerate() {
            while let Some(i) = installs.next_if(|i| i.at <= k) {
                self.install(now, &i, sink)?;
            }
            self.deliver(now, &d, sink)?;
        }
        for i in installs {
            self.install(now, &i, sink)?;
        }
        self.out.deliver = deliveries;
        for e in self.out.events.drain(..) {
            match &e {
                Event::Stranded { needed } => self.stats.trimmed_out = Some(*needed),
                Event::SnapshotRefused { .. } => self.snapshot_stats.refused += 1,
                Event::Installed { bytes, took, .. } => {
                    self.snapshot_stats.installed_bytes = *bytes;
                    self.snapshot_stats.install_ms = took.as_millis() as u64;
                }
                Event::Shed { values } => self.stats.shed += *values as u64,
                Event::Decided { value, .. } => {
                    if let Some(m) = &mut self.metrics {
                        m.counters.decided_values += value.len() as u64;
                    }
                }
                _ => {}
            }
            sink.event(self.id, &e);
        }
        // The outputs first, the journal second: a crash between the two delivers the
        // turn again after the restart, and outputs skip the positions they hold already
        // (a crash the other way round would lose the turn from them).
        sink.end_turn()?;
        if let Some(l) = &mut self.learner {
            let durable = match &mut self.journal {
                Some(j) => j
                    .end_turn(now, l.snapshot())
                    .map_err(std::io::Error::other)?,
                // Nothing kept: what is delivered is all there is to report.
                None => l.next_instance(),
            };
            l.made_durable(durable);
        }
        self.maybe_snapshot()?;
        Ok(self.out.take_pending())
    }

    /// One delivered instance: to the journal, the outputs and the client sessions.
    fn deliver(
        &mut self,
        now: Duration,
        d: &crate::protocol::Delivery,
        sink: &mut dyn Sink,
    ) -> std::io::Result<()> {
        if let Some(j) = &mut self.journal {
            j.append(d);
        }
        for (position, v) in d.positioned() {
            self.stats.delivered += 1;
            if let Some(m) = &mut self.machine {
                m.apply(position, v);
            }
            sink.delivered(now, position, v)?;
            if let Some(ack) = self.sessions.delivered(now, position, v) {
                self.stats.acknowledged += 1;
                if let Some(m) = &mut self.metrics {
                    m.client_latency(ack.latency);
                }
                sink.acknowledged(&ack)?;
            }
        }
        Ok(())
    }

    /// The learner installed a peer's image: kept in the snapshot store and the journal
    /// (the learner stands there after a crash), handed to the outputs, and the sessions'
    /// values it holds acknowledged.
    fn install(&mut self, now: Duration, i: &Install, sink: &mut dyn Sink) -> std::io::Result<()> {
        if let Some(store) = &self.snapshots {
            store.save(i.bytes.clone()).map_err(std::io::Error::other)?;
        }
        if let Some(m) = &mut self.machine {
            // The learner refuses images without application state when it runs one.
            let state = i.image.app.as_deref().unwrap_or_default();
            m.restore(i.image.below, state).map_err(|e| {
                std::io::Error::other(format!("installing the snapshot at {}: {e}", i.image.below))
            })?;
        }
        if let Some(j) = &mut self.journal {
            j.install(now, &i.image.learner)
                .map_err(std::io::Error::other)?;
        }
        if let Some(l) = &mut self.learner {
            l.made_durable(i.image.below.instance);
            if self.snapshots.is_some() {
                l.holds_snapshot(i.image.below.instance);
            }
        }
        self.last_snapshot = self.last_snapshot.max(i.image.below.instance);
        self.snapshot_stats.installed += 1;
        self.snapshot_stats.installed_at = Some(i.image.below.to_string());
        self.stats.trimmed_out = None;
        for ack in self.sessions.installed(now, &i.image.learner) {
            self.stats.acknowledged += 1;
            sink.acknowledged(&ack)?;
        }
        sink.installed(now, i.image.below, i.image.app.as_ref())
    }

    /// Takes the learner's own snapshot once `snapshot_every` instances passed the last
    /// (an image of its state with no application state), and tells the learner what the
    /// store holds (its application may have handed it a newer one).
    fn maybe_snapshot(&mut self) -> std::io::Result<()> {
        let (Some(l), Some(store)) = (&mut self.learner, &self.snapshots) else {
            return Ok(());
        };
        let next = l.next_instance();
        if self.snapshot_every > 0 && next >= self.last_snapshot + self.snapshot_every {
            let below = Position {
                instance: next,
                index: 0,
            };
            let app = self.machine.as_ref().map(|m| m.snapshot());
            let bytes = image::encode(self.cluster, below, l.snapshot(), app.as_deref());
            store
                .save(std::sync::Arc::new(bytes))
                .map_err(std::io::Error::other)?;
            self.last_snapshot = next;
            self.snapshot_stats.taken += 1;
        }
        l.holds_snapshot(store.newest_below());
        self.hold_journal();
        Ok(())
    }

    /// Takes what a commit released: 2b votes merged, the node's messages to itself kept for
    /// the next turn; returns the rest, for the network.
    pub fn release(&mut self, sends: Vec<Envelope>) -> Vec<Envelope> {
        let (own, remote) = split_released(self.id, sends, self.max_payload);
        self.own.extend(own);
        if let Some(m) = &mut self.metrics {
            for env in &remote {
                m.message_out(env.msg.kind());
            }
        }
        remote
    }

    /// Takes back a buffer `release` returned, once its messages are sent.
    pub fn recycle(&mut self, sent: Vec<Envelope>) {
        self.out.reuse_send_buffer(sent);
    }

    /// Publishes this driver's counts and gauges to its metrics shard, when one is due (or
    /// `force`).
    pub fn publish_metrics(&mut self, force: bool, transport: Option<&TransportStats>) {
        let Some(m) = &mut self.metrics else { return };
        if !force && !m.due() {
            return;
        }
        let c = &mut m.counters;
        if let Some(t) = transport {
            c.transport = t.clone();
        }
        c.submitted = self.stats.submitted;
        c.acknowledged = self.stats.acknowledged;
        c.delivered = self.stats.delivered;
        c.shed = self.stats.shed;
        c.commits = self.stats.commits;
        c.committed_changes = self.stats.committed_changes;
        if let Some(p) = &mut self.proposer {
            for d in p.take_phase2() {
                m.phase2(d);
            }
            let pc = p.counters();
            let c = &mut m.counters;
            c.instances_opened = pc.instances_opened;
            c.instances_decided = pc.instances_decided;
            c.retransmissions = pc.retransmissions;
            c.leader_changes = pc.leader_changes;
            let g = &mut c.gauges;
            g.proposer_ballot = Some(p.highest_ballot().round as u64);
            g.leader = Some(p.known_leader().map_or(0, u64::from));
            g.is_leader = Some(p.is_leader());
            g.proposer_decided = Some(p.decided_below());
            g.in_flight = Some(p.open_instances() as u64);
        }
        if let Some(a) = &self.acceptor {
            let ac = a.counters();
            let c = &mut m.counters;
            c.refused_oversized = ac.refused_oversized;
            c.refused_top_round = ac.refused_top_round;
            c.deferred_prepares = ac.deferred_prepares;
            c.gauges.acceptor_ballot = Some(a.promised_round() as u64);
            c.gauges.trim = Some(ac.trim);
        }
        if let Some(l) = &self.learner {
            let g = &mut m.counters.gauges;
            g.learner_decided = Some(l.known_decided());
            g.delivered = Some(l.next_instance());
            g.learner_durable = Some(l.durable_below());
            if let Some(j) = &self.journal {
                g.journal_oldest = Some(j.oldest());
                m.counters.journal = j.stats.clone();
            }
            g.trimmed_out = Some(u64::from(l.stranded()));
        }
        m.publish();
    }

    /// This driver's summary: its counts, the acceptor's refusals and the client latency.
    pub fn summary(&self) -> NodeStats {
        let mut s = self.stats.clone();
        if let Some(a) = &self.acceptor {
            s.acceptor = a.counters();
        }
        let l = self.sessions.latency();
        s.latency_p50_us = l.quantile(0.5).as_micros() as u64;
        s.latency_p99_us = l.quantile(0.99).as_micros() as u64;
        s.latency_p999_us = l.quantile(0.999).as_micros() as u64;
        s.latency_mean_us = l.mean().as_micros() as u64;
        s.leading_round = self.leading_round();
        if let Some(l) = &self.learner {
            s.learner = Some(LearnerSummary {
                resumed_at: self.resumed_at,
                peer_values: l.peer_values(),
                delivered_below: l.next_instance(),
                durable_below: l.durable_below(),
                journal: self.journal.as_ref().map(|j| JournalSummary {
                    oldest: j.oldest(),
                    stats: j.stats.clone(),
                }),
                snapshots: self.snapshots.as_ref().map(|s| SnapshotSummary {
                    newest_below: s.newest_below(),
                    saved: s.saved(),
                    ..self.snapshot_stats.clone()
                }),
            });
        }
        s
    }

    /// The round of this node's ballot while its proposer leads.
    pub fn leading_round(&self) -> Option<u32> {
        self.proposer
            .as_ref()
            .filter(|p| p.is_leader())
            .map(|p| p.highest_ballot().round)
    }
}

/// Splits what a commit released: the messages a node sent itself, and the rest (2b votes
/// merged) for the network.
pub fn split_released(
    me: NodeId,
    mut sends: Vec<Envelope>,
    max_payload: usize,
) -> (Vec<Message>, Vec<Envelope>) {
    coalesce(&mut sends, max_payload);
    if !sends.iter().any(|e| e.to == me) {
        return (Vec::new(), sends);
    }
    let mut own = Vec::new();
    let mut remote = Vec::with_capacity(sends.len());
    for env in sends {
        if env.to == me {
            own.push(env.msg);
        } else {
            remote.push(env);
        }
    }
    (own, remote)
}

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Snapshot(#[from] crate::journal::SnapshotError),
    #[error("the application's state machine: {0}")]
    Application(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<crate::storage::StorageError> for NodeError {
    fn from(e: crate::storage::StorageError) -> Self {
        NodeError::Storage(StoreError::Acceptor(e))
    }
}

/// Maps an I/O error to a `NodeError` that says what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}
