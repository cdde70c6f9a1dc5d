//! Acceptor storage: RocksDB keeps promise, votes and trim point across a reopen; trims delete
//! the range; a restored acceptor never votes against a promise made before its restart.

use bytes::Bytes;
use ethpaxos::protocol::*;
use ethpaxos::storage::{AcceptorStorage, MemoryStorage, RocksStorage, StorageError};
use std::path::PathBuf;

/// A directory removed when dropped, even if the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ethpaxos-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vote(instance: u64, round: u32) -> Change {
    Change::Accept(AcceptedEntry {
        instance,
        ballot: Ballot::new(round, 1),
        value: Batch::new(vec![ClientValue {
            client: 9,
            seq: instance,
            payload: Bytes::from(format!("value-{instance}")),
        }]),
    })
}

fn members() -> Membership {
    Membership {
        proposers: vec![1, 2],
        acceptors: vec![11, 12, 13],
        learners: vec![21],
    }
}

#[test]
fn rocks_keeps_everything_across_a_reopen() {
    let dir = TempDir::new("reopen");
    let mut expected = AcceptorState::default();
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
        assert_eq!(db.load().unwrap(), AcceptorState::default());
        let mut batch = vec![Change::Promise(Ballot::new(2, 1))];
        batch.extend((0..100).map(|i| vote(i, 2)));
        db.commit(&batch, true).unwrap();
        db.commit(&[Change::Promise(Ballot::new(7, 2)), vote(100, 2)], true)
            .unwrap();
        for c in batch
            .iter()
            .chain(&[Change::Promise(Ballot::new(7, 2)), vote(100, 2)])
        {
            expected.apply(c);
        }
    }
    let mut db = RocksStorage::open(&dir.0).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded, expected);
    assert_eq!(loaded.promised, Ballot::new(7, 2));
    assert_eq!(loaded.accepted.len(), 101);
}

#[test]
fn trim_deletes_the_range_and_survives_a_reopen() {
    let dir = TempDir::new("trim");
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
        let votes: Vec<_> = (0..1000).map(|i| vote(i, 1)).collect();
        db.commit(&votes, true).unwrap();
        db.commit(&[Change::Trim(600)], true).unwrap();
    }
    let mut db = RocksStorage::open(&dir.0).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded.trim, 600);
    assert_eq!(loaded.accepted.keys().next(), Some(&600));
    assert_eq!(loaded.accepted.len(), 400);
}

#[test]
fn a_restored_acceptor_keeps_its_promise() {
    let dir = TempDir::new("promise");
    let cfg = ProtocolConfig::default();
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
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
        db.commit(out.changes(), true).unwrap();
    } // crash: the process and its memory are gone
    let mut db = RocksStorage::open(&dir.0).unwrap();
    let mut a = Acceptor::restore(11, &cfg, members(), db.load().unwrap());
    let mut out = Actions::new();
    let value = Batch::new(vec![]);
    a.handle(
        std::time::Duration::ZERO,
        1,
        Message::Accept {
            ballot: Ballot::new(4, 1),
            instance: 0,
            value,
        },
        &mut out,
    );
    assert!(
        out.changes().is_empty(),
        "no vote against the promise made before the crash"
    );
    assert!(matches!(
        out.sends(),
        [Envelope {
            to: 1,
            msg: Message::Reject { .. }
        }]
    ));
}

#[test]
fn a_corrupt_record_is_reported_with_its_key() {
    let dir = TempDir::new("corrupt");
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
        db.commit(&[vote(3, 1)], true).unwrap();
    }
    {
        // The record of commit 0, which starts at instance 3, overwritten with garbage.
        let raw = rocksdb::DB::open_default(&dir.0).unwrap();
        let mut key = vec![b'a'];
        key.extend_from_slice(&3u64.to_be_bytes());
        key.extend_from_slice(&0u64.to_be_bytes());
        raw.put(&key, [1, 2, 3]).unwrap();
    }
    let mut db = RocksStorage::open(&dir.0).unwrap();
    match db.load() {
        Err(StorageError::Corrupt { key, why }) => {
            assert_eq!(key, "a/3/0");
            assert!(why.contains("truncated"), "{why}");
        }
        other => panic!("expected a corrupt-record error, got {other:?}"),
    }
}

#[test]
fn a_later_commit_overrides_an_earlier_vote_after_a_reopen() {
    let dir = TempDir::new("revote");
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
        db.commit(&(0..100).map(|i| vote(i, 1)).collect::<Vec<_>>(), true)
            .unwrap();
        // A new leader's re-proposal of instance 50: its record sorts after the first one's
        // key but must win because it was committed later.
        db.commit(&[vote(50, 2)], true).unwrap();
    }
    let mut db = RocksStorage::open(&dir.0).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded.accepted.len(), 100);
    assert_eq!(loaded.accepted[&50].0, Ballot::new(2, 1));
    assert_eq!(loaded.accepted[&49].0, Ballot::new(1, 1));
    assert_eq!(loaded.promised, Ballot::new(2, 1));
}

#[test]
fn a_trim_keeps_every_vote_at_or_above_it_when_records_straddle_it() {
    let dir = TempDir::new("straddle");
    {
        let mut db = RocksStorage::open(&dir.0).unwrap();
        db.commit(&(0..10).map(|i| vote(i, 1)).collect::<Vec<_>>(), true)
            .unwrap();
        // Starts below the trim point, ends above it: must survive whole.
        db.commit(&(5..200).map(|i| vote(i, 1)).collect::<Vec<_>>(), true)
            .unwrap();
        // A late retransmitted vote for an old instance, after the straddling record.
        db.commit(&[vote(3, 1)], true).unwrap();
        db.commit(&[Change::Trim(100)], true).unwrap();
        db.commit(&(200..300).map(|i| vote(i, 1)).collect::<Vec<_>>(), true)
            .unwrap();
    }
    let mut db = RocksStorage::open(&dir.0).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded.trim, 100);
    assert_eq!(
        loaded.accepted.keys().copied().collect::<Vec<_>>(),
        (100..300).collect::<Vec<_>>()
    );
    drop(db);
    // Everything left on disk is needed: the records below the straddling one are gone.
    let raw = rocksdb::DB::open_default(&dir.0).unwrap();
    let firsts: Vec<u64> = raw
        .iterator(rocksdb::IteratorMode::Start)
        .map(|kv| kv.unwrap().0)
        .filter(|k| k[0] == b'a')
        .map(|k| u64::from_be_bytes(k[1..9].try_into().unwrap()))
        .collect();
    assert_eq!(firsts, vec![5, 200]);
}

#[test]
fn an_unopenable_path_names_the_path() {
    let dir = TempDir::new("notadir");
    std::fs::write(&dir.0, b"a file, not a directory").unwrap();
    let err = RocksStorage::open(&dir.0)
        .err()
        .expect("cannot open a file as a database");
    assert!(
        err.to_string().contains(&dir.0.display().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_file(&dir.0);
}

#[test]
fn memory_storage_applies_changes() {
    let mut m = MemoryStorage::default();
    m.commit(&[vote(1, 3), Change::Trim(1)], false).unwrap();
    let s = m.load().unwrap();
    assert_eq!(
        (s.trim, s.promised, s.accepted.len()),
        (1, Ballot::new(3, 1), 1)
    );
    assert_eq!(m.disk_bytes(), 0);
}

#[test]
fn a_batch_closes_at_its_message_or_byte_bound() {
    use ethpaxos::storage::BatchBudget;
    let mut b = BatchBudget::new(3, usize::MAX);
    assert!(b.add(&[]) && b.add(&[vote(1, 1)]));
    assert!(!b.add(&[]), "the third message fills a 3-message batch");
    // A vote of one 7-byte value costs its encoded entry (14 + 2 + 18 + 7 = 41 bytes).
    let mut b = BatchBudget::new(1000, 100);
    assert!(b.add(&[vote(1, 1)]) && b.add(&[vote(2, 1)]));
    assert!(!b.add(&[vote(3, 1)]), "three 41-byte votes pass 100 bytes");
    assert!(b.fresh().add(&[vote(4, 1)]), "a fresh budget starts empty");
}
