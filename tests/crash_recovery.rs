//! Crash recovery with real OS processes: proposers, acceptors (RocksDB, fsync policy sync),
//! learners and a client node each run as `ethpaxos run` over loopback UDP. Under client load
//! the tests `kill -9` acceptors and the leader and restart them, then check that every value
//! the client saw acknowledged was delivered exactly once, in the same order, at every learner.
//! Every wait is bounded; every process is killed and every file removed, pass or fail.

mod common;

use common::cluster::{LoopNode, Loopback, ProcCluster};

/// Proposers 1-2, acceptors 11-13 (RocksDB, sync), learners 21-22, and client node 23 (a
/// learner too) with 4 sessions of 8 outstanding values.
fn cluster(name: &str) -> ProcCluster<Loopback> {
    let mut nodes: Vec<LoopNode> = Vec::new();
    nodes.extend([1, 2].map(|id| LoopNode::new(id, "[proposer]")));
    nodes.extend([11, 12, 13].map(|id| LoopNode::new(id, "[acceptor]")));
    nodes.extend([21, 22].map(|id| LoopNode::new(id, "[learner]")));
    nodes.push(
        LoopNode::new(23, "[learner, client]")
            .with("load: {clients: 4, outstanding: 8, value_size: 32}\n"),
    );
    let mut c = ProcCluster::start_all(Loopback::new(&format!("crash-{name}"), nodes));
    c.patience = std::time::Duration::from_secs(20);
    c
}

#[test]
fn kill_one_acceptor_and_restart_it() {
    let mut c = cluster("one");
    c.progress(2000, "at start");
    c.bounce(11, 2000, 2000);
    c.finish_and_check();
}

#[test]
fn kill_two_acceptors_one_after_the_other() {
    let mut c = cluster("two");
    c.progress(2000, "at start");
    c.bounce(11, 1000, 1000);
    c.bounce(12, 1000, 2000);
    c.finish_and_check();
}

#[test]
fn kill_the_leader_and_restart_it() {
    let mut c = cluster("leader");
    c.progress(2000, "at start");
    // The client can only make progress while the leader is down if the standby took over.
    let leader = c.leader();
    c.bounce(leader, 2000, 2000);
    c.finish_and_check();
}

#[test]
fn kill_a_learner_and_it_resumes_where_its_journal_stands() {
    let mut c = cluster("learner");
    c.progress(2000, "at start");
    c.bounce(21, 2000, 2000);
    let summaries = c.finish_and_check();
    // It came back at its journal's delivery point, not at instance 0, and stopped with
    // everything it delivered durable (fsync policy sync).
    let l = &summaries[&21]["learner"];
    assert!(l["resumed_at"].as_u64().unwrap() > 0, "{l}");
    assert_eq!(l["durable_below"], l["delivered_below"], "{l}");
    assert!(l["journal"]["syncs"].as_u64().unwrap() > 0, "{l}");
    // The learner that never restarted started at 0.
    assert_eq!(summaries[&22]["learner"]["resumed_at"].as_u64(), Some(0));
}

#[test]
fn a_learner_away_past_the_trim_point_catches_up_from_its_peers_journals() {
    let mut nodes: Vec<LoopNode> = Vec::new();
    // Trim soon and close behind: the acceptors trim past the learner while it is down.
    // Acceptors trim by the learners' snapshots, taken every 100 instances.
    let protocol = "protocol: {learner_timeout_ms: 300, trim_interval_ms: 50, trim_keep: 50}\n\
                    learner: {snapshot_every: 100}\n";
    nodes.extend([1, 2].map(|id| LoopNode::new(id, "[proposer]").with(protocol)));
    nodes.extend([11, 12, 13].map(|id| LoopNode::new(id, "[acceptor]").with(protocol)));
    nodes.extend([21, 22].map(|id| LoopNode::new(id, "[learner]").with(protocol)));
    nodes.push(
        LoopNode::new(23, "[learner, client]")
            .with("load: {clients: 4, outstanding: 8, value_size: 32}\n")
            .with(protocol),
    );
    let mut c = ProcCluster::start_all(Loopback::new("crash-peers", nodes));
    c.patience = std::time::Duration::from_secs(20);
    c.progress(1000, "at start");
    c.bounce(21, 4000, 2000);
    let summaries = c.finish_and_check();
    let l = &summaries[&21]["learner"];
    assert!(l["peer_values"].as_u64().unwrap() > 0, "{l}");
    assert!(
        summaries[&21]["trimmed_out"].is_null(),
        "{}",
        summaries[&21]
    );
    // The acceptors did trim past it.
    assert!(summaries[&11]["acceptor"]["trim"].as_u64().unwrap() > 0);
}

#[test]
fn a_learner_away_past_trim_and_its_peers_journals_installs_a_peers_snapshot() {
    let mut nodes: Vec<LoopNode> = Vec::new();
    // Trim by snapshots taken every 100 instances; learners keep journals of two 1 MiB
    // segments, which 1 KiB values fill in well under the time learner 21 is down: no
    // peer's journal holds where it stopped when it comes back.
    let protocol = "protocol: {learner_timeout_ms: 300, trim_interval_ms: 50, trim_keep: 50}\n";
    let learner = "learner: {snapshot_every: 100, segment_mb: 1, retention_mb: 2}\n";
    nodes.extend([1, 2].map(|id| LoopNode::new(id, "[proposer]").with(protocol)));
    nodes.extend([11, 12, 13].map(|id| LoopNode::new(id, "[acceptor]").with(protocol)));
    nodes.extend([21, 22].map(|id| LoopNode::new(id, "[learner]").with(protocol).with(learner)));
    nodes.push(
        LoopNode::new(23, "[learner, client]")
            .with("load: {clients: 4, outstanding: 8, value_size: 1024}\n")
            .with(protocol)
            .with(learner),
    );
    let mut c = ProcCluster::start_all(Loopback::new("crash-image", nodes));
    c.patience = std::time::Duration::from_secs(20);
    c.progress(1000, "at start");
    c.terminate(21);
    // Down until its peers' journals dropped what it had not delivered.
    let stopped_at = c
        .summary(21)
        .and_then(|s| s["learner"]["delivered_below"].as_u64())
        .expect("learner 21's summary");
    c.wait_until(
        "learner 22's journal moved past learner 21",
        &|c: &ProcCluster<Loopback>| {
            c.summary(22)
                .and_then(|s| s["learner"]["journal"]["oldest"].as_u64())
                .is_some_and(|o| o > stopped_at)
        },
    );
    c.start(21);
    let summaries = c.finish_and_check();
    let l = &summaries[&21]["learner"];
    let snaps = &l["snapshots"];
    assert!(snaps["installed"].as_u64().unwrap() >= 1, "{l}");
    let at: ethpaxos::protocol::Position = snaps["installed_at"].as_str().unwrap().parse().unwrap();
    assert!(at.instance > stopped_at, "{l}");
    assert!(
        summaries[&21]["trimmed_out"].is_null(),
        "{}",
        summaries[&21]
    );
    // Its peers served the image: they hold snapshots of their own.
    assert!(
        summaries[&22]["learner"]["snapshots"]["taken"]
            .as_u64()
            .unwrap()
            > 0
    );
}
