//! `ethpaxos testbed` (network-namespace clusters of node processes) and the hidden tools
//! its tests use: `inject` (hostile frames) and `impair` (a lossy, reordering link).

use super::stop_on_signals;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ethpaxos::config::{Polling, Stages, TransportKind};
use ethpaxos::storage::FsyncPolicy;
use ethpaxos::testbed;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
// Parsed once per command: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum TestbedAction {
    /// Creates the namespaces, veths and bridge, writes each node's config into --dir, and
    /// with --start runs the nodes (logs in --dir/node-<id>.log).
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// Prefix of every namespace and hub-side link (1-6 letters or digits).
        #[arg(long, default_value = "epx")]
        name: String,
        /// replicas (3 replicas + a client node), roles (2 proposers, 3 acceptors,
        /// 2 learners + a client node) or thesis (1 proposer, 3 acceptors, 1 learner + the
        /// client node, also a learner).
        #[arg(long, default_value = "replicas")]
        layout: String,
        /// Run the node configs in this directory (e.g. config/afpacket) instead of a layout.
        #[arg(long, conflicts_with = "layout")]
        from: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 8)]
        outstanding: usize,
        #[arg(long, default_value = "sync")]
        policy: FsyncPolicy,
        #[arg(long)]
        start: bool,
        /// Authenticate every frame with a fresh random key (written to --dir/frame.key).
        #[arg(long)]
        auth: bool,
        /// afpacket (raw Ethernet), udp (addresses 10.45.0.<id>) or dpdk (raw Ethernet
        /// through DPDK: net_af_packet on each veth, or with --virtio virtio_user ports of a
        /// software switch; a build with --features dpdk).
        #[arg(long, default_value = "afpacket")]
        transport: TransportKind,
        /// These nodes run on DPDK, the others on --transport: a mixed cluster (e.g. 11,12).
        #[arg(long, value_delimiter = ',')]
        dpdk_nodes: Vec<u16>,
        /// With --transport dpdk or --dpdk-nodes: attach DPDK nodes through virtio_user to vhost-user ports of
        /// `ethpaxos vswitch`, as VMs would.
        #[arg(long)]
        virtio: bool,
        /// These nodes run in a QEMU VM each on DPDK's virtio PMD,
        /// their NICs on the software switch: the VM testbed (docs/dpdk.md). The others run
        /// on --transport in namespaces.
        #[arg(long, value_delimiter = ',')]
        vms: Vec<u16>,
        /// The guest image for --vms (vm/build-image.sh's output).
        #[arg(long, default_value = "vm/.build")]
        vm_image: PathBuf,
        /// QEMU's accelerator for --vms: tcg (emulation, works anywhere) or kvm.
        #[arg(long, default_value = "tcg")]
        vm_accel: String,
        /// Back each VM's memory with this hugetlbfs mount (e.g. /dev/hugepages).
        #[arg(long)]
        vm_memory_path: Option<PathBuf>,
        /// adaptive or busy.
        #[arg(long, default_value = "adaptive")]
        polling: Polling,
        /// single (one loop per node) or staged (RX, a stage per role, commit, TX threads).
        #[arg(long, default_value = "single")]
        stages: Stages,
        /// Learners keep no journal (a restart starts them at instance 0): what a journal
        /// costs, in benchmarks.
        #[arg(long)]
        no_journal: bool,
    },
    /// Kills the testbed's nodes and deletes its namespaces, veths and bridge.
    Down {
        #[arg(long, default_value = "epx")]
        name: String,
    },
}

#[derive(Args)]
pub(crate) struct InjectArgs {
    #[arg(long)]
    pub(crate) interface: String,
    /// garbage | foreign-cluster | non-member | truncated
    #[arg(long)]
    pub(crate) kind: String,
    #[arg(long, default_value_t = 100)]
    pub(crate) count: usize,
    /// Destination MAC (default: broadcast).
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
    pub(crate) dst: String,
}

#[derive(Args)]
pub(crate) struct ImpairArgs {
    #[arg(long)]
    pub(crate) a: String,
    #[arg(long)]
    pub(crate) b: String,
    #[arg(long, default_value_t = 0.0)]
    pub(crate) loss: f64,
    #[arg(long, default_value_t = 0.0)]
    pub(crate) duplicate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub(crate) reorder: f64,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

pub(crate) fn run(action: TestbedAction) -> Result<()> {
    match action {
        TestbedAction::Up {
            dir,
            name,
            layout,
            from,
            clients,
            outstanding,
            policy,
            start,
            auth,
            transport,
            polling,
            stages,
            dpdk_nodes,
            virtio,
            vms,
            vm_image,
            vm_accel,
            vm_memory_path,
            no_journal,
        } => {
            if virtio && transport != TransportKind::Dpdk && dpdk_nodes.is_empty() {
                bail!("--virtio attaches DPDK nodes: give --transport dpdk or --dpdk-nodes too");
            }
            if from.is_some() && !vms.is_empty() {
                bail!("--vms puts nodes of a generated layout in VMs: leave out --from");
            }
            let nodes = match from {
                Some(d) => testbed::Nodes::Configs(testbed::load_configs(&d)?),
                None => testbed::Nodes::Layout(testbed::LayoutSpec {
                    layout: testbed::Layout::from_name(&layout).with_context(|| {
                        format!("unknown layout `{layout}`; one of: replicas, roles, thesis")
                    })?,
                    clients,
                    outstanding,
                    policy,
                    auth,
                    transport,
                    polling,
                    stages,
                    dpdk_nodes,
                    virtio,
                    dpdk_hugepages: false,
                    vms: testbed::Vms {
                        nodes: vms,
                        image: std::path::absolute(&vm_image)
                            .with_context(|| format!("--vm-image {}", vm_image.display()))?,
                        accel: vm_accel,
                        memory_path: vm_memory_path,
                    },
                    journal: !no_journal,
                    journal_retention_mb: ethpaxos::journal::LearnerConfig::default().retention_mb,
                    snapshot_every: ethpaxos::journal::LearnerConfig::default().snapshot_every,
                    protocol: Default::default(),
                }),
            };
            let spec = testbed::Spec { name, dir, nodes };
            let tb = testbed::up(&spec)?;
            for n in &tb.nodes {
                println!(
                    "node {:>2} {:<24} namespace {:<8} mac {}  config {}",
                    n.id,
                    format!("{:?}", n.roles),
                    n.namespace,
                    n.mac,
                    n.config.display()
                );
            }
            if start {
                let exe = std::env::current_exe().context("cannot find this executable")?;
                // Left running: `testbed down` stops it with the nodes (it is in the hub).
                let _vswitch = tb.start_vswitch(&exe)?;
                for n in &tb.nodes {
                    tb.start(n.id, &exe)?;
                }
                println!(
                    "started {} nodes; logs in {}; stop with `ethpaxos testbed down --name {}`",
                    tb.nodes.len(),
                    tb.dir.display(),
                    tb.name
                );
            }
            Ok(())
        }
        TestbedAction::Down { name } => {
            testbed::down(&name)?;
            println!("testbed {name}: nodes stopped, namespaces deleted");
            Ok(())
        }
    }
}

pub(crate) fn inject(args: InjectArgs) -> Result<()> {
    let (interface, kind, count, dst) = (
        &args.interface[..],
        &args.kind[..],
        args.count,
        &args.dst[..],
    );
    use ethpaxos::protocol::{Ballot, Message};
    use ethpaxos::wire::{self, FrameHeader};
    let dst =
        wire::parse_mac(dst).with_context(|| format!("--dst {dst:?} is not a MAC address"))?;
    let heartbeat = |cluster, sender| {
        let mut f = Vec::new();
        let header = FrameHeader {
            dst,
            src: [0x02, 0xbb, 0, 0, 0, 1],
            cluster,
            sender,
        };
        let msg = Message::Heartbeat {
            ballot: Ballot::new(u32::MAX, sender),
            decided_below: u64::MAX,
            next_instance: u64::MAX,
        };
        wire::encode(&header, &msg, 1500, &mut f).map(|_| f)
    };
    let frame: Vec<u8> = match kind {
        "garbage" => {
            let mut f = heartbeat(1, 1)?;
            for b in &mut f[14..] {
                *b = 0xEE;
            }
            f
        }
        "truncated" => {
            let mut f = heartbeat(1, 1)?;
            f.truncate(20);
            f
        }
        "foreign-cluster" => heartbeat(0xF0F0, 1)?,
        "non-member" => heartbeat(1, 4242)?,
        "forged" => {
            // Claims a tag (the auth flag and 16 bytes) it could not have computed.
            let mut f = heartbeat(1, 1)?;
            ethpaxos::wire::auth::FrameKey::new([0x5A; 32]).seal(&mut f);
            f
        }
        "replay" => return replay(interface, count),
        other => {
            bail!("unknown --kind {other}; one of: garbage, truncated, foreign-cluster, non-member")
        }
    };
    let frames = vec![frame; count];
    let sent = ethpaxos::transport::afpacket::inject(interface, &frames)?;
    println!("sent {sent} {kind} frames on {interface}");
    Ok(())
}

/// Captures `count` of the cluster's frames passing `interface` (promiscuous, at most 10 s),
/// then sends each of them again three times: old, genuine frames replayed late.
fn replay(interface: &str, count: usize) -> Result<()> {
    use ethpaxos::transport::afpacket::RawSocket;
    let sock = RawSocket::open(interface, true)?;
    let mut captured = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while captured.len() < count && Instant::now() < deadline {
        RawSocket::wait_any(&[&sock], Duration::from_millis(10));
        while let Some(n) = sock.try_recv(&mut buf) {
            captured.push(buf[..n].to_vec());
            if captured.len() == count {
                break;
            }
        }
    }
    // Let the cluster move on before the old frames come back.
    std::thread::sleep(Duration::from_millis(500));
    let mut sent = 0;
    for _ in 0..3 {
        sent += captured.iter().filter(|f| sock.send(f)).count();
    }
    println!(
        "captured {} frames on {interface}, replayed {sent}",
        captured.len()
    );
    Ok(())
}

pub(crate) fn impair(args: ImpairArgs) -> Result<()> {
    let ImpairArgs {
        a,
        b,
        loss,
        duplicate,
        reorder,
        seed,
    } = args;
    let imp = testbed::impair::Impairment {
        loss,
        duplicate,
        reorder,
        seed,
    };
    imp.validate().map_err(anyhow::Error::msg)?;
    let stop = stop_on_signals()?;
    let stats = testbed::impair::relay(&a, &b, imp, &stop)?;
    println!("impair {a} <-> {b}: {stats:?}");
    Ok(())
}
