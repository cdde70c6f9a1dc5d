//! AF_PACKET: raw Ethernet frames of EtherType 0x88B5 on one interface, no IP stack. Frames
//! are sent in batches with one `sendmmsg` per node-loop turn and received up to 64 at a time
//! with `recvmmsg`; the socket bypasses the qdisc layer (PACKET_QDISC_BYPASS), which doubled
//! the frame rate on this machine. Frames addressed elsewhere, from a foreign cluster, from a
//! sender outside the membership or from a MAC that is not the sender's are dropped and counted.

use super::{FrameCheck, TransportStats};
use crate::protocol::{Envelope, Message, NodeId};
use crate::wire::{parse_mac, MacAddr, ETHERTYPE};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Frames taken from the socket per `recvmmsg`.
const RX_BATCH: usize = 64;
/// Room for the largest frame we accept (jumbo, 9216) and a little more, so an oversized
/// frame shows up as oversized rather than silently truncated.
const RX_FRAME: usize = 9216 + 64;

#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("interface {0:?} not found (see `ip link`)")]
    NoInterface(String),
    #[error("cannot read {what} of interface {iface:?}: {source}")]
    Interface {
        iface: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("AF_PACKET sockets need CAP_NET_RAW: run as root, or use the udp transport")]
    NotPermitted,
    #[error("AF_PACKET {op} on {iface:?}: {source}")]
    Socket {
        op: &'static str,
        iface: String,
        source: io::Error,
    },
    #[error(
        "interface {iface:?} has MAC {actual}, but this node's members[].mac says {configured}"
    )]
    MacMismatch {
        iface: String,
        actual: String,
        configured: String,
    },
}

/// How often a node looks whether its interface is still there (`follow_mac`).
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The interface that has `mac`, if one has.
fn interface_with_mac(mac: MacAddr) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::read_to_string(e.path().join("address"))
                .ok()
                .and_then(|a| parse_mac(a.trim()))
                == Some(mac)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Reads an interface's index and MAC address from sysfs.
pub fn interface_info(iface: &str) -> Result<(i32, MacAddr), AfPacketError> {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
    if iface.is_empty() || iface.contains('/') || !dir.exists() {
        return Err(AfPacketError::NoInterface(iface.to_string()));
    }
    let read = |what: &'static str, file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|source| AfPacketError::Interface {
            iface: iface.to_string(),
            what,
            source,
        })
    };
    let bad = |what: &'static str, text: &str| AfPacketError::Interface {
        iface: iface.to_string(),
        what,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")),
    };
    let index_text = read("the index", "ifindex")?;
    let index = index_text
        .trim()
        .parse()
        .map_err(|_| bad("the index", &index_text))?;
    let mac_text = read("the MAC address", "address")?;
    let mac = parse_mac(mac_text.trim()).ok_or_else(|| bad("the MAC address", &mac_text))?;
    Ok((index, mac))
}

/// A raw socket bound to `iface` for our EtherType, with its interface index and MAC.
fn open_socket(iface: &str) -> Result<(OwnedFd, i32, MacAddr), AfPacketError> {
    let (ifindex, mac) = interface_info(iface)?;
    let sock_err = |op: &'static str| {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EPERM) {
            AfPacketError::NotPermitted
        } else {
            AfPacketError::Socket {
                op,
                iface: iface.to_string(),
                source,
            }
        }
    };
    let proto = ETHERTYPE.to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    };
    if raw < 0 {
        return Err(sock_err("socket"));
    }
    // SAFETY: `raw` is a socket we just opened and own; OwnedFd closes it exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value before we fill it in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(sock_err("bind"));
    }
    // Best effort: each only speeds things up. Our own frames are not echoed back with
    // PACKET_IGNORE_OUTGOING (Linux 4.20+); without it they are dropped by source MAC.
    set_int_option(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
    );
    set_int_option(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        1,
    );
    grow_buffers(fd.as_raw_fd());
    Ok((fd, ifindex, mac))
}

/// Asks the interface to pass frames to the cluster's group MAC up to this socket (a NIC
/// filters multicast it was not asked for; a veth passes everything). Best effort: where the
/// kernel refuses, group frames still reach interfaces that do not filter.
fn join_group(fd: libc::c_int, ifindex: i32, group: MacAddr) {
    // struct packet_mreq of <linux/if_packet.h>.
    #[repr(C)]
    struct PacketMreq {
        mr_ifindex: libc::c_int,
        mr_type: libc::c_ushort,
        mr_alen: libc::c_ushort,
        mr_address: [u8; 8],
    }
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(&group);
    let mreq = PacketMreq {
        mr_ifindex: ifindex,
        mr_type: 0, // PACKET_MR_MULTICAST
        mr_alen: 6,
        mr_address: address,
    };
    // SAFETY: `mreq` is a valid packet_mreq that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            1, // PACKET_ADD_MEMBERSHIP
            &mreq as *const PacketMreq as *const libc::c_void,
            std::mem::size_of::<PacketMreq>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        tracing::debug!(
            "PACKET_ADD_MEMBERSHIP refused: {}",
            io::Error::last_os_error()
        );
    }
}

/// Socket buffers a node asks for: a few thousand full frames, so the bursts a bounded
/// answer makes (a 1b page or catch-up page from every acceptor at once) are never cut.
pub const SOCKET_BUFFER_BYTES: libc::c_int = 16 << 20;

/// Sets an integer socket option; false if the kernel refused it.
fn set_int_option(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> bool {
    // SAFETY: `value` is a c_int that outlives the call, and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// `grow_buffers` on a node's socket the standard library opened, saying so when the kernel
/// gives less than asked.
pub(crate) fn grow_socket_buffers(socket: &impl AsRawFd, node: u16) {
    warn_if_small(node, grow_buffers(socket.as_raw_fd()));
}

/// Asks for `SOCKET_BUFFER_BYTES` of receive and send buffer: past `net.core.rmem_max` as
/// root (SO_RCVBUFFORCE), up to it otherwise. Returns the receive buffer the kernel gave.
fn grow_buffers(fd: libc::c_int) -> Option<libc::c_int> {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if !set_int_option(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER_BYTES) {
            set_int_option(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER_BYTES);
        }
    }
    receive_buffer(fd)
}

/// The receive buffer the kernel gives `fd`, in bytes.
fn receive_buffer(fd: libc::c_int) -> Option<libc::c_int> {
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `got` and `len` are live locals of the sizes getsockopt is told.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut got as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(got)
}

/// A node's receive buffer under what it asked for cuts bursts of answers: say how to fix it.
fn warn_if_small(node: u16, got: Option<libc::c_int>) {
    // The kernel reports twice what it was asked for (its bookkeeping share).
    if let Some(got) = got.filter(|g| *g < SOCKET_BUFFER_BYTES) {
        tracing::warn!(
            "node {node}: receive buffer is {got} bytes, under the {} asked for; as root, or with `sysctl -w net.core.rmem_max={}`, bursts of answers are not cut",
            SOCKET_BUFFER_BYTES,
            SOCKET_BUFFER_BYTES
        );
    }
}

/// Sends `frames` as they are out of `iface`: for tests that inject malformed or foreign
/// frames. Returns how many the kernel took.
pub fn inject(iface: &str, frames: &[Vec<u8>]) -> Result<usize, AfPacketError> {
    let raw = RawSocket::open(iface, false)?;
    Ok(frames.iter().filter(|f| raw.send(f)).count())
}

/// A raw socket for our EtherType that moves frames as bytes, with no decoding: the test
/// tools (injection, the impairment relay) use it.
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// With `promiscuous`, frames addressed to other MACs arrive too (a relay needs them).
    pub fn open(iface: &str, promiscuous: bool) -> Result<RawSocket, AfPacketError> {
        let (fd, ifindex, _) = open_socket(iface)?;
        if promiscuous {
            // SAFETY: packet_mreq is plain data; all-zero is valid before we fill it in.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            // SAFETY: `mreq` is a valid packet_mreq that outlives the call; its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    &mreq as *const libc::packet_mreq as *const libc::c_void,
                    std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(AfPacketError::Socket {
                    op: "promiscuous mode",
                    iface: iface.to_string(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(RawSocket { fd })
    }

    /// True if the kernel took the frame.
    pub fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is a live buffer of `frame.len()` bytes for the duration of the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        n >= 0
    }

    /// One frame into `buf` without waiting; its length, or None.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (n > 0).then_some(n as usize)
    }

    /// Waits up to `timeout` for any of `sockets` to have a frame.
    pub fn wait_any(sockets: &[&RawSocket], timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` holds `fds.len()` valid pollfds and `ts` a valid timespec, both alive
        // for the call.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
    }
}

/// One `sendmmsg`/`recvmmsg` header per buffer, each pointing at its one iovec.
fn headers(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is valid (no name, no control).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

pub struct AfPacketTransport {
    fd: OwnedFd,
    iface: String,
    /// The index of the interface `fd` is bound to.
    ifindex: i32,
    /// When to look next whether that interface is still there (`follow_mac`).
    next_link_check: Option<std::time::Instant>,
    mac: MacAddr,
    me: NodeId,
    check: FrameCheck,
    peers: HashMap<NodeId, MacAddr>,
    /// Encoded frames waiting for the next `flush`, back to back; `tx_ends` marks where each ends.
    tx: Vec<u8>,
    tx_ends: Vec<usize>,
    scratch: Vec<u8>,
    rx: Vec<Vec<u8>>,
    inbox: VecDeque<(NodeId, Message)>,
    pub stats: TransportStats,
}

impl AfPacketTransport {
    /// Opens a raw socket on `iface` for our EtherType. `peers` gives each member's MAC.
    pub fn open(
        me: NodeId,
        iface: &str,
        peers: HashMap<NodeId, MacAddr>,
        check: FrameCheck,
    ) -> Result<Self, AfPacketError> {
        let (fd, ifindex, mac) = open_socket(iface)?;
        // open_socket grew its buffers; a node says so when they are short.
        warn_if_small(me, receive_buffer(fd.as_raw_fd()));
        if let Some(group) = check.group {
            join_group(fd.as_raw_fd(), ifindex, group);
        }
        Ok(Self::on_socket(fd, iface, ifindex, mac, me, check, peers))
    }

    /// A transport on `fd` with fresh buffers and counters.
    #[allow(clippy::too_many_arguments)]
    fn on_socket(
        fd: OwnedFd,
        iface: &str,
        ifindex: i32,
        mac: MacAddr,
        me: NodeId,
        check: FrameCheck,
        peers: HashMap<NodeId, MacAddr>,
    ) -> Self {
        let max_frame = check.max_frame;
        AfPacketTransport {
            fd,
            iface: iface.to_string(),
            ifindex,
            next_link_check: None,
            mac,
            me,
            check,
            peers,
            tx: Vec::with_capacity(64 * max_frame),
            tx_ends: Vec::with_capacity(64),
            scratch: Vec::with_capacity(max_frame),
            rx: vec![vec![0; RX_FRAME]; RX_BATCH],
            inbox: VecDeque::with_capacity(RX_BATCH),
            stats: TransportStats::default(),
        }
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// A second handle on the same socket with its own counters and buffers, so one thread
    /// can receive while another sends.
    pub fn try_clone(&self) -> Result<Self, AfPacketError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|source| AfPacketError::Socket {
                op: "dup",
                iface: self.iface.clone(),
                source,
            })?;
        Ok(Self::on_socket(
            fd,
            &self.iface,
            self.ifindex,
            self.mac,
            self.me,
            self.check.clone(),
            self.peers.clone(),
        ))
    }

    /// Queues `envs` in order, a message to every member that takes it as one group frame.
    pub fn send_batch(&mut self, envs: &[Envelope]) -> Result<(), AfPacketError> {
        let planned = self.check.plan(envs);
        for p in planned {
            match p {
                super::Planned::One(env) => self.send(env)?,
                super::Planned::Group(msg) => {
                    let group = self.check.group.expect("raw Ethernet has a group MAC");
                    self.queue(group, msg)?;
                }
            }
        }
        Ok(())
    }

    /// Queues one message for the next `flush`. A message that cannot be encoded is counted
    /// and dropped; a message to an unknown node is counted as a send error.
    pub fn send(&mut self, env: &Envelope) -> Result<(), AfPacketError> {
        let Some(dst) = self.peers.get(&env.to).copied() else {
            self.stats.send_errors += 1;
            return Ok(());
        };
        self.queue(dst, &env.msg)
    }

    fn queue(&mut self, dst: MacAddr, msg: &Message) -> Result<(), AfPacketError> {
        if !self.check.encode(
            dst,
            self.mac,
            self.me,
            msg,
            &mut self.scratch,
            &mut self.stats,
        ) {
            return Ok(());
        }
        self.tx.extend_from_slice(&self.scratch);
        self.tx_ends.push(self.tx.len());
        if self.tx_ends.len() >= RX_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Where the interface the socket is bound to is gone (a container's network disconnected
    /// and connected again comes back as another interface; a NIC replugged), rebinds to the
    /// interface that now holds this node's MAC: peers address the node by that MAC. Looks at
    /// most every `LINK_CHECK_EVERY`.
    fn follow_mac(&mut self) {
        let now = std::time::Instant::now();
        if self.next_link_check.is_some_and(|t| now < t) {
            return;
        }
        self.next_link_check = Some(now + LINK_CHECK_EVERY);
        if matches!(interface_info(&self.iface), Ok((index, mac)) if index == self.ifindex && mac == self.mac)
        {
            return;
        }
        let Some(name) = interface_with_mac(self.mac) else {
            return;
        };
        match open_socket(&name) {
            Ok((fd, ifindex, _)) => {
                if let Some(group) = self.check.group {
                    join_group(fd.as_raw_fd(), ifindex, group);
                }
                tracing::warn!(
                    "node {}: interface {} (index {}) is gone; now on {name} (index {ifindex}), which holds this node's MAC",
                    self.me,
                    self.iface,
                    self.ifindex
                );
                self.fd = fd;
                self.iface = name;
                self.ifindex = ifindex;
                self.stats.rebinds += 1;
            }
            Err(e) => tracing::warn!("node {}: cannot rebind to {name}: {e}", self.me),
        }
    }

    /// Sends every queued frame, in as few `sendmmsg` calls as the kernel takes. A frame the
    /// kernel refuses (a full queue) is counted and dropped, as the network would drop it;
    /// Paxos retransmits.
    pub fn flush(&mut self) -> Result<(), AfPacketError> {
        self.follow_mac();
        let mut sent = 0;
        while sent < self.tx_ends.len() {
            let mut iovs: Vec<libc::iovec> = Vec::with_capacity(self.tx_ends.len() - sent);
            let mut start = if sent == 0 { 0 } else { self.tx_ends[sent - 1] };
            for &end in &self.tx_ends[sent..] {
                iovs.push(libc::iovec {
                    iov_base: self.tx[start..end].as_ptr() as *mut libc::c_void,
                    iov_len: end - start,
                });
                start = end;
            }
            let mut msgs = headers(&mut iovs);
            // SAFETY: `msgs` points at `msgs.len()` headers whose iovecs point into `self.tx`,
            // all alive and unmoved for the duration of the call.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    msgs.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The frame at the head cannot go now: count it lost and go on.
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EMSGSIZE)
                    | Some(libc::ENETDOWN) | Some(libc::ENXIO) => {
                        self.stats.send_errors += 1;
                        sent += 1;
                    }
                    _ => {
                        self.clear_tx();
                        return Err(AfPacketError::Socket {
                            op: "sendmmsg",
                            iface: self.iface.clone(),
                            source: e,
                        });
                    }
                }
            } else {
                self.stats.sent += n as u64;
                sent += n as usize;
            }
        }
        self.clear_tx();
        Ok(())
    }

    fn clear_tx(&mut self) {
        self.tx.clear();
        self.tx_ends.clear();
    }

    /// Waits up to `timeout` (zero: does not wait) for a frame from a member of this cluster.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(NodeId, Message)>, AfPacketError> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(Some(m));
        }
        self.follow_mac();
        if !timeout.is_zero() {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: one valid pollfd and a valid timespec, both alive for the call.
            let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            if rc <= 0 {
                // Timeout, or a signal (SIGTERM asking us to stop): nothing to read.
                return Ok(None);
            }
        }
        self.receive_batch()?;
        Ok(self.inbox.pop_front())
    }

    fn receive_batch(&mut self) -> Result<(), AfPacketError> {
        let mut iovs: Vec<libc::iovec> = self
            .rx
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs = headers(&mut iovs);
        // SAFETY: `msgs` holds RX_BATCH headers whose iovecs point into `self.rx` buffers that
        // stay alive and unmoved for the call; MSG_DONTWAIT keeps it from blocking.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                // The link went down (a cable pulled, a partition): the socket reports it
                // once; frames flow again when it comes back.
                Some(libc::ENETDOWN) | Some(libc::ENXIO) => {
                    self.stats.link_down += 1;
                    Ok(())
                }
                _ => Err(AfPacketError::Socket {
                    op: "recvmmsg",
                    iface: self.iface.clone(),
                    source: e,
                }),
            };
        }
        for (k, m) in msgs.iter().take(n as usize).enumerate() {
            let len = m.msg_len as usize;
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let frame = &self.rx[k][..len.min(RX_FRAME)];
            self.stats.received += 1;
            if frame.len() >= 12 && frame[6..12] == self.mac {
                // Our own frame, echoed where PACKET_IGNORE_OUTGOING is missing, or a
                // station spoofing our MAC.
                self.stats.dropped_own_mac += 1;
                continue;
            }
            if truncated {
                self.stats.dropped_bad_frame += 1;
                continue;
            }
            if let Some(m) =
                self.check
                    .accept_ethernet(frame, self.mac, &self.peers, &mut self.stats)
            {
                self.inbox.push_back(m);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_holding_a_mac_is_found_by_it() {
        // Every Linux machine has a loopback interface; whatever it is called, its MAC finds
        // an interface with that MAC, and a MAC nothing has finds none.
        let (_, lo_mac) = interface_info("lo").expect("a loopback interface");
        let name = interface_with_mac(lo_mac).expect("an interface with the loopback's MAC");
        assert_eq!(interface_info(&name).unwrap().1, lo_mac);
        assert_eq!(
            interface_with_mac([0x0e, 0x45, 0x50, 0xde, 0xad, 0x01]),
            None
        );
    }
}
