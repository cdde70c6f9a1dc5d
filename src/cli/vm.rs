//! `ethpaxos vm`: one node inside a QEMU virtual machine (the VM testbed; docs/dpdk.md).

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct VmArgs {
    /// The node's config, as for `ethpaxos run` (transport dpdk; no output.socket).
    #[arg(long)]
    config: PathBuf,
    /// The guest image directory (vmlinuz, initrd.img) vm/build-image.sh wrote.
    #[arg(long, default_value = "vm/.build")]
    image: PathBuf,
    /// The vhost-user socket of the switch port the VM's NIC attaches to.
    #[arg(long)]
    socket: PathBuf,
    /// The VM's own files (its disk data.img, kept across restarts).
    #[arg(long)]
    dir: PathBuf,
    /// Size of the VM's disk in MiB when it is made (sparse), e.g. for a long learner journal.
    #[arg(long, default_value_t = 4096)]
    disk_mb: u64,
    /// Guest memory in MiB: EAL's huge pages (dpdk.memory_mb and 32 MiB) and 160 MiB for the
    /// guest itself.
    #[arg(long, default_value_t = ethpaxos::vm::DEFAULT_MEMORY_MB)]
    memory_mb: u32,
    /// Back guest memory with a hugetlbfs mount (e.g. /dev/hugepages) instead of ordinary
    /// shared memory.
    #[arg(long)]
    memory_path: Option<PathBuf>,
    /// QEMU's accelerator: tcg (emulation, works anywhere) or kvm.
    #[arg(long, default_value = "tcg")]
    accel: String,
}

pub(crate) fn run(a: VmArgs) -> Result<()> {
    let mut spec = ethpaxos::vm::VmSpec::new(a.config, a.image, a.socket, a.dir);
    spec.memory_mb = a.memory_mb;
    spec.disk_mb = a.disk_mb;
    spec.memory_path = a.memory_path;
    spec.accel = a.accel;
    let stop = super::stop_on_signals()?;
    ethpaxos::vm::run(&spec, &stop)?;
    eprintln!("vm: the guest's node stopped cleanly");
    Ok(())
}
