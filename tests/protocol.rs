//! The state machines one at a time, driven by hand.

use bytes::Bytes;
use ethpaxos::protocol::*;
use std::time::Duration;

fn members() -> Membership {
    Membership {
        proposers: vec![1, 2],
        acceptors: vec![11, 12, 13],
        learners: vec![21, 22],
    }
}

fn val(client: u64, seq: u64) -> ClientValue {
    ClientValue {
        client,
        seq,
        payload: Bytes::from(vec![seq as u8; 8]),
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What a state machine sent, released the only way there is: through a commit (to a store
/// that keeps nothing, as these tests need none).
fn sent(out: &mut Actions) -> Vec<Envelope> {
    let Ok(sends) = out.take_pending().commit(&mut Volatile, Duration::ZERO);
    sends
}

fn sent_to(out: &Actions, to: NodeId) -> Vec<&Message> {
    out.sends()
        .iter()
        .filter(|e| e.to == to)
        .map(|e| &e.msg)
        .collect()
}

#[test]
fn ballots_order_by_round_then_proposer() {
    assert!(Ballot::new(2, 1) > Ballot::new(1, 9));
    assert!(Ballot::new(2, 2) > Ballot::new(2, 1));
    assert!(Ballot::ZERO < Ballot::new(0, 1));
}

#[test]
fn acceptor_separates_persistence_from_votes_and_rejects_stale_ballots() {
    let cfg = ProtocolConfig::default();
    let mut a = Acceptor::new(11, &cfg, members());
    let mut out = Actions::new();
    a.handle(
        std::time::Duration::from_millis(1000),
        2,
        Message::Prepare {
            ballot: Ballot::new(5, 2),
            from: 0,
        },
        &mut out,
    );
    assert_eq!(out.changes(), [Change::Promise(Ballot::new(5, 2))]);
    assert!(matches!(sent_to(&out, 2)[..], [Message::Promise { .. }]));

    let mut out = Actions::new();
    let value = Batch::new(vec![val(1, 0)]);
    a.handle(
        std::time::Duration::ZERO,
        1,
        Message::Accept {
            ballot: Ballot::new(4, 1),
            instance: 0,
            value: value.clone(),
        },
        &mut out,
    );
    assert!(
        out.changes().is_empty(),
        "a rejected accept changes nothing"
    );
    assert_eq!(
        sent_to(&out, 1),
        vec![&Message::Reject {
            promised: Ballot::new(5, 2),
            rejected: Ballot::new(4, 1)
        }]
    );

    let mut out = Actions::new();
    a.handle(
        std::time::Duration::ZERO,
        2,
        Message::Accept {
            ballot: Ballot::new(5, 2),
            instance: 0,
            value: value.clone(),
        },
        &mut out,
    );
    assert!(matches!(out.changes(), [Change::Accept(e)] if e.instance == 0 && e.value == value));
    // The vote goes to the ballot's proposer and every learner, after the change above.
    for to in [2, 21, 22] {
        assert_eq!(
            sent_to(&out, to),
            vec![&Message::Accepted {
                ballot: Ballot::new(5, 2),
                instances: vec![0]
            }]
        );
    }

    // A restarted acceptor keeps its promise.
    let mut state = AcceptorState::default();
    state.apply(&Change::Promise(Ballot::new(5, 2)));
    let mut b = Acceptor::restore(11, &cfg, members(), state);
    let mut out = Actions::new();
    b.handle(
        std::time::Duration::from_millis(1000),
        1,
        Message::Prepare {
            ballot: Ballot::new(4, 1),
            from: 0,
        },
        &mut out,
    );
    assert!(matches!(sent_to(&out, 1)[..], [Message::Reject { .. }]));
}

#[test]
fn acceptor_splits_a_long_promise_into_frames_that_fit() {
    let cfg = ProtocolConfig {
        max_frame: 256,
        ..ProtocolConfig::default()
    };
    let mut a = Acceptor::new(11, &cfg, members());
    let mut out = Actions::new();
    for i in 0..50 {
        let value = Batch::new(vec![val(1, i)]);
        a.handle(
            std::time::Duration::ZERO,
            1,
            Message::Accept {
                ballot: Ballot::new(1, 1),
                instance: i,
                value,
            },
            &mut out,
        );
    }
    let mut out = Actions::new();
    a.handle(
        std::time::Duration::from_millis(1000),
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from: 10,
        },
        &mut out,
    );
    let chunks: Vec<_> = sent_to(&out, 2);
    assert!(chunks.len() > 1, "50 votes do not fit one 256-byte frame");
    let mut covered = 10;
    let mut reported = 0;
    for m in &chunks {
        let Message::Promise {
            chunk_start,
            chunk_end,
            end,
            entries,
            ..
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!(*chunk_start, covered, "chunks are contiguous");
        assert_eq!(*end, 50);
        covered = *chunk_end;
        reported += entries.len();
        let mut buf = Vec::new();
        let header = ethpaxos::wire::FrameHeader {
            dst: [0; 6],
            src: [0; 6],
            cluster: 1,
            sender: 11,
        };
        ethpaxos::wire::encode(&header, m, 256, &mut buf).expect("every chunk fits");
    }
    assert_eq!(covered, 50);
    assert_eq!(reported, 40);
}

#[test]
fn leader_elected_batches_and_decides() {
    let cfg = ProtocolConfig {
        batch_max_values: 3,
        ..ProtocolConfig::default()
    };
    let mut p = Proposer::new(1, &cfg, members(), Duration::ZERO, 0);
    let mut acceptors: Vec<Acceptor> = [11, 12, 13]
        .iter()
        .map(|id| Acceptor::new(*id, &cfg, members()))
        .collect();
    let mut out = Actions::new();
    p.tick(ms(cfg.leader_timeout_ms), &mut out);
    assert_eq!(
        out.changes(),
        vec![Change::ProposerRound(1)],
        "the round is made durable before the prepare leaves"
    );
    let prepares: Vec<_> = sent(&mut out);
    assert_eq!(prepares.len(), 3);
    let now = ms(cfg.leader_timeout_ms);
    // Two promises make a quorum.
    for (k, env) in prepares.into_iter().take(2).enumerate() {
        let mut a_out = Actions::new();
        acceptors[k].handle(now, 1, env.msg, &mut a_out);
        for e in sent(&mut a_out) {
            p.handle(now, acceptors[k].id(), e.msg, &mut out);
        }
    }
    assert!(p.is_leader());
    assert!(out.events.contains(&Event::BecameLeader {
        ballot: Ballot::new(1, 1)
    }));

    // A lone value goes out at once; then values wait for a full batch while one is open.
    let mut out = Actions::new();
    p.handle(
        now,
        100,
        Message::ClientRequest {
            values: vec![val(7, 0)],
        },
        &mut out,
    );
    let accepts = |out: &Actions| {
        out.sends()
            .iter()
            .filter(|e| e.to == 11 && matches!(e.msg, Message::Accept { .. }))
            .count()
    };
    assert_eq!(accepts(&out), 1, "a lone value is not held");
    let mut out = Actions::new();
    p.handle(
        now,
        100,
        Message::ClientRequest {
            values: vec![val(7, 1), val(7, 2)],
        },
        &mut out,
    );
    assert_eq!(accepts(&out), 0, "held for a fuller batch");
    p.handle(
        now,
        100,
        Message::ClientRequest {
            values: vec![val(7, 3), val(7, 4)],
        },
        &mut out,
    );
    assert_eq!(accepts(&out), 1, "a full batch of 3 leaves");
    let first_batch = out.sends().iter().find_map(|e| match &e.msg {
        Message::Accept { value, .. } if e.to == 11 => Some(value.len()),
        _ => None,
    });
    assert_eq!(first_batch, Some(3));
    // The rest leaves after the maximum delay.
    let mut out = Actions::new();
    p.tick(
        now + Duration::from_micros(cfg.batch_max_delay_us),
        &mut out,
    );
    assert_eq!(accepts(&out), 1);
    assert_eq!(p.open_instances(), 3);
    // Votes from a quorum decide instances.
    for inst in 0..3 {
        for a in [11, 12] {
            p.handle(
                now,
                a,
                Message::Accepted {
                    ballot: Ballot::new(1, 1),
                    instances: vec![inst],
                },
                &mut out,
            );
        }
    }
    assert_eq!(p.open_instances(), 0);
    assert_eq!(p.decided_below(), 3);
}

#[test]
fn standbys_take_over_in_rank_order() {
    let cfg = ProtocolConfig::default();
    let m = Membership {
        proposers: vec![1, 2, 3],
        ..members()
    };
    let mut p2 = Proposer::new(2, &cfg, m.clone(), Duration::ZERO, 0);
    let mut p3 = Proposer::new(3, &cfg, m, Duration::ZERO, 0);
    let mut out = Actions::new();
    let leader = Ballot::new(1, 1);
    for p in [&mut p2, &mut p3] {
        p.handle(
            ms(10),
            1,
            Message::Heartbeat {
                ballot: leader,
                decided_below: 0,
                next_instance: 0,
            },
            &mut out,
        );
    }
    // The leader falls silent. Rank 1 (node 2) moves after the timeout; rank 2 waits a backoff more.
    let t = ms(10 + cfg.leader_timeout_ms + cfg.takeover_backoff_ms);
    let mut o2 = Actions::new();
    let mut o3 = Actions::new();
    p2.tick(t, &mut o2);
    p3.tick(t, &mut o3);
    assert!(o2
        .sends()
        .iter()
        .any(|e| matches!(e.msg, Message::Prepare { ballot, .. } if ballot == Ballot::new(2, 2))));
    assert!(o3.sends().is_empty(), "the second standby waits its turn");
}

#[test]
fn learner_delivers_in_order_once_and_skips_noops() {
    let cfg = ProtocolConfig::default();
    let mut l = Learner::new(21, &cfg, members(), Duration::ZERO);
    let b = Ballot::new(1, 1);
    let mut out = Actions::new();
    let accept = |i, v: Batch| Message::Accept {
        ballot: b,
        instance: i,
        value: v,
    };
    // Instance 1 decided before instance 0: nothing delivered yet.
    l.handle(
        ms(1),
        1,
        accept(1, Batch::new(vec![val(5, 1), val(5, 0)])),
        &mut out,
    );
    l.handle(
        ms(1),
        11,
        Message::Accepted {
            ballot: b,
            instances: vec![1],
        },
        &mut out,
    );
    l.handle(
        ms(1),
        12,
        Message::Accepted {
            ballot: b,
            instances: vec![1],
        },
        &mut out,
    );
    assert!(out.deliver.is_empty());
    // Instance 0 carries a value also in instance 1 (a client retry): delivered once.
    l.handle(ms(1), 1, accept(0, Batch::new(vec![val(5, 0)])), &mut out);
    l.handle(
        ms(1),
        11,
        Message::Accepted {
            ballot: b,
            instances: vec![0],
        },
        &mut out,
    );
    assert!(out.deliver.is_empty(), "one vote is not a quorum");
    l.handle(
        ms(1),
        13,
        Message::Accepted {
            ballot: b,
            instances: vec![0],
        },
        &mut out,
    );
    let delivered: Vec<_> = out
        .deliver
        .iter()
        .flat_map(|d| d.values.iter().map(|v| (d.instance, v.seq)))
        .collect();
    assert_eq!(delivered, vec![(0, 0), (1, 1)]);
    // A no-op is decided but delivers nothing.
    let mut out = Actions::new();
    l.handle(ms(1), 1, accept(2, Batch::noop()), &mut out);
    for a in [11, 12] {
        l.handle(
            ms(1),
            a,
            Message::Accepted {
                ballot: b,
                instances: vec![2],
            },
            &mut out,
        );
    }
    assert!(out.deliver.is_empty());
    assert_eq!(l.next_instance(), 3);
    // Votes from a stranger do not count.
    let mut out = Actions::new();
    l.handle(ms(1), 1, accept(3, Batch::new(vec![val(6, 0)])), &mut out);
    for a in [11, 99, 98] {
        l.handle(
            ms(1),
            a,
            Message::Accepted {
                ballot: b,
                instances: vec![3],
            },
            &mut out,
        );
    }
    assert!(out.deliver.is_empty());
}

#[test]
fn learner_catches_up_whole_ranges_from_acceptors() {
    let cfg = ProtocolConfig::default();
    let mut acceptors: Vec<Acceptor> = [11, 12, 13]
        .iter()
        .map(|id| Acceptor::new(*id, &cfg, members()))
        .collect();
    let b = Ballot::new(1, 1);
    let n = 3000u64;
    for a in acceptors.iter_mut() {
        let mut out = Actions::new();
        for i in 0..n {
            a.handle(
                std::time::Duration::ZERO,
                1,
                Message::Accept {
                    ballot: b,
                    instance: i,
                    value: Batch::new(vec![val(1, i)]),
                },
                &mut out,
            );
        }
    }
    let mut l = Learner::new(21, &cfg, members(), Duration::ZERO);
    let mut out = Actions::new();
    l.handle(
        ms(1),
        1,
        Message::Heartbeat {
            ballot: b,
            decided_below: n,
            next_instance: n,
        },
        &mut out,
    );
    let mut now = ms(1);
    let mut ticks = 0;
    let mut request_rounds = 0;
    let mut max_answer = 0;
    while l.next_instance() < n {
        ticks += 1;
        assert!(ticks < 10, "catch-up stalled at {}", l.next_instance());
        now += ms(cfg.catchup_interval_ms.max(cfg.catchup_delay_ms));
        let mut out = Actions::new();
        l.tick(now, &mut out);
        let requests: Vec<_> = sent(&mut out)
            .into_iter()
            .filter(|e| matches!(e.msg, Message::CatchupRequest { .. }))
            .collect();
        request_rounds += usize::from(!requests.is_empty());
        for env in requests {
            let a = acceptors
                .iter_mut()
                .find(|a| a.id() == env.to)
                .expect("an acceptor");
            let mut a_out = Actions::new();
            a.handle(ms(0), 21, env.msg, &mut a_out);
            // An answer is bounded, however much is asked for.
            assert!(a_out.sends().len() as u64 <= cfg.answer_max_frames);
            max_answer = max_answer.max(a_out.sends().len());
            for reply in sent(&mut a_out) {
                l.handle(now, a.id(), reply.msg, &mut Actions::new());
            }
        }
    }
    // 34 votes of 42 bytes fill a 1500-byte reply, 32 replies a page: 1088 instances a
    // round, so 3000 instances take three rounds, each answer a full page.
    assert_eq!(max_answer as u64, cfg.answer_max_frames);
    assert_eq!(request_rounds, 3);
}

#[test]
fn learner_below_the_trim_point_gets_a_clear_error() {
    let cfg = ProtocolConfig::default();
    let mut a = Acceptor::new(11, &cfg, members());
    let mut out = Actions::new();
    a.handle(ms(0), 1, Message::Trim { below: 500 }, &mut out);
    assert_eq!(out.changes(), [Change::Trim(500)]);
    let mut out = Actions::new();
    a.handle(
        ms(0),
        21,
        Message::CatchupRequest { from: 0, to: 100 },
        &mut out,
    );
    let mut l = Learner::new(21, &cfg, members(), Duration::ZERO);
    let mut l_out = Actions::new();
    for e in sent(&mut out) {
        l.handle(ms(1), 11, e.msg, &mut l_out);
    }
    assert_eq!(
        l_out.events,
        vec![Event::Trimmed {
            needed: 0,
            trim: 500
        }]
    );
    assert_eq!(l.trimmed(), Some(500));
    let mut l_out = Actions::new();
    l.tick(ms(10_000), &mut l_out);
    assert!(
        !l_out
            .sends()
            .iter()
            .any(|e| matches!(e.msg, Message::CatchupRequest { .. })),
        "it stops asking instead of hanging on requests that cannot succeed"
    );
}

#[test]
fn client_refuses_values_that_cannot_fit_a_frame() {
    let cfg = ProtocolConfig::default();
    let mut c = Client::new(1, &cfg, vec![1, 2]);
    let max = cfg.max_value_bytes();
    assert!(c.submit(Duration::ZERO, Bytes::from(vec![0; max])).is_ok());
    let err = c
        .submit(Duration::ZERO, Bytes::from(vec![0; max + 1]))
        .unwrap_err();
    assert_eq!(err, SubmitError::ValueTooLarge { len: max + 1, max });
    assert!(err.to_string().contains("max_frame"));
}

#[test]
fn client_retries_with_the_same_sequence_number() {
    let cfg = ProtocolConfig::default();
    let mut c = Client::new(9, &cfg, vec![1, 2]);
    let seq = c.submit(Duration::ZERO, Bytes::from_static(b"x")).unwrap();
    let mut out = Actions::new();
    c.flush(&mut out);
    assert_eq!(out.sends().len(), 1, "to the presumed leader only");
    let mut out = Actions::new();
    c.tick(ms(cfg.client_timeout_ms), &mut out);
    assert_eq!(out.sends().len(), 2, "after a timeout, to every proposer");
    for e in out.sends() {
        assert!(matches!(&e.msg, Message::ClientRequest { values } if values[0].seq == seq));
    }
    assert!(c.on_delivered(ms(600), seq).is_some());
    assert!(c.on_delivered(ms(601), seq).is_none(), "acknowledged once");
}

#[test]
fn config_validation_names_the_field() {
    let bad = ProtocolConfig {
        max_frame: 64,
        ..ProtocolConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_frame"));
    let bad = ProtocolConfig {
        leader_timeout_ms: 10,
        ..ProtocolConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("leader_timeout_ms"));
    let bad = Membership {
        acceptors: vec![11, 12],
        ..members()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("at least 3"));
    let bad = Membership {
        learners: vec![21, 21],
        ..members()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("twice"));
    let yaml = "window: 8\nno_such_knob: 1\n";
    let err = serde_yaml_ng::from_str::<ProtocolConfig>(yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_knob"), "{err}");
}

/// Acceptors holding `n` votes each at ballot 1.1.
fn acceptors_with_history(cfg: &ProtocolConfig, n: u64) -> Vec<Acceptor> {
    let mut acceptors: Vec<Acceptor> = [11, 12, 13]
        .iter()
        .map(|id| Acceptor::new(*id, cfg, members()))
        .collect();
    for a in acceptors.iter_mut() {
        for i in 0..n {
            a.handle(
                ms(0),
                1,
                Message::Accept {
                    ballot: Ballot::new(1, 1),
                    instance: i,
                    value: Batch::new(vec![val(1, i)]),
                },
                &mut Actions::new(),
            );
        }
    }
    acceptors
}

#[test]
fn phase1_over_a_long_history_completes_in_bounded_pages_through_a_small_receive_queue() {
    let cfg = ProtocolConfig::default();
    let n = 20_000;
    let mut acceptors = acceptors_with_history(&cfg, n);
    // A restarted proposer that knows nothing: phase 1 from instance 0.
    let mut p = Proposer::new(2, &cfg, members(), ms(0), 1);
    let mut now = ms(10_000);
    let mut to_acceptors = Actions::new();
    p.tick(now, &mut to_acceptors);
    // The proposer's receive queue holds 64 frames: whatever arrives past that in one
    // round is lost, as on a socket whose buffer is full.
    const RX_QUEUE: usize = 64;
    let (mut rounds, mut largest_answer, mut dropped) = (0, 0, 0);
    while !p.is_leader() {
        rounds += 1;
        assert!(rounds < 2_000, "phase 1 never completed");
        let mut answers = Vec::new();
        for env in sent(&mut to_acceptors) {
            let Some(a) = acceptors.iter_mut().find(|a| a.id() == env.to) else {
                continue;
            };
            let mut out = Actions::new();
            a.handle(now, 2, env.msg, &mut out);
            largest_answer = largest_answer.max(out.sends().len());
            answers.extend(sent(&mut out).into_iter().map(|e| (a.id(), e.msg)));
        }
        dropped += answers.len().saturating_sub(RX_QUEUE);
        for (from, msg) in answers.into_iter().take(RX_QUEUE) {
            p.handle(now, from, msg, &mut to_acceptors);
        }
        if to_acceptors.sends().is_empty() {
            // Nothing more asked for: the retransmit timeout re-asks for what is missing.
            now += ms(cfg.retransmit_timeout_ms);
            p.tick(now, &mut to_acceptors);
        }
    }
    assert!(
        largest_answer as u64 <= cfg.answer_max_frames,
        "an answer of {largest_answer} frames"
    );
    assert!(
        dropped > 0,
        "the queue never overflowed: the test proves nothing"
    );
    // It leads, and re-proposes the history at its ballot from the first instance on.
    let first = to_acceptors.sends().iter().find_map(|e| match &e.msg {
        Message::Accept {
            instance: 0, value, ..
        } => Some(value.clone()),
        _ => None,
    });
    assert_eq!(first, Some(Batch::new(vec![val(1, 0)])));
}

#[test]
fn an_acceptor_follows_its_leader_for_a_lease_and_then_lets_another_prepare() {
    let cfg = ProtocolConfig::default();
    let mut a = Acceptor::new(11, &cfg, members());
    let prepare = |round, p| Message::Prepare {
        ballot: Ballot::new(round, p),
        from: 0,
    };
    let mut out = Actions::new();
    a.handle(ms(0), 1, prepare(1, 1), &mut out);
    assert_eq!(a.promised(), Ballot::new(1, 1));
    // The leader's heartbeats renew the lease; a standby's higher ballot gets no answer.
    let hb = Message::Heartbeat {
        ballot: Ballot::new(1, 1),
        decided_below: 0,
        next_instance: 0,
    };
    a.handle(ms(100), 1, hb, &mut out);
    let mut out = Actions::new();
    a.handle(ms(150), 2, prepare(2, 2), &mut out);
    assert!(out.sends().is_empty() && out.changes().is_empty());
    assert_eq!(a.promised(), Ballot::new(1, 1));
    assert_eq!(a.counters().deferred_prepares, 1);
    // The leader itself may always prepare again (it restarted).
    a.handle(ms(160), 1, prepare(3, 1), &mut Actions::new());
    assert_eq!(a.promised(), Ballot::new(3, 1));
    // Once the lease lapses, the standby is promised.
    let mut out = Actions::new();
    a.handle(ms(160) + cfg.leader_lease(), 2, prepare(4, 2), &mut out);
    assert_eq!(a.promised(), Ballot::new(4, 2));
    assert_eq!(out.changes(), [Change::Promise(Ballot::new(4, 2))]);
}

#[test]
fn an_acceptor_refuses_the_top_round_and_votes_that_would_not_fit_an_answer() {
    let cfg = ProtocolConfig::default();
    let mut a = Acceptor::new(11, &cfg, members());
    let mut out = Actions::new();
    a.handle(
        ms(0),
        1,
        Message::Prepare {
            ballot: Ballot::new(u32::MAX, 1),
            from: 0,
        },
        &mut out,
    );
    assert!(
        out.is_empty(),
        "the top round is neither promised nor answered"
    );
    assert_eq!(a.promised(), Ballot::ZERO);
    // A batch that fits a 2a frame but not a 1b page: never stored, never answered.
    let room = cfg.max_payload()
        - ethpaxos::wire::sizes::ACCEPT_FIXED
        - ethpaxos::wire::sizes::BATCH_FIXED
        - ethpaxos::wire::sizes::VALUE_FIXED;
    let big = ClientValue {
        client: 1,
        seq: 0,
        payload: Bytes::from(vec![1; room]),
    };
    let accept = Message::Accept {
        ballot: Ballot::new(1, 1),
        instance: 0,
        value: Batch::new(vec![big]),
    };
    assert!(ethpaxos::wire::sizes::payload(&accept) <= cfg.max_payload());
    let mut out = Actions::new();
    a.handle(ms(0), 1, accept, &mut out);
    assert!(out.is_empty());
    assert!(a.state().accepted.is_empty());
    assert_eq!(a.counters().refused_top_round, 1);
    assert_eq!(a.counters().refused_oversized, 1);
}

#[test]
fn a_proposer_never_wraps_its_round() {
    let cfg = ProtocolConfig::default();
    let mut p = Proposer::new(1, &cfg, members(), ms(0), 0);
    // An acceptor reports a promise just below the top: the next round would be the top.
    p.handle(
        ms(1),
        11,
        Message::Reject {
            promised: Ballot::new(u32::MAX - 1, 2),
            rejected: Ballot::new(1, 1),
        },
        &mut Actions::new(),
    );
    let mut out = Actions::new();
    p.tick(ms(cfg.leader_timeout_ms + 10), &mut out);
    assert!(
        out.sends().is_empty() && out.changes().is_empty(),
        "{out:?}"
    );
    assert_eq!(
        out.events,
        vec![Event::NoRoundLeft {
            highest: Ballot::new(u32::MAX - 1, 2)
        }]
    );
}

/// A proposer leading at ballot 1.1 over fresh acceptors.
fn leader(cfg: &ProtocolConfig, now: Duration) -> Proposer {
    let mut p = Proposer::new(1, cfg, members(), ms(0), 0);
    let mut out = Actions::new();
    p.tick(now, &mut out);
    for a in [11, 12] {
        p.handle(
            now,
            a,
            Message::Promise {
                ballot: Ballot::new(1, 1),
                from: 0,
                end: 0,
                log_end: 0,
                chunk_start: 0,
                chunk_end: 0,
                trim: 0,
                entries: Vec::new(),
            },
            &mut out,
        );
    }
    assert!(p.is_leader());
    p
}

fn trims(out: &Actions) -> Vec<InstanceId> {
    out.sends()
        .iter()
        .filter_map(|e| match e.msg {
            Message::Trim { below } if e.to == 11 => Some(below),
            _ => None,
        })
        .collect()
}

#[test]
fn trim_follows_the_newest_snapshot_a_live_learner_holds_and_no_learner_holds_it_back() {
    let cfg = ProtocolConfig {
        trim_keep: 10,
        ..ProtocolConfig::default()
    };
    let mut now = ms(200);
    let mut p = leader(&cfg, now);
    let progress = |below| Message::Progress {
        delivered_below: below,
    };
    let held = |below| Message::SnapshotHeld { below };
    let tick = |p: &mut Proposer, now: Duration| {
        let mut out = Actions::new();
        p.tick(now, &mut out);
        trims(&out)
    };
    // Nothing is trimmed before a learner holds a snapshot, however far learners went.
    p.handle(now, 21, progress(1_000), &mut Actions::new());
    p.handle(now, 22, progress(50), &mut Actions::new());
    now += ms(cfg.trim_interval_ms);
    assert_eq!(
        tick(&mut p, now),
        Vec::<u64>::new(),
        "trimmed with no snapshot anywhere"
    );
    // Learner 21 holds a snapshot at 600: trim passes the slow learner 22 (it will fetch
    // from a peer's journal or install that snapshot), keeping `trim_keep`.
    p.handle(now, 21, held(600), &mut Actions::new());
    p.handle(now, 22, held(40), &mut Actions::new());
    now += ms(cfg.trim_interval_ms);
    assert_eq!(tick(&mut p, now), vec![590]);
    // Learner 21 falls silent: its snapshot stops counting once it is not heard from for
    // the learner timeout (it could not serve it), and trim stays where it was.
    let stop = now;
    while now < stop + ms(cfg.learner_timeout_ms) + ms(2 * cfg.trim_interval_ms) {
        now += ms(cfg.progress_interval_ms);
        p.handle(now, 22, held(40), &mut Actions::new());
        let t = tick(&mut p, now);
        if now > stop + ms(cfg.learner_timeout_ms) + ms(cfg.trim_interval_ms) {
            assert!(t.iter().all(|b| *b <= 590), "{t:?}");
        }
    }
    // A newer snapshot of a live learner moves it on.
    p.handle(now, 22, held(2_000), &mut Actions::new());
    now += ms(cfg.trim_interval_ms);
    assert_eq!(tick(&mut p, now), vec![1_990]);
}

/// A learner stranded behind the acceptors' trim with no peer journal holding what it needs,
/// and the peer learners' images: what it asks and what it installs.
#[test]
fn a_stranded_learner_fetches_a_peers_image_in_chunks_resumes_after_a_loss_and_refuses_a_bad_one() {
    let cfg = ProtocolConfig::default();
    let members = Membership {
        learners: vec![21, 22, 23],
        ..members()
    };
    let mut l = Learner::new(21, &cfg, members, ms(0));
    let mut out = Actions::new();
    let mut now = ms(0);
    // Acceptors trimmed below 500; both peers' journals start after 0.
    l.handle(
        now,
        11,
        Message::CatchupReply {
            trim: 500,
            entries: Vec::new(),
        },
        &mut out,
    );
    let lacks = |from: Position| Message::PeerValues {
        from,
        through: 0,
        oldest: 400,
        end: 900,
        values: Vec::new(),
        last: true,
    };
    // What it asks of peers (its progress reports to proposers aside).
    let asked = |l: &mut Learner, now: Duration| -> Vec<Envelope> {
        let mut out = Actions::new();
        l.tick(now, &mut out);
        sent(&mut out)
            .into_iter()
            .filter(|e| !matches!(e.msg, Message::Progress { .. }))
            .collect()
    };
    for _ in 0..2 {
        now += ms(cfg.catchup_interval_ms);
        for e in asked(&mut l, now) {
            if let Message::PeerFetch { from } = e.msg {
                l.handle(now, e.to, lacks(from), &mut Actions::new());
            }
        }
    }
    // Every journal lacks instance 0: it asks a peer for an image covering it.
    now += ms(cfg.catchup_interval_ms);
    let ask = asked(&mut l, now);
    let Some((
        peer,
        Message::SnapshotFetch {
            at_least, offset, ..
        },
    )) = ask.iter().map(|e| (e.to, e.msg.clone())).next()
    else {
        panic!("no image fetch: {ask:?}");
    };
    assert_eq!((at_least, offset), (0, 0));
    // A state with one client's values 0..=9 delivered, at 600.0.
    let mut state = LearnerSnapshot {
        next: 600,
        ..Default::default()
    };
    for seq in 0..10 {
        state.replay_value(5, seq);
    }
    let below = Position {
        instance: 600,
        index: 0,
    };
    let bytes = image::encode(cfg.cluster_id, below, &state, Some(b"application state"));
    let chunk = |bytes: &[u8], offset: usize, len: usize, last: bool| Message::SnapshotChunk {
        below,
        total: bytes.len() as u64,
        offset: offset as u64,
        last,
        data: Bytes::copy_from_slice(&bytes[offset..(offset + len).min(bytes.len())]),
    };
    // A damaged image (one flipped byte): refused by name, the peer left for another.
    let mut damaged = bytes.clone();
    damaged[20] ^= 1;
    let mut out = Actions::new();
    l.handle(now, peer, chunk(&damaged, 0, 30, false), &mut out);
    l.handle(
        now,
        peer,
        chunk(&damaged, 30, damaged.len(), true),
        &mut out,
    );
    assert!(
        matches!(&out.events[..], [Event::SnapshotRefused { from, why }] if *from == peer && why.contains("checksum")),
        "{:?}",
        out.events
    );
    assert!(out.installs.is_empty());
    // The next peer's image arrives with its second chunk lost: asked again from where it
    // stands, not from the start.
    now += ms(cfg.catchup_interval_ms);
    let ask = asked(&mut l, now);
    let other = ask[0].to;
    assert_ne!(other, peer, "it asked the peer whose image was bad again");
    let mut out = Actions::new();
    l.handle(now, other, chunk(&bytes, 0, 20, false), &mut out);
    l.handle(now, other, chunk(&bytes, 40, 20, false), &mut out);
    now += ms(cfg.catchup_interval_ms);
    let ask = asked(&mut l, now);
    assert!(
        matches!(ask[0].msg, Message::SnapshotFetch { offset: 20, below: b, .. } if b == below),
        "{ask:?}"
    );
    // The rest, with an early chunk held: the image is installed.
    l.handle(now, other, chunk(&bytes, 20, 20, false), &mut out);
    l.handle(now, other, chunk(&bytes, 60, bytes.len(), true), &mut out);
    assert_eq!(out.installs.len(), 1, "{:?}", out.events);
    assert_eq!(out.installs[0].image.below, below);
    assert_eq!(
        out.installs[0].image.app.as_deref(),
        Some(&b"application state"[..])
    );
    assert_eq!(l.next_instance(), 600);
    assert_eq!(l.trimmed(), None);
    // From here it delivers instance 600 on; the image's values are never delivered again.
    let mut out = Actions::new();
    let v = |seq| ClientValue {
        client: 5,
        seq,
        payload: Bytes::new(),
    };
    l.handle(
        now,
        1,
        Message::Accept {
            ballot: Ballot::new(1, 1),
            instance: 600,
            value: Batch::new(vec![v(9), v(10)]),
        },
        &mut out,
    );
    for a in [11, 12] {
        l.handle(
            now,
            a,
            Message::Accepted {
                ballot: Ballot::new(1, 1),
                instances: vec![600],
            },
            &mut out,
        );
    }
    assert_eq!(out.deliver.len(), 1);
    assert_eq!(out.deliver[0].values, vec![v(10)]);
    assert_eq!(out.deliver[0].indexes, vec![1]);
}

#[test]
fn a_learner_running_an_application_refuses_an_image_without_its_state_or_of_another_cluster() {
    let cfg = ProtocolConfig::default();
    let below = Position {
        instance: 50,
        index: 0,
    };
    let state = LearnerSnapshot {
        next: 50,
        ..Default::default()
    };
    for (bytes, want) in [
        (
            image::encode(cfg.cluster_id, below, &state, None),
            "no application state",
        ),
        (
            image::encode(cfg.cluster_id + 1, below, &state, Some(b"x")),
            "cluster",
        ),
    ] {
        let mut l = Learner::new(21, &cfg, members(), ms(0)).needing_app_state();
        let mut now = ms(0);
        l.handle(
            now,
            11,
            Message::CatchupReply {
                trim: 10,
                entries: Vec::new(),
            },
            &mut Actions::new(),
        );
        let mut peer = None;
        for _ in 0..4 {
            now += ms(cfg.catchup_interval_ms);
            let mut out = Actions::new();
            l.tick(now, &mut out);
            for e in sent(&mut out) {
                match e.msg {
                    Message::PeerFetch { from } => l.handle(
                        now,
                        e.to,
                        Message::PeerValues {
                            from,
                            through: from.instance,
                            oldest: 5,
                            end: 60,
                            values: Vec::new(),
                            last: true,
                        },
                        &mut Actions::new(),
                    ),
                    Message::SnapshotFetch { .. } => peer = Some(e.to),
                    _ => {}
                }
            }
            if peer.is_some() {
                break;
            }
        }
        let peer = peer.expect("it asked for an image");
        let mut out = Actions::new();
        l.handle(
            now,
            peer,
            Message::SnapshotChunk {
                below,
                total: bytes.len() as u64,
                offset: 0,
                last: true,
                data: Bytes::from(bytes),
            },
            &mut out,
        );
        assert!(out.installs.is_empty());
        assert!(
            matches!(&out.events[..], [Event::SnapshotRefused { why, .. }] if why.contains(want)),
            "{want}: {:?}",
            out.events
        );
        assert_eq!(l.next_instance(), 0);
    }
}

#[test]
fn a_preparing_proposer_keeps_standbys_quiet_once_a_quorum_answers() {
    let cfg = ProtocolConfig {
        answer_max_frames: 1,
        max_frame: 256,
        ..ProtocolConfig::default()
    };
    let mut acceptors = acceptors_with_history(&cfg, 2_000);
    let mut p = Proposer::new(2, &cfg, members(), ms(0), 1);
    let mut now = ms(10_000);
    let mut out = Actions::new();
    p.tick(now, &mut out);
    let heartbeats = |out: &Actions| {
        out.sends()
            .iter()
            .filter(|e| e.to == 1 && matches!(e.msg, Message::Heartbeat { .. }))
            .count()
    };
    // Before any acceptor answers: no heartbeat (it may be cut off from them).
    now += ms(cfg.heartbeat_interval_ms);
    p.tick(now, &mut out);
    assert_eq!(heartbeats(&out), 0);
    // One page answered by each acceptor: it has a quorum answering and says so.
    let mut asks = Actions::new();
    for env in sent(&mut out) {
        if let Some(a) = acceptors.iter_mut().find(|a| a.id() == env.to) {
            let mut a_out = Actions::new();
            a.handle(now, 2, env.msg, &mut a_out);
            for e in sent(&mut a_out) {
                p.handle(now, a.id(), e.msg, &mut asks);
            }
        }
    }
    assert!(
        !p.is_leader(),
        "one page of 2000 instances is not the whole answer"
    );
    now += ms(cfg.heartbeat_interval_ms);
    let mut out = Actions::new();
    p.tick(now, &mut out);
    assert_eq!(heartbeats(&out), 1);
}

/// A replica (proposer and acceptor in one node) cut off from the others times out and
/// prepares, but asks its own acceptor only once another acceptor's promise would make a
/// quorum with it: cut off, it never raises its own acceptor's promise, so when the link is
/// back that acceptor does not reject the healthy leader's 2a's and force an election.
#[test]
fn an_isolated_replica_does_not_raise_its_own_acceptors_promise() {
    let replicas = Membership {
        proposers: vec![1, 2, 3],
        acceptors: vec![1, 2, 3],
        learners: vec![1, 2, 3],
    };
    let cfg = ProtocolConfig::default();
    let mut p = Proposer::new(2, &cfg, replicas.clone(), ms(0), 0);
    let mut own = Acceptor::new(2, &cfg, replicas.clone());
    let mut other = Acceptor::new(3, &cfg, replicas);
    // Long silence: rank 1 times out and prepares; the retransmits go on, unanswered.
    let mut out = Actions::new();
    let mut t = ms(0);
    for _ in 0..20 {
        t += ms(cfg.leader_timeout_ms + cfg.takeover_backoff_ms);
        p.tick(t, &mut out);
    }
    let prepares: Vec<_> = out
        .sends()
        .iter()
        .filter(|e| matches!(e.msg, Message::Prepare { .. }))
        .collect();
    assert!(!prepares.is_empty(), "it prepares after the timeout");
    assert!(
        prepares.iter().all(|e| e.to != 2),
        "cut off, it never asks its own acceptor: {prepares:?}"
    );
    // The link is back and acceptor 3 promises: now its own acceptor completes a quorum.
    let mut to_own = Vec::new();
    for env in sent(&mut out) {
        if env.to != 3 {
            continue;
        }
        let mut a_out = Actions::new();
        other.handle(t, 2, env.msg, &mut a_out);
        for reply in sent(&mut a_out) {
            if reply.to == 2 {
                let mut p_out = Actions::new();
                p.handle(t, 3, reply.msg, &mut p_out);
                to_own.extend(sent(&mut p_out).into_iter().filter(|e| e.to == 2));
            }
        }
    }
    assert!(
        matches!(
            to_own.first().map(|e| &e.msg),
            Some(Message::Prepare { .. })
        ),
        "{to_own:?}"
    );
    for env in to_own {
        let mut a_out = Actions::new();
        own.handle(t, 2, env.msg, &mut a_out);
        for reply in sent(&mut a_out) {
            let mut p_out = Actions::new();
            p.handle(t, 2, reply.msg, &mut p_out);
        }
    }
    assert!(p.is_leader(), "its own promise completed the quorum");
}

/// A delivered value's position is its instance and its index in that instance's batch; a
/// duplicate a client resent is skipped and keeps its place, so the next value's index
/// counts it.
#[test]
fn positions_are_instance_and_index_in_the_batch() {
    let cfg = ProtocolConfig::default();
    let mut l = Learner::new(21, &cfg, members(), ms(0));
    let b = Ballot::new(1, 1);
    let mut out = Actions::new();
    let decide = |l: &mut Learner, instance: u64, batch: Batch, out: &mut Actions| {
        l.handle(
            ms(1),
            1,
            Message::Accept {
                ballot: b,
                instance,
                value: batch,
            },
            out,
        );
        for a in [11, 12] {
            l.handle(
                ms(1),
                a,
                Message::Accepted {
                    ballot: b,
                    instances: vec![instance],
                },
                out,
            );
        }
    };
    decide(&mut l, 0, Batch::new(vec![val(7, 0), val(8, 0)]), &mut out);
    // Instance 1 carries 7:0 again (a client retry) before 7:1.
    decide(&mut l, 1, Batch::new(vec![val(7, 0), val(7, 1)]), &mut out);
    let got: Vec<(String, u64, u64)> = out
        .deliver
        .iter()
        .flat_map(|d| {
            d.positioned()
                .map(|(p, v)| (p.to_string(), v.client, v.seq))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("0.0".to_string(), 7, 0),
            ("0.1".to_string(), 8, 0),
            ("1.1".to_string(), 7, 1)
        ]
    );
    assert!("12.x".parse::<Position>().is_err());
    assert_eq!(
        "12.3".parse::<Position>(),
        Ok(Position {
            instance: 12,
            index: 3
        })
    );
}

#[test]
fn a_peer_that_never_answers_is_left_for_the_others_and_then_for_a_snapshot() {
    // Learner 22 is down; 23's journal lacks what 21 needs. 21 must not ask 22 forever: it
    // counts it as lacking after a few silent intervals and goes on to an image.
    let cfg = ProtocolConfig::default();
    let members = Membership {
        learners: vec![21, 22, 23],
        ..members()
    };
    let mut l = Learner::new(21, &cfg, members, ms(0));
    let mut now = ms(0);
    l.handle(
        now,
        11,
        Message::CatchupReply {
            trim: 300,
            entries: Vec::new(),
        },
        &mut Actions::new(),
    );
    let mut asked_silent = 0;
    for _ in 0..40 {
        now += ms(cfg.catchup_interval_ms);
        let mut out = Actions::new();
        l.tick(now, &mut out);
        for e in sent(&mut out) {
            match (e.to, e.msg) {
                (22, Message::PeerFetch { .. }) => asked_silent += 1,
                (23, Message::PeerFetch { from }) => l.handle(
                    now,
                    23,
                    Message::PeerValues {
                        from,
                        through: from.instance,
                        oldest: 200,
                        end: 400,
                        values: Vec::new(),
                        last: true,
                    },
                    &mut Actions::new(),
                ),
                (_, Message::SnapshotFetch { .. }) => {
                    assert!((1..=3).contains(&asked_silent), "{asked_silent}");
                    return;
                }
                _ => {}
            }
        }
    }
    panic!("still asking the silent peer ({asked_silent} times), never an image");
}

#[test]
fn relayed_decisions_reach_learners_through_the_leader_and_decide_only_its_own_2a() {
    let cfg = ProtocolConfig {
        relay_decisions: true,
        ..ProtocolConfig::default()
    };
    let now = ms(200);
    let mut p = leader(&cfg, now);
    let mut out = Actions::new();
    sent(&mut out);
    p.handle(
        now,
        21,
        Message::ClientRequest {
            values: vec![val(7, 0)],
        },
        &mut out,
    );
    let accepts: Vec<Envelope> = sent(&mut out)
        .into_iter()
        .filter(|e| matches!(e.msg, Message::Accept { .. }))
        .collect();
    assert!(accepts.iter().any(|e| e.to == 21) && accepts.iter().any(|e| e.to == 11));
    let accept = accepts[0].msg.clone();
    let Message::Accept {
        ballot, instance, ..
    } = accept.clone()
    else {
        unreachable!()
    };

    // An acceptor votes to the leader only.
    let mut a = Acceptor::new(11, &cfg, members());
    a.handle(now, 1, accept.clone(), &mut out);
    let votes = sent(&mut out);
    assert_eq!(
        votes.iter().map(|e| e.to).collect::<Vec<_>>(),
        vec![1],
        "{votes:?}"
    );

    // A quorum of votes: the leader tells each learner once.
    for acc in [11, 12] {
        p.handle(
            now,
            acc,
            Message::Accepted {
                ballot,
                instances: vec![instance],
            },
            &mut out,
        );
    }
    let decided = Message::Decided {
        ballot,
        instances: vec![instance],
    };
    let told: Vec<Envelope> = sent(&mut out)
        .into_iter()
        .filter(|e| matches!(e.msg, Message::Decided { .. }))
        .collect();
    assert_eq!(
        told,
        vec![
            Envelope {
                to: 21,
                msg: decided.clone()
            },
            Envelope {
                to: 22,
                msg: decided.clone()
            },
        ]
    );

    // A learner holding the leader's 2a delivers on its word alone; from anyone but the
    // ballot's proposer the word counts for nothing.
    let mut l = Learner::new(21, &cfg, members(), ms(0));
    l.handle(now, 1, accept.clone(), &mut out);
    l.handle(now, 2, decided.clone(), &mut out);
    l.handle(now, 11, decided.clone(), &mut out);
    assert!(out.deliver.is_empty());
    l.handle(now, 1, decided.clone(), &mut out);
    assert_eq!(out.deliver.len(), 1);
    assert_eq!(out.deliver[0].values, vec![val(7, 0)]);

    // A learner that holds another ballot's value for the instance waits for the leader's
    // 2a, and then delivers that value, not the other.
    let mut l = Learner::new(22, &cfg, members(), ms(0));
    let mut out = Actions::new();
    let older = Ballot::new(ballot.round - 1, 2);
    l.handle(
        now,
        2,
        Message::Accept {
            ballot: older,
            instance,
            value: Batch::new(vec![val(9, 9)]),
        },
        &mut out,
    );
    l.handle(now, 1, decided, &mut out);
    assert!(out.deliver.is_empty(), "{:?}", out.deliver);
    l.handle(now, 1, accept, &mut out);
    assert_eq!(out.deliver.len(), 1);
    assert_eq!(out.deliver[0].values, vec![val(7, 0)]);
}
