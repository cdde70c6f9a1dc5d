//! UDP: for routed networks, unprivileged runs and loopback tests. Each datagram is one frame
//! of the common format (its Ethernet addresses are zero: UDP does the addressing).

#![forbid(unsafe_code)]

use super::{FrameCheck, TransportStats};
use crate::protocol::{Envelope, Message, NodeId};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("UDP socket option: {0}")]
    Socket(std::io::Error),
    #[error("UDP receive failed: {0}")]
    Recv(std::io::Error),
}

pub struct UdpTransport {
    socket: UdpSocket,
    me: NodeId,
    check: FrameCheck,
    peers: HashMap<NodeId, SocketAddr>,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// The socket's current wait: None non-blocking, Some(t) blocking up to t. Changing it
    /// costs syscalls, so it changes only when a caller asks for another.
    mode: Option<Option<Duration>>,
    pub stats: TransportStats,
}

impl UdpTransport {
    pub fn bind(
        me: NodeId,
        addr: SocketAddr,
        peers: HashMap<NodeId, SocketAddr>,
        check: FrameCheck,
    ) -> Result<Self, UdpError> {
        let socket = UdpSocket::bind(addr).map_err(|source| UdpError::Bind { addr, source })?;
        // The kernel's default receive buffer holds about 90 full frames: a burst of answers
        // (a 1b page from every acceptor at once) would lose its tail.
        super::afpacket::grow_socket_buffers(&socket, me);
        Ok(Self::on_socket(socket, me, check, peers))
    }

    /// A transport on `socket` with fresh buffers and counters.
    fn on_socket(
        socket: UdpSocket,
        me: NodeId,
        check: FrameCheck,
        peers: HashMap<NodeId, SocketAddr>,
    ) -> Self {
        UdpTransport {
            socket,
            me,
            out: Vec::with_capacity(check.max_frame),
            check,
            peers,
            inbuf: vec![0; 65536],
            mode: None,
            stats: TransportStats::default(),
        }
    }

    /// A second handle on the same socket with its own counters and buffers, so one thread
    /// can receive while another sends.
    pub fn try_clone(&self) -> Result<Self, UdpError> {
        let socket = self.socket.try_clone().map_err(UdpError::Socket)?;
        Ok(Self::on_socket(
            socket,
            self.me,
            self.check.clone(),
            self.peers.clone(),
        ))
    }

    /// Sends one message. A message that cannot be encoded, or a datagram the network
    /// refuses, is counted and dropped, as a lost frame would be.
    pub fn send(&mut self, env: &Envelope) -> Result<(), UdpError> {
        let Some(addr) = self.peers.get(&env.to) else {
            self.stats.send_errors += 1;
            return Ok(());
        };
        // UDP does the addressing: the Ethernet addresses stay zero.
        if !self.check.encode(
            [0; 6],
            [0; 6],
            self.me,
            &env.msg,
            &mut self.out,
            &mut self.stats,
        ) {
            return Ok(());
        }
        match self.socket.send_to(&self.out, addr) {
            Ok(_) => self.stats.sent += 1,
            Err(_) => self.stats.send_errors += 1,
        }
        Ok(())
    }

    /// Waits up to `timeout` (zero: does not wait) for a frame from a member of this cluster.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(NodeId, Message)>, UdpError> {
        let wanted = (!timeout.is_zero()).then_some(timeout);
        if self.mode != Some(wanted) {
            match wanted {
                None => self
                    .socket
                    .set_nonblocking(true)
                    .map_err(UdpError::Socket)?,
                Some(t) => {
                    self.socket
                        .set_nonblocking(false)
                        .map_err(UdpError::Socket)?;
                    self.socket
                        .set_read_timeout(Some(t))
                        .map_err(UdpError::Socket)?;
                }
            }
            self.mode = Some(wanted);
        }
        loop {
            let (n, _from) = match self.socket.recv_from(&mut self.inbuf) {
                Ok(r) => r,
                // A signal (SIGTERM asking us to stop) interrupts the wait like a timeout.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(None)
                }
                // A previous send to a closed port reports here on Linux; not our frame's fault.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(UdpError::Recv(e)),
            };
            self.stats.received += 1;
            let Some(frame) = self.check.accept(&self.inbuf[..n], &mut self.stats) else {
                continue;
            };
            return Ok(Some((frame.header.sender, frame.msg)));
        }
    }
}
