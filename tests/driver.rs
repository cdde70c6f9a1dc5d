//! The one driver on its own: routing by the one table, ticks on the configured period,
//! messages that leave only through a commit (and never when the commit fails), 2b merging,
//! a node's messages to itself, client sessions' ids.

use ethpaxos::driver::{client_id, takers, Driver, Logged, Sessions};
use ethpaxos::protocol::*;
use ethpaxos::storage::BatchBudget;
use std::time::Duration;

fn replicas() -> Membership {
    Membership {
        proposers: vec![1, 2, 3],
        acceptors: vec![1, 2, 3],
        learners: vec![1, 2, 3],
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A replica's driver (proposer, acceptor, learner in one node).
fn replica(id: NodeId, cfg: &ProtocolConfig) -> Driver {
    Driver::new(id, cfg, BatchBudget::new(1024, 1 << 20))
        .with_proposer(Proposer::new(id, cfg, replicas(), ms(0), 0))
        .with_acceptor(Box::new(Acceptor::new(id, cfg, replicas())))
        .with_learner(Learner::new(id, cfg, replicas(), ms(0)))
}

/// A store that cannot make anything durable.
struct BrokenDisk;

impl Persist for BrokenDisk {
    type Error = &'static str;
    fn persist(&mut self, _: Duration, changes: &[Change]) -> Result<(), Self::Error> {
        if changes.is_empty() {
            Ok(())
        } else {
            Err("disk gone")
        }
    }
}

#[test]
fn the_routing_table_sends_each_message_to_the_roles_that_take_it() {
    let b = Ballot::new(1, 1);
    let cases = [
        (
            Message::Prepare { ballot: b, from: 0 },
            (true, false, false),
        ),
        (
            Message::Accept {
                ballot: b,
                instance: 0,
                value: Batch::noop(),
            },
            (true, false, true),
        ),
        (
            Message::Accepted {
                ballot: b,
                instances: vec![0],
            },
            (false, true, true),
        ),
        (
            Message::Heartbeat {
                ballot: b,
                decided_below: 0,
                next_instance: 0,
            },
            (true, true, true),
        ),
        (Message::Trim { below: 0 }, (true, false, false)),
        (
            Message::Redirect {
                client: 1,
                leader: None,
            },
            (false, false, true),
        ),
        (
            Message::Progress { delivered_below: 0 },
            (false, true, false),
        ),
        (
            Message::PeerFetch {
                from: Default::default(),
            },
            (false, false, true),
        ),
    ];
    for (msg, (acceptor, proposer, learner)) in cases {
        let t = takers(&msg);
        assert_eq!(
            (t.acceptor, t.proposer, t.learner),
            (acceptor, proposer, learner),
            "{msg:?}"
        );
    }
}

#[test]
fn roles_tick_on_the_period_the_config_gives() {
    let cfg = ProtocolConfig {
        tick_us: 5_000,
        ..ProtocolConfig::default()
    };
    let mut d = replica(1, &cfg);
    assert!(d.tick_if_due(ms(0)));
    assert!(!d.tick_if_due(ms(4)), "ticked before the period");
    assert!(d.tick_if_due(ms(5)));
    assert_eq!(d.next_tick(), ms(10));
}

#[test]
fn messages_leave_only_through_a_commit_and_never_when_it_fails() {
    let cfg = ProtocolConfig::default();
    // Replica 2 times out and prepares: its round must be durable before its Prepares leave.
    let mut d = replica(2, &cfg);
    d.begin_turn(ms(0));
    d.tick_if_due(ms(0));
    let later = ms(cfg.leader_timeout_ms + cfg.takeover_backoff_ms + 1);
    d.begin_turn(later);
    d.tick_if_due(later);
    let pending = d.end_turn(later, &mut Logged).unwrap();
    assert!(
        pending
            .changes()
            .iter()
            .any(|c| matches!(c, Change::ProposerRound(_))),
        "{pending:?}"
    );
    assert!(!pending.sends().is_empty());
    // A store that fails keeps every message in: the only way out is a successful commit.
    assert_eq!(
        pending.clone().commit(&mut BrokenDisk, later),
        Err("disk gone")
    );
    let sent = pending.commit(&mut Volatile, later).unwrap();
    let prepared: Vec<NodeId> = sent
        .iter()
        .filter(|e| matches!(e.msg, Message::Prepare { .. }))
        .map(|e| e.to)
        .collect();
    assert_eq!(
        prepared,
        vec![1, 3],
        "to the other acceptors first: {sent:?}"
    );
}

#[test]
fn a_replicas_messages_to_itself_wait_for_its_next_turn_and_votes_merge() {
    let cfg = ProtocolConfig::default();
    let mut d = replica(1, &cfg);
    // Votes for three instances of one ballot, to two nodes, one of them this node.
    let b = Ballot::new(1, 1);
    let votes: Vec<Envelope> = (0..3)
        .flat_map(|i| {
            [1u16, 2].map(|to| Envelope {
                to,
                msg: Message::Accepted {
                    ballot: b,
                    instances: vec![i],
                },
            })
        })
        .collect();
    let remote = d.release(votes);
    assert_eq!(
        remote.len(),
        1,
        "three votes to node 2 leave as one: {remote:?}"
    );
    assert!(
        matches!(&remote[0].msg, Message::Accepted { instances, .. } if instances == &[0, 1, 2])
    );
    assert!(d.has_work(), "the vote to itself waits for the next turn");
}

#[test]
fn client_ids_carry_node_session_and_index() {
    assert_eq!(client_id(9, 7, 3), (9u64 << 48) | (7 << 16) | 3);
    let cfg = ProtocolConfig::default();
    let s = Sessions::new(9, 7, 3, &cfg, &[1, 2]);
    let ids: Vec<u64> = s.ids().collect();
    assert_eq!(
        ids,
        vec![client_id(9, 7, 0), client_id(9, 7, 1), client_id(9, 7, 2)]
    );
    // Another process session of the same node never reuses them.
    let again = Sessions::new(9, 8, 3, &cfg, &[1, 2]);
    assert!(again.ids().all(|id| !ids.contains(&id)));
}
