//! The deterministic simulator over many seeds: every fault kind, every property checked.
//! Split into four tests so both cores share the seeds.

use ethpaxos::sim::{self, FaultKind};
use std::collections::HashSet;

const SEEDS: u64 = 4000;

fn run_range(range: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    let mut kinds = HashSet::new();
    let mut crashes = 0;
    let mut catchups = 0;
    for seed in range {
        let report = sim::run_seed(seed);
        kinds.insert(report.kind);
        crashes += report.stats.crashes;
        catchups += report.stats.catchup_requests;
        if !report.ok() {
            failures.push(format!(
                "seed {seed} ({}): {:?}\n  replay: {}",
                report.kind,
                report.violations,
                report.replay_command()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The range really exercised every fault kind, crashes and catch-up.
    assert_eq!(
        kinds.len(),
        FaultKind::ALL.len(),
        "fault kinds covered: {kinds:?}"
    );
    assert!(
        crashes > 0 && catchups > 0,
        "crashes {crashes}, catch-up requests {catchups}"
    );
}

#[test]
fn seeds_first_quarter() {
    run_range(0..SEEDS / 4);
}

#[test]
fn seeds_second_quarter() {
    run_range(SEEDS / 4..SEEDS / 2);
}

#[test]
fn seeds_third_quarter() {
    run_range(SEEDS / 2..3 * SEEDS / 4);
}

#[test]
fn seeds_fourth_quarter() {
    run_range(3 * SEEDS / 4..SEEDS);
}

#[test]
fn same_seed_same_run() {
    for seed in [7, 23, 1667] {
        let a = sim::run_seed(seed);
        let b = sim::run_seed(seed);
        assert_eq!(a.stats.frames_sent, b.stats.frames_sent, "seed {seed}");
        assert_eq!(
            a.stats.values_delivered, b.stats.values_delivered,
            "seed {seed}"
        );
        assert_eq!(a.stats.virtual_time, b.stats.virtual_time, "seed {seed}");
    }
}

#[test]
fn every_run_delivers_values() {
    for seed in 0..16 {
        let report = sim::run_seed(seed);
        assert!(
            report.stats.values_delivered > 0,
            "seed {seed} delivered nothing"
        );
    }
}

#[test]
fn codec_failures_are_reported_as_violations() {
    let mut obs = ethpaxos::sim::Observations::new(2);
    assert!(obs.check().is_empty());
    obs.codec_error("node 1 produced a message that cannot be sent".into());
    let v = obs.check();
    assert!(v.iter().any(|v| v.property == "codec"), "{v:?}");
}
