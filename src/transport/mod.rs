//! Transports move frames between nodes. All carry the same frame (src/wire); each drops and
//! counts what is not for this cluster.

pub mod afpacket;
pub mod dpdk;
pub mod udp;

use crate::config::{NodeConfig, Role, TransportKind};
use crate::protocol::{Envelope, Message, MessageKind, NodeId};
use crate::wire::auth::{FrameKey, TAG_LEN};
use crate::wire::{Frame, FrameHeader, MacAddr};
use afpacket::{AfPacketError, AfPacketTransport};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use udp::{UdpError, UdpTransport};

/// Frame counters a transport keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportStats {
    /// Pipeline only: received frames dropped because the roles' ring was full.
    pub shed_ring_full: u64,
    pub sent: u64,
    pub received: u64,
    pub dropped_bad_frame: u64,
    /// Raw Ethernet only: frames whose destination MAC is not this node's.
    pub dropped_not_for_us: u64,
    pub dropped_foreign_cluster: u64,
    pub dropped_non_member: u64,
    /// With frame authentication on: frames without a valid tag (forged, unsigned, cut).
    pub dropped_unauthenticated: u64,
    pub send_errors: u64,
    /// Raw Ethernet only: times the socket reported its link down.
    pub link_down: u64,
    /// Received frames longer than `max_frame`.
    pub dropped_oversized: u64,
    /// Raw Ethernet only: frames carrying this node's own source MAC (an echo, or a station
    /// spoofing it).
    pub dropped_own_mac: u64,
    /// Messages that could not be encoded into a frame: dropped, never fatal to the node.
    pub dropped_unencodable: u64,
    /// Raw Ethernet only: times the node's interface went away and it rebound to the one
    /// holding its MAC.
    pub rebinds: u64,
}

impl TransportStats {
    /// Adds another handle's counters (pipeline stages each keep their own).
    pub fn add(&mut self, o: &TransportStats) {
        self.shed_ring_full += o.shed_ring_full;
        self.sent += o.sent;
        self.received += o.received;
        self.dropped_bad_frame += o.dropped_bad_frame;
        self.dropped_not_for_us += o.dropped_not_for_us;
        self.dropped_foreign_cluster += o.dropped_foreign_cluster;
        self.dropped_non_member += o.dropped_non_member;
        self.dropped_unauthenticated += o.dropped_unauthenticated;
        self.send_errors += o.send_errors;
        self.link_down += o.link_down;
        self.dropped_oversized += o.dropped_oversized;
        self.dropped_own_mac += o.dropped_own_mac;
        self.dropped_unencodable += o.dropped_unencodable;
        self.rebinds += o.rebinds;
    }
}

/// What every transport checks of a received frame, and adds to a sent one.
#[derive(Clone, Debug)]
pub struct FrameCheck {
    pub cluster: u32,
    pub members: HashSet<NodeId>,
    /// Frame authentication (wire::auth), when the cluster has a key.
    pub key: Option<FrameKey>,
    /// The largest frame this node sends or takes, tag included.
    pub max_frame: usize,
    /// Raw Ethernet: the cluster's group MAC, taken like this node's own.
    pub group: Option<MacAddr>,
    /// Who each message type reaches, where this node sends group frames
    /// (`protocol.group_frames`).
    pub audience: Option<std::sync::Arc<Audience>>,
}

impl FrameCheck {
    /// The frames for `envs` (`plan`); one by one where this node sends no group frames.
    pub fn plan<'a>(&self, envs: &'a [Envelope]) -> Vec<Planned<'a>> {
        match &self.audience {
            Some(audience) => plan(envs, audience),
            None => envs.iter().map(Planned::One).collect(),
        }
    }

    /// The frame a received buffer holds if it decodes, carries a valid tag when a key is
    /// set, belongs to this cluster and comes from a member; otherwise counts why not.
    pub fn accept(&self, raw: &[u8], stats: &mut TransportStats) -> Option<Frame> {
        if raw.len() > self.max_frame {
            stats.dropped_oversized += 1;
            return None;
        }
        let decoded = match &self.key {
            Some(key) => match key.open(raw) {
                Ok(plain) => crate::wire::decode(&plain),
                Err(_) => {
                    stats.dropped_unauthenticated += 1;
                    return None;
                }
            },
            None => crate::wire::decode(raw),
        };
        let Ok(frame) = decoded else {
            stats.dropped_bad_frame += 1;
            return None;
        };
        if frame.header.cluster != self.cluster {
            stats.dropped_foreign_cluster += 1;
            return None;
        }
        if !self.members.contains(&frame.header.sender) {
            stats.dropped_non_member += 1;
            return None;
        }
        Some(frame)
    }

    /// Encodes `msg` from `sender` into `out` (cleared first) as a frame of this cluster that,
    /// tag included, fits `max_frame`, and tags it when the cluster has a key. A message that
    /// cannot be encoded is counted and false returned: one bad message (a vote a forged
    /// frame planted, a bug) must never take the node down. The first is also logged.
    pub fn encode(
        &self,
        dst: MacAddr,
        src: MacAddr,
        sender: NodeId,
        msg: &Message,
        out: &mut Vec<u8>,
        stats: &mut TransportStats,
    ) -> bool {
        let header = FrameHeader {
            dst,
            src,
            cluster: self.cluster,
            sender,
        };
        let limit = self.max_frame - if self.key.is_some() { TAG_LEN } else { 0 };
        if let Err(e) = crate::wire::encode(&header, msg, limit, out) {
            if stats.dropped_unencodable == 0 {
                tracing::warn!(
                    "node {sender}: dropped a {} message that cannot be sent ({e}); further ones are only counted (dropped_unencodable)",
                    msg.kind().name()
                );
            }
            stats.dropped_unencodable += 1;
            return false;
        }
        if let Some(key) = &self.key {
            key.seal(out);
        }
        true
    }

    /// `accept` for raw Ethernet: the frame must also be addressed to `own` (or the group) and
    /// come from the MAC its sender has in `peers`. Returns the sender and the message.
    pub fn accept_ethernet(
        &self,
        raw: &[u8],
        own: MacAddr,
        peers: &HashMap<NodeId, MacAddr>,
        stats: &mut TransportStats,
    ) -> Option<(NodeId, Message)> {
        let frame = self.accept(raw, stats)?;
        let h = &frame.header;
        if h.dst != own && Some(h.dst) != self.group {
            stats.dropped_not_for_us += 1;
            return None;
        }
        // A member must send from its own MAC.
        if peers.get(&h.sender) != Some(&h.src) {
            stats.dropped_non_member += 1;
            return None;
        }
        Some((h.sender, frame.msg))
    }
}

/// Who a group frame is for: per message type whose takers (by their roles and the driver's
/// routing table) are every other member, those members, sorted. A switch floods a group
/// frame to every port: sent where some member would drop it, it costs that member a wake-up
/// and a decode (measured: a 2b grouped to proposers and learners woke the other acceptors
/// and raised the latency at 1 client by a fifth, docs/benchmarks.md).
#[derive(Clone, Debug, Default)]
pub struct Audience(Vec<Vec<NodeId>>);

impl Audience {
    pub fn of(cfg: &NodeConfig) -> Audience {
        let me = cfg.node_id;
        Audience(
            MessageKind::ALL
                .iter()
                .map(|&kind| {
                    let t = crate::driver::kind_takers(kind);
                    let mut ids: Vec<NodeId> = cfg
                        .members
                        .iter()
                        .filter(|m| m.id != me)
                        .filter(|m| {
                            (t.acceptor && m.plays(Role::Acceptor))
                                || (t.proposer && m.plays(Role::Proposer))
                                || (t.learner && (m.plays(Role::Learner) || m.plays(Role::Client)))
                        })
                        .map(|m| m.id)
                        .collect();
                    ids.sort_unstable();
                    if ids.len() + 1 < cfg.members.len() {
                        ids.clear();
                    }
                    ids
                })
                .collect(),
        )
    }

    /// Whether `to` is exactly the audience of `kind`, of two members or more.
    fn is(&self, kind: MessageKind, to: &mut [NodeId]) -> bool {
        let Some(all) = self.0.get(kind.index()) else {
            return false;
        };
        if to.len() < 2 || to.len() != all.len() {
            return false;
        }
        to.sort_unstable();
        to == all.as_slice()
    }
}

/// A frame `plan` lays out: a message to one member, or to the group.
#[derive(Debug, PartialEq)]
pub enum Planned<'a> {
    One(&'a Envelope),
    Group(&'a Message),
}

/// The frames for `envs`, in order: a run of envelopes carrying one message to exactly the
/// members that take its type becomes one group frame (a leader's 2a to every acceptor and
/// learner is one frame, not five); the rest go one by one.
pub fn plan<'a>(envs: &'a [Envelope], audience: &Audience) -> Vec<Planned<'a>> {
    let mut out = Vec::with_capacity(envs.len());
    let mut k = 0;
    let mut to = Vec::new();
    while k < envs.len() {
        let msg = &envs[k].msg;
        let run = envs[k..].iter().take_while(|e| e.msg == *msg).count();
        to.clear();
        to.extend(envs[k..k + run].iter().map(|e| e.to));
        if audience.is(msg.kind(), &mut to) {
            out.push(Planned::Group(msg));
        } else {
            out.extend(envs[k..k + run].iter().map(Planned::One));
        }
        k += run;
    }
    out
}

/// Each member's MAC, for the raw Ethernet transports.
fn mac_peers(cfg: &NodeConfig) -> HashMap<NodeId, MacAddr> {
    cfg.members
        .iter()
        .filter_map(|m| Some((m.id, m.mac_addr()?)))
        .collect()
}

/// A raw Ethernet port must have the MAC the config gives this node: peers address it there.
fn check_own_mac(cfg: &NodeConfig, port: String, actual: MacAddr) -> Result<(), TransportError> {
    if cfg.me().mac_addr() == Some(actual) {
        return Ok(());
    }
    Err(TransportError::MacMismatch {
        port,
        actual: crate::wire::format_mac(&actual),
        configured: cfg.me().mac.clone().unwrap_or_default(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    AfPacket(#[from] AfPacketError),
    #[error("auth_key_file: {0}")]
    Key(String),
    #[error("transport dpdk: {0}")]
    Dpdk(String),
    #[error("{port} has MAC {actual}, but this node's members[].mac says {configured}")]
    MacMismatch {
        port: String,
        actual: String,
        configured: String,
    },
}

/// The transport a node's config names.
pub enum Transport {
    Udp(UdpTransport),
    AfPacket(AfPacketTransport),
    #[cfg(feature = "dpdk")]
    Dpdk(Box<dpdk::DpdkTransport>),
}

impl Transport {
    /// Opens this node's transport from its (validated) config.
    pub fn open(cfg: &NodeConfig) -> Result<Transport, TransportError> {
        let me = cfg.node_id;
        let raw = cfg.transport != TransportKind::Udp;
        let check = FrameCheck {
            cluster: cfg.protocol.cluster_id,
            members: cfg.members.iter().map(|m| m.id).collect(),
            key: cfg.frame_key().map_err(TransportError::Key)?,
            max_frame: cfg.protocol.max_frame,
            group: raw.then(|| crate::wire::group_mac(cfg.protocol.cluster_id)),
            // Group frames only where every member can take them: raw Ethernet, and asked for.
            audience: (raw && cfg.protocol.group_frames)
                .then(|| std::sync::Arc::new(Audience::of(cfg))),
        };
        Ok(match cfg.transport {
            TransportKind::Udp => {
                let peers = cfg
                    .members
                    .iter()
                    .filter_map(|m| Some((m.id, m.udp?)))
                    .collect();
                let addr = cfg.me().udp.expect("validate() requires udp addresses");
                Transport::Udp(UdpTransport::bind(me, addr, peers, check)?)
            }
            TransportKind::Afpacket => {
                let iface = cfg.interface.as_deref().unwrap_or_default();
                let t = AfPacketTransport::open(me, iface, mac_peers(cfg), check)?;
                check_own_mac(cfg, format!("interface {iface:?}"), t.mac())?;
                Transport::AfPacket(t)
            }
            #[cfg(feature = "dpdk")]
            TransportKind::Dpdk => {
                let dcfg = cfg
                    .dpdk
                    .as_ref()
                    .ok_or_else(|| TransportError::Dpdk("the config has no dpdk section".into()))?;
                let t = dpdk::DpdkTransport::open(me, dcfg, mac_peers(cfg), check)
                    .map_err(|e| TransportError::Dpdk(e.to_string()))?;
                check_own_mac(cfg, format!("DPDK port {}", dcfg.port), t.mac())?;
                Transport::Dpdk(Box::new(t))
            }
            #[cfg(not(feature = "dpdk"))]
            TransportKind::Dpdk => {
                return Err(TransportError::Dpdk(
                    "this build has no DPDK: build with `cargo build --release --features dpdk`"
                        .into(),
                ))
            }
        })
    }

    /// Sends (or queues until `flush`) one message.
    pub fn send(&mut self, env: &Envelope) -> Result<(), TransportError> {
        match self {
            Transport::Udp(t) => Ok(t.send(env)?),
            Transport::AfPacket(t) => Ok(t.send(env)?),
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => {
                t.send(env);
                Ok(())
            }
        }
    }

    /// Sends (or queues until `flush`) messages in order; on raw Ethernet one message to
    /// every member that takes it leaves as one group frame (`plan`).
    pub fn send_batch(&mut self, envs: &[Envelope]) -> Result<(), TransportError> {
        match self {
            Transport::Udp(t) => {
                for env in envs {
                    t.send(env)?;
                }
                Ok(())
            }
            Transport::AfPacket(t) => Ok(t.send_batch(envs)?),
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => {
                t.send_batch(envs);
                Ok(())
            }
        }
    }

    /// Sends whatever `send` queued.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            Transport::Udp(_) => Ok(()),
            Transport::AfPacket(t) => Ok(t.flush()?),
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => {
                t.flush();
                Ok(())
            }
        }
    }

    /// Waits up to `timeout` (zero: does not wait) for a message from a member.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(NodeId, Message)>, TransportError> {
        match self {
            Transport::Udp(t) => Ok(t.recv(timeout)?),
            Transport::AfPacket(t) => Ok(t.recv(timeout)?),
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => Ok(t.recv(timeout)),
        }
    }

    /// Another handle on the same socket (its own counters): one per pipeline stage.
    pub fn try_clone(&self) -> Result<Transport, TransportError> {
        Ok(match self {
            Transport::Udp(t) => Transport::Udp(t.try_clone()?),
            Transport::AfPacket(t) => Transport::AfPacket(t.try_clone()?),
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => Transport::Dpdk(Box::new(t.try_clone())),
        })
    }

    pub fn stats(&self) -> &TransportStats {
        match self {
            Transport::Udp(t) => &t.stats,
            Transport::AfPacket(t) => &t.stats,
            #[cfg(feature = "dpdk")]
            Transport::Dpdk(t) => &t.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ballot, Batch};
    use crate::testbed::{layout_configs, Layout, LayoutSpec, CLIENT};

    fn config(layout: Layout, id: NodeId) -> NodeConfig {
        let spec = LayoutSpec {
            layout,
            ..LayoutSpec::default()
        };
        layout_configs(&spec, None, std::path::Path::new("/nonexistent"))
            .into_iter()
            .find(|c| c.node_id == id)
            .expect("the layout has this node")
    }

    fn to_each(to: &[NodeId], msg: &Message) -> Vec<Envelope> {
        to.iter()
            .map(|&to| Envelope {
                to,
                msg: msg.clone(),
            })
            .collect()
    }

    fn accept(instance: u64) -> Message {
        Message::Accept {
            ballot: Ballot::new(1, 1),
            instance,
            value: Batch::new(Vec::new()),
        }
    }

    #[test]
    fn a_message_to_every_other_member_that_takes_it_is_one_group_frame() {
        // The thesis layout: proposer 1, acceptors 11-13, learners 21 and the client node.
        let audience = Audience::of(&config(Layout::Thesis, 1));
        let everyone = [CLIENT, 11, 12, 13, 21];
        let mut envs = to_each(&everyone, &accept(0));
        envs.extend(to_each(&everyone, &accept(1)));
        // A retransmit to one acceptor, and a 2a to all but one: one frame each.
        envs.extend(to_each(&[12], &accept(2)));
        envs.extend(to_each(&[11, 12, 13, 21], &accept(3)));
        let p = plan(&envs, &audience);
        let (a0, a1) = (accept(0), accept(1));
        assert_eq!(&p[..2], &[Planned::Group(&a0), Planned::Group(&a1)]);
        assert_eq!(p.len(), 2 + 1 + 4);
        assert!(p[2..].iter().all(|x| matches!(x, Planned::One(_))));
    }

    #[test]
    fn no_group_frame_where_a_member_would_drop_it() {
        // An acceptor's 2b goes to the proposer and the learners, not to the other acceptors:
        // flooded, it would wake them for nothing.
        let audience = Audience::of(&config(Layout::Thesis, 11));
        let vote = Message::Accepted {
            ballot: Ballot::new(1, 1),
            instances: vec![0],
        };
        let envs = to_each(&[1, 21, CLIENT], &vote);
        assert!(plan(&envs, &audience)
            .iter()
            .all(|x| matches!(x, Planned::One(_))));
        // With two proposers a 2a reaches every acceptor and learner but not the standby.
        let audience = Audience::of(&config(Layout::Roles, 1));
        let envs = to_each(&[11, 12, 13, 21, 22, CLIENT], &accept(0));
        assert_eq!(plan(&envs, &audience).len(), 6);
        // A heartbeat there goes to everyone: one frame.
        let hb = Message::Heartbeat {
            ballot: Ballot::new(1, 1),
            decided_below: 0,
            next_instance: 0,
        };
        let envs = to_each(&[2, 11, 12, 13, 21, 22, CLIENT], &hb);
        assert_eq!(plan(&envs, &audience), vec![Planned::Group(&hb)]);
    }

    #[test]
    fn a_node_takes_frames_to_its_own_mac_and_its_clusters_group_only() {
        let cluster = 7;
        let check = FrameCheck {
            cluster,
            members: [1, 2].into_iter().collect(),
            key: None,
            max_frame: 1500,
            group: Some(crate::wire::group_mac(cluster)),
            audience: None,
        };
        let own = [2, 0, 0, 0, 0, 2];
        let sender = [2, 0, 0, 0, 0, 1];
        let peers: HashMap<NodeId, MacAddr> = [(1, sender), (2, own)].into_iter().collect();
        let frame_to = |dst: MacAddr| {
            let mut out = Vec::new();
            let mut stats = TransportStats::default();
            assert!(check.encode(dst, sender, 1, &accept(0), &mut out, &mut stats));
            out
        };
        let mut stats = TransportStats::default();
        for dst in [own, crate::wire::group_mac(cluster)] {
            let got = check.accept_ethernet(&frame_to(dst), own, &peers, &mut stats);
            assert_eq!(got, Some((1, accept(0))));
        }
        // Another cluster's group, another node's MAC, the broadcast address: not for us.
        for dst in [crate::wire::group_mac(cluster + 1), sender, [0xff; 6]] {
            let got = check.accept_ethernet(&frame_to(dst), own, &peers, &mut stats);
            assert_eq!(got, None);
        }
        assert_eq!(stats.dropped_not_for_us, 3);
    }
}
