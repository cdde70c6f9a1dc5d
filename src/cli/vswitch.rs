//! `ethpaxos vswitch`: a software switch of DPDK vhost-user ports.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct VswitchArgs {
    /// A vhost-user socket to create, one per port (repeat the option).
    #[arg(long = "socket", required = true)]
    pub(crate) sockets: Vec<PathBuf>,
    /// A kernel interface to bridge too (net_af_packet), e.g. a veth into a Linux bridge.
    #[arg(long)]
    pub(crate) uplink: Option<String>,
    /// Poll without napping when idle (one core at 100%).
    #[arg(long)]
    pub(crate) busy: bool,
}

pub(crate) fn run(args: VswitchArgs) -> Result<()> {
    switch(args.sockets, args.uplink, args.busy)
}

#[cfg(feature = "dpdk")]
fn switch(sockets: Vec<PathBuf>, uplink: Option<String>, busy: bool) -> Result<()> {
    let cfg = ethpaxos::vswitch::VswitchConfig {
        sockets,
        uplink,
        busy,
    };
    let stop = super::stop_on_signals()?;
    let stats = ethpaxos::vswitch::run(&cfg, &stop, || {
        println!("vswitch ready: {} vhost-user port(s)", cfg.sockets.len());
    })?;
    println!("vswitch stopped: {stats:?}");
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn switch(_: Vec<PathBuf>, _: Option<String>, _: bool) -> Result<()> {
    anyhow::bail!("this build has no DPDK: build with `cargo build --release --features dpdk`")
}
