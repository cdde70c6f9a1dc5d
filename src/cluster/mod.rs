//! An in-process cluster: every node on its own thread, joined by the in-memory transport
//! (crossbeam channels carrying messages). It drives the same state machines as the simulator
//! and, later, the real nodes; acceptors here keep their state in memory.

#![forbid(unsafe_code)]

mod digest;
mod transport;

pub use digest::SequenceDigest;
pub use transport::{Inbound, MemTransport};

use crate::protocol::{
    Acceptor, Actions, Client, ClientId, Event, Learner, Membership, Message, NodeId, Proposer,
    ProtocolConfig,
};
use crate::storage::{dir_bytes, BatchBudget, FsyncPolicy, GroupCommit, StorageConfig};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;
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
    stop_clients: AtomicBool,
    acked: AtomicU64,
    delivered: [AtomicU64; 2],
    leader: AtomicU64,
    elections: AtomicU64,
    commits: AtomicU64,
    committed_changes: AtomicU64,
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

const CLIENT_NODE: NodeId = 100;

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
    ids.push(CLIENT_NODE);
    let (transport, mut inboxes) = MemTransport::new(&ids);
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Vec<(ClientId, u64)>>();
    let mut handles = Vec::new();
    let mut kill_switches = HashMap::new();

    for id in &members.proposers {
        let kill = Arc::new(AtomicBool::new(false));
        kill_switches.insert(*id, kill.clone());
        let mut node = Proposer::new(*id, &opts.protocol, members.clone(), Duration::ZERO, 0);
        let shared = shared.clone();
        let (rx, tx) = (inboxes.remove(id).expect("inbox"), transport.clone());
        let id = *id;
        handles.push(spawn_named(format!("epx-proposer-{id}"), move || {
            let step = |input: Option<(NodeId, Message)>, now, out: &mut Actions| {
                match input {
                    Some((from, m)) => node.handle(now, from, m, out),
                    None => node.tick(now, out),
                }
                for e in out.events.drain(..) {
                    if let Event::BecameLeader { .. } = e {
                        shared.leader.store(id as u64, Ordering::Relaxed);
                        shared.elections.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            // In memory: the round needs no disk here, as nothing of this demo survives it.
            node_loop(
                id,
                rx,
                tx,
                &shared,
                &kill,
                start,
                stateless_burst(),
                step,
                |_, _| Ok(()),
            );
            None
        }));
    }
    for id in &members.acceptors {
        let mut storage = storage_cfg
            .open(*id)
            .with_context(|| format!("acceptor {id}: cannot open its storage"))?;
        let state = storage
            .load()
            .with_context(|| format!("acceptor {id}: cannot load its storage"))?;
        let mut node = Acceptor::restore(*id, &opts.protocol, members.clone(), state);
        let mut stage = GroupCommit::new(storage, &storage_cfg);
        let shared = shared.clone();
        let kill = Arc::new(AtomicBool::new(false));
        let (rx, tx) = (inboxes.remove(id).expect("inbox"), transport.clone());
        let id = *id;
        let max_payload = opts.protocol.max_payload();
        let burst = BatchBudget::of(&storage_cfg);
        handles.push(spawn_named(format!("epx-acceptor-{id}"), move || {
            let step = |input: Option<(NodeId, Message)>, now, out: &mut Actions| {
                if let Some((from, m)) = input {
                    node.handle(now, from, m, out);
                }
            };
            // The group commit: everything the burst changed, in one batch, before any of
            // the burst's replies leave.
            let flush = |now: Duration, out: &mut Actions| {
                let committed = stage
                    .commit(now, &out.persist)
                    .map_err(|e| e.to_string())?
                    .changes;
                if committed > 0 {
                    shared.commits.fetch_add(1, Ordering::Relaxed);
                    shared
                        .committed_changes
                        .fetch_add(committed as u64, Ordering::Relaxed);
                }
                out.coalesce_accepted(max_payload);
                Ok(())
            };
            node_loop(id, rx, tx, &shared, &kill, start, burst, step, flush);
            None
        }));
    }
    for (k, id) in members.learners.iter().enumerate() {
        let mut node = Learner::new(*id, &opts.protocol, members.clone(), Duration::ZERO);
        let shared = shared.clone();
        let kill = Arc::new(AtomicBool::new(false));
        let (rx, tx) = (inboxes.remove(id).expect("inbox"), transport.clone());
        let acks = (k == 0).then(|| ack_tx.clone());
        let id = *id;
        handles.push(spawn_named(format!("epx-learner-{id}"), move || {
            let mut digest = SequenceDigest::default();
            let step = |input: Option<(NodeId, Message)>, now, out: &mut Actions| {
                match input {
                    Some((from, m)) => node.handle(now, from, m, out),
                    None => node.tick(now, out),
                }
                let mut batch = Vec::new();
                for d in out.deliver.drain(..) {
                    for v in &d.values {
                        digest.add(v);
                        if acks.is_some() {
                            batch.push((v.client, v.seq));
                        }
                    }
                }
                shared.delivered[k].store(digest.count(), Ordering::Relaxed);
                if let (Some(tx), false) = (&acks, batch.is_empty()) {
                    let _ = tx.send(batch);
                }
            };
            node_loop(
                id,
                rx,
                tx,
                &shared,
                &kill,
                start,
                stateless_burst(),
                step,
                |_, _| Ok(()),
            );
            Some(digest.finish())
        }));
    }
    drop(ack_tx);

    // The clients share one thread and one node id; each has its own session.
    let client_handle = {
        let shared = shared.clone();
        let rx = inboxes.remove(&CLIENT_NODE).expect("client inbox");
        let tx = transport.clone();
        let opts = opts.clone();
        let proposers = members.proposers.clone();
        spawn_named("epx-client".into(), move || {
            client_loop(&opts, proposers, rx, ack_rx, tx, &shared, start)
        })
    };

    let mut last = Instant::now();
    let mut last_acked = 0u64;
    let mut killed = false;
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    let mut at_warmup: Option<(Instant, u64, HashMap<String, f64>)> = None;
    while start.elapsed() < opts.duration && !interrupted() {
        thread::sleep(Duration::from_millis(10));
        if at_warmup.is_none() && start.elapsed() >= opts.warmup {
            at_warmup = Some((
                Instant::now(),
                shared.acked.load(Ordering::Relaxed),
                cpu_by_role(),
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
    let (window_start, acked_at_warmup, cpu_at_warmup) =
        at_warmup.unwrap_or_else(|| (Instant::now(), acked_at_end, cpu_at_end.clone()));
    let window_length = window_start.elapsed();
    let mut cpu: Vec<(String, f64)> = cpu_at_end
        .iter()
        .map(|(role, t)| (role.clone(), t - cpu_at_warmup.get(role).unwrap_or(&0.0)))
        .collect();
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    // Stop submitting, then let both learners drain what was proposed before comparing them.
    shared.stop_clients.store(true, Ordering::Relaxed);
    let (hist, client_acked) = client_handle
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    let drain_deadline = Instant::now() + Duration::from_secs(10);
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
    for h in handles {
        let learner = h
            .join()
            .map_err(|_| anyhow::anyhow!("node thread panicked"))?;
        learners.extend(learner);
    }
    let failures = std::mem::take(&mut *shared.failures.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(DemoSummary {
        elapsed,
        acknowledged: acked_at_end,
        window: Window {
            length: window_length,
            acknowledged: acked_at_end - acked_at_warmup,
            latency_mean: Duration::from_nanos(hist.mean() as u64),
            latency_p50: Duration::from_nanos(hist.value_at_quantile(0.5)),
            latency_p99: Duration::from_nanos(hist.value_at_quantile(0.99)),
            latency_p999: Duration::from_nanos(hist.value_at_quantile(0.999)),
            cpu,
        },
        leader_changes: shared.elections.load(Ordering::Relaxed),
        learners,
        policy: storage_cfg.fsync_policy,
        storage_path,
        commits: shared.commits.load(Ordering::Relaxed),
        committed_changes: shared.committed_changes.load(Ordering::Relaxed),
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

/// Roles without storage take bursts of up to 256 messages.
fn stateless_burst() -> BatchBudget {
    BatchBudget::new(256, usize::MAX)
}

/// One node's thread: handle a burst of inbound messages, tick every millisecond, `flush`
/// (an acceptor commits the burst's changes there), then send. A flush error stops the node
/// as a crash would, and is reported.
#[allow(clippy::too_many_arguments)]
fn node_loop(
    id: NodeId,
    rx: Receiver<Inbound>,
    tx: MemTransport,
    shared: &Shared,
    kill: &AtomicBool,
    start: Instant,
    burst: BatchBudget,
    mut step: impl FnMut(Option<(NodeId, Message)>, Duration, &mut Actions),
    mut flush: impl FnMut(Duration, &mut Actions) -> Result<(), String>,
) {
    let tick = Duration::from_millis(1);
    let mut next_tick = Duration::ZERO;
    let mut out = Actions::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if kill.load(Ordering::Relaxed) {
            // A crashed node: it neither reads nor sends until the demo ends.
            thread::sleep(Duration::from_millis(10));
            while rx.try_recv().is_ok() {}
            continue;
        }
        let now = start.elapsed();
        let wait = next_tick.saturating_sub(now);
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let now = start.elapsed();
                let mut budget = burst.fresh();
                step(Some((first.from, first.msg)), now, &mut out);
                let mut more = budget.add(&out.persist);
                while more {
                    let Ok(m) = rx.try_recv() else { break };
                    let before = out.persist.len();
                    step(Some((m.from, m.msg)), now, &mut out);
                    more = budget.add(&out.persist[before..]);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = start.elapsed();
        if now >= next_tick {
            step(None, now, &mut out);
            next_tick = now + tick;
        }
        if let Err(e) = flush(now, &mut out) {
            shared.fail(format!("node {id} stopped: {e}"));
            kill.store(true, Ordering::Relaxed);
            out.clear();
            continue;
        }
        tx.send_all(id, out.send.drain(..));
        out.clear();
    }
}

fn client_loop(
    opts: &DemoOptions,
    proposers: Vec<NodeId>,
    rx: Receiver<Inbound>,
    acks: Receiver<Vec<(ClientId, u64)>>,
    tx: MemTransport,
    shared: &Shared,
    start: Instant,
) -> (Histogram<u64>, u64) {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds");
    let mut clients: Vec<Client> = (0..opts.clients)
        .map(|k| Client::new(k as u64 + 1, &opts.protocol, proposers.clone()))
        .collect();
    // Every demo value carries the same bytes; static storage makes each clone free, where a
    // shared heap buffer's reference count would bounce between the cores of every stage.
    let payload = Bytes::from_static(Box::leak(vec![0xA5u8; opts.value_size].into_boxed_slice()));
    let mut out = Actions::new();
    let mut acked = 0u64;
    let mut last_tick = Duration::ZERO;
    let stopping =
        || shared.stop_clients.load(Ordering::Relaxed) || shared.stop.load(Ordering::Relaxed);
    loop {
        let now = start.elapsed();
        if !stopping() {
            for c in clients.iter_mut() {
                while c.outstanding() < opts.outstanding {
                    if c.submit(now, payload.clone()).is_err() {
                        break;
                    }
                }
                c.flush(&mut out);
            }
        } else if clients.iter().all(|c| c.outstanding() == 0)
            || now > opts.duration + Duration::from_secs(10)
        {
            break;
        }
        if now.saturating_sub(last_tick) >= Duration::from_millis(1) {
            last_tick = now;
            clients.iter_mut().for_each(|c| c.tick(now, &mut out));
        }
        tx.send_all(CLIENT_NODE, out.send.drain(..));
        for m in rx.try_iter() {
            if let Message::Redirect { client, .. } = &m.msg {
                if let Some(c) = clients.get_mut((*client as usize).wrapping_sub(1)) {
                    c.handle(&m.msg);
                }
            }
        }
        match acks.recv_timeout(Duration::from_millis(1)) {
            Ok(first) => {
                let now = start.elapsed();
                for batch in std::iter::once(first).chain(acks.try_iter()) {
                    for (client, seq) in batch {
                        let Some(c) = clients.get_mut((client as usize).wrapping_sub(1)) else {
                            continue;
                        };
                        if let Some(lat) = c.on_delivered(now, seq) {
                            if now >= opts.warmup {
                                let _ = hist.record(lat.as_nanos() as u64);
                            }
                            acked += 1;
                        }
                    }
                }
                shared.acked.store(acked, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    (hist, acked)
}
