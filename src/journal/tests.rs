use super::*;
use crate::protocol::{ClientValue, Position};
use bytes::Bytes;

fn cfg(policy: FsyncPolicy, segment_bytes: u64, retention: Retention) -> JournalConfig {
    JournalConfig {
        fsync_policy: policy,
        fsync_interval: Duration::from_millis(10),
        segment_bytes,
        retention,
    }
}

/// A learner stand-in: delivers `per` fresh values from each instance (every third instance
/// a no-op) and keeps the state a real learner would.
struct Feed {
    state: LearnerSnapshot,
    seq: u64,
}

impl Feed {
    fn from(state: LearnerSnapshot) -> Feed {
        let seq = state.dedup.get(&7).map_or(0, |d| d.below);
        Feed { state, seq }
    }

    /// One turn of `instances` instances into `j`; returns the durable point.
    fn turn(&mut self, j: &mut Journal, now: Duration, instances: u64) -> InstanceId {
        for _ in 0..instances {
            let instance = self.state.next;
            if instance % 3 != 2 {
                let values: Vec<_> = (0..2)
                    .map(|_| {
                        self.seq += 1;
                        ClientValue {
                            client: 7,
                            seq: self.seq - 1,
                            payload: Bytes::from(vec![instance as u8; 40]),
                        }
                    })
                    .collect();
                for v in &values {
                    assert!(self.state.replay_value(v.client, v.seq));
                }
                j.append(&Delivery {
                    instance,
                    indexes: vec![0, 1],
                    values,
                });
            }
            self.state.replay_through(instance + 1);
        }
        j.end_turn(now, &self.state).expect("memory never fails")
    }
}

fn open(files: &MemFiles, c: JournalConfig) -> (Journal, LearnerSnapshot, Recovery) {
    Journal::open(Box::new(files.clone()), c, 1).expect("opens")
}

#[test]
fn a_reopened_journal_resumes_at_the_learners_state_never_at_zero() {
    for policy in [FsyncPolicy::Sync, FsyncPolicy::Async, FsyncPolicy::None] {
        let files = MemFiles::default();
        let (mut j, s, r) = open(&files, cfg(policy, 1 << 20, Retention::default()));
        assert_eq!((s.next, r.segments), (0, 0));
        let mut feed = Feed::from(s);
        for t in 0..20 {
            feed.turn(&mut j, Duration::from_millis(t * 20), 5);
        }
        j.sync(Duration::from_secs(1)).unwrap();
        drop(j);
        let (_, s, r) = open(&files, cfg(policy, 1 << 20, Retention::default()));
        assert_eq!(s, feed.state, "{policy:?}");
        assert_eq!(s.next, 100);
        assert_eq!(r.cut, None);
    }
}

#[test]
fn a_crash_keeps_exactly_what_the_policy_made_durable() {
    // sync: every turn's end is durable; async: at most the last interval is lost.
    let files = MemFiles::default();
    let (mut j, s, _) = open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    );
    let mut feed = Feed::from(s);
    for t in 0..10 {
        assert_eq!(
            feed.turn(&mut j, Duration::from_millis(t), 3),
            feed.state.next
        );
    }
    files.crash();
    drop(j);
    let (_, s, _) = open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    );
    assert_eq!(s, feed.state);

    let files = MemFiles::default();
    let (mut j, s, _) = open(
        &files,
        cfg(FsyncPolicy::Async, 1 << 20, Retention::default()),
    );
    let mut feed = Feed::from(s);
    let mut durable = 0;
    for t in 0..10u64 {
        // Turns 1 ms apart: a sync every 10 ms.
        durable = feed.turn(&mut j, Duration::from_millis(t), 3);
        assert!(durable <= feed.state.next);
    }
    assert!(durable < feed.state.next, "async synced every turn");
    files.crash();
    drop(j);
    let (_, s, _) = open(
        &files,
        cfg(FsyncPolicy::Async, 1 << 20, Retention::default()),
    );
    assert_eq!(
        s.next, durable,
        "a restart resumes at the durable point it reported"
    );
}

#[test]
fn segments_rotate_retention_drops_the_oldest_and_the_newest_header_holds_the_state() {
    let files = MemFiles::default();
    let keep = Retention {
        instances: 200,
        ..Retention::default()
    };
    let (mut j, s, _) = open(&files, cfg(FsyncPolicy::Sync, 2048, keep.clone()));
    let mut feed = Feed::from(s);
    for t in 0..200 {
        feed.turn(&mut j, Duration::from_millis(t), 4);
    }
    assert!(j.stats.segments_created > 10, "{:?}", j.stats);
    assert!(j.stats.segments_removed > 5, "{:?}", j.stats);
    assert!(
        j.oldest() > 0 && j.oldest() <= 800 - 200,
        "oldest {}",
        j.oldest()
    );
    drop(j);
    let (j, s, r) = open(&files, cfg(FsyncPolicy::Sync, 2048, keep));
    assert_eq!(s, feed.state);
    assert!(
        r.records < 100,
        "replayed {} records: not only the newest segment",
        r.records
    );
    assert!(j.oldest() > 0);

    let files = MemFiles::default();
    let small = Retention {
        bytes: 8192,
        ..Retention::default()
    };
    let (mut j, s, _) = open(&files, cfg(FsyncPolicy::Sync, 2048, small));
    let mut feed = Feed::from(s);
    for t in 0..200 {
        feed.turn(&mut j, Duration::from_millis(t), 4);
    }
    assert!(files.bytes() <= 8192 + 4096, "{} bytes kept", files.bytes());
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_and_the_journal_resumes_before_it() {
    let files = MemFiles::default();
    let (mut j, s, _) = open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    );
    let mut feed = Feed::from(s);
    let mut points = Vec::new();
    for t in 0..10 {
        feed.turn(&mut j, Duration::from_millis(t), 3);
        points.push(files.bytes());
    }
    drop(j);
    // A byte flipped in the 7th turn's records: what follows it is cut off.
    files.flip(0, points[6] as usize + 3);
    let (mut j, s, r) = open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    );
    let (cut, why) = r.cut.expect("a cut");
    assert_eq!(cut, points[9] - points[6]);
    assert!(why.contains("checksum") || why.contains("length"), "{why}");
    assert_eq!(s.next, 21, "resumes after the 7th turn's instances");
    // And it goes on from there.
    let mut feed = Feed::from(s);
    feed.turn(&mut j, Duration::from_secs(1), 3);
    drop(j);
    let (_, s, r) = open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    );
    assert_eq!((s.next, r.cut), (24, None));
}

#[test]
fn another_clusters_journal_is_refused_by_name() {
    let files = MemFiles::default();
    drop(open(
        &files,
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
    ));
    let err = Journal::open(
        Box::new(files.clone()),
        cfg(FsyncPolicy::Sync, 1 << 20, Retention::default()),
        2,
    )
    .err()
    .expect("refused");
    assert!(
        matches!(
            err,
            JournalError::OtherCluster {
                found: 1,
                ours: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cluster 1"), "{err}");
}

#[test]
fn a_newest_segment_without_a_whole_header_is_dropped_for_the_one_before() {
    let files = MemFiles::default();
    let (mut j, s, _) = open(&files, cfg(FsyncPolicy::None, 1024, Retention::default()));
    let mut feed = Feed::from(s);
    for t in 0..40 {
        feed.turn(&mut j, Duration::from_millis(t), 2);
    }
    j.sync(Duration::from_secs(1)).unwrap();
    drop(j);
    let mut f = files.clone();
    let newest = *f.list().unwrap().last().unwrap();
    let before = f.list().unwrap().len();
    f.truncate(newest, 5).unwrap();
    let (_, s, _) = open(&files, cfg(FsyncPolicy::None, 1024, Retention::default()));
    assert_eq!(f.list().unwrap().len(), before - 1);
    assert!(s.next <= newest && s.next > 0, "resumed at {}", s.next);
}

#[test]
fn a_reader_follows_the_journal_from_a_position_across_segments() {
    let dir = std::env::temp_dir().join(format!("ethpaxos-journal-tail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = DiskFiles::new(&dir).unwrap();
    let keep = Retention {
        instances: 300,
        ..Retention::default()
    };
    let (mut j, s, _) =
        Journal::open(Box::new(files), cfg(FsyncPolicy::None, 4096, keep), 1).unwrap();
    let tail = JournalTail::new(&dir, j.marks());
    let mut feed = Feed::from(s);
    feed.turn(&mut j, Duration::ZERO, 10);
    let mut live = tail.live().unwrap();
    let mut from_start = tail
        .reader(Position {
            instance: 0,
            index: 1,
        })
        .unwrap();
    let read_all = |r: &mut TailReader| {
        let mut got = Vec::new();
        while !tail
            .read(r, 1000, &mut |p, v| got.push((p, v.seq)))
            .unwrap()
        {}
        got
    };
    let mut lived = Vec::new();
    for t in 1..40 {
        feed.turn(&mut j, Duration::from_millis(t), 5);
        lived.extend(read_all(&mut live));
    }
    let from0 = read_all(&mut from_start);
    assert_eq!(
        from0[0].0,
        Position {
            instance: 0,
            index: 1
        }
    );
    assert_eq!(from0.len() as u64, feed.seq - 1, "every value from 0.1 on");
    assert!(from0
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 + 1 == w[1].1));
    assert_eq!(lived.first().unwrap().0.instance, 10);
    assert_eq!(lived.last(), from0.last());
    assert!(tail.caught_up(&live));

    // Retention drops the start while a reader is behind: it is told, and one asking for
    // the start is told the oldest position held.
    let mut behind = tail.reader(Position::default()).unwrap();
    for t in 40..200 {
        feed.turn(&mut j, Duration::from_millis(t), 5);
        lived.extend(read_all(&mut live));
    }
    let err = loop {
        match tail.read(&mut behind, 1000, &mut |_, _| {}) {
            Ok(true) => panic!("read through a gap"),
            Ok(false) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, TailError::Retention { .. }), "{err}");
    assert!(
        lived.windows(2).all(|w| w[0].1 + 1 == w[1].1),
        "the live reader lost none"
    );
    let err = tail.reader(Position::default()).err().expect("too old");
    assert!(
        matches!(err, TailError::Retention { oldest, .. } if oldest == j.oldest()),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("{}.0", j.oldest())),
        "{err}"
    );
    let from_oldest = read_all(
        &mut tail
            .reader(Position {
                instance: j.oldest(),
                index: 0,
            })
            .unwrap(),
    );
    assert_eq!(from_oldest.last(), lived.last());
    let end = feed.state.next;
    let err = tail
        .reader(Position {
            instance: end + 5,
            index: 0,
        })
        .err()
        .expect("future");
    assert!(matches!(err, TailError::Future { .. }), "{err}");
    assert!(err.to_string().contains(&format!("below {end}")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every value a peer's fetches from `from` get, page after page, as the driver chains them.
fn fetch_all(j: &mut Journal, from: Position) -> Result<Vec<(Position, u64)>, JournalError> {
    fetch_all_by(j, from, 1000)
}

/// The same, `budget` bytes of values a page; every page must be one the wire accepts
/// (positions that grow from where it starts and stay at or below its `through`).
fn fetch_all_by(
    j: &mut Journal,
    mut from: Position,
    budget: usize,
) -> Result<Vec<(Position, u64)>, JournalError> {
    let mut got = Vec::new();
    loop {
        let page = j.peer_page(from, budget)?;
        let mut at = from;
        for (p, _) in &page.values {
            assert!(
                *p >= at && p.instance <= page.through,
                "a page from {from} (through {}) holds {p}",
                page.through
            );
            at = Position {
                instance: p.instance,
                index: p.index + 1,
            };
        }
        let next = page.next();
        got.extend(page.values.iter().map(|(p, v)| (*p, v.seq)));
        if next.instance >= page.end || (page.values.is_empty() && page.through == from.instance) {
            return Ok(got);
        }
        from = next;
    }
}

#[test]
fn a_peer_fetch_reads_every_value_across_segments_and_refuses_a_damaged_one() {
    let files = MemFiles::default();
    let (mut j, s, _) = open(&files, cfg(FsyncPolicy::Sync, 2048, Retention::default()));
    let mut feed = Feed::from(s);
    for t in 0..100 {
        feed.turn(&mut j, Duration::from_millis(t), 3);
    }
    let got = fetch_all(
        &mut j,
        Position {
            instance: 4,
            index: 1,
        },
    )
    .unwrap();
    assert_eq!(
        got.first().map(|g| g.0),
        Some(Position {
            instance: 4,
            index: 1
        })
    );
    // Instances 0, 1 and 3 hold two values each, 2 none, 4 two: seven come before 4.1.
    assert_eq!(got.len() as u64, feed.seq - 7, "every value from 4.1 on");
    // Pages cut anywhere, right after an instance that delivered nothing too (turns of five
    // instances record no `through` between them), are the same values, and each is one the
    // wire accepts.
    let (mut k, s, _) = open(
        &MemFiles::default(),
        cfg(FsyncPolicy::Sync, 2048, Retention::default()),
    );
    let mut five = Feed::from(s);
    for t in 0..40 {
        five.turn(&mut k, Duration::from_millis(t), 5);
    }
    let whole = fetch_all_by(&mut k, Position::default(), 1 << 20).unwrap();
    assert_eq!(whole.len() as u64, five.seq);
    for budget in (80..400).step_by(7) {
        let by = fetch_all_by(&mut k, Position::default(), budget).unwrap();
        assert_eq!(by, whole, "budget {budget}");
    }
    assert!(got
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 + 1 == w[1].1));
    // Reopened, the older segments are indexed when first read: the same answer.
    drop(j);
    let (mut j, _, _) = open(&files, cfg(FsyncPolicy::Sync, 2048, Retention::default()));
    assert_eq!(
        fetch_all(
            &mut j,
            Position {
                instance: 4,
                index: 1
            }
        )
        .unwrap(),
        got
    );
    // A flipped byte inside an older segment: the fetch fails, it never skips what the
    // damaged record held.
    let mut f = files.clone();
    let second = f.list().unwrap()[1];
    files.flip(second, 300);
    let err = fetch_all(
        &mut j,
        Position {
            instance: second,
            index: 0,
        },
    )
    .expect_err("a damaged segment is not answered past");
    assert!(
        matches!(err, JournalError::Corrupt { seg, .. } if seg == second),
        "{err}"
    );
}
