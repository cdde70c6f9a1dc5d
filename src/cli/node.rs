//! `ethpaxos run` and `ethpaxos check-config`: a node from its YAML config.

use super::stop_on_signals;
use anyhow::{Context, Result};
use clap::Args;
use ethpaxos::config::{NodeConfig, TransportKind};
use ethpaxos::node;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct RunArgs {
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
pub(crate) struct CheckConfigArgs {
    file: PathBuf,
}

pub(crate) fn run(args: RunArgs) -> Result<()> {
    run_node(&args.config)
}

pub(crate) fn check_config(args: CheckConfigArgs) -> Result<()> {
    let file = args.file;
    let cfg = NodeConfig::load(&file)?;
    let me = cfg.me();
    let m = cfg.membership();
    let reach = match cfg.transport {
        TransportKind::Udp => {
            format!("udp {}", me.udp.map(|a| a.to_string()).unwrap_or_default())
        }
        TransportKind::Afpacket => format!(
            "afpacket {} ({})",
            cfg.interface.as_deref().unwrap_or_default(),
            me.mac.as_deref().unwrap_or_default()
        ),
        TransportKind::Dpdk => {
            let d = cfg.dpdk.clone().unwrap_or_default();
            format!(
                "dpdk port {} ({}), EAL arguments: {}",
                d.port,
                me.mac.as_deref().unwrap_or_default(),
                d.eal_command_line(0).join(" ")
            )
        }
    };
    println!(
        "{}: ok. node {} plays {:?} on {}; cluster {}: {} proposer(s), {} acceptors (quorum {}), {} learner(s)",
        file.display(),
        cfg.node_id,
        me.roles,
        reach,
        cfg.protocol.cluster_id,
        m.proposers.len(),
        m.acceptors.len(),
        m.quorum(),
        m.learners.len()
    );
    if let Some(a) = &cfg.metrics_address {
        println!("metrics: http://{a}/metrics");
    }
    if me.plays(ethpaxos::config::Role::Learner) {
        match cfg.learner.dir(cfg.storage.path.as_deref(), cfg.node_id) {
            Some(dir) => println!(
                "learner journal: {} (fsync policy {})",
                dir.display(),
                cfg.learner.journal(cfg.storage.fsync_policy).fsync_policy
            ),
            None => println!(
                "learner journal: none (set storage.path or learner.path): a restart starts \
                 the learner at instance 0"
            ),
        }
        match cfg.learner.snapshot_every {
            0 => println!(
                "learner snapshots: its application's only (put snapshot on the stream socket); \
                 nothing is trimmed until it hands one"
            ),
            n => println!("learner snapshots: its own state every {n} instances"),
        }
    }
    Ok(())
}

fn run_node(path: &Path) -> Result<()> {
    let cfg = NodeConfig::load(path)?.validated()?;
    let stop = stop_on_signals()?;
    let stats = node::run(&cfg, &stop).with_context(|| format!("node {}", cfg.node_id))?;
    eprintln!("node {} stopped.\n{stats}", cfg.node_id);
    if let Some(path) = &cfg.output.summary {
        node::write_summary(path, &stats)
            .with_context(|| format!("cannot write output.summary {}", path.display()))?;
    }
    Ok(())
}
