//! `ethpaxos simulate`: seeded simulations of the production driver, checked.

use anyhow::Result;
use clap::Args;
use ethpaxos::sim::{self, FaultKind, Layout, SimConfig};
use ethpaxos::storage::FsyncPolicy;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Inject only this fault kind instead of cycling through them by seed.
    #[arg(long)]
    kind: Option<FaultKind>,
    /// The acceptors' fsync policy: sync (crash safe), async (a power loss may lose the
    /// last interval) or none (memory only).
    #[arg(long, default_value = "sync")]
    policy: FsyncPolicy,
    /// Run every seed on this layout instead of alternating by seed.
    #[arg(long)]
    layout: Option<Layout>,
    /// Print one line per seed, not only failures.
    #[arg(long)]
    verbose: bool,
}

pub(crate) fn run(args: SimulateArgs) -> Result<()> {
    let SimulateArgs {
        seeds,
        start_seed: start,
        kind,
        policy,
        layout,
        verbose,
    } = args;
    let started = Instant::now();
    // Written, not printed: a closed pipe (`| head`) ends the run with an error, not a panic.
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let mut last_report = Instant::now();
    // Totals over the run: what the learners had to recover through.
    let (mut resumes, mut from_peers, mut installs, mut stranded) = (0u64, 0u64, 0u64, 0u64);
    for seed in start..start.saturating_add(seeds) {
        let kind = kind.unwrap_or_else(|| FaultKind::for_seed(seed));
        let mut cfg = SimConfig::with_kind(seed, kind).with_policy(policy);
        if let Some(layout) = layout {
            cfg = cfg.with_layout(layout);
        }
        let report = sim::run(cfg);
        resumes += report.stats.learner_resumes;
        from_peers += report.stats.peer_instances;
        installs += report.stats.snapshot_installs;
        stranded += report.stats.trimmed_out;
        if verbose {
            let s = &report.stats;
            writeln!(
                out,
                "seed {seed} {:<22} {:<8} {} values delivered, {} frames ({} lost, {} of them to full receive queues, {} duplicated), {} elections, {} crashes, {} catch-up requests, {} learners trimmed out, acceptors refused {} oversized 2a and {} top-round ballots and put off {} prepares, {:.2}s virtual",
                report.kind.to_string(),
                report.layout.name(),
                s.values_delivered,
                s.frames_sent,
                s.frames_lost,
                s.frames_overflowed,
                s.frames_duplicated,
                s.leader_elections,
                s.crashes,
                s.catchup_requests,
                s.trimmed_out,
                s.acceptors.refused_oversized,
                s.acceptors.refused_top_round,
                s.acceptors.deferred_prepares,
                s.virtual_time.as_secs_f64()
            )?;
        }
        if !report.ok() {
            writeln!(
                out,
                "FAIL seed {seed} ({}, {} layout):",
                report.kind,
                report.layout.name()
            )?;
            for v in &report.violations {
                writeln!(out, "  {v}")?;
            }
            if verbose {
                writeln!(out, "  final state: {}", report.final_state)?;
            }
            writeln!(out, "  replay: {}", report.replay_command())?;
            failed.push(seed);
        }
        if !verbose && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "  ... {} of {seeds} seeds run, {} failed",
                seed - start + 1,
                failed.len()
            );
        }
    }
    writeln!(
        out,
        "{} seeds from {start}: {} passed, {} failed in {:.1}s",
        seeds,
        seeds - failed.len() as u64,
        failed.len(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "learners: {resumes} resumed from their journals, {from_peers} instances fetched from \
         peers' journals, {installs} peers' snapshots installed, {stranded} left stranded"
    )?;
    if !failed.is_empty() {
        eprintln!(
            "error: {} seeds violated a property: {failed:?}",
            failed.len()
        );
        std::process::exit(1);
    }
    Ok(())
}
