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

use crate::protocol::{
    Acceptor, AcceptorCounters, AcceptorState, Actions, Ballot, Batch, Change, Client, ClientValue,
    Event, Learner, LearnerSnapshot, Membership, Message, NodeId, Proposer, ProtocolConfig,
};
use crate::storage::FsyncPolicy;
use crate::wire::{self, FrameHeader};
use bytes::Bytes;
use disk::{SimDisk, Write};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

/// The acceptor logic the simulator drives: the real one, or a deliberately broken one in
/// tests that prove the checker catches unsafe acceptors.
pub trait AcceptorLogic {
    fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions);
    /// What it refused or put off (the real acceptor's counters).
    fn counters(&self) -> AcceptorCounters {
        AcceptorCounters::default()
    }
}

impl AcceptorLogic for Acceptor {
    fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        Acceptor::handle(self, now, from, msg, out)
    }
    fn counters(&self) -> AcceptorCounters {
        Acceptor::counters(self)
    }
}

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
    pub tick: Duration,
    pub protocol: ProtocolConfig,
    pub plan: FaultPlan,
    /// The acceptors' fsync policy, and how long a commit takes / how often async syncs.
    pub policy: FsyncPolicy,
    pub fsync_latency: Duration,
    pub fsync_interval: Duration,
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
        let learners = 2;
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
            tick: Duration::from_millis(2),
            protocol,
            plan,
            policy: FsyncPolicy::Sync,
            fsync_latency: Duration::from_micros(rng.gen_range(50..500)),
            fsync_interval: Duration::from_millis(rng.gen_range(1..20)),
        };
        // Drawn last, so the draws above (and what older seeds ran) stay as they were.
        // Short pages make paged phase 1 and paged catch-up common.
        cfg.protocol.answer_max_frames = rng.gen_range(1..=32);
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
        cfg
    }

    pub fn with_policy(mut self, policy: FsyncPolicy) -> SimConfig {
        self.policy = policy;
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
    pub leader_elections: u64,
    pub crashes: u64,
    pub catchup_requests: u64,
    /// Acceptor commits (sync policy) and the changes they carried.
    pub commits: u64,
    pub committed_changes: u64,
    pub virtual_time: Duration,
    /// Summed over the acceptors running at the end.
    pub acceptors: AcceptorCounters,
    /// Learners that reported needing trimmed instances.
    pub trimmed_out: u64,
}

pub struct SimReport {
    pub seed: u64,
    pub kind: FaultKind,
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
        if self.policy != FsyncPolicy::Sync {
            cmd.push_str(&format!(" --policy {}", self.policy));
        }
        cmd
    }
}

enum Role {
    Proposer(Box<Proposer>),
    Acceptor(Box<dyn AcceptorLogic>),
    Learner(Box<Learner>),
    Client(Client),
}

struct Node {
    id: NodeId,
    role: Option<Role>,
    /// What survives a crash: acceptor disk, proposer round, learner snapshot.
    disk: SimDisk,
    durable_round: u32,
    durable_learner: LearnerSnapshot,
    /// Index among learners (learners) or home learner (clients).
    learner_index: usize,
    /// Frames on their way to this node: like a socket's receive buffer, it holds at most
    /// `RX_QUEUE_FRAMES`, and a burst past that is dropped.
    inflight: usize,
}

/// Frames a node's receive queue holds: about what a kernel's default UDP receive buffer
/// holds of full 1500-byte frames, doubled. A burst of answers larger than this loses its
/// tail, as it does on a real socket.
pub const RX_QUEUE_FRAMES: usize = 256;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Tick(usize),
    Deliver {
        from: NodeId,
        to: usize,
        frame: Vec<u8>,
    },
    Submit(usize),
    /// An acceptor's commit completes (ignored if the node crashed since: incarnation).
    Commit(usize, u64),
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
    submitted_per_client: Vec<usize>,
    frame_buf: Vec<u8>,
}

fn mac(id: NodeId) -> wire::MacAddr {
    let [hi, lo] = id.to_be_bytes();
    [0x02, 0x65, 0x70, 0x78, hi, lo]
}

impl Simulation {
    pub fn new(cfg: SimConfig, factory: AcceptorFactory) -> Self {
        let id_of = |base: u16, k: usize| base + k as u16;
        let members = Membership {
            proposers: (0..cfg.proposers).map(|k| id_of(1, k)).collect(),
            acceptors: (0..cfg.acceptors).map(|k| id_of(11, k)).collect(),
            learners: (0..cfg.learners).map(|k| id_of(21, k)).collect(),
        };
        let mut nodes = Vec::new();
        let mut add = |id: NodeId, learner_index: usize| {
            nodes.push(Node {
                id,
                role: None,
                disk: SimDisk::new(cfg.policy),
                durable_round: 0,
                durable_learner: LearnerSnapshot::default(),
                learner_index,
                inflight: 0,
            })
        };
        members.proposers.iter().for_each(|id| add(*id, 0));
        members.acceptors.iter().for_each(|id| add(*id, 0));
        for (k, id) in members.learners.iter().enumerate() {
            add(*id, k);
        }
        for k in 0..cfg.clients {
            add(id_of(31, k), k % cfg.learners);
        }
        let mut sim = Simulation {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            obs: Observations::new(cfg.learners),
            stats: SimStats::default(),
            healed: false,
            cut: HashSet::new(),
            leader_victims: Vec::new(),
            submitted_per_client: vec![0; cfg.clients],
            frame_buf: Vec::with_capacity(cfg.protocol.max_frame),
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
        }
        sim.schedule_faults();
        if sim.cfg.policy == FsyncPolicy::Async {
            for k in 0..sim.cfg.acceptors {
                let at = sim.cfg.fsync_interval;
                sim.schedule(at, What::Fsync(sim.cfg.proposers + k));
            }
        }
        sim
    }

    fn schedule(&mut self, at: Duration, what: What) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, what)));
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
                CrashTarget::Acceptor(i) => {
                    let n = self.cfg.proposers + i;
                    self.schedule(c.at, What::Crash(n));
                    self.schedule(c.restart_at, What::Restart(n));
                }
                CrashTarget::Proposer(i) => {
                    let n = i % self.cfg.proposers;
                    self.schedule(c.at, What::Crash(n));
                    self.schedule(c.restart_at, What::Restart(n));
                }
                CrashTarget::Learner(i) => {
                    let n = self.cfg.proposers + self.cfg.acceptors + i;
                    self.schedule(c.at, What::Crash(n));
                    self.schedule(c.restart_at, What::Restart(n));
                }
                CrashTarget::All => {
                    self.schedule(c.at, What::CrashAll);
                    self.schedule(c.restart_at, What::RestartAll);
                }
            }
        }
        for (k, (at, _)) in plan.forgeries.iter().enumerate() {
            self.schedule(*at, What::Forge(k));
        }
        self.schedule(plan.heal_at, What::Heal);
    }

    /// (Re)starts node `n` from its durable state.
    fn start(&mut self, n: usize) {
        let cfg = &self.cfg.protocol;
        let members = self.members.clone();
        let node = &mut self.nodes[n];
        let id = node.id;
        let first_client = self.cfg.proposers + self.cfg.acceptors + self.cfg.learners;
        node.role = Some(if members.proposers.contains(&id) {
            Role::Proposer(Box::new(Proposer::new(
                id,
                cfg,
                members,
                self.now,
                node.durable_round,
            )))
        } else if members.acceptors.contains(&id) {
            Role::Acceptor((self.factory)(id, cfg, members, node.disk.durable.clone()))
        } else if members.learners.contains(&id) {
            Role::Learner(Box::new(Learner::restore(
                id,
                cfg,
                members,
                self.now,
                node.durable_learner.clone(),
            )))
        } else {
            debug_assert!(n >= first_client);
            Role::Client(Client::new(id as u64, cfg, members.proposers))
        });
        if n >= first_client {
            self.client_submit(n);
        }
    }

    fn crash(&mut self, n: usize) {
        if self.nodes[n].role.take().is_some() {
            self.stats.crashes += 1;
            self.nodes[n].disk.crash();
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
        self.stats.values_delivered = self.obs.delivered.iter().map(|d| d.len() as u64).sum();
        self.stats.commits = self.nodes.iter().map(|n| n.disk.commits).sum();
        self.stats.committed_changes = self.nodes.iter().map(|n| n.disk.committed_changes).sum();
        for node in &self.nodes {
            if let Some(Role::Acceptor(a)) = &node.role {
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
            policy: self.cfg.policy,
            violations,
            stats: self.stats,
            final_state,
        }
    }

    fn describe(&self) -> String {
        let mut out = format!("submitted {} values; ", self.obs.submitted.len());
        for node in &self.nodes {
            let state = match &node.role {
                None => "down".to_string(),
                Some(Role::Proposer(p)) => format!(
                    "proposer leader={} ballot={:?} decided_below={} open={} pending={}",
                    p.is_leader(),
                    p.leader_ballot(),
                    p.decided_below(),
                    p.open_instances(),
                    p.pending_values()
                ),
                Some(Role::Acceptor(_)) => "acceptor".to_string(),
                Some(Role::Learner(l)) => format!(
                    "learner next={} trimmed={:?} delivered={}",
                    l.next_instance(),
                    l.trimmed(),
                    self.obs.delivered[node.learner_index].len()
                ),
                Some(Role::Client(c)) => format!("client outstanding={}", c.outstanding()),
            };
            out.push_str(&format!("\n    node {}: {state}", node.id));
        }
        out
    }

    /// A leader leads, and every learner that can (one trimmed out needs state transfer)
    /// delivered as many values as were submitted (the final check then tells whether they
    /// are the right ones).
    fn done(&self) -> bool {
        let total = self.obs.submitted.len();
        self.leader().is_some()
            && self
                .obs
                .delivered
                .iter()
                .zip(&self.obs.trimmed_out)
                .all(|(d, trimmed)| *trimmed || d.len() >= total)
    }

    /// The node index of a proposer that leads, if one does.
    fn leader(&self) -> Option<usize> {
        (0..self.cfg.proposers)
            .find(|n| matches!(&self.nodes[*n].role, Some(Role::Proposer(p)) if p.is_leader()))
    }

    /// Sends a frame a hostile station made under a member's id.
    fn forge(&mut self, k: usize) {
        let Some(leader) = self.leader() else { return };
        let Some(Role::Proposer(p)) = &self.nodes[leader].role else {
            return;
        };
        let (leader_id, ballot) = (self.nodes[leader].id, p.leader_ballot());
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
                        instance: p.decided_below() + 3 * self.cfg.protocol.window as u64,
                        value: Batch::new(vec![value]),
                    },
                )
            }
        };
        for a in acceptors {
            self.send(from, a, &msg);
        }
    }

    fn step(&mut self, what: What) {
        match what {
            What::Tick(n) => {
                let mut out = Actions::new();
                let now = self.now;
                match self.nodes[n].role.as_mut() {
                    Some(Role::Proposer(p)) => p.tick(now, &mut out),
                    Some(Role::Learner(l)) => l.tick(now, &mut out),
                    Some(Role::Client(c)) => c.tick(now, &mut out),
                    Some(Role::Acceptor(_)) | None => {}
                }
                self.apply(n, out);
                let next = self.now + self.cfg.tick;
                self.schedule(next, What::Tick(n));
            }
            What::Deliver { from, to, frame } => self.deliver(from, to, frame),
            What::Submit(c) => self.client_submit(c),
            What::Commit(n, incarnation) => {
                if self.nodes[n].disk.incarnation == incarnation && self.nodes[n].role.is_some() {
                    let (sends, more) = self.nodes[n].disk.commit_done();
                    if more {
                        self.schedule_commit(n);
                    }
                    self.send_from(n, sends);
                }
            }
            What::Fsync(n) => {
                self.nodes[n].disk.fsync();
                let next = self.now + self.cfg.fsync_interval;
                self.schedule(next, What::Fsync(n));
            }
            What::Crash(n) => self.crash(n),
            What::Restart(n) => {
                if self.nodes[n].role.is_none() {
                    self.start(n);
                }
            }
            What::CrashLeader(k) => {
                let leader = self.leader();
                if let Some(n) = leader {
                    self.leader_victims.push((k, n));
                    self.crash(n);
                }
            }
            What::RestartLeaderVictim(k) => {
                if let Some(&(_, n)) = self.leader_victims.iter().find(|(v, _)| *v == k) {
                    if self.nodes[n].role.is_none() {
                        self.start(n);
                    }
                }
            }
            What::Partition(k) => {
                let p = self.cfg.plan.partitions[k].clone();
                self.cut.clear();
                let leader = self.leader();
                let standby = (0..self.cfg.proposers)
                    .find(|n| Some(*n) != leader && self.nodes[*n].role.is_some());
                match (p.isolate_leader, leader) {
                    _ if p.isolate_standby => {
                        self.cut.extend(standby);
                    }
                    (true, Some(n)) => {
                        self.cut.insert(n);
                    }
                    _ => {
                        // A random minority of the servers (clients stay connected).
                        let servers = self.cfg.proposers + self.cfg.acceptors + self.cfg.learners;
                        let mut pick = p.minority_pick;
                        for _ in 0..(servers - 1) / 2 {
                            self.cut.insert((pick % servers as u64) as usize);
                            pick = pick.rotate_left(13).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        }
                    }
                }
            }
            What::Unpartition => self.cut.clear(),
            What::CrashAll => {
                let servers = self.cfg.proposers + self.cfg.acceptors + self.cfg.learners;
                for n in 0..servers {
                    self.crash(n);
                }
            }
            What::RestartAll => {
                let servers = self.cfg.proposers + self.cfg.acceptors + self.cfg.learners;
                for n in 0..servers {
                    if self.nodes[n].role.is_none() {
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
                    if self.nodes[n].role.is_none() {
                        self.start(n);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: usize, frame: Vec<u8>) {
        self.nodes[to].inflight -= 1;
        let Some(role) = self.nodes[to].role.as_mut() else {
            return;
        };
        let decoded = match wire::decode_bytes(Bytes::from(frame)) {
            Ok(f) => f,
            Err(e) => {
                self.obs
                    .codec_error(format!("a frame node {from} sent does not decode: {e}"));
                return;
            }
        };
        debug_assert_eq!(decoded.header.sender, from);
        let mut out = Actions::new();
        let now = self.now;
        match role {
            Role::Proposer(p) => p.handle(now, from, decoded.msg, &mut out),
            Role::Acceptor(a) => a.handle(now, from, decoded.msg, &mut out),
            Role::Learner(l) => l.handle(now, from, decoded.msg, &mut out),
            Role::Client(c) => c.handle(&decoded.msg),
        }
        self.apply(to, out);
    }

    /// Carries out a node's actions: storage first, then messages, deliveries, events.
    fn apply(&mut self, n: usize, mut out: Actions) {
        let node = &mut self.nodes[n];
        let mut sends = std::mem::take(&mut out.send);
        if matches!(node.role, Some(Role::Acceptor(_))) {
            match node.disk.write(std::mem::take(&mut out.persist), sends) {
                Write::SendNow(now) => sends = now,
                Write::StartCommit => {
                    sends = Vec::new();
                    self.schedule_commit(n);
                }
                Write::Queued => sends = Vec::new(),
            }
        }
        let node = &mut self.nodes[n];
        for change in &out.persist {
            if let Change::ProposerRound(r) = change {
                // A proposer's round is one tiny record, synced at once.
                node.durable_round = node.durable_round.max(*r);
            }
        }
        for ev in &out.events {
            match ev {
                Event::BecameLeader { .. } => self.stats.leader_elections += 1,
                Event::Trimmed { .. } => {
                    let l = self.nodes[n].learner_index;
                    self.obs.trimmed_out[l] = true;
                }
                Event::Decided { instance, value } => {
                    let l = self.nodes[n].learner_index;
                    self.obs.decided[l].push((*instance, value.clone()));
                }
                _ => {}
            }
        }
        if let Some(Role::Learner(learner)) = &self.nodes[n].role {
            // The application keeps the snapshot with its state, no-op instances included.
            if learner.next_instance() != self.nodes[n].durable_learner.next {
                self.nodes[n].durable_learner = learner.snapshot().clone();
            }
        }
        if !out.deliver.is_empty() {
            self.on_deliveries(n, &out.deliver);
        }
        self.send_from(n, sends);
    }

    fn schedule_commit(&mut self, n: usize) {
        let at = self.now + self.cfg.fsync_latency;
        let incarnation = self.nodes[n].disk.incarnation;
        self.schedule(at, What::Commit(n, incarnation));
    }

    fn send_from(&mut self, n: usize, sends: Vec<crate::protocol::Envelope>) {
        let from = self.nodes[n].id;
        for env in sends {
            if matches!(env.msg, Message::CatchupRequest { .. }) {
                self.stats.catchup_requests += 1;
            }
            self.send(from, env.to, &env.msg);
        }
    }

    fn on_deliveries(&mut self, n: usize, deliveries: &[crate::protocol::Delivery]) {
        let l = self.nodes[n].learner_index;
        let first_client = self.cfg.proposers + self.cfg.acceptors + self.cfg.learners;
        let mut wake = Vec::new();
        for d in deliveries {
            for v in &d.values {
                self.obs.delivered[l].push(v.clone());
                let c = first_client + (v.client as usize - 31);
                if self.nodes[c].learner_index != l {
                    continue;
                }
                if let Some(Role::Client(client)) = self.nodes[c].role.as_mut() {
                    if client.on_delivered(self.now, v.seq).is_some() {
                        self.obs.acked.insert((v.client, v.seq));
                        wake.push(c);
                    }
                }
            }
        }
        wake.dedup();
        for c in wake {
            let at = self.now + self.cfg.think_time;
            self.schedule(at, What::Submit(c));
        }
    }

    /// Tops the client up to its window of outstanding values and sends them.
    fn client_submit(&mut self, c: usize) {
        let k = c - (self.cfg.proposers + self.cfg.acceptors + self.cfg.learners);
        let now = self.now;
        let mut out = Actions::new();
        let Some(Role::Client(client)) = self.nodes[c].role.as_mut() else {
            return;
        };
        while !self.healed
            && client.outstanding() < self.cfg.client_window
            && self.submitted_per_client[k] < self.cfg.values_per_client
        {
            let mut payload = vec![0u8; self.cfg.value_size];
            self.rng.fill(&mut payload[..]);
            let payload = Bytes::from(payload);
            let seq = client
                .submit(now, payload.clone())
                .expect("simulated values are within the frame limit");
            self.obs.submitted.insert((client.id(), seq), payload);
            self.submitted_per_client[k] += 1;
        }
        client.flush(&mut out);
        self.apply(c, out);
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
