//! The deterministic simulator: every role runs its real state machine on a virtual clock; a
//! seeded network loses, duplicates, delays, reorders and partitions messages; nodes crash and
//! restart with exactly what their storage made durable. Every message is encoded into a real
//! frame of the configured size and decoded at the receiver, so the codec and the frame-size
//! limits are exercised too. The same seed always replays the same run.

#![forbid(unsafe_code)]

mod checker;
mod disk;
mod faults;

pub use checker::{Observations, Violation};
pub use faults::{CrashFault, CrashTarget, FaultKind, FaultPlan, Forgery, PartitionFault};

pub use crate::driver::AcceptorLogic;

use crate::driver::{Acked, Driver, NodeStore, Sessions, Sink, StateMachine};
use crate::journal::{Journal, JournalConfig, MemFiles, Retention, SnapshotStore};
use crate::protocol::{
    Acceptor, AcceptorCounters, AcceptorState, Ballot, Batch, ClientId, ClientValue, Envelope,
    Event, InstanceId, Learner, Membership, Message, NodeId, Position, Proposer, ProtocolConfig,
};
use crate::storage::{BatchBudget, FsyncPolicy, StorageConfig};
use crate::wire::{self, FrameHeader};
use bytes::Bytes;
use disk::SimDisk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Builds an acceptor from what its storage made durable (also at restart).
pub type AcceptorFactory =
    Box<dyn Fn(NodeId, &ProtocolConfig, Membership, AcceptorState) -> Box<dyn AcceptorLogic>>;

pub fn real_acceptors() -> AcceptorFactory {
    Box::new(|id, cfg, members, state| Box::new(Acceptor::restore(id, cfg, members, state)))
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub proposers: usize,
    pub acceptors: usize,
    pub learners: usize,
    pub clients: usize,
    /// Clients submit until the faults heal, at most this many values each.
    pub values_per_client: usize,
    /// Values each client keeps outstanding.
    pub client_window: usize,
    /// A client waits this long after an acknowledgement before it submits again.
    pub think_time: Duration,
    pub value_size: usize,
    /// After the heal, everything submitted must be delivered within this.
    pub liveness_bound: Duration,
    pub protocol: ProtocolConfig,
    /// Which roles share a node.
    pub layout: Layout,
    /// The acceptors' disks acknowledge a `sync` commit before it is synced (only tests that
    /// prove the checker catches it set this).
    pub disk_lies: bool,
    /// The learners' journals lose synced bytes at a crash (only tests that prove the
    /// checker catches it set this).
    pub journal_lies: bool,
    /// A restarted learner comes back with an empty journal (its disk replaced): it joins
    /// as a new learner would, from instance 0.
    pub wipe_learners: bool,
    /// The applications restore snapshots wrongly (only tests that prove the checker's
    /// digest comparison bites set this).
    pub snapshot_lies: bool,
    pub plan: FaultPlan,
    /// The acceptors' fsync policy, how long a synced commit takes, and how often the
    /// production group commit syncs under `async` (and a lying disk flushes its cache).
    pub policy: FsyncPolicy,
    pub fsync_latency: Duration,
    pub fsync_interval: Duration,
    /// How the learners keep their journals: its own policy, small segments (so rotation
    /// and retention are common).
    pub journal: JournalConfig,
    /// Learners take a snapshot (with their application's digest) every this many
    /// instances; acceptors trim by the newest.
    pub snapshot_every: u64,
}

impl SimConfig {
    /// The configuration seed `seed` runs: its fault kind, cluster shape and load all drawn
    /// from the seed.
    pub fn for_seed(seed: u64) -> SimConfig {
        Self::with_kind(seed, FaultKind::for_seed(seed))
    }

    pub fn with_kind(seed: u64, kind: FaultKind) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_fa17);
        let acceptors = if rng.gen_bool(0.25) { 5 } else { 3 };
        let layout = Layout::for_seed(seed);
        let learners = match layout {
            Layout::Split => 2,
            Layout::Replicas => acceptors,
        };
        let protocol = ProtocolConfig {
            // Small frames and windows make chunking, batching limits and window stalls common.
            max_frame: *[256usize, 600, 1500]
                .get(rng.gen_range(0..3))
                .unwrap_or(&1500),
            window: rng.gen_range(1..=16),
            batch_max_values: rng.gen_range(1..=32),
            trim_interval_ms: if rng.gen_bool(0.5) { 200 } else { 0 },
            trim_keep: rng.gen_range(0..20),
            catchup_max_instances: rng.gen_range(4..=256),
            ..ProtocolConfig::default()
        };
        let plan = FaultPlan::draw(kind, &mut rng, acceptors, learners);
        let mut cfg = SimConfig {
            seed,
            proposers: rng.gen_range(2..=3),
            acceptors,
            learners,
            clients: rng.gen_range(1..=4),
            values_per_client: 3000,
            client_window: rng.gen_range(1..=8),
            think_time: Duration::from_micros(rng.gen_range(500..20_000)),
            value_size: rng.gen_range(0..=64),
            liveness_bound: Duration::from_secs(10),
            protocol,
            layout,
            disk_lies: false,
            journal_lies: false,
            wipe_learners: false,
            snapshot_lies: false,
            plan,
            policy: FsyncPolicy::Sync,
            fsync_latency: Duration::from_micros(rng.gen_range(50..500)),
            fsync_interval: Duration::from_millis(rng.gen_range(1..20)),
            journal: JournalConfig {
                fsync_policy: FsyncPolicy::Sync,
                fsync_interval: Duration::from_millis(10),
                segment_bytes: 1 << 20,
                retention: Retention::default(),
            },
            snapshot_every: 64,
        };
        // Drawn last, so the draws above (and what older seeds ran) stay as they were.
        // Short pages make paged phase 1 and paged catch-up common.
        cfg.protocol.answer_max_frames = rng.gen_range(1..=32);
        // Nodes tick every 2 ms: half the production rate, for speed; every timeout is
        // still many ticks long.
        cfg.protocol.tick_us = 2_000;
        if kind == FaultKind::PowerCut {
            // A long history that nothing trims: after the cut, phase 1 must read all of it
            // through receive queues that hold a fraction of it.
            cfg.protocol.trim_interval_ms = 0;
            cfg.protocol.max_frame = 256;
            cfg.client_window = 8;
            cfg.think_time = Duration::from_micros(rng.gen_range(200..1000));
        }
        if kind == FaultKind::LearnerAway {
            cfg.protocol.learner_timeout_ms = rng.gen_range(300..800);
            cfg.protocol.trim_interval_ms = 100;
            cfg.protocol.trim_keep = rng.gen_range(0..50);
        }
        // The learners' journals, drawn after everything older seeds drew.
        if matches!(kind, FaultKind::LearnerCrash | FaultKind::LearnerAway) {
            cfg.wipe_learners = rng.gen_bool(0.3);
        }
        cfg.journal = JournalConfig {
            // Not `none`: every simulated crash is a power loss, and a journal never synced
            // loses what its learner reported for trim (docs/learners.md says so).
            fsync_policy: if rng.gen_range(0..10) < 7 {
                FsyncPolicy::Sync
            } else {
                FsyncPolicy::Async
            },
            fsync_interval: Duration::from_millis(rng.gen_range(1..30)),
            segment_bytes: rng.gen_range(512..32_768),
            retention: Retention {
                instances: if rng.gen_bool(0.5) {
                    rng.gen_range(1..500)
                } else {
                    0
                },
                bytes: if rng.gen_bool(0.3) {
                    rng.gen_range(65_536..1 << 20)
                } else {
                    0
                },
                age: None,
            },
        };
        cfg.snapshot_every = rng.gen_range(8..256);
        // Drawn last, so every older seed keeps its faults: votes to every learner, or
        // through the leader (Decided).
        cfg.protocol.relay_decisions = rng.gen_bool(0.5);
        cfg
    }

    pub fn with_policy(mut self, policy: FsyncPolicy) -> SimConfig {
        self.policy = policy;
        self
    }

    /// The same seed on the other layout (the layout changes no other draw).
    pub fn with_layout(mut self, layout: Layout) -> SimConfig {
        if layout != self.layout {
            let learners = match layout {
                Layout::Split => 2,
                Layout::Replicas => self.acceptors,
            };
            self.layout = layout;
            // Crash targets are reduced modulo the nodes that play the role (node_of).
            self.learners = learners;
        }
        self
    }

    /// Disks that acknowledge before they sync: the checker must catch what follows.
    pub fn with_lying_disks(mut self) -> SimConfig {
        self.disk_lies = true;
        self
    }

    /// Applications that restore a snapshot's state slightly wrong: the checker must catch it.
    pub fn with_lying_snapshots(mut self) -> SimConfig {
        self.snapshot_lies = true;
        self
    }

    /// Learner journals that lose synced bytes at a crash: the checker must catch it.
    pub fn with_lying_journals(mut self) -> SimConfig {
        self.journal_lies = true;
        self.journal.fsync_policy = FsyncPolicy::Sync;
        self
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub frames_sent: u64,
    pub frames_lost: u64,
    /// Frames dropped because the receiver's queue was full (counted in `frames_lost` too).
    pub frames_overflowed: u64,
    pub frames_duplicated: u64,
    pub values_delivered: u64,
    /// Client values a leader shed because its queue was full (their clients resent them).
    pub shed: u64,
    pub leader_elections: u64,
    pub crashes: u64,
    /// Nodes in the run (a power cut crashes every one).
    pub nodes: u64,
    pub catchup_requests: u64,
    /// Acceptor commits (sync policy) and the changes they carried.
    pub commits: u64,
    pub committed_changes: u64,
    pub virtual_time: Duration,
    /// Summed over the acceptors running at the end.
    pub acceptors: AcceptorCounters,
    /// Learners left needing trimmed instances that no peer's journal held (stranded).
    pub trimmed_out: u64,
    /// Times a learner needed trimmed instances and fetched them from peers' journals, and
    /// the instances it got that way.
    pub peer_catchups: u64,
    pub peer_instances: u64,
    /// Learners restarted with an empty journal.
    pub learners_wiped: u64,
    /// Peers' snapshot images learners installed (no peer's journal held what they needed).
    pub snapshot_installs: u64,
    /// Learners restarted from their journals past instance 0, and the instances they
    /// delivered again (what their journal had not made durable).
    pub learner_resumes: u64,
    pub redelivered_instances: u64,
}

pub struct SimReport {
    pub seed: u64,
    pub kind: FaultKind,
    pub layout: Layout,
    pub policy: FsyncPolicy,
    pub violations: Vec<Violation>,
    pub stats: SimStats,
    /// Where each node stood at the end (filled only for failing runs).
    pub final_state: String,
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("ethpaxos simulate --seeds 1 --start-seed {}", self.seed);
        if self.kind != FaultKind::for_seed(self.seed) {
            cmd.push_str(&format!(" --kind {}", self.kind.name()));
        }
        if self.layout != Layout::for_seed(self.seed) {
            cmd.push_str(&format!(" --layout {}", self.layout.name()));
        }
        if self.policy != FsyncPolicy::Sync {
            cmd.push_str(&format!(" --policy {}", self.policy));
        }
        cmd
    }
}

/// Which roles share a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Layout {
    /// Proposers, acceptors and learners on nodes of their own; clients on the learners.
    Split,
    /// Every node a replica: proposer, acceptor and learner in one driver (its proposer's 2a
    /// to its own acceptor never touches the network); clients on the replicas.
    Replicas,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Split, Layout::Replicas];

    /// Consecutive runs of `FaultKind::ALL.len()` seeds alternate layouts, so any range of
    /// seeds covers every fault kind in both.
    pub fn for_seed(seed: u64) -> Layout {
        Layout::ALL[((seed / FaultKind::ALL.len() as u64) % 2) as usize]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Layout::Split => "split",
            Layout::Replicas => "replicas",
        }
    }

    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// What one simulated node plays.
#[derive(Clone, Copy, Default)]
struct Plays {
    proposer: bool,
    acceptor: bool,
    learner: Option<usize>,
    /// How many client sessions it hosts.
    clients: usize,
}

struct Node {
    id: NodeId,
    plays: Plays,
    /// The production driver; None while the node is down.
    driver: Option<Driver>,
    /// What survives a power loss: acceptor state and proposer round.
    disk: SimDisk,
    /// The production store the running node writes through (None while it is down).
    store: Option<NodeStore>,
    /// The learner's journal: what it delivered, as durable as its policy made it. It
    /// restarts from it.
    journal: MemFiles,
    /// Where the learner's delivery stood when the node last crashed.
    delivered_at_crash: Option<InstanceId>,
    /// Its journal was replaced by an empty one before this start.
    wiped: bool,
    /// The learner's snapshot images (kept across a crash: each is synced as it is saved).
    snapshots: SnapshotStore,
    /// The state of its application, a digest of the stream (what its state machine holds).
    app: Arc<Mutex<StreamDigest>>,
    /// Bumped by every crash: a commit that completes after one is dropped.
    incarnation: u64,
    /// Frames on their way to this node or waiting in its receive queue: like a socket's
    /// receive buffer, it holds at most `RX_QUEUE_FRAMES`, and a burst past that is dropped.
    inflight: usize,
    /// Frames that arrived while the node was busy in a commit: its next burst.
    inbox: Vec<(NodeId, Vec<u8>)>,
    busy_until: Duration,
    /// Messages a commit under way released: they leave when it completes.
    held: Vec<Envelope>,
}

/// Frames a node's receive queue holds: about what a kernel's default UDP receive buffer
/// holds of full 1500-byte frames, doubled. A burst of answers larger than this loses its
/// tail, as it does on a real socket.
pub const RX_QUEUE_FRAMES: usize = 256;

/// A client session the simulator submits on: which node hosts it and its index there.
struct SimClient {
    node: usize,
    local: usize,
    submitted: usize,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Tick(usize),
    Deliver {
        from: NodeId,
        to: usize,
        frame: Vec<u8>,
    },
    Submit(usize),
    /// A node's commit completes (ignored if the node crashed since: incarnation).
    Commit(usize, u64),
    /// A node has messages to itself to handle.
    Wake(usize),
    /// A lying disk's cache reaches its platter.
    Fsync(usize),
    Crash(usize),
    CrashLeader(u64),
    Restart(usize),
    RestartLeaderVictim(u64),
    Partition(usize),
    Unpartition,
    Heal,
    CrashAll,
    RestartAll,
    Forge(usize),
}

/// A digest of the values an application applied, in order: the state of the simulator's
/// application. Equal streams give equal digests at equal positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamDigest {
    pub values: u64,
    pub hash: u64,
}

impl StreamDigest {
    fn apply(&mut self, position: Position, v: &ClientValue) {
        let mut h = self.hash ^ 0x9E37_79B9_7F4A_7C15;
        for word in [position.instance, position.index as u64, v.client, v.seq] {
            h = (h ^ word).wrapping_mul(0x0100_0000_01B3).rotate_left(29);
        }
        self.hash = h;
        self.values += 1;
    }
}

/// The simulator's application: the digest, shared with the simulation that reads it after
/// every turn.
struct DigestMachine {
    state: Arc<Mutex<StreamDigest>>,
    /// Restores a snapshot's state off by one bit (tests of the checker only).
    lies: bool,
}

impl StateMachine for DigestMachine {
    fn apply(&mut self, position: Position, v: &ClientValue) {
        self.state.lock().expect("not poisoned").apply(position, v);
    }
    fn snapshot(&self) -> Vec<u8> {
        let d = *self.state.lock().expect("not poisoned");
        [d.values.to_le_bytes(), d.hash.to_le_bytes()].concat()
    }
    fn restore(&mut self, _below: Position, state: &[u8]) -> Result<(), String> {
        let word = |k: usize| {
            state
                .get(8 * k..8 * k + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| format!("a digest is 16 bytes, not {}", state.len()))
        };
        *self.state.lock().expect("not poisoned") = StreamDigest {
            values: word(0)?,
            hash: word(1)? ^ u64::from(self.lies),
        };
        Ok(())
    }
}

/// What one turn gave the application, in order.
enum Given {
    Value(Position, ClientValue),
    /// A peer's snapshot installed: the stream goes on from here.
    Installed(Position),
}

/// What a turn delivered and reported, for the checker.
#[derive(Default)]
struct Collected {
    delivered: Vec<Given>,
    acked: Vec<(ClientId, u64)>,
    events: Vec<Event>,
}

impl Sink for Collected {
    fn delivered(
        &mut self,
        _now: Duration,
        position: Position,
        v: &ClientValue,
    ) -> std::io::Result<()> {
        self.delivered.push(Given::Value(position, v.clone()));
        Ok(())
    }
    fn installed(
        &mut self,
        _now: Duration,
        below: Position,
        _app: Option<&Bytes>,
    ) -> std::io::Result<()> {
        self.delivered.push(Given::Installed(below));
        Ok(())
    }
    fn acknowledged(&mut self, ack: &Acked) -> std::io::Result<()> {
        self.acked.push((ack.client, ack.seq));
        Ok(())
    }
    fn event(&mut self, _node: NodeId, e: &Event) {
        self.events.push(e.clone());
    }
}

pub struct Simulation {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, What)>>,
    seq: u64,
    nodes: Vec<Node>,
    members: Membership,
    factory: AcceptorFactory,
    obs: Observations,
    stats: SimStats,
    healed: bool,
    /// Nodes cut off from the rest by the current partition.
    cut: HashSet<usize>,
    leader_victims: Vec<(u64, usize)>,
    clients: Vec<SimClient>,
    frame_buf: Vec<u8>,
    sink: Collected,
}

fn mac(id: NodeId) -> wire::MacAddr {
    let [hi, lo] = id.to_be_bytes();
    [0x02, 0x65, 0x70, 0x78, hi, lo]
}

impl Simulation {
    pub fn new(cfg: SimConfig, factory: AcceptorFactory) -> Self {
        let id_of = |base: u16, k: usize| base + k as u16;
        let mut plays: Vec<(NodeId, Plays)> = Vec::new();
        let members = match cfg.layout {
            Layout::Split => {
                let m = Membership {
                    proposers: (0..cfg.proposers).map(|k| id_of(1, k)).collect(),
                    acceptors: (0..cfg.acceptors).map(|k| id_of(11, k)).collect(),
                    learners: (0..cfg.learners).map(|k| id_of(21, k)).collect(),
                };
                for id in &m.proposers {
                    plays.push((
                        *id,
                        Plays {
                            proposer: true,
                            ..Plays::default()
                        },
                    ));
                }
                for id in &m.acceptors {
                    plays.push((
                        *id,
                        Plays {
                            acceptor: true,
                            ..Plays::default()
                        },
                    ));
                }
                for (k, id) in m.learners.iter().enumerate() {
                    plays.push((
                        *id,
                        Plays {
                            learner: Some(k),
                            ..Plays::default()
                        },
                    ));
                }
                m
            }
            Layout::Replicas => {
                let ids: Vec<NodeId> = (0..cfg.acceptors).map(|k| id_of(1, k)).collect();
                for (k, id) in ids.iter().enumerate() {
                    plays.push((
                        *id,
                        Plays {
                            proposer: true,
                            acceptor: true,
                            learner: Some(k),
                            clients: 0,
                        },
                    ));
                }
                Membership {
                    proposers: ids.clone(),
                    acceptors: ids.clone(),
                    learners: ids,
                }
            }
        };
        // Clients live on learner nodes, spread over them.
        let hosts: Vec<usize> = (0..plays.len())
            .filter(|n| plays[*n].1.learner.is_some())
            .collect();
        let mut clients = Vec::new();
        for k in 0..cfg.clients {
            let node = hosts[k % hosts.len()];
            clients.push(SimClient {
                node,
                local: plays[node].1.clients,
                submitted: 0,
            });
            plays[node].1.clients += 1;
        }
        let nodes = plays
            .into_iter()
            .map(|(id, plays)| Node {
                id,
                plays,
                driver: None,
                disk: SimDisk::new(
                    cfg.policy,
                    cfg.fsync_latency,
                    cfg.fsync_interval,
                    cfg.disk_lies,
                ),
                store: None,
                journal: MemFiles::default(),
                delivered_at_crash: None,
                wiped: false,
                snapshots: SnapshotStore::memory(cfg.protocol.cluster_id),
                app: Arc::default(),
                incarnation: 0,
                inflight: 0,
                inbox: Vec::new(),
                busy_until: Duration::ZERO,
                held: Vec::new(),
            })
            .collect();
        let mut sim = Simulation {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            obs: Observations::new(members.learners.len()),
            stats: SimStats::default(),
            healed: false,
            cut: HashSet::new(),
            leader_victims: Vec::new(),
            clients,
            frame_buf: Vec::with_capacity(cfg.protocol.max_frame),
            sink: Collected::default(),
            nodes,
            members,
            factory,
            cfg,
        };
        for n in 0..sim.nodes.len() {
            sim.start(n);
            // Spread ticks so nodes do not all act at the same instant.
            let offset = Duration::from_micros(sim.rng.gen_range(0..2000));
            sim.schedule(offset, What::Tick(n));
            if sim.nodes[n].disk.lies() {
                let at = sim.cfg.fsync_interval;
                sim.schedule(at, What::Fsync(n));
            }
        }
        sim.schedule_faults();
        sim
    }

    fn schedule(&mut self, at: Duration, what: What) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, what)));
    }

    /// The node index of the acceptor, proposer or learner with this index.
    fn node_of(&self, target: CrashTarget) -> Option<usize> {
        let find = |want: &dyn Fn(&Plays) -> bool, i: usize| {
            let of: Vec<usize> = (0..self.nodes.len())
                .filter(|n| want(&self.nodes[*n].plays))
                .collect();
            (!of.is_empty()).then(|| of[i % of.len()])
        };
        match target {
            CrashTarget::Acceptor(i) => find(&|p| p.acceptor, i),
            CrashTarget::Proposer(i) => find(&|p| p.proposer, i),
            CrashTarget::Learner(i) => find(&|p| p.learner.is_some(), i),
            CrashTarget::Leader | CrashTarget::All => None,
        }
    }

    fn schedule_faults(&mut self) {
        let plan = self.cfg.plan.clone();
        for (k, p) in plan.partitions.iter().enumerate() {
            self.schedule(p.at, What::Partition(k));
            self.schedule(p.until, What::Unpartition);
        }
        for (k, c) in plan.crashes.iter().enumerate() {
            match c.target {
                CrashTarget::Leader => {
                    self.schedule(c.at, What::CrashLeader(k as u64));
                    self.schedule(c.restart_at, What::RestartLeaderVictim(k as u64));
                }
                CrashTarget::All => {
                    self.schedule(c.at, What::CrashAll);
                    self.schedule(c.restart_at, What::RestartAll);
                }
                target => {
                    if let Some(n) = self.node_of(target) {
                        self.schedule(c.at, What::Crash(n));
                        self.schedule(c.restart_at, What::Restart(n));
                    }
                }
            }
        }
        for (k, (at, _)) in plan.forgeries.iter().enumerate() {
            self.schedule(*at, What::Forge(k));
        }
        self.schedule(plan.heal_at, What::Heal);
    }

    /// (Re)starts node `n` from its durable state: the production driver with the roles
    /// its layout gives it.
    fn start(&mut self, n: usize) {
        let cfg = &self.cfg.protocol;
        let members = self.members.clone();
        let node = &mut self.nodes[n];
        let (id, plays) = (node.id, node.plays);
        // Nodes without a proposer tick ten times less often, as node processes do.
        let mut d = Driver::new(id, cfg, BatchBudget::of(&StorageConfig::default()))
            .with_coarse_tick(cfg.tick() * 10);
        if plays.proposer {
            d = d.with_proposer(Proposer::new(
                id,
                cfg,
                members.clone(),
                self.now,
                node.disk.round,
            ));
        }
        if plays.acceptor {
            d = d.with_acceptor((self.factory)(
                id,
                cfg,
                members.clone(),
                node.disk.durable(),
            ));
        }
        if let Some(l) = plays.learner {
            let (mut journal, state, _) = Journal::open(
                Box::new(node.journal.clone()),
                self.cfg.journal.clone(),
                cfg.cluster_id,
            )
            .expect("the simulated journal never fails to open");
            let (state, _) = journal
                .resume(state, &node.snapshots)
                .expect("the simulated journal resumes at its snapshot");
            if let Some(at_crash) = node.delivered_at_crash.take() {
                // An empty journal promises nothing: it starts over (policy None).
                let policy = match std::mem::take(&mut node.wiped) {
                    true => None,
                    false => {
                        self.stats.learner_resumes += u64::from(state.next > 0);
                        self.stats.redelivered_instances += at_crash.saturating_sub(state.next);
                        Some(self.cfg.journal.fsync_policy)
                    }
                };
                self.obs.learner_restarted(l, state.next, at_crash, policy);
            }
            *node.app.lock().expect("not poisoned") = StreamDigest::default();
            d = d
                .with_learner(Learner::restore(id, cfg, members.clone(), self.now, state))
                .with_journal(journal)
                .with_snapshots(node.snapshots.clone(), self.cfg.snapshot_every)
                .with_machine(Box::new(DigestMachine {
                    state: node.app.clone(),
                    lies: self.cfg.snapshot_lies,
                }))
                .unwrap_or_else(|e| panic!("node {id}: the application cannot resume: {e}"));
        }
        if plays.clients > 0 {
            // A new session each incarnation: a restarted node never reuses client ids.
            let session = node.incarnation as u32 + 1;
            d = d.with_sessions(Sessions::new(
                id,
                session,
                plays.clients,
                cfg,
                &members.proposers,
            ));
        }
        node.driver = Some(d);
        node.store = Some(node.disk.store(plays.acceptor));
        node.busy_until = self.now;
        for c in 0..self.clients.len() {
            if self.clients[c].node == n {
                self.client_submit(c);
            }
        }
    }

    fn crash(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let Some(d) = node.driver.take() else { return };
        self.stats.crashes += 1;
        node.store = None;
        node.disk.crash();
        node.delivered_at_crash = d.learner.as_ref().map(Learner::next_instance);
        if self.cfg.journal_lies {
            node.journal.crash_losing_synced();
        } else {
            node.journal.crash();
        }
        node.incarnation += 1;
        node.inflight -= node.inbox.len();
        node.inbox.clear();
        node.held.clear();
        node.busy_until = Duration::ZERO;
        // Its client sessions die with it: what they had not seen acknowledged, nothing
        // resends.
        let ids: HashSet<ClientId> = d.sessions.ids().collect();
        if !ids.is_empty() {
            let orphans: Vec<_> = self
                .obs
                .submitted
                .keys()
                .filter(|k| ids.contains(&k.0))
                .copied()
                .collect();
            orphans.into_iter().for_each(|k| self.obs.abandon(k));
        }
    }

    /// Runs to the end: until everything submitted is delivered after the heal, or the
    /// liveness bound passes. Then checks every property.
    pub fn run(mut self) -> SimReport {
        let deadline = self.cfg.plan.heal_at + self.cfg.liveness_bound;
        while let Some(Reverse((at, _, what))) = self.queue.pop() {
            if at > deadline {
                self.now = deadline;
                break;
            }
            self.now = at;
            self.step(what);
            if self.healed && self.done() {
                break;
            }
        }
        self.stats.virtual_time = self.now;
        self.stats.nodes = self.nodes.len() as u64;
        self.stats.values_delivered = self.obs.delivered.iter().map(|d| d.len() as u64).sum();
        for n in &self.nodes {
            let (commits, changes) = n.disk.commits();
            self.stats.commits += commits;
            self.stats.committed_changes += changes;
        }
        for node in &self.nodes {
            if let Some(a) = node.driver.as_ref().and_then(|d| d.acceptor.as_ref()) {
                let c = a.counters();
                let sum = &mut self.stats.acceptors;
                sum.refused_oversized += c.refused_oversized;
                sum.refused_top_round += c.refused_top_round;
                sum.deferred_prepares += c.deferred_prepares;
            }
        }
        self.stats.trimmed_out = self.obs.trimmed_out.iter().filter(|t| **t).count() as u64;
        if self.healed && self.leader().is_none() {
            self.obs.no_leader = true;
        }
        let violations = self.obs.check();
        let final_state = if violations.is_empty() {
            String::new()
        } else {
            self.describe()
        };
        SimReport {
            seed: self.cfg.seed,
            kind: self.cfg.plan.kind,
            layout: self.cfg.layout,
            policy: self.cfg.policy,
            violations,
            stats: self.stats,
            final_state,
        }
    }

    fn describe(&self) -> String {
        let mut out = format!(
            "submitted {} values ({} abandoned with their session); ",
            self.obs.submitted.len(),
            self.obs.abandoned.len()
        );
        for node in &self.nodes {
            let mut parts = Vec::new();
            match &node.driver {
                None => parts.push("down".to_string()),
                Some(d) => {
                    if let Some(p) = &d.proposer {
                        parts.push(format!(
                            "proposer leader={} ballot={:?} decided_below={} open={} pending={}",
                            p.is_leader(),
                            p.leader_ballot(),
                            p.decided_below(),
                            p.open_instances(),
                            p.pending_values()
                        ));
                    }
                    if d.acceptor.is_some() {
                        parts.push("acceptor".to_string());
                    }
                    if let (Some(l), Some(k)) = (&d.learner, node.plays.learner) {
                        parts.push(format!(
                            "learner next={} trimmed={:?} delivered={}",
                            l.next_instance(),
                            l.trimmed(),
                            self.obs.delivered[k].len()
                        ));
                    }
                    if node.plays.clients > 0 {
                        parts.push(format!("clients outstanding={}", d.sessions.outstanding()));
                    }
                }
            }
            out.push_str(&format!("\n    node {}: {}", node.id, parts.join("; ")));
        }
        out
    }

    /// A leader leads, and every learner that can delivered every value it owes (the final
    /// check then tells whether they are the right ones).
    fn done(&self) -> bool {
        self.leader().is_some() && self.obs.all_delivered()
    }

    /// The node index of a proposer that leads, if one does.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|n| {
            self.nodes[*n]
                .driver
                .as_ref()
                .and_then(|d| d.proposer.as_ref())
                .is_some_and(|p| p.is_leader())
        })
    }

    /// Sends a frame a hostile station made under a member's id.
    fn forge(&mut self, k: usize) {
        let Some(leader) = self.leader() else { return };
        let Some(p) = self.nodes[leader]
            .driver
            .as_ref()
            .and_then(|d| d.proposer.as_ref())
        else {
            return;
        };
        let (leader_id, ballot) = (self.nodes[leader].id, p.leader_ballot());
        let decided_below = p.decided_below();
        let standby = self
            .members
            .proposers
            .iter()
            .copied()
            .find(|p| *p != leader_id);
        let acceptors = self.members.acceptors.clone();
        let (from, msg) = match self.cfg.plan.forgeries[k].1 {
            Forgery::TopRoundPrepare => (
                leader_id,
                Message::Prepare {
                    ballot: Ballot::new(u32::MAX, leader_id),
                    from: 0,
                },
            ),
            Forgery::HighRoundPrepare => {
                let Some(s) = standby else { return };
                (
                    s,
                    Message::Prepare {
                        ballot: Ballot::new(u32::MAX - 1, s),
                        from: 0,
                    },
                )
            }
            Forgery::OversizedAccept => {
                let Some(ballot) = ballot else { return };
                // One value that fills a 2a frame to the byte.
                let room = self.cfg.protocol.max_payload()
                    - wire::sizes::ACCEPT_FIXED
                    - wire::sizes::BATCH_FIXED
                    - wire::sizes::VALUE_FIXED;
                let value = ClientValue {
                    client: 31,
                    seq: u64::MAX / 2,
                    payload: Bytes::from(vec![0xEE; room]),
                };
                (
                    leader_id,
                    Message::Accept {
                        ballot,
                        instance: decided_below + 3 * self.cfg.protocol.window as u64,
                        value: Batch::new(vec![value]),
                    },
                )
            }
        };
        for a in acceptors {
            self.send(from, a, &msg);
        }
    }

    fn up(&self, n: usize) -> bool {
        self.nodes[n].driver.is_some()
    }

    fn busy(&self, n: usize) -> bool {
        self.now < self.nodes[n].busy_until
    }

    fn step(&mut self, what: What) {
        match what {
            What::Tick(n) => {
                if self.up(n) && !self.busy(n) {
                    self.turn(n, Vec::new());
                }
                let next = self.now + self.cfg.protocol.tick();
                self.schedule(next, What::Tick(n));
            }
            What::Deliver { from, to, frame } => {
                if !self.up(to) {
                    self.nodes[to].inflight -= 1;
                } else if self.busy(to) {
                    self.nodes[to].inbox.push((from, frame));
                } else {
                    self.nodes[to].inflight -= 1;
                    self.turn(to, vec![(from, frame)]);
                }
            }
            What::Submit(c) => self.client_submit(c),
            What::Commit(n, incarnation) => {
                if self.nodes[n].incarnation == incarnation && self.up(n) {
                    // The commit reached the disk: its messages leave, and the frames that
                    // queued meanwhile are the next burst.
                    self.nodes[n].disk.complete();
                    let held = std::mem::take(&mut self.nodes[n].held);
                    self.send_from(n, held);
                    let inbox = std::mem::take(&mut self.nodes[n].inbox);
                    self.nodes[n].inflight -= inbox.len();
                    self.turn(n, inbox);
                }
            }
            What::Wake(n) => {
                if self.up(n) && !self.busy(n) {
                    self.turn(n, Vec::new());
                }
            }
            What::Fsync(n) => {
                self.nodes[n].disk.flush_cache();
                let next = self.now + self.cfg.fsync_interval;
                self.schedule(next, What::Fsync(n));
            }
            What::Crash(n) => self.crash(n),
            What::Restart(n) => {
                if !self.up(n) {
                    if self.cfg.wipe_learners && self.nodes[n].plays.learner.is_some() {
                        self.nodes[n].journal = MemFiles::default();
                        self.nodes[n].snapshots =
                            SnapshotStore::memory(self.cfg.protocol.cluster_id);
                        self.nodes[n].wiped = true;
                        self.stats.learners_wiped += 1;
                    }
                    self.start(n);
                }
            }
            What::CrashLeader(k) => {
                if let Some(n) = self.leader() {
                    self.leader_victims.push((k, n));
                    self.crash(n);
                }
            }
            What::RestartLeaderVictim(k) => {
                if let Some(&(_, n)) = self.leader_victims.iter().find(|(v, _)| *v == k) {
                    if !self.up(n) {
                        self.start(n);
                    }
                }
            }
            What::Partition(k) => {
                let p = self.cfg.plan.partitions[k].clone();
                self.cut.clear();
                let leader = self.leader();
                let standby = (0..self.nodes.len()).find(|n| {
                    Some(*n) != leader
                        && self.nodes[*n]
                            .driver
                            .as_ref()
                            .is_some_and(|d| d.proposer.is_some())
                });
                match (p.isolate_leader, leader) {
                    _ if p.isolate_standby => {
                        self.cut.extend(standby);
                    }
                    (true, Some(n)) => {
                        self.cut.insert(n);
                    }
                    _ => {
                        // A random minority of the nodes.
                        let nodes = self.nodes.len();
                        let mut pick = p.minority_pick;
                        for _ in 0..(nodes - 1) / 2 {
                            self.cut.insert((pick % nodes as u64) as usize);
                            pick = pick.rotate_left(13).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        }
                    }
                }
            }
            What::Unpartition => self.cut.clear(),
            What::CrashAll => {
                for n in 0..self.nodes.len() {
                    self.crash(n);
                }
            }
            What::RestartAll => {
                for n in 0..self.nodes.len() {
                    if !self.up(n) {
                        self.start(n);
                    }
                }
            }
            What::Forge(k) => self.forge(k),
            What::Heal => {
                self.healed = true;
                self.cut.clear();
                self.cfg.plan.loss = 0.0;
                self.cfg.plan.duplicate = 0.0;
                for n in 0..self.nodes.len() {
                    if !self.up(n) {
                        self.start(n);
                    }
                }
            }
        }
    }

    /// One turn of node `n`'s driver, as a node loop runs it: the frames as one burst, a
    /// tick if due, then commit, and the messages released when the commit completes.
    fn turn(&mut self, n: usize, frames: Vec<(NodeId, Vec<u8>)>) {
        let now = self.now;
        let mut msgs = Vec::with_capacity(frames.len());
        for (from, frame) in frames {
            match wire::decode_bytes(Bytes::from(frame)) {
                Ok(f) => {
                    debug_assert_eq!(f.header.sender, from);
                    msgs.push((from, f.msg));
                }
                Err(e) => self
                    .obs
                    .codec_error(format!("a frame node {from} sent does not decode: {e}")),
            }
        }
        let node = &mut self.nodes[n];
        let Some(d) = node.driver.as_mut() else {
            return;
        };
        d.begin_turn(now);
        for (from, msg) in msgs {
            d.handle(now, from, msg);
        }
        d.tick_if_due(now);
        let pending = d
            .end_turn(now, &mut self.sink)
            .expect("the simulator's sink never fails");
        let store = node.store.as_mut().expect("a running node has its store");
        let released = pending
            .commit(store, now)
            .expect("the simulated disk never fails");
        node.disk.round = store.round_in_memory();
        let remote = d.release(released);
        let more = d.has_work();
        let busy = node.disk.take_busy();
        if busy.is_zero() {
            self.send_from(n, remote);
            if more {
                self.schedule(now, What::Wake(n));
            }
        } else {
            node.held = remote;
            node.busy_until = now + busy;
            let incarnation = node.incarnation;
            self.schedule(now + busy, What::Commit(n, incarnation));
        }
        self.collect(n);
    }

    /// What the last turn delivered and reported, into the observations.
    fn collect(&mut self, n: usize) {
        let sink = std::mem::take(&mut self.sink);
        let learner = self.nodes[n].plays.learner;
        if let Some(l) = learner {
            for given in &sink.delivered {
                match given {
                    Given::Value(position, v) => self.obs.deliver(l, *position, v),
                    Given::Installed(below) => {
                        self.stats.snapshot_installs += 1;
                        let node = &self.nodes[n];
                        let learner = node.driver.as_ref().and_then(|d| d.learner.as_ref());
                        let dedup = learner
                            .map(|l| l.snapshot().dedup.clone())
                            .unwrap_or_default();
                        self.obs.installed(l, *below, dedup);
                    }
                }
            }
            if let Some(d) = self.nodes[n]
                .driver
                .as_ref()
                .and_then(|d| d.learner.as_ref())
            {
                let digest = *self.nodes[n].app.lock().expect("not poisoned");
                self.obs.digest(l, d.next_instance(), digest);
            }
        }
        for e in &sink.events {
            match (e, learner) {
                (Event::Shed { values }, _) => self.stats.shed += *values as u64,
                (Event::BecameLeader { .. }, _) => self.stats.leader_elections += 1,
                (Event::Trimmed { .. }, Some(_)) => self.stats.peer_catchups += 1,
                (Event::Stranded { .. }, Some(l)) => self.obs.trimmed_out[l] = true,
                (Event::FromPeer { instance }, Some(l)) => {
                    self.stats.peer_instances += 1;
                    self.obs.decided[l].push((*instance, None))
                }
                (Event::Decided { instance, value }, Some(l)) => {
                    self.obs.decided[l].push((*instance, Some(value.clone())))
                }
                _ => {}
            }
        }
        let mut wake = Vec::new();
        for key in &sink.acked {
            self.obs.acked.insert(*key);
            let local = (key.0 & 0xFFFF) as usize;
            if let Some(c) = self
                .clients
                .iter()
                .position(|c| c.node == n && c.local == local)
            {
                wake.push(c);
            }
        }
        wake.dedup();
        for c in wake {
            let at = self.now + self.cfg.think_time;
            self.schedule(at, What::Submit(c));
        }
        let mut sink = sink;
        sink.delivered.clear();
        sink.acked.clear();
        sink.events.clear();
        self.sink = sink;
    }

    fn send_from(&mut self, n: usize, sends: Vec<Envelope>) {
        let from = self.nodes[n].id;
        for env in sends {
            if matches!(env.msg, Message::CatchupRequest { .. }) {
                self.stats.catchup_requests += 1;
            }
            self.send(from, env.to, &env.msg);
        }
    }

    /// Tops client `c` up to its window of outstanding values; they leave with its node's
    /// next turn (now, unless the node is in a commit).
    fn client_submit(&mut self, c: usize) {
        let now = self.now;
        let n = self.clients[c].node;
        let local = self.clients[c].local;
        let Some(d) = self.nodes[n].driver.as_mut() else {
            return;
        };
        let mut submitted = false;
        while !self.healed
            && d.sessions.outstanding_of(local) < self.cfg.client_window
            && self.clients[c].submitted < self.cfg.values_per_client
        {
            let mut payload = vec![0u8; self.cfg.value_size];
            self.rng.fill(&mut payload[..]);
            let payload = Bytes::from(payload);
            let (client, seq) = d
                .sessions
                .submit(now, local, payload.clone())
                .expect("simulated values are within the frame limit");
            self.obs.submitted.insert((client, seq), payload);
            self.clients[c].submitted += 1;
            submitted = true;
        }
        if submitted && !self.busy(n) {
            self.turn(n, Vec::new());
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: &Message) {
        let Some(to_idx) = self.nodes.iter().position(|n| n.id == to) else {
            return;
        };
        let header = FrameHeader {
            dst: mac(to),
            src: mac(from),
            cluster: self.cfg.protocol.cluster_id,
            sender: from,
        };
        if let Err(e) = wire::encode(
            &header,
            msg,
            self.cfg.protocol.max_frame,
            &mut self.frame_buf,
        ) {
            self.obs.codec_error(format!(
                "node {from} produced a message that cannot be sent: {e}"
            ));
            return;
        }
        self.stats.frames_sent += 1;
        let from_idx = self
            .nodes
            .iter()
            .position(|n| n.id == from)
            .unwrap_or(to_idx);
        if self.cut.contains(&from_idx) != self.cut.contains(&to_idx) {
            self.stats.frames_lost += 1;
            return;
        }
        let plan = &self.cfg.plan;
        if plan.loss > 0.0 && self.rng.gen_bool(plan.loss) {
            self.stats.frames_lost += 1;
            return;
        }
        let copies = if plan.duplicate > 0.0 && self.rng.gen_bool(plan.duplicate) {
            self.stats.frames_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.nodes[to_idx].inflight >= RX_QUEUE_FRAMES {
                self.stats.frames_lost += 1;
                self.stats.frames_overflowed += 1;
                continue;
            }
            self.nodes[to_idx].inflight += 1;
            let jitter = self.cfg.plan.jitter.as_micros() as u64;
            let delay =
                self.cfg.plan.min_delay + Duration::from_micros(self.rng.gen_range(0..=jitter));
            let at = self.now + delay;
            self.schedule(
                at,
                What::Deliver {
                    from,
                    to: to_idx,
                    frame: self.frame_buf.clone(),
                },
            );
        }
    }
}

/// Runs one seed with the real acceptors.
pub fn run_seed(seed: u64) -> SimReport {
    run(SimConfig::for_seed(seed))
}

/// Runs one seed with the real acceptors and a chosen fault kind.
pub fn run_seed_with(seed: u64, kind: FaultKind) -> SimReport {
    run(SimConfig::with_kind(seed, kind))
}

/// Runs a configuration with the real acceptors.
pub fn run(cfg: SimConfig) -> SimReport {
    Simulation::new(cfg, real_acceptors()).run()
}
