//! The staged node (`pipeline.stages: staged`): one thread per stage, joined by rings.
//!
//! - **RX** receives and checks frames and routes each, by message type, onto the ring of
//!   every role that takes it (a 2a goes to the acceptor and the learner); when a ring is
//!   full the frame is shed there and counted, as a lost frame (the protocol retransmits).
//! - **Role stages**: the acceptor, the proposer, and the learner with this node's client
//!   sessions and application, each on its own thread with its own ring, each the one driver
//!   (driver/) holding that role alone. Each hands every turn's `Pending` (changes, and the
//!   messages that wait on them), in order, to the commit stage.
//! - **Commit** makes the changes of all waiting turns durable in one group commit (the
//!   acceptor's votes, the proposer's round) through `Pending::commit`, then releases their
//!   messages in order, 2b votes merged: to TX, or to this node's own role stages by the
//!   driver's routing table. Nothing leaves before the changes of its own turn and of every
//!   earlier turn are durable.
//! - **TX** encodes and sends, in batches.
//!
//! Rings to the commit and TX stages block when full (backpressure reaches RX, which sheds);
//! they never drop a change or a message that depends on one. Stages are pinned, in the order
//! RX, commit, TX, learner, acceptor, proposer, to `pipeline.cores[k]`; a config that gives
//! fewer cores than stages runs them as one loop instead (node::run_with).

#![forbid(unsafe_code)]

use crate::config::{NodeConfig, Polling, Role};
use crate::driver::{
    single::ADAPTIVE_SPINS, split_released, takers, Driver, Logged, NodeError, NodeStats,
    NodeStore, Sink,
};
use crate::metrics::{Metrics, Recorder};
use crate::node::{Node, Status};
use crate::protocol::{Envelope, Message, NodeId, Pending};
use crate::storage::BatchBudget;
use crate::transport::TransportStats;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which ring each column of the driver's routing table feeds.
fn rings_taking(msg: &Message) -> [bool; 3] {
    let t = takers(msg);
    [t.acceptor, t.proposer, t.learner]
}

fn pin(cfg: &NodeConfig, stage: usize) {
    if !cfg.pipeline.cores.is_empty() {
        let core = cfg.pipeline.cores[stage % cfg.pipeline.cores.len()];
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
}

/// Waits for the next item: spins first, then (adaptive) sleeps up to `wait`; busy polling
/// returns None after its spins so the caller can look at its other work. Err: disconnected.
fn next<T>(rx: &Receiver<T>, polling: Polling, wait: Duration) -> Result<Option<T>, ()> {
    let busy = polling == Polling::Busy;
    let spins = if busy { 1000 } else { ADAPTIVE_SPINS };
    for _ in 0..spins {
        match rx.try_recv() {
            Ok(v) => return Ok(Some(v)),
            Err(TryRecvError::Disconnected) => return Err(()),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    if busy {
        return Ok(None);
    }
    match rx.recv_timeout(wait) {
        Ok(v) => Ok(Some(v)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err(()),
    }
}

/// A role stage's two inputs: frames from RX (bounded: RX sheds when full) and messages from
/// this node itself, released by the commit stage (unbounded, so the commit stage never
/// waits on a role that waits on it).
struct Inputs {
    ring: Receiver<(NodeId, Message)>,
    local: Receiver<Message>,
}

/// The senders into every role stage this node has.
#[derive(Clone)]
struct Routes {
    rings: [Option<Sender<(NodeId, Message)>>; 3],
    locals: [Option<Sender<Message>>; 3],
}

impl Routes {
    fn new(ring: usize, present: [bool; 3]) -> (Routes, [Option<Inputs>; 3]) {
        let mut routes = Routes {
            rings: [None, None, None],
            locals: [None, None, None],
        };
        let mut inputs: [Option<Inputs>; 3] = [None, None, None];
        for k in 0..3 {
            if present[k] {
                let (rt, rr) = crossbeam_channel::bounded(ring);
                let (lt, lr) = crossbeam_channel::unbounded();
                routes.rings[k] = Some(rt);
                routes.locals[k] = Some(lt);
                inputs[k] = Some(Inputs {
                    ring: rr,
                    local: lr,
                });
            }
        }
        (routes, inputs)
    }

    /// From RX: onto every ring that takes `msg`; returns how many were full (shed there).
    fn route_received(&self, from: NodeId, msg: Message) -> u64 {
        let mut shed = 0;
        for (k, take) in rings_taking(&msg).into_iter().enumerate() {
            if let (true, Some(ring)) = (take, &self.rings[k]) {
                if let Err(TrySendError::Full(_)) = ring.try_send((from, msg.clone())) {
                    shed += 1;
                }
            }
        }
        shed
    }

    /// From the commit stage: a message to ourselves, never dropped.
    fn route_own(&self, msg: Message) {
        for (k, take) in rings_taking(&msg).into_iter().enumerate() {
            if let (true, Some(local)) = (take, &self.locals[k]) {
                let _ = local.send(msg.clone());
            }
        }
    }
}

/// How many stages (threads) a staged node of this config runs: RX, commit, TX, the learner
/// stage, and one each for an acceptor and a proposer.
pub fn stage_count(cfg: &NodeConfig) -> usize {
    let me = cfg.me();
    4 + usize::from(me.plays(Role::Acceptor)) + usize::from(me.plays(Role::Proposer))
}

const ACCEPTOR: usize = 0;
const PROPOSER: usize = 1;
const LEARNER: usize = 2;

pub(crate) fn run_staged(
    cfg: &NodeConfig,
    stop: &AtomicBool,
    node: Node,
    metrics: Option<&Arc<Metrics>>,
) -> Result<NodeStats, NodeError> {
    let Node {
        driver: learner,
        store,
        transport,
        mut outputs,
    } = node;
    // RX counts what arrives; the stages only handle it.
    let mut learner = learner.counting_no_inbound();
    let recorder = || metrics.map(|m| m.recorder());
    let me = learner.id;
    let protocol = cfg.effective_protocol();
    let polling = cfg.pipeline.polling;
    let budget = BatchBudget::of(&cfg.storage);
    // The role stages: the node's driver keeps the learner and the sessions; the acceptor and
    // the proposer each get a driver of their own.
    let acceptor = learner.acceptor.take().map(|a| {
        Driver::new(me, &protocol, budget)
            .with_acceptor(a)
            .with_metrics(recorder())
            .counting_no_inbound()
    });
    let proposer = learner.proposer.take().map(|p| {
        Driver::new(me, &protocol, budget)
            .with_proposer(p)
            .with_metrics(recorder())
            .counting_no_inbound()
    });
    let (routes, mut inputs) = Routes::new(
        cfg.pipeline.ring_size,
        [acceptor.is_some(), proposer.is_some(), true],
    );
    let (turn_tx, turn_rx) = crossbeam_channel::bounded::<Pending>(cfg.pipeline.ring_size);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Envelope>(cfg.pipeline.ring_size);
    if let Some(m) = metrics {
        for (name, input) in ["acceptor", "proposer", "learner"].into_iter().zip(&inputs) {
            if let Some(input) = input {
                let ring = input.ring.clone();
                m.watch_ring(name, move || ring.len());
            }
        }
        let (turns, outs) = (turn_rx.clone(), out_rx.clone());
        m.watch_ring("commit", move || turns.len());
        m.watch_ring("tx", move || outs.len());
    }
    let halt = Arc::new(AtomicBool::new(false));

    let rx = {
        let mut transport = transport.try_clone()?;
        let (halt, routes, cfg) = (halt.clone(), routes.clone(), cfg.clone());
        let mut rec = recorder();
        spawn("rx", move || -> Result<TransportStats, NodeError> {
            pin(&cfg, 0);
            let wait = if polling == Polling::Busy {
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            };
            let mut shed = 0;
            while !halt.load(Ordering::Relaxed) {
                if let Some((from, msg)) = transport.recv(wait)? {
                    if let Some(m) = &mut rec {
                        m.message_in(msg.kind());
                    }
                    shed += routes.route_received(from, msg);
                }
                publish_transport(&mut rec, transport.stats(), shed, false);
            }
            publish_transport(&mut rec, transport.stats(), shed, true);
            let mut stats = transport.stats().clone();
            stats.shed_ring_full = shed;
            Ok(stats)
        })?
    };
    let commit = {
        let (routes, cfg) = (routes.clone(), cfg.clone());
        let max_payload = protocol.max_payload();
        let start = Instant::now();
        let mut rec = recorder();
        let mut store = store;
        spawn("commit", move || -> Result<NodeStats, NodeError> {
            pin(&cfg, 1);
            loop {
                let mut batch = match next(&turn_rx, polling, Duration::from_millis(1)) {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(()) => break,
                };
                // Group commit: every turn already waiting joins this one.
                let mut room = budget.fresh();
                let mut more = room.add(batch.changes());
                while more {
                    let Ok(t) = turn_rx.try_recv() else { break };
                    more = room.add(t.changes());
                    batch.append(t);
                }
                let released = batch.commit(&mut store, start.elapsed())?;
                commit_metrics(&mut rec, &mut store, false);
                let (own, remote) = split_released(me, released, max_payload);
                own.into_iter().for_each(|m| routes.route_own(m));
                for env in remote {
                    if out_tx.send(env).is_err() {
                        return Ok(committed(&store));
                    }
                }
            }
            store.sync()?;
            commit_metrics(&mut rec, &mut store, true);
            Ok(committed(&store))
        })?
    };
    // Frames TX has sent so far, for the status file the learner stage writes.
    let frames_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tx = {
        let mut transport = transport.try_clone()?;
        let cfg = cfg.clone();
        let mut rec = recorder();
        let frames_sent = frames_sent.clone();
        spawn("tx", move || -> Result<TransportStats, NodeError> {
            pin(&cfg, 2);
            let mut batch = Vec::with_capacity(64);
            loop {
                publish_transport(&mut rec, transport.stats(), 0, false);
                let env = match next(&out_rx, polling, Duration::from_millis(1)) {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(()) => break,
                };
                batch.clear();
                batch.extend(std::iter::once(env).chain(out_rx.try_iter().take(63)));
                if let Some(m) = &mut rec {
                    batch.iter().for_each(|e| m.message_out(e.msg.kind()));
                }
                transport.send_batch(&batch)?;
                transport.flush()?;
                frames_sent.store(transport.stats().sent, Ordering::Relaxed);
            }
            publish_transport(&mut rec, transport.stats(), 0, true);
            Ok(transport.stats().clone())
        })?
    };
    // Stage numbers for pinning: RX 0, commit 1, TX 2, learner 3, then the roles present.
    let mut roles = Vec::new();
    // The proposer stage's leadership (round + 1; 0: not leading), for the status file the
    // learner stage writes.
    let leading = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (k, (name, driver)) in [("acceptor", acceptor), ("proposer", proposer)]
        .into_iter()
        .enumerate()
    {
        let (Some(mut d), Some(input)) = (driver, inputs[[ACCEPTOR, PROPOSER][k]].take()) else {
            continue;
        };
        let (halt, turns, cfg) = (halt.clone(), turn_tx.clone(), cfg.clone());
        let leading = leading.clone();
        let core = 4 + roles.len();
        roles.push(spawn(name, move || -> Result<NodeStats, NodeError> {
            pin(&cfg, core);
            stage_loop(&mut d, &mut Logged, &input, polling, &turns, &mut |d| {
                if d.proposer.is_some() {
                    leading.store(
                        d.leading_round().map_or(0, |r| r as u64 + 1),
                        Ordering::Relaxed,
                    );
                }
                halt.load(Ordering::Relaxed)
            })?;
            Ok(d.summary())
        })?);
    }

    // The learner stage (with the client sessions and the application) runs on this thread.
    pin(cfg, 3);
    let input = inputs[LEARNER]
        .take()
        .expect("every node has a learner stage");
    let mut status = Status::new(cfg);
    let result = stage_loop(
        &mut learner,
        &mut outputs,
        &input,
        polling,
        &turn_tx,
        &mut |d| {
            status.refresh(|| {
                let mut s = d.summary();
                s.leading_round = match leading.load(Ordering::Relaxed) {
                    0 => None,
                    r => Some((r - 1) as u32),
                };
                s.transport.sent = frames_sent.load(Ordering::Relaxed);
                s
            });
            stop.load(Ordering::Relaxed)
        },
    );
    halt.store(true, Ordering::Relaxed);
    let role_results: Vec<_> = roles.into_iter().map(join).collect();
    drop(turn_tx);
    let commit_stats = join(commit)?;
    let tx_stats = join(tx)?;
    let rx_stats = join(rx)?;
    result?;
    learner
        .sync_journal(Duration::MAX)
        .map_err(crate::driver::io("cannot sync the learner journal"))?;
    learner.publish_metrics(true, None);
    let mut stats = learner.summary();
    stats.dropped_readers = outputs.dropped_readers();
    for r in role_results {
        stats.absorb(&r?);
    }
    stats.absorb(&commit_stats);
    stats.transport = rx_stats;
    stats.transport.add(&tx_stats);
    Ok(stats)
}

fn committed(store: &NodeStore) -> NodeStats {
    NodeStats {
        commits: store.commits,
        committed_changes: store.committed_changes,
        ..NodeStats::default()
    }
}

/// The commit stage's report into its metrics shard; published when due (or `force`).
fn commit_metrics(rec: &mut Option<Recorder>, store: &mut NodeStore, force: bool) {
    let Some(m) = rec else { return };
    if let Some(r) = store.take_report() {
        m.commit(&r);
    }
    if force || m.due() {
        m.counters.commits = store.commits;
        m.counters.committed_changes = store.committed_changes;
        m.publish();
    }
}

/// A role stage: the driver's turn on a ring (its own messages first), each turn's `Pending`
/// passed on to the commit stage in order.
fn stage_loop(
    d: &mut Driver,
    sink: &mut dyn Sink,
    input: &Inputs,
    polling: Polling,
    turns: &Sender<Pending>,
    stop: &mut dyn FnMut(&Driver) -> bool,
) -> Result<(), NodeError> {
    let start = Instant::now();
    while !stop(d) {
        let now = start.elapsed();
        d.begin_turn(now);
        for msg in input.local.try_iter() {
            d.handle_own(now, msg);
        }
        let wait = if d.has_work() {
            Duration::ZERO
        } else {
            d.next_tick()
                .saturating_sub(now)
                .max(Duration::from_micros(50))
        };
        if let Ok(Some((from, msg))) = next(&input.ring, polling, wait) {
            let mut more = d.handle(start.elapsed(), from, msg);
            while more {
                let Ok((from, msg)) = input.ring.try_recv() else {
                    break;
                };
                more = d.handle(start.elapsed(), from, msg);
            }
        }
        let now = start.elapsed();
        if d.tick_if_due(now) {
            d.publish_metrics(false, None);
        }
        let pending = d
            .end_turn(now, sink)
            .map_err(crate::driver::io("cannot write the node's outputs"))?;
        if !pending.is_empty() && turns.send(pending).is_err() {
            return Err(NodeError::Io {
                what: "the commit stage".into(),
                source: std::io::Error::other("stopped"),
            });
        }
    }
    Ok(())
}

/// A transport stage's counters into its metrics shard, when due (or `now`).
fn publish_transport(rec: &mut Option<Recorder>, stats: &TransportStats, shed: u64, now: bool) {
    if let Some(m) = rec.as_mut().filter(|m| now || m.due()) {
        m.counters.transport = stats.clone();
        m.counters.transport.shed_ring_full = shed;
        m.publish();
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<JoinHandle<Result<T, NodeError>>, NodeError> {
    std::thread::Builder::new()
        .name(format!("ethpaxos-{name}"))
        .spawn(f)
        .map_err(|source| NodeError::Io {
            what: format!("cannot start the {name} stage"),
            source,
        })
}

fn join<T>(h: JoinHandle<Result<T, NodeError>>) -> Result<T, NodeError> {
    h.join().map_err(|_| NodeError::Io {
        what: "a pipeline stage".into(),
        source: std::io::Error::other("panicked"),
    })?
}
