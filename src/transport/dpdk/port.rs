//! The node transport over a DPDK port: the same frames, checks and counters as AF_PACKET.

use super::eal::{open_port, DpdkError, Port, BURST};
use std::sync::Arc;

/// The node transport over a DPDK port: the same frames, checks and counters as AF_PACKET.
pub struct DpdkTransport {
    port: Arc<Port>,
    burst: usize,
    me: crate::protocol::NodeId,
    check: crate::transport::FrameCheck,
    peers: std::collections::HashMap<crate::protocol::NodeId, [u8; 6]>,
    tx: Vec<Vec<u8>>,
    queued: usize,
    inbox: std::collections::VecDeque<(crate::protocol::NodeId, crate::protocol::Message)>,
    pub stats: crate::transport::TransportStats,
}

impl DpdkTransport {
    pub fn open(
        me: crate::protocol::NodeId,
        cfg: &super::config::DpdkConfig,
        peers: std::collections::HashMap<crate::protocol::NodeId, [u8; 6]>,
        check: crate::transport::FrameCheck,
    ) -> Result<Self, DpdkError> {
        Ok(DpdkTransport {
            port: open_port(cfg)?,
            burst: cfg.burst as usize,
            me,
            check,
            peers,
            tx: Vec::new(),
            queued: 0,
            inbox: std::collections::VecDeque::new(),
            stats: crate::transport::TransportStats::default(),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.port.mac()
    }

    /// Another handle on the same port, with its own counters and buffers: the pipeline's RX
    /// stage receives on one while its TX stage sends on another.
    pub fn try_clone(&self) -> DpdkTransport {
        DpdkTransport {
            port: self.port.clone(),
            burst: self.burst,
            me: self.me,
            check: self.check.clone(),
            peers: self.peers.clone(),
            tx: Vec::new(),
            queued: 0,
            inbox: std::collections::VecDeque::new(),
            stats: crate::transport::TransportStats::default(),
        }
    }

    /// Queues `envs` in order, a message to every member that takes it as one group frame.
    pub fn send_batch(&mut self, envs: &[crate::protocol::Envelope]) {
        let planned = self.check.plan(envs);
        for p in planned {
            match p {
                crate::transport::Planned::One(env) => self.send(env),
                crate::transport::Planned::Group(msg) => {
                    let group = self.check.group.expect("raw Ethernet has a group MAC");
                    self.queue(group, msg);
                }
            }
        }
    }

    /// Queues one message for the next `flush`.
    pub fn send(&mut self, env: &crate::protocol::Envelope) {
        let Some(dst) = self.peers.get(&env.to).copied() else {
            self.stats.send_errors += 1;
            return;
        };
        self.queue(dst, &env.msg);
    }

    fn queue(&mut self, dst: [u8; 6], msg: &crate::protocol::Message) {
        // Frame buffers are kept across flushes: tx[..queued] wait, the rest are spare.
        if self.queued == self.tx.len() {
            self.tx.push(Vec::with_capacity(self.check.max_frame));
        }
        let buf = &mut self.tx[self.queued];
        let mac = self.port.mac();
        if !self
            .check
            .encode(dst, mac, self.me, msg, buf, &mut self.stats)
        {
            return;
        }
        self.queued += 1;
        if self.queued >= self.burst {
            self.flush();
        }
    }

    /// Bursts every queued frame out; a frame the port does not take is counted as lost.
    pub fn flush(&mut self) {
        for chunk in self.tx[..self.queued].chunks(self.burst) {
            let mut refs: [&[u8]; BURST] = [&[]; BURST];
            for (r, f) in refs.iter_mut().zip(chunk) {
                *r = f.as_slice();
            }
            let sent = self.port.send(&refs[..chunk.len()]);
            self.stats.sent += sent as u64;
            self.stats.send_errors += (chunk.len() - sent) as u64;
        }
        self.queued = 0;
    }

    /// Polls the port up to `timeout` (zero: one poll) for a frame from a member. Between
    /// empty polls it sleeps 20 us: a poll-mode port still costs a core when busy, not when
    /// idle.
    pub fn recv(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<(crate::protocol::NodeId, crate::protocol::Message)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            let (mac, burst, check, peers, stats, inbox) = (
                self.port.mac(),
                self.burst,
                &self.check,
                &self.peers,
                &mut self.stats,
                &mut self.inbox,
            );
            self.port.recv(burst, |raw| {
                // Other EtherTypes (a port sees all of the link's traffic, IPv6 neighbour
                // discovery included) are not ours to count.
                if raw.len() >= 14 && raw[12..14] != crate::wire::ETHERTYPE.to_be_bytes() {
                    return;
                }
                stats.received += 1;
                if raw.len() >= 14 && raw[6..12] == mac {
                    stats.dropped_own_mac += 1;
                    return;
                }
                inbox.extend(check.accept_ethernet(raw, mac, peers, stats));
            });
            if !self.inbox.is_empty() {
                continue;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }
}
