//! The `ethpaxos` command line: one module per subcommand.

mod apps;
mod bench;
mod demo;
mod node;
mod simulate;
mod testbed;
mod vm;
mod vswitch;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ethpaxos::protocol::ProtocolConfig;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ethpaxos",
    version,
    about = "Multi-Paxos replication over raw Ethernet frames"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node from its YAML config until SIGTERM or SIGINT.
    Run(node::RunArgs),
    /// Checks a node's YAML config and says what the node would do.
    CheckConfig(node::CheckConfigArgs),
    /// A cluster of network namespaces on this machine joined by a bridge, nodes on raw
    /// Ethernet (AF_PACKET). Needs root.
    Testbed {
        #[command(subcommand)]
        action: testbed::TestbedAction,
    },
    /// Sends raw frames out of an interface (testing: malformed, foreign-cluster and
    /// non-member frames). Needs root.
    #[command(hide = true)]
    Inject(testbed::InjectArgs),
    /// Relays our frames between two interfaces, dropping, duplicating and reordering them
    /// at random (testing: this kernel has no `tc netem`). Runs until SIGTERM.
    #[command(hide = true)]
    Impair(testbed::ImpairArgs),
    /// A software switch of DPDK vhost-user ports (the virtio path of a VM testbed): nodes
    /// attach with a virtio_user device (`dpdk.vdevs: ["virtio_user0,path=SOCKET"]`). Learns
    /// MACs, floods the unknown. Runs until SIGTERM; needs root and `--features dpdk`.
    Vswitch(vswitch::VswitchArgs),
    /// Runs one node inside a QEMU virtual machine (the VM testbed): its virtio-net NIC on a
    /// vhost-user port of the switch, DPDK's virtio PMD in the guest, its store on the VM's
    /// disk. Relays the guest's summary to the config's output.summary; SIGTERM stops it
    /// cleanly. The guest image comes from vm/build-image.sh.
    Vm(vm::VmArgs),
    /// The thesis' experiment: 1 proposer, 3 acceptors, 2 learners (one also the client) for
    /// each storage mode and client count; writes results.csv, results.json and PNG plots
    /// (throughput, latency, frames and CPU per value) into --out. Testbed transports need root.
    Bench(bench::BenchArgs),
    /// Submits values to a cluster and waits for each to be delivered: the values given, or
    /// those read from standard input (see --format). The config must give this node the
    /// client and learner roles. Exits non-zero if any value was not acknowledged in time.
    Submit(apps::SubmitArgs),
    /// Prints a learner's delivered stream (its config's output.socket) as it arrives.
    Tail(apps::TailArgs),
    /// Runs seeded simulations under loss, duplication, reordering, partitions and crashes, and
    /// checks agreement, validity, order, exactly-once delivery and liveness.
    Simulate(simulate::SimulateArgs),
    /// Runs an in-process cluster (leader + standby, 3 acceptors, 2 learners, N clients) under
    /// load, prints progress each second and a summary, and checks both learners agree.
    Demo(demo::DemoArgs),
}

/// Runs the subcommand the command line names.
pub(crate) fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Run(a) => node::run(a),
        Command::CheckConfig(a) => node::check_config(a),
        Command::Testbed { action } => testbed::run(action),
        Command::Inject(a) => testbed::inject(a),
        Command::Impair(a) => testbed::impair(a),
        Command::Vswitch(a) => vswitch::run(a),
        Command::Vm(a) => vm::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Submit(a) => apps::submit_command(a),
        Command::Tail(a) => apps::tail_command(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Demo(a) => demo::run(a),
    }
}

/// A flag SIGTERM and SIGINT set, for a clean stop.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

pub(crate) fn load_protocol(path: &PathBuf) -> Result<ProtocolConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let cfg: ProtocolConfig = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not a valid protocol config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}: invalid protocol config", path.display()))?;
    Ok(cfg)
}
