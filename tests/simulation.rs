//! The deterministic simulator over many seeds: every fault kind, every property checked.
//! Split into four tests so both cores share the seeds.

use ethpaxos::sim::{self, FaultKind, Layout};
use ethpaxos::storage::FsyncPolicy;
use std::collections::HashSet;

const SEEDS: u64 = 4000;

fn run_range(range: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    let mut kinds = HashSet::new();
    let mut layouts = HashSet::new();
    let mut crashes = 0;
    let mut catchups = 0;
    for seed in range {
        let report = sim::run_seed(seed);
        kinds.insert(report.kind);
        layouts.insert((report.kind, report.layout));
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
    // The range really exercised every fault kind on both node layouts (a node per role, and
    // replicas running proposer, acceptor and learner in one driver), crashes and catch-up.
    assert_eq!(
        kinds.len(),
        FaultKind::ALL.len(),
        "fault kinds covered: {kinds:?}"
    );
    assert_eq!(
        layouts.len(),
        FaultKind::ALL.len() * Layout::ALL.len(),
        "fault kinds and layouts covered: {layouts:?}"
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

/// Runs `count` seeds of one fault kind; every one must pass the checker.
fn kind_runs(kind: FaultKind, count: u64) -> Vec<sim::SimReport> {
    all_pass((0..count).map(|s| sim::run_seed_with(s, kind)).collect())
}

/// Every run passed the checker (else each failure with its replay command).
fn all_pass(reports: Vec<sim::SimReport>) -> Vec<sim::SimReport> {
    let failures: Vec<_> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| {
            format!(
                "seed {}: {:?}\n  replay: {}",
                r.seed,
                r.violations,
                r.replay_command()
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    reports
}

#[test]
fn a_standby_whose_link_flaps_never_deposes_the_leader() {
    let reports = kind_runs(FaultKind::StandbyFlap, 150);
    for r in &reports {
        assert_eq!(
            r.stats.leader_elections, 1,
            "seed {}: the flapping standby took over",
            r.seed
        );
    }
    // The acceptors' leader lease is what stopped it, in some runs at least (in others the
    // standby heard the leader again before its prepare reached an acceptor).
    let deferred: u64 = reports
        .iter()
        .map(|r| r.stats.acceptors.deferred_prepares)
        .sum();
    assert!(deferred > 0);
}

#[test]
fn a_learner_away_past_its_timeout_does_not_stop_failover_or_trim() {
    let reports = kind_runs(FaultKind::LearnerAway, 150);
    for r in &reports {
        // The leader crashed while the learner was away, and a new one took over.
        assert!(r.stats.leader_elections >= 2, "seed {}", r.seed);
    }
    // Trim passed the absent learner, which came back through its peers' journals: the
    // checker held every learner not stranded (its peers' retention no longer held what it
    // needed) to delivering every value.
    let fetched = reports.iter().filter(|r| r.stats.peer_catchups > 0).count();
    assert!(
        fetched * 2 > reports.len(),
        "{fetched} of {} runs",
        reports.len()
    );
    let instances: u64 = reports.iter().map(|r| r.stats.peer_instances).sum();
    let stranded = reports.iter().filter(|r| r.stats.trimmed_out > 0).count();
    assert!(
        instances > 0 && stranded < fetched,
        "{instances} instances, {stranded} stranded"
    );
}

#[test]
fn every_server_losing_power_at_once_comes_back() {
    for r in kind_runs(FaultKind::PowerCut, 200) {
        assert!(
            r.stats.crashes >= r.stats.nodes,
            "seed {}: {} crashes of {} nodes",
            r.seed,
            r.stats.crashes,
            r.stats.nodes
        );
        assert!(r.stats.leader_elections >= 2, "seed {}", r.seed);
    }
}

#[test]
fn forged_ballots_and_oversized_votes_are_refused_and_counted() {
    for r in kind_runs(FaultKind::Forged, 100) {
        let a = &r.stats.acceptors;
        // Every live acceptor refused each forgery: none of them was stored or promised,
        // and the election after the leader's crash read only what fits a 1b page.
        assert!(a.refused_top_round >= 2, "seed {}: {a:?}", r.seed);
        assert!(a.refused_oversized >= 2, "seed {}: {a:?}", r.seed);
        assert!(a.deferred_prepares >= 2, "seed {}: {a:?}", r.seed);
        assert!(r.stats.leader_elections >= 2, "seed {}", r.seed);
    }
}

#[test]
fn the_checker_bites_on_positions_out_of_order_or_disagreeing() {
    use ethpaxos::protocol::{ClientValue, Position};
    let v = |seq| ClientValue {
        client: 7,
        seq,
        payload: bytes::Bytes::new(),
    };
    let at = |instance, index| Position { instance, index };
    let submitted = |obs: &mut ethpaxos::sim::Observations| {
        for seq in 0..2 {
            obs.submitted.insert((7, seq), bytes::Bytes::new());
        }
    };
    // One learner whose positions go back.
    let mut obs = ethpaxos::sim::Observations::new(1);
    submitted(&mut obs);
    obs.deliver(0, at(5, 0), &v(0));
    obs.deliver(0, at(4, 0), &v(1));
    assert!(obs.check().iter().any(|x| x.property == "positions"));
    // Two learners that put one value at different positions.
    let mut obs = ethpaxos::sim::Observations::new(2);
    submitted(&mut obs);
    obs.deliver(0, at(1, 0), &v(0));
    obs.deliver(1, at(1, 1), &v(0));
    assert!(obs.check().iter().any(|x| x.property == "positions"));
    // The same positions everywhere: no complaint about positions.
    let mut obs = ethpaxos::sim::Observations::new(2);
    submitted(&mut obs);
    for l in 0..2 {
        obs.deliver(l, at(1, 0), &v(0));
        obs.deliver(l, at(1, 1), &v(1));
    }
    assert!(!obs.check().iter().any(|x| x.property == "positions"));
}

#[test]
fn restarted_learners_resume_from_their_journals_and_power_cuts_redeliver_only_the_unsynced() {
    let mut resumed = 0;
    let mut redelivered_under = std::collections::HashMap::new();
    for kind in [FaultKind::LearnerCrash, FaultKind::PowerCut] {
        for r in kind_runs(kind, 120) {
            resumed += r.stats.learner_resumes;
            let cfg = sim::SimConfig::with_kind(r.seed, kind);
            *redelivered_under
                .entry(cfg.journal.fsync_policy)
                .or_insert(0u64) += r.stats.redelivered_instances;
        }
    }
    // Learners came back where their journal stood, not at instance 0 ...
    assert!(resumed >= 50, "{resumed} resumes");
    // ... under `sync` having lost nothing (the checker's learner-journal property holds
    // each run to it), under `async` sometimes delivering again what their journal had not
    // synced.
    assert_eq!(redelivered_under.get(&FsyncPolicy::Sync), Some(&0));
    let unsynced = redelivered_under
        .get(&FsyncPolicy::Async)
        .copied()
        .unwrap_or(0);
    assert!(unsynced > 0, "{redelivered_under:?}");
}

#[test]
fn the_checker_catches_a_learner_journal_that_loses_synced_deliveries() {
    // Runs where a learner restarted after delivering something: its lying journal lost
    // half its newest segment, and the checker must say so.
    let runs: Vec<_> = (0..100)
        .map(|seed| {
            sim::run(sim::SimConfig::with_kind(seed, FaultKind::LearnerCrash).with_lying_journals())
        })
        .filter(|r| r.stats.learner_resumes + r.stats.redelivered_instances > 0)
        .collect();
    let caught = runs
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.property == "learner-journal"))
        .count();
    assert!(
        runs.len() >= 10,
        "only {} runs restarted a learner",
        runs.len()
    );
    assert!(
        caught * 10 >= runs.len() * 9,
        "caught in {caught} of {} runs",
        runs.len()
    );
}

#[test]
fn a_learner_that_comes_back_with_an_empty_journal_delivers_everything_again() {
    // Seeds whose restarted learners come back with their journal replaced by an empty one:
    // each joins as a new learner, from instance 0, through the acceptors or (past their trim)
    // its peers' journals; the checker holds it to every value once, in order.
    let runs = all_pass(
        (0..300)
            .map(|seed| sim::SimConfig::with_kind(seed, FaultKind::LearnerAway))
            .filter(|c| c.wipe_learners)
            .take(40)
            .map(sim::run)
            .collect(),
    );
    let wiped: u64 = runs.iter().map(|r| r.stats.learners_wiped).sum();
    let from_peers = runs.iter().filter(|r| r.stats.peer_instances > 0).count();
    assert!(
        wiped >= 20 && from_peers >= 10,
        "{wiped} wiped, {from_peers} runs used peers"
    );
}

#[test]
fn learners_that_no_peer_journal_can_serve_install_a_peers_snapshot_and_their_applications_agree() {
    // Learners away (or restarted empty) while trim and their peers' journals moved past
    // them: they fetch a peer's snapshot image in chunks and install it. The checker holds
    // each to every value after the image, once, in order, and compares every learner's
    // application (a digest of its stream, carried in the images) at equal positions.
    let reports = kind_runs(FaultKind::LearnerAway, 200);
    let installs: u64 = reports.iter().map(|r| r.stats.snapshot_installs).sum();
    let runs = reports
        .iter()
        .filter(|r| r.stats.snapshot_installs > 0)
        .count();
    let stranded: u64 = reports.iter().map(|r| r.stats.trimmed_out).sum();
    assert!(
        runs >= 10 && installs >= runs as u64,
        "{installs} installs in {runs} runs"
    );
    assert_eq!(
        stranded, 0,
        "a learner stayed stranded with peers' snapshots at hand"
    );
}

#[test]
fn the_checker_catches_an_application_that_restores_a_snapshot_wrongly() {
    // Applications restore images (after a restart, or a peer's) with one bit off: the
    // digests at equal positions must disagree in every run that restored one.
    let runs: Vec<_> = (0..120)
        .map(|seed| {
            sim::run(sim::SimConfig::with_kind(seed, FaultKind::LearnerAway).with_lying_snapshots())
        })
        .filter(|r| r.stats.snapshot_installs > 0)
        .collect();
    let caught = runs
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.property == "app-digest"))
        .count();
    assert!(
        runs.len() >= 5,
        "only {} runs installed a snapshot",
        runs.len()
    );
    assert_eq!(
        caught,
        runs.len(),
        "caught in {caught} of {} runs",
        runs.len()
    );
}

#[test]
fn the_checker_holds_an_installed_learner_to_everything_after_its_image_and_nothing_before() {
    use ethpaxos::protocol::{ClientDedup, ClientValue, Position};
    let v = |seq| ClientValue {
        client: 7,
        seq,
        payload: bytes::Bytes::new(),
    };
    let at = |instance, index| Position { instance, index };
    let image = |below: u64| {
        let mut d = std::collections::HashMap::new();
        d.insert(
            7,
            ClientDedup {
                below,
                ..Default::default()
            },
        );
        d
    };
    let run = |skip: bool, before: bool| {
        let mut obs = ethpaxos::sim::Observations::new(2);
        for seq in 0..4 {
            obs.submitted.insert((7, seq), bytes::Bytes::new());
            obs.acked.insert((7, seq));
            obs.deliver(0, at(seq, 0), &v(seq));
        }
        // Learner 1 installs an image holding seqs 0 and 1 (every value before 2.0).
        obs.installed(1, at(2, 0), image(2));
        if before {
            obs.deliver(1, at(1, 0), &v(1));
        }
        if !skip {
            obs.deliver(1, at(2, 0), &v(2));
        }
        obs.deliver(1, at(3, 0), &v(3));
        obs.check()
    };
    assert_eq!(run(false, false), Vec::new(), "a clean install is fine");
    assert!(run(true, false).iter().any(|x| x.property == "same-order"));
    assert!(run(false, true).iter().any(|x| x.property == "snapshot"));
}
