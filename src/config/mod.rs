//! A node's YAML config: who it is, which roles it plays, who the other members are and how to
//! reach them, its storage, protocol tunables and (for client and learner roles) its load and
//! outputs. Unknown keys are refused; every error names the field at fault.

#![forbid(unsafe_code)]

use crate::protocol::{ConfigError, Membership, NodeId, ProtocolConfig};
use crate::storage::{FsyncPolicy, StorageConfig};
pub use crate::transport::dpdk::config::{DpdkConfig, DpdkConfigError, DPDK_MBUF_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Proposer,
    Acceptor,
    Learner,
    Client,
    /// Proposer, acceptor and learner.
    Replica,
}

/// How a node's frames travel.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Datagrams to each member's `udp` address: routed networks, unprivileged runs.
    #[default]
    Udp,
    /// Raw Ethernet frames (EtherType 0x88B5) on `interface`, to each member's `mac`.
    /// Needs CAP_NET_RAW.
    Afpacket,
    /// Raw Ethernet frames through a DPDK port (`dpdk` section); needs a build with the
    /// `dpdk` feature.
    Dpdk,
}

/// How a node's loop waits for frames.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Polling {
    /// Sleep when idle until a frame or the next tick (after `spin_polls` empty polls): fair
    /// on a small shared machine.
    #[default]
    Adaptive,
    /// Never sleep: the lowest latency, and one core always at 100%.
    Busy,
}

/// Whether a node runs its work in one loop or in stages on their own threads.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Stages {
    /// One loop: receive, handle, commit, send. The right choice with one or two cores.
    #[default]
    Single,
    /// RX, one stage per role, commit and TX, each on its own thread, joined by bounded
    /// rings (src/pipeline/).
    Staged,
}

/// How the node's work is placed on the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub stages: Stages,
    /// Slots in each ring between stages (`staged`).
    pub ring_size: usize,
    pub polling: Polling,
    /// `adaptive` polling: empty polls before the loop sleeps until a frame or its next tick.
    /// 0 (the default) sleeps at once: where node processes share cores, a spinning node
    /// takes the core the node with work needs (docs/benchmarks.md measured 0, 10, 50 and
    /// 200); a node with a core of its own may gain from a few.
    pub spin_polls: u32,
    /// CPU cores to pin to: the loop to the first (`single`); stage k (RX, commit, TX,
    /// learner, acceptor, proposer) to `cores[k]` (`staged`; with fewer cores than stages the
    /// stages run as one loop on the first). Empty: the kernel places the threads.
    pub cores: Vec<usize>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            stages: Stages::Single,
            ring_size: 4096,
            polling: Polling::Adaptive,
            spin_polls: 0,
            cores: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: NodeId,
    pub roles: Vec<Role>,
    /// Where its UDP transport listens (transport `udp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<SocketAddr>,
    /// Its interface's MAC address, `aa:bb:cc:dd:ee:ff` (transport `afpacket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Member {
    /// The parsed `mac` (validate() checked it).
    pub fn mac_addr(&self) -> Option<crate::wire::MacAddr> {
        self.mac.as_deref().and_then(crate::wire::parse_mac)
    }

    pub fn plays(&self, role: Role) -> bool {
        self.roles.contains(&role)
            || (self.roles.contains(&Role::Replica)
                && matches!(role, Role::Proposer | Role::Acceptor | Role::Learner))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadConfig {
    /// Client sessions this node runs (client role).
    pub clients: usize,
    /// Values each keeps outstanding.
    pub outstanding: usize,
    pub value_size: usize,
    /// Stop submitting after this many values per client (0: until stopped).
    pub values_per_client: u64,
    /// Latencies count from this long after the start on (the stop summary's percentiles
    /// leave the warm-up out).
    pub warmup_ms: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            clients: 1,
            outstanding: 8,
            value_size: 64,
            values_per_client: 0,
            warmup_ms: 0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Learner: appends each delivered value as a line `client seq payload-hash`.
    pub delivered: Option<PathBuf>,
    /// Client: appends each acknowledged value as a line `client seq`.
    pub acknowledged: Option<PathBuf>,
    /// Learner: serves the delivered stream on this Unix-domain socket, a line per value
    /// (`client seq payload-hex`); `ethpaxos tail --socket PATH` prints it.
    pub socket: Option<PathBuf>,
    /// The node's summary (its counters, client latency, leadership) as JSON: refreshed every
    /// 200 ms while it runs (`running: true`), final at a clean stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: NodeId,
    #[serde(default)]
    pub transport: TransportKind,
    /// The network interface raw Ethernet frames go out of (transport `afpacket`).
    #[serde(default)]
    pub interface: Option<String>,
    /// The DPDK port (transport `dpdk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<DpdkConfig>,
    /// A file holding the cluster's shared frame key (64 hex digits). With it every frame is
    /// tagged and every frame without a valid tag is dropped and counted (docs/wire-format.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key_file: Option<PathBuf>,
    pub members: Vec<Member>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where the node serves Prometheus metrics on `/metrics` (ip:port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub output: OutputConfig,
    /// How a learner keeps its journal (ignored unless this node is a learner).
    #[serde(default)]
    pub learner: crate::journal::LearnerConfig,
}

/// A node config that passed `NodeConfig::validate`. Only `NodeConfig::validated` makes one,
/// and `node::run` takes nothing else: a node cannot start from a config nobody checked.
#[derive(Clone, Debug)]
pub struct ValidNodeConfig(NodeConfig);

impl ValidNodeConfig {
    /// The same config without load-generating clients (an embedded application submits
    /// its own values); fewer clients keep every check true.
    pub fn without_load_clients(mut self) -> ValidNodeConfig {
        self.0.load.clients = 0;
        self
    }

    pub fn into_inner(self) -> NodeConfig {
        self.0
    }
}

impl std::ops::Deref for ValidNodeConfig {
    type Target = NodeConfig;
    fn deref(&self) -> &NodeConfig {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{field}: {why}")]
    Field { field: String, why: String },
    #[error(transparent)]
    Dpdk(#[from] DpdkConfigError),
}

fn field(field: impl Into<String>, why: impl Into<String>) -> NodeConfigError {
    NodeConfigError::Field {
        field: field.into(),
        why: why.into(),
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, NodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: NodeConfig =
            serde_yaml_ng::from_str(&text).map_err(|source| NodeConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The frame key from `auth_key_file`, if the config names one.
    pub fn frame_key(&self) -> Result<Option<crate::wire::auth::FrameKey>, String> {
        let Some(path) = &self.auth_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        crate::wire::auth::FrameKey::from_hex(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The protocol settings the roles run with: with frame authentication, a frame's tag
    /// takes room the batches cannot use.
    pub fn effective_protocol(&self) -> ProtocolConfig {
        let mut p = self.protocol.clone();
        if self.auth_key_file.is_some() {
            p.max_frame -= crate::wire::auth::TAG_LEN;
        }
        p
    }

    pub fn membership(&self) -> Membership {
        let ids = |role| {
            self.members
                .iter()
                .filter(|m| m.plays(role))
                .map(|m| m.id)
                .collect()
        };
        Membership {
            proposers: ids(Role::Proposer),
            acceptors: ids(Role::Acceptor),
            learners: ids(Role::Learner),
        }
    }

    pub fn me(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .expect("validate() checked node_id is a member")
    }

    /// The config, checked: the only form a node starts from (`node::run`).
    pub fn validated(self) -> Result<ValidNodeConfig, NodeConfigError> {
        self.validate()?;
        Ok(ValidNodeConfig(self))
    }

    pub fn validate(&self) -> Result<(), NodeConfigError> {
        self.protocol.validate()?;
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for (k, m) in self.members.iter().enumerate() {
            if !ids.insert(m.id) {
                return Err(field(
                    format!("members[{k}].id"),
                    format!("node id {} is listed twice", m.id),
                ));
            }
            match (self.transport, m.udp) {
                (TransportKind::Udp, None) => {
                    return Err(field(
                        format!("members[{k}].udp"),
                        "required with transport udp (ip:port)",
                    ))
                }
                (_, Some(udp)) if !addrs.insert(udp.to_string()) => {
                    return Err(field(
                        format!("members[{k}].udp"),
                        format!("{udp} is used by two members"),
                    ))
                }
                _ => {}
            }
            match (self.transport, &m.mac) {
                (TransportKind::Afpacket | TransportKind::Dpdk, None) => {
                    return Err(field(
                        format!("members[{k}].mac"),
                        "required with raw Ethernet transports (aa:bb:cc:dd:ee:ff)",
                    ))
                }
                (_, Some(text)) => {
                    let mac = crate::wire::parse_mac(text).ok_or_else(|| {
                        field(
                            format!("members[{k}].mac"),
                            format!(
                                "{text:?} is not a MAC address (six hex bytes, aa:bb:cc:dd:ee:ff)"
                            ),
                        )
                    })?;
                    if mac[0] & 1 == 1 || mac == [0; 6] {
                        return Err(field(
                            format!("members[{k}].mac"),
                            format!("{text} is a multicast or zero address, not a node's"),
                        ));
                    }
                    if !addrs.insert(crate::wire::format_mac(&mac)) {
                        return Err(field(
                            format!("members[{k}].mac"),
                            format!("{text} is used by two members"),
                        ));
                    }
                }
                _ => {}
            }
            if m.roles.is_empty() {
                return Err(field(
                    format!("members[{k}].roles"),
                    "a member needs at least one role",
                ));
            }
        }
        let me = self
            .members
            .iter()
            .find(|m| m.id == self.node_id)
            .ok_or_else(|| field("node_id", format!("{} is not among members", self.node_id)))?;
        self.membership().validate()?;
        self.frame_key()
            .map_err(|why| field("auth_key_file", why))?;
        if !(16..=1 << 20).contains(&self.pipeline.ring_size) {
            return Err(field(
                "pipeline.ring_size",
                "must be between 16 and 1048576 slots",
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if let Some((k, c)) = self
            .pipeline
            .cores
            .iter()
            .enumerate()
            .find(|(_, c)| **c >= cpus)
        {
            return Err(field(
                format!("pipeline.cores[{k}]"),
                format!(
                    "core {c} does not exist: this machine has cores 0..{}",
                    cpus - 1
                ),
            ));
        }
        if self.transport == TransportKind::Dpdk {
            match &self.dpdk {
                None => {
                    return Err(field(
                        "dpdk",
                        "required with transport dpdk (at least dpdk.vdevs or dpdk.pci)",
                    ))
                }
                Some(d) => d.validate()?,
            }
        }
        if self.transport == TransportKind::Afpacket
            && self.interface.as_deref().is_none_or(str::is_empty)
        {
            return Err(field(
                "interface",
                "required with transport afpacket (the interface to send raw frames on)",
            ));
        }
        if let Some(p) = &self.storage.path {
            if p.exists() && !p.is_dir() {
                return Err(field(
                    "storage.path",
                    format!("{} is not a directory", p.display()),
                ));
            }
            if p.is_dir() && std::fs::read_dir(p).is_err() {
                return Err(field(
                    "storage.path",
                    format!("{} cannot be read", p.display()),
                ));
            }
        }
        if let Some(a) = &self.metrics_address {
            a.parse::<SocketAddr>().map_err(|_| {
                field(
                    "metrics_address",
                    format!("{a:?} is not an ip:port address"),
                )
            })?;
        }
        if me.plays(Role::Acceptor) {
            self.storage.validate()?;
        } else if self.storage.fsync_policy != FsyncPolicy::default() {
            return Err(field(
                "storage.fsync_policy",
                "only acceptors have an fsync policy",
            ));
        }
        self.learner
            .validate()
            .map_err(|(name, why)| field(name, why))?;
        if me.plays(Role::Proposer) && self.storage.path.is_none() {
            return Err(field(
                "storage.path",
                "a proposer keeps its highest round there; without it a restart could reuse a ballot",
            ));
        }
        if me.plays(Role::Client) && !me.plays(Role::Learner) {
            return Err(field(
                "members.roles",
                "a client node must also be a learner: it is acknowledged by its own learner",
            ));
        }
        if me.plays(Role::Client) {
            // Client ids hold 16 bits of session index; the last one is the embedded app's.
            if !(1..=65_535).contains(&self.load.clients) {
                return Err(field(
                    "load.clients",
                    format!("{} is outside 1..=65535", self.load.clients),
                ));
            }
            if !(1..=65_536).contains(&self.load.outstanding) {
                return Err(field(
                    "load.outstanding",
                    format!("{} is outside 1..=65536", self.load.outstanding),
                ));
            }
            let total = self.load.clients.saturating_mul(self.load.outstanding);
            if total > 1 << 24 {
                return Err(field(
                    "load.outstanding",
                    format!(
                        "{} clients x {} outstanding is {total} values in flight, over 16777216",
                        self.load.clients, self.load.outstanding
                    ),
                ));
            }
            if self.load.warmup_ms > 86_400_000 {
                return Err(field("load.warmup_ms", "at most a day (86400000)"));
            }
        }
        if me.plays(Role::Client) && self.load.value_size > self.protocol.max_value_bytes() {
            return Err(field(
                "load.value_size",
                format!(
                    "{} bytes is over the {}-byte limit of protocol.max_frame {}",
                    self.load.value_size,
                    self.protocol.max_value_bytes(),
                    self.protocol.max_frame
                ),
            ));
        }
        Ok(())
    }
}
