//! The DPDK section of a node's config: the port a `transport: dpdk` node uses and the EAL
//! it runs in. Parsed and checked in every build; only a build with the `dpdk` feature opens
//! the port.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// A DPDK setting that cannot work, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {why}")]
pub struct DpdkConfigError {
    pub field: &'static str,
    pub why: String,
}

fn field(field: &'static str, why: impl Into<String>) -> DpdkConfigError {
    DpdkConfigError {
        field,
        why: why.into(),
    }
}

/// The DPDK port a `transport: dpdk` node uses, and the EAL it runs in. The EAL command line
/// is built from these fields (`DpdkConfig::eal_command_line`); `eal_args` adds to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkConfig {
    /// EAL's lcores (`-l`), e.g. "0" or "2-3". The first is EAL's main lcore. Empty: the
    /// first core this process may run on. Pipeline stages register as lcores of their own
    /// (`pipeline.cores` pins them).
    pub lcores: String,
    /// Memory EAL takes, in MiB (`-m`); the mbuf pool comes out of it.
    pub memory_mb: u32,
    /// true: EAL memory from huge pages (`--in-memory`; reserve them first with
    /// hugepages.sh). false: ordinary pages (`--no-huge`), for virtual devices and tests.
    pub hugepages: bool,
    /// Virtual devices (`--vdev`), e.g. "net_af_packet0,iface=eth0,framecnt=16384" or
    /// "virtio_user0,path=/run/vswitch/port-1.sock".
    pub vdevs: Vec<String>,
    /// PCI addresses of NICs bound to vfio-pci (`-a`), e.g. "0000:03:00.0". Empty: `--no-pci`.
    pub pci: Vec<String>,
    /// The port this node sends and receives on (ports are numbered vdevs and PCI devices
    /// together, in EAL's probe order).
    pub port: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// mbufs in the pool (10 KiB each, so jumbo frames fit one segment); best 2^n - 1.
    pub mempool_size: u32,
    /// Frames per receive and transmit burst (1..=64).
    pub burst: u16,
    /// How long to wait at start for the port's link to come up; 0: do not check.
    pub link_timeout_ms: u64,
    /// More EAL arguments, appended as given (e.g. "--log-level=debug").
    pub eal_args: Vec<String>,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            lcores: String::new(),
            memory_mb: 256,
            hugepages: false,
            vdevs: Vec::new(),
            pci: Vec::new(),
            port: 0,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mempool_size: 8191,
            burst: 64,
            link_timeout_ms: 3000,
            eal_args: Vec::new(),
        }
    }
}

/// Bytes one mbuf of the pool takes (data room, headroom and header).
pub const DPDK_MBUF_BYTES: u64 = 10240 + 128 + 256;

impl DpdkConfig {
    /// EAL's arguments for this config (without the program name). `first_core` stands in
    /// for an empty `lcores`.
    pub fn eal_command_line(&self, first_core: usize) -> Vec<String> {
        let lcores = if self.lcores.is_empty() {
            first_core.to_string()
        } else {
            self.lcores.clone()
        };
        let mut args = vec!["-l".to_string(), lcores];
        args.extend(["-m".to_string(), self.memory_mb.to_string()]);
        if self.hugepages {
            // Huge pages without a hugetlbfs mount, and no files left behind.
            args.push("--in-memory".into());
        } else {
            // Several DPDK processes on one machine, and no files left behind.
            args.extend(["--no-huge".into(), "--no-shconf".into()]);
        }
        args.push("--no-telemetry".into());
        if !self.eal_args.iter().any(|a| a.starts_with("--log-level")) {
            args.push("--log-level=error".into());
        }
        if self.pci.is_empty() {
            args.push("--no-pci".into());
        }
        for p in &self.pci {
            args.extend(["-a".to_string(), p.clone()]);
        }
        for v in &self.vdevs {
            args.push(format!("--vdev={v}"));
        }
        args.extend(self.eal_args.iter().cloned());
        args
    }

    pub fn validate(&self) -> Result<(), DpdkConfigError> {
        if self.vdevs.is_empty() && self.pci.is_empty() {
            return Err(field(
                "dpdk.vdevs",
                "a DPDK node needs a port: give dpdk.vdevs (virtual devices) or dpdk.pci (NICs)",
            ));
        }
        if self.port as usize >= self.vdevs.len() + self.pci.len() {
            return Err(field(
                "dpdk.port",
                format!(
                    "port {} does not exist: dpdk.vdevs and dpdk.pci give {} port(s), numbered from 0",
                    self.port,
                    self.vdevs.len() + self.pci.len()
                ),
            ));
        }
        if !(1..=64).contains(&self.burst) {
            return Err(field("dpdk.burst", "must be 1..=64"));
        }
        if self.rx_descriptors == 0 || self.tx_descriptors == 0 {
            return Err(field(
                "dpdk.rx_descriptors",
                "descriptors must be above 0 (1024 is a good start)",
            ));
        }
        let need = self.mempool_size as u64 * DPDK_MBUF_BYTES / (1 << 20) + 48;
        if (self.memory_mb as u64) < need {
            return Err(field(
                "dpdk.memory_mb",
                format!(
                    "{} MiB cannot hold dpdk.mempool_size {} mbufs of 10 KiB and EAL's own \
                     memory: give at least {need}",
                    self.memory_mb, self.mempool_size
                ),
            ));
        }
        if let Some(a) = self.eal_args.iter().find(|a| {
            [
                "-l",
                "-m",
                "--no-huge",
                "--in-memory",
                "--vdev",
                "-a",
                "--no-pci",
            ]
            .iter()
            .any(|f| a.as_str() == *f || a.starts_with(&format!("{f}=")))
        }) {
            return Err(field(
                "dpdk.eal_args",
                format!("{a:?} has its own field (lcores, memory_mb, hugepages, vdevs, pci)"),
            ));
        }
        Ok(())
    }
}
