//! A cluster on one machine: one network namespace per node, each joined by a veth pair to a
//! bridge in a hub namespace, so nodes exchange raw Ethernet frames exactly as on a switch.
//! `up` builds the network and writes each node's config with the MAC its interface really
//! has; `start` runs `ethpaxos run` in every namespace; `down` stops the nodes and deletes every
//! namespace (which deletes the veths and the bridge). Needs root and `ip` (iproute2).

#![forbid(unsafe_code)]

pub mod impair;

use crate::config::{
    LoadConfig, Member, NodeConfig, OutputConfig, PipelineConfig, Polling, Role, Stages,
    TransportKind,
};
use crate::storage::FsyncPolicy;
use impair::Impairment;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`: {source} (is iproute2 installed?)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "testbed name {0:?}: use 1-6 letters or digits (it prefixes namespace and link names)"
    )]
    BadName(String),
    #[error("the testbed needs root (network namespaces, veths, raw sockets)")]
    NotRoot,
    #[error("{0}")]
    Configs(String),
}

/// Which nodes the testbed has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Three replicas (proposer + acceptor + learner each), ids 1-3.
    Replicas,
    /// Proposers 1 and 2, acceptors 11-13, learners 21 and 22.
    Roles,
    /// The thesis' experiment: proposer 1, acceptors 11-13, learner 21 (and the client
    /// node, the second learner, which is also the client).
    Thesis,
}

impl Layout {
    pub fn from_name(name: &str) -> Option<Layout> {
        match name {
            "replicas" => Some(Layout::Replicas),
            "roles" => Some(Layout::Roles),
            "thesis" => Some(Layout::Thesis),
            _ => None,
        }
    }

    /// The nodes and their roles; every layout adds a client node, id 9.
    fn nodes(self) -> Vec<(u16, Vec<Role>)> {
        let mut nodes: Vec<(u16, Vec<Role>)> = match self {
            Layout::Replicas => (1..=3).map(|id| (id, vec![Role::Replica])).collect(),
            Layout::Roles => [1, 2]
                .map(|id| (id, vec![Role::Proposer]))
                .into_iter()
                .chain([11, 12, 13].map(|id| (id, vec![Role::Acceptor])))
                .chain([21, 22].map(|id| (id, vec![Role::Learner])))
                .collect(),
            Layout::Thesis => [(1, vec![Role::Proposer])]
                .into_iter()
                .chain([11, 12, 13].map(|id| (id, vec![Role::Acceptor])))
                .chain([(21, vec![Role::Learner])])
                .collect(),
        };
        nodes.push((CLIENT, vec![Role::Learner, Role::Client]));
        nodes
    }
}

/// The client node's id in every layout.
pub const CLIENT: u16 = 9;

/// A generated cluster, with a client node running `clients` x `outstanding` load.
#[derive(Clone, Debug)]
pub struct LayoutSpec {
    pub layout: Layout,
    pub clients: usize,
    pub outstanding: usize,
    pub policy: FsyncPolicy,
    /// Frame authentication with a fresh random key (written to `<dir>/frame.key`).
    pub auth: bool,
    /// `afpacket` (raw frames) or `udp` (each node gets 10.45.0.<id>/24 on its interface).
    pub transport: TransportKind,
    pub polling: Polling,
    pub stages: Stages,
    /// Nodes that run on DPDK instead (net_af_packet virtual device on their eth0): a
    /// mixed cluster, the same frames on both. `transport: dpdk` puts every node on DPDK.
    pub dpdk_nodes: Vec<u16>,
    /// DPDK nodes attach through a virtio_user device to a vhost-user port of the testbed's
    /// software switch (`ethpaxos vswitch`, bridged to the others), as a VM would, instead
    /// of net_af_packet on their veth.
    pub virtio: bool,
    /// DPDK nodes take EAL's memory (128 MiB each) from huge pages, which must be reserved.
    pub dpdk_hugepages: bool,
    /// Nodes that run in a QEMU virtual machine each, and how.
    pub vms: Vms,
    /// Learners keep a journal (`learner.journal`) ...
    pub journal: bool,
    /// ... of at most this many MiB (`learner.retention_mb`; 0: no bound) ...
    pub journal_retention_mb: u64,
    /// ... and take a snapshot every this many instances (`learner.snapshot_every`).
    pub snapshot_every: u64,
    /// Every node's `protocol:` section.
    pub protocol: crate::protocol::ProtocolConfig,
}

impl Default for LayoutSpec {
    fn default() -> Self {
        LayoutSpec {
            layout: Layout::Replicas,
            clients: 4,
            outstanding: 8,
            policy: FsyncPolicy::Sync,
            auth: false,
            transport: TransportKind::Afpacket,
            polling: Polling::Adaptive,
            stages: Stages::Single,
            dpdk_nodes: Vec::new(),
            virtio: false,
            dpdk_hugepages: false,
            vms: Vms::default(),
            journal: true,
            journal_retention_mb: crate::journal::LearnerConfig::default().retention_mb,
            snapshot_every: crate::journal::LearnerConfig::default().snapshot_every,
            protocol: Default::default(),
        }
    }
}

/// Where the testbed's nodes come from.
#[derive(Clone, Debug)]
// Built once per testbed: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Nodes {
    Layout(LayoutSpec),
    /// Node configs as written by an operator (e.g. config/afpacket/): one namespace per
    /// file, its interface named and its MAC set as the file says. Storage and output paths
    /// are moved under the testbed's directory.
    Configs(Vec<NodeConfig>),
}

/// What `up` builds.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Prefixes every namespace (`<name>-hub`, `<name>-<id>`) and hub-side link.
    pub name: String,
    /// Configs, data, logs and outputs go here.
    pub dir: PathBuf,
    pub nodes: Nodes,
}

/// Loads every `*.yaml` node config in `dir`.
pub fn load_configs(dir: &Path) -> Result<Vec<NodeConfig>, TestbedError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!("cannot read {}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TestbedError::Configs(format!(
            "{} holds no .yaml node configs",
            dir.display()
        )));
    }
    files
        .iter()
        .map(|f| NodeConfig::load(f).map_err(|e| TestbedError::Configs(e.to_string())))
        .collect()
}

#[derive(Clone, Debug)]
pub struct TestbedNode {
    pub id: u16,
    pub roles: Vec<Role>,
    pub namespace: String,
    /// The hub-side end of its veth (where `tc` and link-down faults go).
    pub hub_link: String,
    pub mac: String,
    pub config: PathBuf,
}

impl TestbedNode {
    pub fn plays(&self, role: Role) -> bool {
        self.roles.contains(&role)
            || (self.roles.contains(&Role::Replica)
                && matches!(role, Role::Proposer | Role::Acceptor | Role::Learner))
    }

    pub fn delivered(&self, dir: &Path) -> PathBuf {
        dir.join(format!("delivered-{}.txt", self.id))
    }
}

pub struct Testbed {
    pub name: String,
    pub dir: PathBuf,
    pub hub: String,
    pub nodes: Vec<TestbedNode>,
    /// The vhost-user sockets of the software switch the virtio_user nodes attach to (none:
    /// no switch). `start_vswitch` runs it; it must be up before those nodes start.
    pub vswitch_sockets: Vec<PathBuf>,
    /// Nodes that run in a VM each (none for configs given as files).
    pub vms: Vms,
}

/// The nodes of a testbed that run inside a QEMU virtual machine each (`ethpaxos vm`): DPDK's
/// virtio PMD in the guest on a virtio-net NIC attached to a vhost-user port of the testbed's
/// switch, the node's store on the VM's disk.
#[derive(Clone, Debug)]
pub struct Vms {
    pub nodes: Vec<u16>,
    /// The guest image (vm/build-image.sh's output directory).
    pub image: PathBuf,
    /// QEMU's accelerator: `tcg` works anywhere, `kvm` where KVM works.
    pub accel: String,
    /// A hugetlbfs mount to back guest memory with (None: ordinary shared memory).
    pub memory_path: Option<PathBuf>,
}

impl Default for Vms {
    fn default() -> Self {
        Vms {
            nodes: Vec::new(),
            image: PathBuf::from("vm/.build"),
            accel: "tcg".into(),
            memory_path: None,
        }
    }
}

/// Node `cfg`'s veth: `iface` in its namespace with its MAC (and UDP address), `hub_link` on
/// the hub's bridge.
fn veth(
    ns: &str,
    hub: &str,
    iface: &str,
    hub_link: &str,
    cfg: &NodeConfig,
) -> Result<(), TestbedError> {
    let me = cfg.me();
    let (id, mac) = (me.id, me.mac.clone().unwrap_or_default());
    ip(
        ns,
        &[
            "link", "add", iface, "address", &mac, "type", "veth", "peer", "name", hub_link,
            "netns", hub,
        ],
    )?;
    // Jumbo frames need a larger MTU at both ends (the bridge follows its ports); the
    // margin covers UDP's IP and UDP headers.
    let max_frame = cfg.protocol.max_frame;
    if max_frame > crate::protocol::limits::DEFAULT_MAX_FRAME {
        let mtu = (max_frame + 64).to_string();
        ip(ns, &["link", "set", iface, "mtu", &mtu])?;
        ip(hub, &["link", "set", hub_link, "mtu", &mtu])?;
    }
    ip(ns, &["link", "set", iface, "up"])?;
    if let (TransportKind::Udp, Some(addr)) = (cfg.transport, me.udp) {
        ip(
            ns,
            &["addr", "add", &format!("{}/24", addr.ip()), "dev", iface],
        )?;
    }
    ip(hub, &["link", "set", hub_link, "master", "br0", "up"])?;
    // The interface must report the MAC the config names (the node checks it too).
    let actual = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{iface}/address"),
    ])?;
    if crate::wire::parse_mac(actual.trim()) != me.mac_addr() {
        return Err(TestbedError::Configs(format!(
            "node {id}: {iface} has MAC {} instead of {mac}",
            actual.trim()
        )));
    }
    Ok(())
}

/// Runs `exe args` in namespace `ns`, its stdout and stderr into `log` (appended to, or
/// truncated first).
fn spawn_logged(
    ns: &str,
    exe: &Path,
    args: &[&OsStr],
    log: &Path,
    append: bool,
) -> Result<Child, TestbedError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .map_err(io(format!("cannot open {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io(format!("cannot open {}", log.display())))?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            cmd: format!(
                "ip netns exec {ns} {} {}",
                exe.display(),
                args.first().map_or("".into(), |a| a.to_string_lossy())
            ),
            source,
        })
}

/// The switch's end of its uplink into the hub's bridge.
const VSWITCH_UPLINK: &str = "vsw0";

/// The vhost-user socket a node's virtio_user device attaches to, if it has one.
fn virtio_socket(cfg: &NodeConfig) -> Option<PathBuf> {
    if cfg.transport != TransportKind::Dpdk {
        return None;
    }
    let vdev = cfg
        .dpdk
        .as_ref()?
        .vdevs
        .iter()
        .find(|v| v.starts_with("virtio_user"))?;
    vdev.split(',')
        .find_map(|kv| kv.strip_prefix("path="))
        .map(PathBuf::from)
}

fn run(args: &[&str]) -> Result<String, TestbedError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n <ns> <args>`: iproute2 inside a namespace.
fn ip(ns: &str, args: &[&str]) -> Result<String, TestbedError> {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    run(&full)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Namespaces whose name starts with `<name>-`.
fn namespaces_of(name: &str) -> Result<Vec<String>, TestbedError> {
    let list = run(&["ip", "netns", "list"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("{name}-")))
        .map(str::to_string)
        .collect())
}

/// Builds the network and writes the configs. Anything left by an earlier testbed of the same
/// name is removed first.
pub fn up(spec: &Spec) -> Result<Testbed, TestbedError> {
    if spec.name.is_empty()
        || spec.name.len() > 6
        || !spec.name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(TestbedError::BadName(spec.name.clone()));
    }
    if !is_root() {
        return Err(TestbedError::NotRoot);
    }
    down(&spec.name)?;
    std::fs::create_dir_all(&spec.dir)
        .map_err(io(format!("cannot create {}", spec.dir.display())))?;
    let hub = format!("{}-hub", spec.name);
    let tb = build(spec, &hub);
    if tb.is_err() {
        let _ = down(&spec.name);
    }
    tb
}

/// The configs of a generated layout: on `eth0`, MACs 02:45:50:00:<id>, and for UDP the
/// address 10.45.0.<id>, port 7400.
pub fn layout_configs(spec: &LayoutSpec, key_file: Option<PathBuf>, dir: &Path) -> Vec<NodeConfig> {
    let udp = spec.transport == TransportKind::Udp;
    let members: Vec<Member> = spec
        .layout
        .nodes()
        .into_iter()
        .map(|(id, roles)| Member {
            id,
            roles,
            udp: udp.then(|| SocketAddr::from(([10, 45, 0, id as u8], 7400))),
            mac: Some(format!("02:45:50:00:{:02x}:{:02x}", id >> 8, id & 0xff)),
        })
        .collect();
    members
        .iter()
        .map(|me| {
            let mut storage = crate::storage::StorageConfig::default();
            if me.plays(Role::Acceptor) {
                storage.fsync_policy = spec.policy;
            }
            let in_vm = spec.vms.nodes.contains(&me.id);
            let on_dpdk =
                spec.transport == TransportKind::Dpdk || spec.dpdk_nodes.contains(&me.id) || in_vm;
            NodeConfig {
                node_id: me.id,
                transport: if on_dpdk {
                    TransportKind::Dpdk
                } else if spec.transport == TransportKind::Dpdk {
                    TransportKind::Afpacket
                } else {
                    spec.transport
                },
                interface: Some("eth0".into()),
                dpdk: on_dpdk.then(|| {
                    if in_vm {
                        // The guest's view: its virtio-net NIC on PCI, EAL in the guest's huge
                        // pages (`ethpaxos vm` checks and completes this).
                        crate::config::DpdkConfig {
                            pci: vec![crate::vm::GUEST_NIC.into()],
                            hugepages: true,
                            memory_mb: 96,
                            mempool_size: 2047,
                            ..Default::default()
                        }
                    } else {
                        crate::config::DpdkConfig {
                            vdevs: vec![if spec.virtio {
                                format!(
                                    "virtio_user0,path={},queues=1,mac={}",
                                    dir.join("vswitch")
                                        .join(format!("{}.sock", me.id))
                                        .display(),
                                    me.mac.as_deref().unwrap_or_default()
                                )
                            } else {
                                "net_af_packet0,iface=eth0,framecnt=16384".into()
                            }],
                            hugepages: spec.dpdk_hugepages,
                            memory_mb: if spec.dpdk_hugepages { 128 } else { 256 },
                            mempool_size: if spec.dpdk_hugepages { 4095 } else { 8191 },
                            ..Default::default()
                        }
                    }
                }),
                auth_key_file: key_file.clone(),
                members: members.clone(),
                storage,
                protocol: spec.protocol.clone(),
                metrics_address: None,
                pipeline: PipelineConfig {
                    polling: spec.polling,
                    stages: spec.stages,
                    ..PipelineConfig::default()
                },
                load: LoadConfig {
                    clients: spec.clients,
                    outstanding: spec.outstanding,
                    ..LoadConfig::default()
                },
                output: OutputConfig::default(),
                learner: crate::journal::LearnerConfig {
                    fsync_policy: Some(spec.policy),
                    journal: spec.journal,
                    retention_mb: spec.journal_retention_mb,
                    snapshot_every: spec.snapshot_every,
                    ..Default::default()
                },
            }
        })
        .collect()
}

/// Moves a config's storage and outputs under the testbed's directory; learners always
/// write their stream and clients their acknowledgements there, for checking.
fn localize(mut cfg: NodeConfig, dir: &Path) -> NodeConfig {
    let me = cfg.me().clone();
    // Learners keep their journal there too (learner-<id>).
    if [Role::Acceptor, Role::Proposer, Role::Learner]
        .iter()
        .any(|r| me.plays(*r))
    {
        cfg.storage.path = Some(dir.join("data").join(me.id.to_string()));
    }
    cfg.output = OutputConfig {
        delivered: me
            .plays(Role::Learner)
            .then(|| dir.join(format!("delivered-{}.txt", me.id))),
        acknowledged: me.plays(Role::Client).then(|| dir.join("acknowledged.txt")),
        socket: cfg
            .output
            .socket
            .as_ref()
            .map(|_| dir.join(format!("stream-{}.sock", me.id))),
        summary: Some(dir.join(format!("summary-{}.json", me.id))),
    };
    cfg
}

/// The switch port of a node in a VM.
fn vm_socket(dir: &Path, id: u16) -> PathBuf {
    dir.join("vswitch").join(format!("vm-{id}.sock"))
}

fn build(spec: &Spec, hub: &str) -> Result<Testbed, TestbedError> {
    let vms = match &spec.nodes {
        Nodes::Layout(l) => l.vms.clone(),
        Nodes::Configs(_) => Vms::default(),
    };
    let configs = match &spec.nodes {
        Nodes::Layout(layout) => {
            let key_file = if layout.auth {
                let path = spec.dir.join("frame.key");
                let mut key = [0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
                    .map_err(io("cannot read /dev/urandom for a frame key"))?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(&path, hex + "\n")
                    .map_err(io(format!("cannot write {}", path.display())))?;
                Some(path)
            } else {
                None
            };
            layout_configs(layout, key_file, &spec.dir)
        }
        Nodes::Configs(c) => c.clone(),
    };
    for c in &configs {
        if c.members != configs[0].members {
            return Err(TestbedError::Configs(format!(
                "node {} lists other members than node {}",
                c.node_id, configs[0].node_id
            )));
        }
    }
    if configs.len() != configs[0].members.len() {
        return Err(TestbedError::Configs(format!(
            "{} configs for {} members: the testbed needs one config per member",
            configs.len(),
            configs[0].members.len()
        )));
    }
    run(&["ip", "netns", "add", hub])?;
    ip(
        hub,
        &["link", "add", "br0", "type", "bridge", "stp_state", "0"],
    )?;
    ip(hub, &["link", "set", "br0", "up"])?;
    for id in &vms.nodes {
        let cfg = configs.iter().find(|c| c.node_id == *id).ok_or_else(|| {
            TestbedError::Configs(format!(
                "--vms names node {id}, which the layout does not have"
            ))
        })?;
        crate::vm::guest_config(cfg, crate::vm::DEFAULT_MEMORY_MB)
            .map_err(|e| TestbedError::Configs(e.to_string()))?;
    }
    let vswitch_sockets: Vec<PathBuf> = configs
        .iter()
        .filter_map(virtio_socket)
        .chain(vms.nodes.iter().map(|id| vm_socket(&spec.dir, *id)))
        .collect();
    if !vswitch_sockets.is_empty() {
        for s in &vswitch_sockets {
            if let Some(d) = s.parent() {
                std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
            }
        }
        // The switch's uplink: a veth pair inside the hub, one end on the bridge.
        ip(
            hub,
            &[
                "link",
                "add",
                VSWITCH_UPLINK,
                "type",
                "veth",
                "peer",
                "name",
                "vsw1",
            ],
        )?;
        ip(hub, &["link", "set", "vsw1", "master", "br0", "up"])?;
        ip(hub, &["link", "set", VSWITCH_UPLINK, "up"])?;
    }
    let mut nodes = Vec::new();
    for cfg in configs {
        let cfg = localize(cfg, &spec.dir);
        let me = cfg.me().clone();
        let id = me.id;
        let ns = format!("{}-{id}", spec.name);
        let hub_link = format!("{}h{id}", spec.name);
        let iface = cfg.interface.clone().unwrap_or_else(|| "eth0".into());
        let mac = me.mac.clone().unwrap_or_default();
        run(&["ip", "netns", "add", &ns])?;
        ip(&ns, &["link", "set", "lo", "up"])?;
        // A node on virtio_user reaches the others through the switch: a veth with its MAC
        // on the bridge as well would draw its frames away (the kernel sends from it).
        let hub_link = if virtio_socket(&cfg).is_some() || vms.nodes.contains(&id) {
            String::new()
        } else {
            veth(&ns, hub, &iface, &hub_link, &cfg)?;
            hub_link
        };
        let path = spec.dir.join(format!("node-{id}.yaml"));
        let yaml = serde_yaml_ng::to_string(&cfg)
            .map_err(|e| TestbedError::Configs(format!("node {id}: {e}")))?;
        let text = format!("# Written by `ethpaxos testbed up`; runs in namespace {ns}.\n{yaml}");
        std::fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))?;
        nodes.push(TestbedNode {
            id,
            roles: me.roles.clone(),
            namespace: ns,
            hub_link,
            mac,
            config: path,
        });
    }
    Ok(Testbed {
        name: spec.name.clone(),
        dir: spec.dir.clone(),
        hub: hub.to_string(),
        nodes,
        vswitch_sockets,
        vms,
    })
}

impl Testbed {
    pub fn node(&self, id: u16) -> Option<&TestbedNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Starts node `id` in its namespace; its stdout and stderr go to `node-<id>.log`.
    pub fn start(&self, id: u16, exe: &Path) -> Result<Child, TestbedError> {
        let node = self.node(id).ok_or_else(|| TestbedError::Command {
            cmd: format!("start node {id}"),
            stderr: "no such node in this testbed".into(),
        })?;
        let (socket, vm_dir) = (vm_socket(&self.dir, id), self.dir.join(format!("vm-{id}")));
        let vms = &self.vms;
        let args: Vec<&OsStr> = if vms.nodes.contains(&id) {
            let mut a = vec![
                OsStr::new("vm"),
                OsStr::new("--config"),
                node.config.as_os_str(),
                OsStr::new("--image"),
                vms.image.as_os_str(),
                OsStr::new("--socket"),
                socket.as_os_str(),
                OsStr::new("--dir"),
                vm_dir.as_os_str(),
                OsStr::new("--accel"),
                OsStr::new(&vms.accel),
            ];
            if let Some(m) = &vms.memory_path {
                a.extend([OsStr::new("--memory-path"), m.as_os_str()]);
            }
            a
        } else {
            vec![
                OsStr::new("run"),
                OsStr::new("--config"),
                node.config.as_os_str(),
            ]
        };
        spawn_logged(
            &node.namespace,
            exe,
            &args,
            &self.dir.join(format!("node-{id}.log")),
            true,
        )
    }

    /// Starts the software switch in the hub namespace (log in `vswitch.log`) and waits, up
    /// to 20 s, for its vhost-user sockets. Nothing to do without virtio_user nodes.
    pub fn start_vswitch(&self, exe: &Path) -> Result<Option<Child>, TestbedError> {
        if self.vswitch_sockets.is_empty() {
            return Ok(None);
        }
        let log_path = self.dir.join("vswitch.log");
        let mut args = vec![
            OsStr::new("vswitch"),
            OsStr::new("--uplink"),
            OsStr::new(VSWITCH_UPLINK),
        ];
        for s in &self.vswitch_sockets {
            let _ = std::fs::remove_file(s);
            args.extend([OsStr::new("--socket"), s.as_os_str()]);
        }
        let mut child = spawn_logged(&self.hub, exe, &args, &log_path, false)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.vswitch_sockets.iter().all(|s| s.exists()) {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestbedError::Command {
                    cmd: "ethpaxos vswitch".into(),
                    stderr: std::fs::read_to_string(&log_path).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(child))
    }

    /// Sets node `id`'s link on the hub side down or up (a partition of that node).
    pub fn link(&self, id: u16, up: bool) -> Result<(), TestbedError> {
        let node = self.node(id).expect("a testbed node");
        if node.hub_link.is_empty() {
            return Err(TestbedError::Configs(format!(
                "node {id} attaches through the software switch: it has no link to cut"
            )));
        }
        let state = if up { "up" } else { "down" };
        ip(&self.hub, &["link", "set", &node.hub_link, state]).map(drop)
    }

    /// Splices a relay (`ethpaxos impair`) into node `id`'s link that drops, duplicates and
    /// reorders frames in both directions; `heal` undoes it. (This kernel has no `tc netem`.)
    pub fn impair(&self, id: u16, imp: Impairment, exe: &Path) -> Result<Child, TestbedError> {
        let node = self.node(id).expect("a testbed node");
        let (relay_end, bridge_end) =
            (format!("{}r{id}", self.name), format!("{}b{id}", self.name));
        let hub = self.hub.as_str();
        ip(hub, &["link", "set", &node.hub_link, "nomaster"])?;
        ip(
            hub,
            &[
                "link",
                "add",
                &relay_end,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_end,
            ],
        )?;
        ip(hub, &["link", "set", &bridge_end, "master", "br0", "up"])?;
        ip(hub, &["link", "set", &relay_end, "up"])?;
        let log_path = self.dir.join(format!("impair-{id}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))?;
        Command::new("ip")
            .args(["netns", "exec", hub])
            .arg(exe)
            .args(["impair", "--a", &node.hub_link, "--b", &relay_end])
            .args(["--loss", &imp.loss.to_string()])
            .args(["--duplicate", &imp.duplicate.to_string()])
            .args(["--reorder", &imp.reorder.to_string()])
            .args(["--seed", &imp.seed.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                cmd: format!("{} impair", exe.display()),
                source,
            })
    }

    /// Stops the relay of `impair` and puts node `id`'s link back on the bridge.
    pub fn heal(&self, id: u16, mut relay: Child) -> Result<(), TestbedError> {
        let _ = run(&["kill", "-TERM", &relay.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while relay.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = relay.kill();
        let _ = relay.wait();
        let node = self.node(id).expect("a testbed node");
        ip(&self.hub, &["link", "del", &format!("{}r{id}", self.name)])?;
        ip(&self.hub, &["link", "set", &node.hub_link, "master", "br0"]).map(drop)
    }
}

/// Kills every process still inside a namespace of the testbed named `name` and deletes those
/// namespaces (with their veths and bridge). Safe to call when nothing is there.
pub fn down(name: &str) -> Result<(), TestbedError> {
    let namespaces = namespaces_of(name)?;
    // Every process still inside a namespace: asked to stop (nodes sync and print their
    // counters on SIGTERM), killed if still there after 3 s. All before any link goes away.
    let pids = || {
        namespaces
            .iter()
            .flat_map(|ns| {
                run(&["ip", "netns", "pids", ns])
                    .map(|p| p.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    for pid in pids() {
        let _ = run(&["kill", "-TERM", &pid]);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids() {
        let _ = run(&["kill", "-KILL", &pid]);
    }
    for ns in &namespaces {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match run(&["ip", "netns", "del", ns]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}
