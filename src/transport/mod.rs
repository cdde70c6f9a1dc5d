//! Transports move frames between nodes. All carry the same frame (src/wire); each drops and
//! counts what is not for this cluster.

pub mod afpacket;
pub mod udp;

/// Frame counters a transport keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub sent: u64,
    pub received: u64,
    pub dropped_bad_frame: u64,
    /// Raw Ethernet only: frames whose destination MAC is not this node's.
    pub dropped_not_for_us: u64,
    pub dropped_foreign_cluster: u64,
    pub dropped_non_member: u64,
    pub send_errors: u64,
    /// Raw Ethernet only: times the socket reported its link down.
    pub link_down: u64,
}

use crate::config::{NodeConfig, TransportKind};
use crate::protocol::{Envelope, Message, NodeId};
use afpacket::{AfPacketError, AfPacketTransport};
use std::time::Duration;
use udp::{UdpError, UdpTransport};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    AfPacket(#[from] AfPacketError),
}

/// The transport a node's config names.
pub enum Transport {
    Udp(UdpTransport),
    AfPacket(AfPacketTransport),
}

impl Transport {
    /// Opens this node's transport from its (validated) config.
    pub fn open(cfg: &NodeConfig) -> Result<Transport, TransportError> {
        let (me, cluster, max_frame) =
            (cfg.node_id, cfg.protocol.cluster_id, cfg.protocol.max_frame);
        Ok(match cfg.transport {
            TransportKind::Udp => {
                let peers = cfg
                    .members
                    .iter()
                    .filter_map(|m| Some((m.id, m.udp?)))
                    .collect();
                let addr = cfg.me().udp.expect("validate() requires udp addresses");
                Transport::Udp(UdpTransport::bind(me, addr, peers, cluster, max_frame)?)
            }
            TransportKind::Afpacket => {
                let peers = cfg
                    .members
                    .iter()
                    .filter_map(|m| Some((m.id, m.mac_addr()?)))
                    .collect();
                let iface = cfg.interface.as_deref().unwrap_or_default();
                let t = AfPacketTransport::open(me, iface, peers, cluster, max_frame)?;
                let want = cfg.me().mac_addr();
                if want != Some(t.mac()) {
                    return Err(AfPacketError::MacMismatch {
                        iface: iface.to_string(),
                        actual: crate::wire::format_mac(&t.mac()),
                        configured: cfg.me().mac.clone().unwrap_or_default(),
                    }
                    .into());
                }
                Transport::AfPacket(t)
            }
        })
    }

    /// Sends (or queues until `flush`) one message.
    pub fn send(&mut self, env: &Envelope) -> Result<(), TransportError> {
        match self {
            Transport::Udp(t) => Ok(t.send(env)?),
            Transport::AfPacket(t) => Ok(t.send(env)?),
        }
    }

    /// Sends whatever `send` queued.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            Transport::Udp(_) => Ok(()),
            Transport::AfPacket(t) => Ok(t.flush()?),
        }
    }

    /// Waits up to `timeout` (zero: does not wait) for a message from a member.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(NodeId, Message)>, TransportError> {
        match self {
            Transport::Udp(t) => Ok(t.recv(timeout)?),
            Transport::AfPacket(t) => Ok(t.recv(timeout)?),
        }
    }

    pub fn stats(&self) -> &TransportStats {
        match self {
            Transport::Udp(t) => &t.stats,
            Transport::AfPacket(t) => &t.stats,
        }
    }
}
