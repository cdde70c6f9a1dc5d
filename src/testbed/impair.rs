//! A userspace link impairer for the testbed: this kernel has no `tc netem`
//! (CONFIG_NET_SCH_NETEM is off), so a relay spliced into one node's link drops, duplicates
//! and reorders our frames at random, in both directions, from a seed.

use crate::transport::afpacket::{AfPacketError, RawSocket};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Probabilities per frame, each 0..=1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    /// A reordered frame is held back and sent after the next frame in its direction (or
    /// after 2 ms if none comes).
    pub reorder: f64,
    pub seed: u64,
}

impl Impairment {
    /// Checks every probability is within 0..=1, naming the one that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("--{name} {p} is not a probability between 0 and 1"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

const HOLD: Duration = Duration::from_millis(2);

/// Relays frames between interfaces `a` and `b` until `stop` is set.
pub fn relay(
    a: &str,
    b: &str,
    imp: Impairment,
    stop: &AtomicBool,
) -> Result<RelayStats, AfPacketError> {
    let sockets = [RawSocket::open(a, true)?, RawSocket::open(b, true)?];
    let mut rng = ChaCha8Rng::seed_from_u64(imp.seed);
    let mut stats = RelayStats::default();
    let mut held: [Option<(Vec<u8>, Instant)>; 2] = [None, None];
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        RawSocket::wait_any(&[&sockets[0], &sockets[1]], Duration::from_millis(1));
        for from in 0..2 {
            let to = &sockets[1 - from];
            for _ in 0..256 {
                let Some(n) = sockets[from].try_recv(&mut buf) else {
                    break;
                };
                let frame = &buf[..n];
                if rng.gen_bool(imp.loss) {
                    stats.dropped += 1;
                    continue;
                }
                if held[from].is_none() && rng.gen_bool(imp.reorder) {
                    held[from] = Some((frame.to_vec(), Instant::now()));
                    stats.reordered += 1;
                    continue;
                }
                to.send(frame);
                stats.forwarded += 1;
                if rng.gen_bool(imp.duplicate) {
                    to.send(frame);
                    stats.duplicated += 1;
                }
                if let Some((h, _)) = held[from].take() {
                    to.send(&h);
                    stats.forwarded += 1;
                }
            }
            if held[from]
                .as_ref()
                .is_some_and(|(_, t)| t.elapsed() >= HOLD)
            {
                if let Some((h, _)) = held[from].take() {
                    to.send(&h);
                    stats.forwarded += 1;
                }
            }
        }
    }
    Ok(stats)
}
