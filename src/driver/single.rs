//! The driver on one thread: the node loop of `ethpaxos run` and each node of the demo
//! cluster. Each turn handles a burst of messages (bounded by the group-commit batch), ticks,
//! commits the turn's changes to the node's store and only then sends what they released.

use super::{io, Driver, NodeError, NodeStore, Sink};
use crate::protocol::{Envelope, Message, NodeId};
use crate::transport::{Transport, TransportStats};
use std::time::{Duration, Instant};

/// Empty polls before an adaptive loop sleeps: a few tens of microseconds.
pub const ADAPTIVE_SPINS: u32 = 50;

/// How a node reaches the others: a real transport, or the demo's channels.
pub trait Link {
    /// The next message, waiting at most `wait`.
    fn recv(&mut self, wait: Duration) -> Result<Option<(NodeId, Message)>, NodeError>;
    fn send(&mut self, env: Envelope) -> Result<(), NodeError>;
    /// Sends a turn's messages in order (a transport may merge some into group frames).
    fn send_batch(&mut self, envs: &mut Vec<Envelope>) -> Result<(), NodeError> {
        envs.drain(..).try_for_each(|e| self.send(e))
    }
    fn flush(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
    fn stats(&self) -> Option<&TransportStats> {
        None
    }
}

impl Link for Transport {
    fn recv(&mut self, wait: Duration) -> Result<Option<(NodeId, Message)>, NodeError> {
        Ok(Transport::recv(self, wait)?)
    }
    fn send(&mut self, env: Envelope) -> Result<(), NodeError> {
        Ok(Transport::send(self, &env)?)
    }
    fn send_batch(&mut self, envs: &mut Vec<Envelope>) -> Result<(), NodeError> {
        Transport::send_batch(self, envs)?;
        envs.clear();
        Ok(())
    }
    fn flush(&mut self) -> Result<(), NodeError> {
        Ok(Transport::flush(self)?)
    }
    fn stats(&self) -> Option<&TransportStats> {
        Some(Transport::stats(self))
    }
}

/// How a loop waits when no message is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Never sleep.
    Busy,
    /// Poll this many times without waiting after the last message, then sleep until a
    /// message or the next tick.
    Spin(u32),
}

/// Runs `driver` until `stop` (asked before every turn) says so, waiting as `idle` says.
/// Everything committed is synced before it returns.
pub fn run(
    driver: &mut Driver,
    link: &mut impl Link,
    store: &mut NodeStore,
    sink: &mut dyn Sink,
    stop: &mut dyn FnMut(&Driver, Option<&TransportStats>) -> bool,
    start: Instant,
    idle: Idle,
) -> Result<(), NodeError> {
    let mut idle_spins = 0u32;
    while !stop(driver, link.stats()) {
        driver.begin_turn(start.elapsed());
        // Busy: never sleep. Adaptive: poll without waiting for a while after the last
        // frame (a waiting thread costs ~20 us to wake here), then sleep until a frame or
        // the next tick.
        let now = start.elapsed();
        let spinning = match idle {
            Idle::Busy => true,
            Idle::Spin(spins) => idle_spins < spins,
        };
        let wait = if spinning || driver.has_work() {
            Duration::ZERO
        } else {
            driver
                .next_tick()
                .saturating_sub(now)
                .max(Duration::from_micros(50))
        };
        let mut got = link.recv(wait)?;
        idle_spins = if got.is_some() {
            0
        } else {
            idle_spins.saturating_add(1)
        };
        while let Some((from, msg)) = got {
            if !driver.handle(start.elapsed(), from, msg) {
                break;
            }
            got = link.recv(Duration::ZERO)?;
        }
        let now = start.elapsed();
        if driver.tick_if_due(now) {
            driver.publish_metrics(false, link.stats());
        }
        turn_out(driver, link, store, sink, now)?;
    }
    store.sync()?;
    driver.publish_metrics(true, link.stats());
    Ok(())
}

/// The end of a turn: deliver, commit, then send what the commit released.
fn turn_out(
    driver: &mut Driver,
    link: &mut impl Link,
    store: &mut NodeStore,
    sink: &mut dyn Sink,
    now: Duration,
) -> Result<(), NodeError> {
    let pending = driver
        .end_turn(now, sink)
        .map_err(io("cannot write the node's outputs"))?;
    let released = pending.commit(store, now)?;
    if let (Some(r), Some(m)) = (store.take_report(), &mut driver.metrics) {
        m.commit(&r);
    }
    driver.stats.commits = store.commits;
    driver.stats.committed_changes = store.committed_changes;
    let mut remote = driver.release(released);
    link.send_batch(&mut remote)?;
    driver.recycle(remote);
    link.flush()
}
