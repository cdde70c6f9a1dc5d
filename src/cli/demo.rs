//! `ethpaxos demo`: the in-process cluster under load.

use super::{load_protocol, stop_on_signals};
use anyhow::{bail, Result};
use clap::Args;
use ethpaxos::cluster::{self, DemoOptions};
use ethpaxos::protocol::ProtocolConfig;
use ethpaxos::storage::{FsyncPolicy, StorageConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// How long to run, e.g. 10s or 1m.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Client sessions.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Values each client keeps outstanding.
    #[arg(long, default_value_t = 64)]
    outstanding: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Kill the leader this long after the start, to show the standby taking over.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_leader_after: Option<Duration>,
    /// Protocol tunables (YAML, see config/demo.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Acceptors' fsync policy: sync (crash safe, the default), async or none (memory).
    #[arg(long, default_value = "sync")]
    policy: FsyncPolicy,
    /// Where the acceptors' RocksDB directories go (default: a temporary directory,
    /// removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// async: how often the write-ahead log is synced.
    #[arg(long, default_value_t = 10)]
    fsync_interval_ms: u64,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let DemoArgs {
        duration,
        clients,
        outstanding,
        value_size,
        kill_leader_after,
        config,
        policy,
        data_dir,
        fsync_interval_ms,
    } = args;
    let protocol = match config {
        Some(path) => load_protocol(&path)?,
        None => ProtocolConfig::default(),
    };
    let opts = DemoOptions {
        duration,
        clients,
        outstanding,
        value_size,
        kill_leader_after,
        protocol,
        storage: StorageConfig {
            fsync_policy: policy,
            path: data_dir,
            fsync_interval_ms,
            ..StorageConfig::default()
        },
        interrupt: Some(stop_on_signals()?),
        warmup: Duration::ZERO,
    };
    let summary = cluster::run_demo(&opts, |line| println!("{line}"))?;
    println!("{summary}");
    if !summary.failures.is_empty() {
        bail!("{} node(s) stopped on an error", summary.failures.len());
    }
    if !summary.learners_agree() {
        bail!("the learners delivered different sequences");
    }
    Ok(())
}
