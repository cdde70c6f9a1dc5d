//! An in-process cluster: every node on its own thread, joined by the in-memory transport
//! (crossbeam channels carrying messages). Each node is the one driver (driver/) on one
//! thread, as in `ethpaxos run`: two proposers, three acceptors (RocksDB group commit under
//! the fsync policy, or memory), two learners, and the clients on the first learner.

#![forbid(unsafe_code)]

mod digest;
mod transport;

pub use digest::SequenceDigest;
pub use transport::{Inbound, MemTransport};

use crate::driver::single::{self, Idle, Link};
use crate::driver::{
    Acked, Driver, Latency, Load, NodeError, NodeStats, NodeStore, RoundStore, Sessions, Sink,
};
use crate::protocol::{
    Acceptor, Envelope, Event, Learner, Membership, Message, NodeId, Proposer, ProtocolConfig,
};
use crate::storage::{dir_bytes, BatchBudget, FsyncPolicy, GroupCommit, RoundFile, StorageConfig};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub duration: Duration,
    pub clients: usize,
    pub outstanding: usize,
    pub value_size: usize,
    pub kill_leader_after: Option<Duration>,
    pub protocol: ProtocolConfig,
    /// Acceptor storage. Without a path, durable policies use a temporary directory that
    /// is removed at the end.
    pub storage: StorageConfig,
    /// Set (by SIGINT/SIGTERM in `ethpaxos demo`) to end the run early; it still drains,
    /// summarises and removes its temporary directory.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The first part of `duration` that the measured window (`DemoSummary::window`)
    /// leaves out: latencies, acknowledgements and CPU count from here on.
    pub warmup: Duration,
}

pub struct DemoSummary {
    pub elapsed: Duration,
    pub acknowledged: u64,
    /// The measured window (after the warm-up; all of the run without one): its length,
    /// acknowledgements, latency (mean, p50, p99, p99.9) and CPU seconds per role.
    pub window: Window,
    pub leader_changes: u64,
    /// Per learner: values delivered and the digest of the delivered sequence.
    pub learners: Vec<(u64, String)>,
    pub policy: FsyncPolicy,
    pub storage_path: Option<std::path::PathBuf>,
    /// Client values the leader shed because its queue was full (the clients resent them).
    pub shed: u64,
    /// Acceptor group commits and the changes they carried, over all acceptors.
    pub commits: u64,
    pub committed_changes: u64,
    /// Nodes that stopped on an error (a storage failure, say).
    pub failures: Vec<String>,
}

/// What a run measured after its warm-up.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub length: Duration,
    pub acknowledged: u64,
    pub latency_mean: Duration,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_p999: Duration,
    /// CPU seconds used in the window by each role's threads (`proposer`, `acceptor`,
    /// `learner`, `client`).
    pub cpu: Vec<(String, f64)>,
    /// Messages the nodes sent to each other in the window (frames, on a network).
    pub frames: u64,
    /// Times this process's threads went to sleep in the window (each a wake-up later).
    pub wakeups: u64,
}

impl Window {
    pub fn values_per_sec(&self) -> f64 {
        self.acknowledged as f64 / self.length.as_secs_f64().max(1e-9)
    }
}

/// CPU seconds (user + system) so far of this process's threads, summed by role: the thread
/// name's part before the first '-'.
pub fn cpu_by_role() -> HashMap<String, f64> {
    let mut by = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by;
    };
    for t in tasks.filter_map(Result::ok) {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Some(role) = comm.trim().strip_prefix("epx-") else {
            continue;
        };
        let role = role.split('-').next().unwrap_or(role).to_string();
        *by.entry(role).or_insert(0.0) += stat_cpu_seconds(&t.path().join("stat"));
    }
    by
}

/// CPU seconds (user + system) of the process or thread whose /proc `stat` file is at `path`
/// (0 if it cannot be read).
pub fn stat_cpu_seconds(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the ")" that ends the name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // Linux reports CPU time in USER_HZ ticks, 100 per second on every architecture it runs.
    ticks as f64 / 100.0
}

impl DemoSummary {
    pub fn values_per_sec(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn learners_agree(&self) -> bool {
        self.learners.windows(2).all(|w| w[0] == w[1]) && !self.learners.is_empty()
    }
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "summary: {} values acknowledged in {:.2}s = {:.0} values/s; latency p50 {:?} p99 {:?}; {} leader election(s)",
            self.acknowledged,
            self.elapsed.as_secs_f64(),
            self.values_per_sec(),
            self.window.latency_p50,
            self.window.latency_p99,
            self.leader_changes
        )?;
        let per_commit = self.committed_changes as f64 / self.commits.max(1) as f64;
        match &self.storage_path {
            Some(p) => writeln!(
                f,
                "storage: RocksDB, fsync policy {}, {}; {} group commits, {per_commit:.1} changes per commit",
                self.policy,
                p.display(),
                self.commits
            )?,
            None => writeln!(f, "storage: memory (fsync policy none)")?,
        }
        if self.shed > 0 {
            writeln!(
                f,
                "shed: {} client values refused by a full leader queue (resent by their clients)",
                self.shed
            )?;
        }
        for e in &self.failures {
            writeln!(f, "FAILED: {e}")?;
        }
        for (k, (n, d)) in self.learners.iter().enumerate() {
            writeln!(f, "learner {k}: {n} values delivered, sequence digest {d}")?;
        }
        if self.learners_agree() {
            write!(f, "learners agree: identical sequences")
        } else {
            write!(f, "LEARNERS DISAGREE")
        }
    }
}

/// Counters the progress line reads while the cluster runs.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    stop_clients: Arc<AtomicBool>,
    /// Values the clients have submitted and not yet seen acknowledged, published by the
    /// clients' node once they stop submitting (`u64::MAX` until then).
    outstanding: AtomicU64,
    acked: AtomicU64,
    delivered: [AtomicU64; 2],
    leader: AtomicU64,
    elections: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(why);
    }
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A temporary data directory for the demo's acceptors, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create() -> Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("ethpaxos-demo-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| {
            format!("cannot create the demo's data directory {}", dir.display())
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo cluster and reports progress lines through `progress`.
pub fn run_demo(opts: &DemoOptions, mut progress: impl FnMut(String)) -> Result<DemoSummary> {
    opts.protocol.validate()?;
    if opts.clients == 0 || opts.outstanding == 0 {
        bail!("--clients and --outstanding must be at least 1");
    }
    let max = opts.protocol.max_value_bytes();
    if opts.value_size > max {
        bail!(
            "--value-size {} is over the {max}-byte limit of a {}-byte frame (max_frame)",
            opts.value_size,
            opts.protocol.max_frame
        );
    }
    // A durable policy without a path gets a directory of its own, removed at the end.
    let mut storage_cfg = opts.storage.clone();
    let _scratch = match (&storage_cfg.path, storage_cfg.fsync_policy) {
        (None, policy) if policy != FsyncPolicy::None => {
            let dir = ScratchDir::create()?;
            storage_cfg.path = Some(dir.0.clone());
            Some(dir)
        }
        _ => None,
    };
    storage_cfg.validate()?;
    let storage_path = storage_cfg.path.clone();
    if let (Some(dir), None) = (&storage_path, &_scratch) {
        // The demo's proposers and learners start empty; acceptors holding an earlier run's
        // votes would not belong to the same cluster.
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            bail!(
                "--data-dir {} is not empty (an earlier run's data?); give a new or empty directory",
                dir.display()
            );
        }
    }
    let members = Membership {
        proposers: vec![1, 2],
        acceptors: vec![11, 12, 13],
        learners: vec![21, 22],
    };
    let mut ids: Vec<NodeId> = members.proposers.clone();
    ids.extend(&members.acceptors);
    ids.extend(&members.learners);
    let (transport, mut inboxes) = MemTransport::new(&ids);
    let shared = Arc::new(Shared {
        outstanding: AtomicU64::new(u64::MAX),
        ..Shared::default()
    });
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut kill_switches = HashMap::new();
    // Every demo value carries the same bytes; static storage makes each clone free, where a
    // shared heap buffer's reference count would bounce between the cores of every stage.
    let payload = Bytes::from_static(Box::leak(vec![0xA5u8; opts.value_size].into_boxed_slice()));
    let budget = BatchBudget::of(&storage_cfg);
    for &id in &ids {
        let mut driver = Driver::new(id, &opts.protocol, budget);
        let mut votes = None;
        let mut round = None;
        let role = if members.proposers.contains(&id) {
            driver = driver.with_proposer(Proposer::new(
                id,
                &opts.protocol,
                members.clone(),
                Duration::ZERO,
                0,
            ));
            round = Some(match &storage_path {
                Some(dir) => RoundStore::File(RoundFile::new(dir, id)),
                None => RoundStore::Memory(0),
            });
            "proposer"
        } else if members.acceptors.contains(&id) {
            let mut storage = storage_cfg
                .open(id)
                .with_context(|| format!("acceptor {id}: cannot open its storage"))?;
            let state = storage
                .load()
                .with_context(|| format!("acceptor {id}: cannot load its storage"))?;
            driver = driver.with_acceptor(Box::new(Acceptor::restore(
                id,
                &opts.protocol,
                members.clone(),
                state,
            )));
            votes = Some(GroupCommit::new(storage, &storage_cfg));
            "acceptor"
        } else {
            // The demo's learners keep no journal: their snapshots (of their own state, what
            // acceptors trim by) are in memory.
            driver = driver
                .with_learner(Learner::new(
                    id,
                    &opts.protocol,
                    members.clone(),
                    Duration::ZERO,
                ))
                .with_snapshots(
                    crate::journal::SnapshotStore::memory(opts.protocol.cluster_id),
                    crate::journal::LearnerConfig::default().snapshot_every,
                );
            "learner"
        };
        let learner = members.learners.iter().position(|l| *l == id);
        if learner == Some(0) {
            // The clients live on the first learner, which acknowledges them.
            driver = driver.with_sessions(
                Sessions::new(id, 1, opts.clients, &opts.protocol, &members.proposers)
                    .with_load(Load {
                        outstanding: opts.outstanding,
                        limit: 0,
                        payload: payload.clone(),
                        hold: Some(shared.stop_clients.clone()),
                    })
                    .with_warmup(opts.warmup),
            );
        }
        let kill = Arc::new(AtomicBool::new(false));
        kill_switches.insert(id, kill.clone());
        let mut link = MemLink {
            rx: inboxes.remove(&id).expect("inbox"),
            tx: transport.clone(),
            id,
        };
        let mut store = NodeStore::new(round, votes);
        let mut sink = DemoSink {
            shared: shared.clone(),
            learner,
            digest: SequenceDigest::default(),
            acked: 0,
        };
        let shared = shared.clone();
        handles.push(spawn_named(format!("epx-{role}-{id}"), move || {
            let mut stop = |d: &Driver, _: Option<&crate::transport::TransportStats>| {
                // Summing every session's outstanding values costs a pass over the clients:
                // done only while the demo drains, not every turn of the run.
                if learner == Some(0) && shared.stop_clients.load(Ordering::Relaxed) {
                    shared
                        .outstanding
                        .store(d.sessions.outstanding() as u64, Ordering::Relaxed);
                }
                shared.stop.load(Ordering::Relaxed) || kill.load(Ordering::Relaxed)
            };
            let run = single::run(
                &mut driver,
                &mut link,
                &mut store,
                &mut sink,
                &mut stop,
                start,
                // More threads than cores: a thread that spun would take the core another
                // node needs.
                Idle::Spin(0),
            );
            if let Err(e) = run {
                shared.fail(format!("node {id} stopped: {e}"));
            }
            // A crashed node neither reads nor sends until the demo ends.
            while !shared.stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(10));
                while link.rx.try_recv().is_ok() {}
            }
            NodeEnd {
                learner: learner.map(|_| sink.digest.finish()),
                stats: driver.summary(),
                latency: (learner == Some(0)).then(|| driver.sessions.take_latency()),
            }
        }));
    }

    let mut last = Instant::now();
    let mut last_acked = 0u64;
    let mut killed = false;
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    type AtWarmup = (Instant, u64, HashMap<String, f64>, u64, u64);
    let mut at_warmup: Option<AtWarmup> = None;
    while start.elapsed() < opts.duration && !interrupted() {
        thread::sleep(Duration::from_millis(10));
        if at_warmup.is_none() && start.elapsed() >= opts.warmup {
            at_warmup = Some((
                Instant::now(),
                shared.acked.load(Ordering::Relaxed),
                cpu_by_role(),
                transport.sent(),
                crate::bench::cost::wakeups(&[0]),
            ));
        }
        if let (Some(after), false) = (opts.kill_leader_after, killed) {
            if start.elapsed() >= after {
                let leader = shared.leader.load(Ordering::Relaxed) as NodeId;
                if let Some(k) = kill_switches.get(&leader) {
                    k.store(true, Ordering::Relaxed);
                    progress(format!(
                        "killed leader {leader} at {:.1}s",
                        start.elapsed().as_secs_f64()
                    ));
                }
                killed = true;
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let acked = shared.acked.load(Ordering::Relaxed);
            let rate = (acked - last_acked) as f64 / last.elapsed().as_secs_f64();
            let disk = storage_path.as_deref().map_or(0, dir_bytes);
            progress(format!(
                "t={:>4.1}s  {:>10.0} values/s  acknowledged {:>10}  delivered {:>10} / {:>10}  leader {}  rss {:.0} MiB  disk {:.1} MiB",
                start.elapsed().as_secs_f64(),
                rate,
                acked,
                shared.delivered[0].load(Ordering::Relaxed),
                shared.delivered[1].load(Ordering::Relaxed),
                shared.leader.load(Ordering::Relaxed),
                rss_bytes() as f64 / (1 << 20) as f64,
                disk as f64 / (1 << 20) as f64,
            ));
            last = Instant::now();
            last_acked = acked;
        }
    }
    let elapsed = start.elapsed();
    if interrupted() {
        progress(format!(
            "interrupted at {:.1}s: draining",
            elapsed.as_secs_f64()
        ));
    }
    let acked_at_end = shared.acked.load(Ordering::Relaxed);
    let cpu_at_end = cpu_by_role();
    let (frames_at_end, wakeups_at_end) = (transport.sent(), crate::bench::cost::wakeups(&[0]));
    let (window_start, acked_at_warmup, cpu_at_warmup, frames_at_warmup, wakeups_at_warmup) =
        at_warmup.unwrap_or_else(|| {
            (
                Instant::now(),
                acked_at_end,
                cpu_at_end.clone(),
                frames_at_end,
                wakeups_at_end,
            )
        });
    let window_length = window_start.elapsed();
    let mut cpu: Vec<(String, f64)> = cpu_at_end
        .iter()
        .map(|(role, t)| (role.clone(), t - cpu_at_warmup.get(role).unwrap_or(&0.0)))
        .collect();
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    // Stop submitting, then let both learners drain what was proposed before comparing them.
    shared.stop_clients.store(true, Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_deadline && shared.outstanding.load(Ordering::Relaxed) > 0 {
        thread::sleep(Duration::from_millis(5));
    }
    let client_acked = shared.acked.load(Ordering::Relaxed);
    while Instant::now() < drain_deadline {
        let d0 = shared.delivered[0].load(Ordering::Relaxed);
        let d1 = shared.delivered[1].load(Ordering::Relaxed);
        if d0 == d1 && d0 >= client_acked {
            thread::sleep(Duration::from_millis(100));
            if shared.delivered[0].load(Ordering::Relaxed) == d0
                && shared.delivered[1].load(Ordering::Relaxed) == d1
            {
                break;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut learners = Vec::new();
    let mut latency = Latency::default();
    let mut totals = NodeStats::default();
    for h in handles {
        let end = h
            .join()
            .map_err(|_| anyhow::anyhow!("node thread panicked"))?;
        learners.extend(end.learner);
        if let Some(l) = end.latency {
            latency.add(&l);
        }
        totals.absorb(&end.stats);
    }
    let failures = std::mem::take(&mut *shared.failures.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(DemoSummary {
        elapsed,
        acknowledged: acked_at_end,
        window: Window {
            length: window_length,
            acknowledged: acked_at_end - acked_at_warmup,
            latency_mean: latency.mean(),
            latency_p50: latency.quantile(0.5),
            latency_p99: latency.quantile(0.99),
            latency_p999: latency.quantile(0.999),
            cpu,
            frames: frames_at_end - frames_at_warmup,
            wakeups: wakeups_at_end.saturating_sub(wakeups_at_warmup),
        },
        leader_changes: shared.elections.load(Ordering::Relaxed),
        learners,
        policy: storage_cfg.fsync_policy,
        storage_path,
        shed: totals.shed,
        commits: totals.commits,
        committed_changes: totals.committed_changes,
        failures,
    })
}

fn spawn_named<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("the demo can start its threads")
}

/// A demo node's link: its inbox, and the channels to the others.
struct MemLink {
    rx: Receiver<Inbound>,
    tx: MemTransport,
    id: NodeId,
}

impl Link for MemLink {
    fn recv(&mut self, wait: Duration) -> Result<Option<(NodeId, Message)>, NodeError> {
        let got = if wait.is_zero() {
            self.rx.try_recv().ok()
        } else {
            self.rx.recv_timeout(wait).ok()
        };
        Ok(got.map(|m| (m.from, m.msg)))
    }

    fn send(&mut self, env: Envelope) -> Result<(), NodeError> {
        self.tx.send_all(self.id, std::iter::once(env));
        Ok(())
    }
}

/// What the demo watches of a node: a learner's digest and count, acknowledgements, the
/// leader.
struct DemoSink {
    shared: Arc<Shared>,
    learner: Option<usize>,
    digest: SequenceDigest,
    /// Acknowledged this turn, not yet published.
    acked: u64,
}

impl Sink for DemoSink {
    fn delivered(
        &mut self,
        _now: Duration,
        _position: crate::protocol::Position,
        v: &crate::protocol::ClientValue,
    ) -> std::io::Result<()> {
        self.digest.add(v);
        Ok(())
    }

    fn acknowledged(&mut self, _ack: &Acked) -> std::io::Result<()> {
        self.acked += 1;
        Ok(())
    }

    fn event(&mut self, node: NodeId, e: &Event) {
        if let Event::BecameLeader { .. } = e {
            self.shared.leader.store(node as u64, Ordering::Relaxed);
            self.shared.elections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Published once a turn: a store per value would bounce the counters' cache line
    /// between the cores for nothing.
    fn end_turn(&mut self) -> std::io::Result<()> {
        if let Some(k) = self.learner {
            self.shared.delivered[k].store(self.digest.count(), Ordering::Relaxed);
        }
        if self.acked > 0 {
            self.shared.acked.fetch_add(self.acked, Ordering::Relaxed);
            self.acked = 0;
        }
        Ok(())
    }
}

/// What a demo node's thread hands back.
struct NodeEnd {
    learner: Option<(u64, String)>,
    stats: NodeStats,
    latency: Option<Latency>,
}
