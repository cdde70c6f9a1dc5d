//! The staged node (`pipeline.stages: staged`): four threads joined by bounded rings.
//!
//! - **RX** receives and checks frames and puts them on the roles' ring; when that ring is
//!   full the frame is shed and counted, as a lost frame (the protocol retransmits).
//! - **Roles** runs proposer, acceptor, learner and client sessions on what arrives, ticks,
//!   delivers, and hands every turn's changes and messages, in order, to the commit stage.
//! - **Commit** makes the changes of all waiting turns durable in one group commit, then
//!   releases their messages in order: to TX, or back to the roles when addressed to this
//!   node. Nothing leaves before the changes of its own turn and of every earlier turn are
//!   durable (the rule of `protocol::Actions`).
//! - **TX** encodes and sends, in batches.
//!
//! Rings to the commit and TX stages block when full (backpressure reaches RX, which sheds);
//! they never drop a change or a message that depends on one. Stage k is pinned to
//! `pipeline.cores[k % len]` when cores are given.

use crate::app::AppLink;
use crate::config::{NodeConfig, Polling};
use crate::node::{make_durable, Node, NodeError, NodeStats, ADAPTIVE_SPINS};
use crate::protocol::{Actions, Change, Envelope, Message, NodeId};
use crate::storage::BatchBudget;
use crate::transport::{Transport, TransportStats};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One roles turn's output: what must be durable, and the messages that wait for it.
struct Turn {
    changes: Vec<Change>,
    sends: Vec<Envelope>,
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

pub fn run_staged(
    cfg: &NodeConfig,
    stop: &AtomicBool,
    app: Option<AppLink>,
) -> Result<NodeStats, NodeError> {
    let mut node = Node::start(cfg, app)?;
    let ring = cfg.pipeline.ring_size;
    let polling = cfg.pipeline.polling;
    let (in_tx, in_rx) = crossbeam_channel::bounded::<(NodeId, Message)>(ring);
    let (local_tx, local_rx) = crossbeam_channel::unbounded::<Message>();
    let (turn_tx, turn_rx) = crossbeam_channel::bounded::<Turn>(ring);
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Envelope>(ring);
    let halt = Arc::new(AtomicBool::new(false));

    let rx = {
        let mut transport = node.transport.try_clone()?;
        let halt = halt.clone();
        let cfg = cfg.clone();
        spawn("rx", move || -> Result<TransportStats, NodeError> {
            pin(&cfg, 0);
            let wait = if polling == Polling::Busy {
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            };
            while !halt.load(Ordering::Relaxed) {
                if let Some(m) = transport.recv(wait)? {
                    if let Err(TrySendError::Full(_)) = in_tx.try_send(m) {
                        transport_shed(&mut transport);
                    }
                }
            }
            Ok(transport.stats().clone())
        })?
    };
    let commit = {
        let me = node.id;
        let round_file = node.round_file.take();
        let mut storage = node.storage.take();
        let budget = BatchBudget::of(&cfg.storage);
        let cfg = cfg.clone();
        let start = Instant::now();
        spawn("commit", move || -> Result<NodeStats, NodeError> {
            pin(&cfg, 2);
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
                )?;
                for t in turns.drain(..) {
                    for env in t.sends {
                        if env.to == me {
                            let _ = local_tx.send(env.msg);
                        } else if out_tx.send(env).is_err() {
                            return Ok(stats);
                        }
                    }
                }
            }
            if let Some(s) = &mut storage {
                s.sync()?;
            }
            Ok(stats)
        })?
    };
    let tx = {
        let mut transport = node.transport.try_clone()?;
        let cfg = cfg.clone();
        spawn("tx", move || -> Result<TransportStats, NodeError> {
            pin(&cfg, 3);
            loop {
                let env = match next(&out_rx, polling, Duration::from_millis(1)) {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(()) => break,
                };
                transport.send(&env)?;
                for env in out_rx.try_iter().take(63) {
                    transport.send(&env)?;
                }
                transport.flush()?;
            }
            Ok(transport.stats().clone())
        })?
    };

    // The roles stage runs on this thread.
    pin(cfg, 1);
    let result = roles(&mut node, cfg, stop, &in_rx, &local_rx, &turn_tx);
    drop(turn_tx);
    halt.store(true, Ordering::Relaxed);
    let commit_stats = join(commit)?;
    let tx_stats = join(tx)?;
    let rx_stats = join(rx)?;
    result?;
    let mut stats = node.finish()?;
    stats.commits += commit_stats.commits;
    stats.committed_changes += commit_stats.committed_changes;
    stats.transport = rx_stats;
    stats.transport.add(&tx_stats);
    Ok(stats)
}

fn transport_shed(t: &mut Transport) {
    match t {
        Transport::Udp(u) => u.stats.shed_ring_full += 1,
        Transport::AfPacket(a) => a.stats.shed_ring_full += 1,
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

/// The roles stage: handle what arrives, tick, deliver, and pass each turn on in order.
fn roles(
    node: &mut Node,
    cfg: &NodeConfig,
    stop: &AtomicBool,
    inbound: &Receiver<(NodeId, Message)>,
    local: &Receiver<Message>,
    turns: &Sender<Turn>,
) -> Result<(), NodeError> {
    let start = Instant::now();
    let tick = Duration::from_millis(1);
    let mut next_tick = Duration::ZERO;
    let mut out = Actions::new();
    let budget = BatchBudget::of(&cfg.storage);
    let id = node.id;
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        node.submit(cfg, now, &mut out);
        node.take_app_requests(now, &mut out);
        for msg in local.try_iter() {
            node.dispatch(now, id, msg, &mut out);
        }
        let wait = next_tick.saturating_sub(now).max(Duration::from_micros(50));
        let mut burst = budget.fresh();
        if let Ok(Some((from, msg))) = next(inbound, cfg.pipeline.polling, wait) {
            node.dispatch(start.elapsed(), from, msg, &mut out);
            burst.add(&out.persist);
            while let Ok((from, msg)) = inbound.try_recv() {
                let before = out.persist.len();
                node.dispatch(start.elapsed(), from, msg, &mut out);
                if !burst.add(&out.persist[before..]) {
                    break;
                }
            }
        }
        let now = start.elapsed();
        if now >= next_tick {
            node.tick(now, &mut out);
            next_tick = now + tick;
        }
        node.deliver(now, &mut out)?;
        node.report(out.events.drain(..));
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
    }
    Ok(())
}
