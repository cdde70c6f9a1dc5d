//! The fsync policies in the simulator, where an acceptor crash is a power loss. `sync` never
//! violates a property; `none` and `async` can, which is why `sync` is the default and the
//! rule "a vote leaves only once it is durable" is load-bearing.

use ethpaxos::sim::{self, FaultKind, SimConfig, SimReport};
use ethpaxos::storage::FsyncPolicy;

fn run(seed: u64, kind: FaultKind, policy: FsyncPolicy) -> SimReport {
    sim::run(SimConfig::with_kind(seed, kind).with_policy(policy))
}

fn first_safety_violation(seeds: std::ops::Range<u64>, policy: FsyncPolicy) -> Option<String> {
    seeds.into_iter().find_map(|seed| {
        let report = run(seed, FaultKind::Everything, policy);
        report
            .violations
            .iter()
            .find(|v| ["agreement", "same-order", "acknowledged-lost"].contains(&v.property))
            .map(|v| format!("seed {seed}: {v} ({})", report.replay_command()))
    })
}

#[test]
fn sync_survives_crashes_at_any_point() {
    let mut commits = 0;
    let mut changes = 0;
    for seed in 0..1500 {
        let kind = [
            FaultKind::AcceptorCrash,
            FaultKind::Everything,
            FaultKind::LeaderCrash,
        ][seed as usize % 3];
        let report = run(seed, kind, FsyncPolicy::Sync);
        assert!(
            report.ok(),
            "seed {seed}: {:?}\n  replay: {}",
            report.violations,
            report.replay_command()
        );
        commits += report.stats.commits;
        changes += report.stats.committed_changes;
    }
    // Group commit at work: changes that arrive during a commit share the next one.
    assert!(commits > 0);
    assert!(changes > commits, "{changes} changes in {commits} commits");
}

#[test]
fn none_loses_votes_and_the_checker_says_so() {
    let found = first_safety_violation(0..400, FsyncPolicy::None);
    let found =
        found.expect("memory-only acceptors crashed and restarted, yet no violation was found");
    println!("{found}");
}

#[test]
fn async_can_lose_the_last_interval_on_power_loss() {
    let found = first_safety_violation(1000..4000, FsyncPolicy::Async);
    let found = found.expect("async acceptors lost unsynced votes, yet no violation was found");
    println!("{found}");
}

/// The driver commits before it sends whatever store it is given; a store that acknowledges
/// a `sync` commit before the disk has it (a lying write cache) breaks the promise underneath
/// it, and the checker must catch that from what the learners did.
#[test]
fn a_disk_that_acknowledges_before_it_syncs_is_caught() {
    let found = (0..1000).find_map(|seed| {
        let report = sim::run(SimConfig::with_kind(seed, FaultKind::Everything).with_lying_disks());
        report
            .violations
            .iter()
            .find(|v| ["agreement", "same-order", "acknowledged-lost"].contains(&v.property))
            .map(|v| format!("seed {seed}: {v}"))
    });
    let found = found.expect("lying disks lost acknowledged votes, yet no violation was found");
    println!("{found}");
}
