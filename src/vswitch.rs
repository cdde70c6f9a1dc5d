//! A small software switch for the virtio path a VM testbed uses (feature `dpdk`): each port
//! is a DPDK vhost-user port (a Unix socket a node's virtio_user device, or a VM's virtio NIC,
//! attaches to), plus optionally an uplink to a kernel interface (net_af_packet). It learns
//! source MACs and forwards each frame to the port its destination was learnt on, flooding
//! broadcast, multicast and unknown destinations, as a learning bridge does.

#![forbid(unsafe_code)]

use crate::transport::dpdk::{first_allowed_core, DpdkError, Eal, Pool, Port, BURST};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct VswitchConfig {
    /// A vhost-user socket per port; the switch creates them (server mode).
    pub sockets: Vec<PathBuf>,
    /// A kernel interface to bridge to as well (e.g. a veth into a Linux bridge).
    pub uplink: Option<String>,
    /// Never sleep when idle (one core at 100%); otherwise 20 us naps between empty polls.
    pub busy: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VswitchStats {
    pub received: u64,
    /// Frames sent to the one port their destination is on.
    pub forwarded: u64,
    /// Copies sent by flooding (broadcast, multicast, not yet learnt).
    pub flooded: u64,
    /// Copies a port did not take (nothing attached to it, or its ring full).
    pub dropped: u64,
    /// Frames whose destination is on the port they came from.
    pub filtered: u64,
    /// Per port (in EAL's port order): frames received, sent, not taken.
    pub per_port: Vec<(u64, u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum VswitchError {
    #[error("vswitch: give at least one --socket")]
    NoPorts,
    #[error("vswitch: socket path {0:?} is not valid UTF-8 or holds a comma")]
    BadPath(PathBuf),
    #[error("vswitch: {0}")]
    Dpdk(#[from] DpdkError),
}

impl VswitchConfig {
    fn eal_args(&self) -> Result<Vec<String>, VswitchError> {
        if self.sockets.is_empty() {
            return Err(VswitchError::NoPorts);
        }
        // The same EAL a node gets from its `dpdk` section: ordinary pages, no shared
        // config or telemetry left behind, no PCI; its ports are the vhost-user sockets.
        let mut eal = crate::config::DpdkConfig {
            memory_mb: 512,
            ..crate::config::DpdkConfig::default()
        };
        for (k, path) in self.sockets.iter().enumerate() {
            let p = path
                .to_str()
                .filter(|p| !p.contains(','))
                .ok_or_else(|| VswitchError::BadPath(path.clone()))?;
            eal.vdevs.push(format!("net_vhost{k},iface={p},queues=1"));
        }
        if let Some(up) = &self.uplink {
            eal.vdevs
                .push(format!("net_af_packet0,iface={up},framecnt=16384"));
        }
        let args = eal.eal_command_line(first_allowed_core());
        Ok(args)
    }
}

/// Runs the switch until `stop` is set. The sockets exist once `ready` is called.
pub fn run(
    cfg: &VswitchConfig,
    stop: &AtomicBool,
    ready: impl FnOnce(),
) -> Result<VswitchStats, VswitchError> {
    let eal = Eal::init(&cfg.eal_args()?)?;
    let pool = Pool::new(&eal, "vswitch", 16383)?;
    let ports = (0..eal.port_count())
        .map(|id| Port::start(&pool, id, 1024, 1024))
        .collect::<Result<Vec<_>, _>>()?;
    ready();
    let mut stats = VswitchStats {
        per_port: vec![(0, 0, 0); ports.len()],
        ..VswitchStats::default()
    };
    let mut table: HashMap<[u8; 6], usize> = HashMap::new();
    // Per output port, the frames of this round (copied: a flood sends one frame many times).
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); ports.len()];
    let mut spare: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut moved = 0;
        for (p, port) in ports.iter().enumerate() {
            moved += port.recv(BURST, |frame| {
                if frame.len() < 14 {
                    return;
                }
                stats.received += 1;
                stats.per_port[p].0 += 1;
                let dst: [u8; 6] = frame[0..6].try_into().expect("6 bytes");
                let src: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
                if src[0] & 1 == 0 {
                    table.insert(src, p);
                }
                let mut copy = |q: usize| {
                    let mut buf = spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(frame);
                    out[q].push(buf);
                };
                match table.get(&dst) {
                    Some(&q) if dst[0] & 1 == 0 => {
                        if q == p {
                            stats.filtered += 1;
                        } else {
                            stats.forwarded += 1;
                            copy(q);
                        }
                    }
                    _ => {
                        for q in (0..ports.len()).filter(|&q| q != p) {
                            stats.flooded += 1;
                            copy(q);
                        }
                    }
                }
            });
        }
        for (q, frames) in out.iter_mut().enumerate() {
            for chunk in frames.chunks(BURST) {
                let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                let sent = ports[q].send(&refs);
                stats.per_port[q].1 += sent as u64;
                stats.per_port[q].2 += (chunk.len() - sent) as u64;
                stats.dropped += (chunk.len() - sent) as u64;
            }
            spare.append(frames);
        }
        if moved == 0 && !cfg.busy {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    Ok(stats)
}
