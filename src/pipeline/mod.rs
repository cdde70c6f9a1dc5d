//! The staged node (`pipeline.stages: staged`): one thread per stage, joined by rings.
//!
//! - **RX** receives and checks frames and routes each, by message type, onto the ring of
//!   every role that takes it (a 2a goes to the acceptor and the learner); when a ring is
//!   full the frame is shed there and counted, as a lost frame (the protocol retransmits).
//! - **Role stages**: the acceptor, the proposer, and the learner with this node's client
//!   sessions and application, each on its own thread with its own ring. Each hands every
//!   turn's changes and messages, in order, to the commit stage.
//! - **Commit** makes the changes of all waiting turns durable in one group commit (the
//!   acceptor's votes, the proposer's round), then releases their messages in order: to TX,
//!   or to this node's own role stages. Nothing leaves before the changes of its own turn and
//!   of every earlier turn are durable (the rule of `protocol::Actions`).
//! - **TX** encodes and sends, in batches.
//!
//! Rings to the commit and TX stages block when full (backpressure reaches RX, which sheds);
//! they never drop a change or a message that depends on one. Stages are pinned, in the order
//! RX, commit, TX, learner, acceptor, proposer, to `pipeline.cores[k]`; a config that gives
//! fewer cores than stages runs them as one loop instead (node::run_with).

#![forbid(unsafe_code)]

use crate::app::AppLink;
use crate::config::{NodeConfig, Polling, Role};
use crate::metrics::{Metrics, Recorder};
use crate::node::{
    acceptor_metrics, make_durable, proposer_metrics, Node, NodeError, NodeStats, ADAPTIVE_SPINS,
};
use crate::protocol::{AcceptorCounters, Actions, Change, Envelope, Message, NodeId};
use crate::storage::BatchBudget;
use crate::transport::TransportStats;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One role turn's output: what must be durable, and the messages that wait for it.
struct Turn {
    changes: Vec<Change>,
    sends: Vec<Envelope>,
}

/// Which roles take a message, as [acceptor, proposer, learner-and-clients] (the same table
/// as the single loop's dispatch).
fn takers(msg: &Message) -> [bool; 3] {
    match msg {
        Message::Prepare { .. } | Message::CatchupRequest { .. } | Message::Trim { .. } => {
            [true, false, false]
        }
        Message::Accept { .. } => [true, false, true],
        Message::Heartbeat { .. } => [true, true, true],
        Message::Accepted { .. } => [false, true, true],
        Message::Promise { .. }
        | Message::Reject { .. }
        | Message::ClientRequest { .. }
        | Message::Progress { .. } => [false, true, false],
        Message::CatchupReply { .. } | Message::Redirect { .. } => [false, false, true],
    }
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
    local: Receiver<(NodeId, Message)>,
}

/// The senders into every role stage this node has.
#[derive(Clone)]
struct Routes {
    rings: [Option<Sender<(NodeId, Message)>>; 3],
    locals: [Option<crossbeam_channel::Sender<(NodeId, Message)>>; 3],
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
        for (k, take) in takers(&msg).into_iter().enumerate() {
            if let (true, Some(ring)) = (take, &self.rings[k]) {
                if let Err(TrySendError::Full(_)) = ring.try_send((from, msg.clone())) {
                    shed += 1;
                }
            }
        }
        shed
    }

    /// From the commit stage: a message to ourselves, never dropped.
    fn route_own(&self, me: NodeId, msg: Message) {
        for (k, take) in takers(&msg).into_iter().enumerate() {
            if let (true, Some(local)) = (take, &self.locals[k]) {
                let _ = local.send((me, msg.clone()));
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

pub fn run_staged(
    cfg: &NodeConfig,
    stop: &AtomicBool,
    app: Option<AppLink>,
    metrics: Option<&Arc<Metrics>>,
) -> Result<NodeStats, NodeError> {
    let mut node = Node::start(cfg, app, metrics)?;
    let recorder = || metrics.map(|m| m.recorder());
    let me = node.id;
    let polling = cfg.pipeline.polling;
    let acceptor = node.acceptor.take();
    let proposer = node.proposer.take();
    let (routes, mut inputs) = Routes::new(
        cfg.pipeline.ring_size,
        [acceptor.is_some(), proposer.is_some(), true],
    );
    let (turn_tx, turn_rx) = crossbeam_channel::bounded::<Turn>(cfg.pipeline.ring_size);
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
        let mut transport = node.transport.try_clone()?;
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
        let round_file = node.round_file.take();
        let mut storage = node.storage.take();
        let budget = BatchBudget::of(&cfg.storage);
        let (routes, cfg) = (routes.clone(), cfg.clone());
        let start = Instant::now();
        let mut rec = recorder();
        spawn("commit", move || -> Result<NodeStats, NodeError> {
            pin(&cfg, 1);
            let mut stats = NodeStats::default();
            let mut changes = Vec::new();
            let mut turns = Vec::new();
            loop {
                let first = match next(&turn_rx, polling, Duration::from_millis(1)) {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(()) => break,
                };
                // Group commit: every turn already waiting joins this one.
                let mut batch = budget.fresh();
                batch.add(&first.changes);
                turns.push(first);
                while let Ok(t) = turn_rx.try_recv() {
                    let more = batch.add(&t.changes);
                    turns.push(t);
                    if !more {
                        break;
                    }
                }
                for t in &mut turns {
                    changes.append(&mut t.changes);
                }
                make_durable(
                    &round_file,
                    &mut storage,
                    start.elapsed(),
                    &mut changes,
                    &mut stats,
                    rec.as_mut(),
                )?;
                if let Some(m) = rec.as_mut().filter(|m| m.due()) {
                    m.counters.commits = stats.commits;
                    m.counters.committed_changes = stats.committed_changes;
                    m.publish();
                }
                for t in turns.drain(..) {
                    for env in t.sends {
                        if env.to == me {
                            routes.route_own(me, env.msg);
                        } else if out_tx.send(env).is_err() {
                            return Ok(stats);
                        }
                    }
                }
            }
            if let Some(s) = &mut storage {
                s.sync()?;
            }
            if let Some(m) = &mut rec {
                m.counters.commits = stats.commits;
                m.counters.committed_changes = stats.committed_changes;
            }
            Ok(stats)
        })?
    };
    let tx = {
        let mut transport = node.transport.try_clone()?;
        let cfg = cfg.clone();
        let mut rec = recorder();
        spawn("tx", move || -> Result<TransportStats, NodeError> {
            pin(&cfg, 2);
            loop {
                publish_transport(&mut rec, transport.stats(), 0, false);
                let env = match next(&out_rx, polling, Duration::from_millis(1)) {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(()) => break,
                };
                for env in std::iter::once(env).chain(out_rx.try_iter().take(63)) {
                    if let Some(m) = &mut rec {
                        m.message_out(env.msg.kind());
                    }
                    transport.send(&env)?;
                }
                transport.flush()?;
            }
            publish_transport(&mut rec, transport.stats(), 0, true);
            Ok(transport.stats().clone())
        })?
    };
    let acceptor_stage = match (acceptor, inputs[ACCEPTOR].take()) {
        (Some(mut a), Some(input)) => {
            let (halt, turns, cfg) = (halt.clone(), turn_tx.clone(), cfg.clone());
            let mut rec = recorder();
            Some(spawn(
                "acceptor",
                move || -> Result<AcceptorCounters, NodeError> {
                    pin(&cfg, 4);
                    role_loop(
                        &halt,
                        &input,
                        polling,
                        &turns,
                        |input, now, out| match input {
                            Some((from, msg)) => a.handle(now, from, msg, out),
                            None => publish_role(&mut rec, |m| acceptor_metrics(&a, m)),
                        },
                    )?;
                    Ok(a.counters())
                },
            )?)
        }
        _ => None,
    };
    // Stage numbers for pinning: RX 0, commit 1, TX 2, learner 3, then the roles present.
    let proposer_core = 4 + usize::from(acceptor_stage.is_some());
    let proposer_stage = match (proposer, inputs[PROPOSER].take()) {
        (Some(mut p), Some(input)) => {
            let (halt, turns, cfg) = (halt.clone(), turn_tx.clone(), cfg.clone());
            let mut rec = recorder();
            Some(spawn("proposer", move || -> Result<u64, NodeError> {
                pin(&cfg, proposer_core);
                let mut shed = 0u64;
                role_loop(&halt, &input, polling, &turns, |input, now, out| {
                    match input {
                        Some((from, msg)) => p.handle(now, from, msg, out),
                        None => {
                            p.tick(now, out);
                            publish_role(&mut rec, |m| proposer_metrics(&mut p, m));
                        }
                    }
                    for e in out.events.drain(..) {
                        if let crate::protocol::Event::Shed { values } = &e {
                            shed += *values as u64;
                            if let Some(m) = &mut rec {
                                m.counters.shed += *values as u64;
                            }
                        }
                        crate::node::report_event(me, &e);
                    }
                })?;
                // The summary counts shed values as the single loop's does.
                Ok(shed)
            })?)
        }
        _ => None,
    };

    // The learner stage (with the client sessions and the application) runs on this thread.
    pin(cfg, 3);
    let input = inputs[LEARNER]
        .take()
        .expect("every node has a learner stage");
    let result = learner_stage(&mut node, cfg, stop, &input, &turn_tx);
    halt.store(true, Ordering::Relaxed);
    let acceptor_result = acceptor_stage.map(join);
    let proposer_result = proposer_stage.map(join);
    drop(turn_tx);
    let commit_stats = join(commit)?;
    let tx_stats = join(tx)?;
    let rx_stats = join(rx)?;
    result?;
    let shed = proposer_result.transpose()?;
    let acceptor = acceptor_result.transpose()?;
    let mut stats = node.finish()?;
    stats.shed += shed.unwrap_or(0);
    stats.acceptor = acceptor.unwrap_or_default();
    stats.commits += commit_stats.commits;
    stats.committed_changes += commit_stats.committed_changes;
    stats.transport = rx_stats;
    stats.transport.add(&tx_stats);
    Ok(stats)
}

/// A role stage: handle what arrives (its own messages first), tick every millisecond, and
/// pass each turn on to the commit stage in order.
fn role_loop(
    halt: &AtomicBool,
    input: &Inputs,
    polling: Polling,
    turns: &Sender<Turn>,
    mut step: impl FnMut(Option<(NodeId, Message)>, Duration, &mut Actions),
) -> Result<(), NodeError> {
    let start = Instant::now();
    let mut next_tick = Duration::ZERO;
    let mut out = Actions::new();
    while !halt.load(Ordering::Relaxed) {
        for m in input.local.try_iter() {
            step(Some(m), start.elapsed(), &mut out);
        }
        let wait = next_tick
            .saturating_sub(start.elapsed())
            .max(Duration::from_micros(50));
        if let Ok(Some(m)) = next(&input.ring, polling, wait) {
            step(Some(m), start.elapsed(), &mut out);
            for m in input.ring.try_iter().take(1023) {
                step(Some(m), start.elapsed(), &mut out);
            }
        }
        let now = start.elapsed();
        if now >= next_tick {
            step(None, now, &mut out);
            next_tick = now + Duration::from_millis(1);
        }
        pass_on(&mut out, turns)?;
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

/// A role stage's counts and gauges into its metrics shard, when due.
fn publish_role(rec: &mut Option<Recorder>, fill: impl FnOnce(&mut Recorder)) {
    if let Some(m) = rec.as_mut().filter(|m| m.due()) {
        fill(m);
        m.publish();
    }
}

fn pass_on(out: &mut Actions, turns: &Sender<Turn>) -> Result<(), NodeError> {
    if !out.persist.is_empty() || !out.send.is_empty() {
        let turn = Turn {
            changes: std::mem::take(&mut out.persist),
            sends: std::mem::take(&mut out.send),
        };
        if turns.send(turn).is_err() {
            return Err(NodeError::Io {
                what: "the commit stage".into(),
                source: std::io::Error::other("stopped"),
            });
        }
    }
    out.clear();
    Ok(())
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

/// The learner stage: the learner, this node's client sessions and application, its outputs.
fn learner_stage(
    node: &mut Node,
    cfg: &NodeConfig,
    stop: &AtomicBool,
    input: &Inputs,
    turns: &Sender<Turn>,
) -> Result<(), NodeError> {
    let start = Instant::now();
    let mut next_tick = Duration::ZERO;
    let mut out = Actions::new();
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        node.submit(cfg, now, &mut out);
        node.take_app_requests(now, &mut out);
        for (from, msg) in input.local.try_iter() {
            node.dispatch(now, from, msg, &mut out);
        }
        let wait = next_tick.saturating_sub(now).max(Duration::from_micros(50));
        if let Ok(Some((from, msg))) = next(&input.ring, cfg.pipeline.polling, wait) {
            node.dispatch(start.elapsed(), from, msg, &mut out);
            for (from, msg) in input.ring.try_iter().take(1023) {
                node.dispatch(start.elapsed(), from, msg, &mut out);
            }
        }
        let now = start.elapsed();
        if now >= next_tick {
            node.tick(now, &mut out);
            next_tick = now + Duration::from_millis(1);
            node.publish_metrics(false);
        }
        node.deliver(now, &mut out)?;
        node.report(out.events.drain(..));
        pass_on(&mut out, turns)?;
    }
    Ok(())
}
