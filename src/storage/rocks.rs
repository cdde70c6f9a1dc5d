//! RocksDB storage. Keys are laid out so instance ranges scan and delete cheaply:
//!
//! | key | value |
//! |---|---|
//! | `m/promised` | ballot: round u32, proposer u16 (big-endian) |
//! | `m/trim` | trim point, u64 big-endian |
//! | `a` + instance (u64 big-endian) | the vote, stored as the payload of the 2a that carried it (docs/wire-format.md) |
//!
//! Big-endian instance ids sort in instance order, so a trim is one range delete over
//! `a[0, trim)` followed by a compaction of that range on a background thread.

use super::{AcceptorStorage, StorageError};
use crate::protocol::{AcceptedEntry, AcceptorState, Ballot, Change, Message, MessageKind};
use crate::wire;
use bytes::Bytes;
use crossbeam_channel::Sender;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

const PROMISED: &[u8] = b"m/promised";
const TRIM: &[u8] = b"m/trim";
const VOTE: u8 = b'a';

fn vote_key(instance: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = VOTE;
    k[1..].copy_from_slice(&instance.to_be_bytes());
    k
}

fn ballot_bytes(b: Ballot) -> [u8; 6] {
    let mut v = [0u8; 6];
    v[..4].copy_from_slice(&b.round.to_be_bytes());
    v[4..].copy_from_slice(&b.proposer.to_be_bytes());
    v
}

fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StorageError {
    move |source| StorageError::Rocks { op, source }
}

pub struct RocksStorage {
    db: Arc<DB>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Trim points for the compaction thread: compacting in the commit path held every
    /// reply for 100-200 ms once a second, on every acceptor at once.
    compactor: Option<(Sender<u64>, JoinHandle<()>)>,
}

impl Drop for RocksStorage {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.compactor.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Compacts the trimmed range in the background, skipping to the newest trim point when
/// several are waiting.
fn spawn_compactor(db: Arc<DB>) -> Option<(Sender<u64>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let handle = std::thread::Builder::new()
        .name("rocksdb-trim".into())
        .spawn(move || {
            while let Ok(mut trim) = rx.recv() {
                trim = rx.try_iter().fold(trim, u64::max);
                db.compact_range(Some(vote_key(0)), Some(vote_key(trim)));
            }
        })
        .ok()?;
    Some((tx, handle))
}

impl RocksStorage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Votes live for seconds (until the trim point passes them) and are read back only at
        // start and for catch-up, so: a bounded number of open files (their index blocks are
        // what grows memory), and memtables small enough that a trim's range delete soon
        // reaches the files. (Turning compression off doubled disk use for no throughput
        // gain in the 5-minute soak: docs/benchmarks.md.)
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_write_buffer_number(3);
        opts.set_max_open_files(256);
        opts.set_max_background_jobs(2);
        let db = DB::open(&opts, path).map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let db = Arc::new(db);
        Ok(RocksStorage {
            compactor: spawn_compactor(db.clone()),
            db,
            path: path.to_path_buf(),
            buf: Vec::new(),
        })
    }

    fn corrupt(key: &[u8], why: impl ToString) -> StorageError {
        StorageError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            why: why.to_string(),
        }
    }
}

impl AcceptorStorage for RocksStorage {
    fn load(&mut self) -> Result<AcceptorState, StorageError> {
        let mut state = AcceptorState::default();
        if let Some(v) = self.db.get(PROMISED).map_err(rocks("read promise"))? {
            let b: [u8; 6] = v
                .as_slice()
                .try_into()
                .map_err(|_| Self::corrupt(PROMISED, "not 6 bytes"))?;
            state.promised = Ballot::new(
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                u16::from_be_bytes([b[4], b[5]]),
            );
        }
        if let Some(v) = self.db.get(TRIM).map_err(rocks("read trim point"))? {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| Self::corrupt(TRIM, "not 8 bytes"))?;
            state.trim = u64::from_be_bytes(b);
        }
        for item in self
            .db
            .iterator(IteratorMode::From(&[VOTE], Direction::Forward))
        {
            let (key, value) = item.map_err(rocks("scan votes"))?;
            if key.first() != Some(&VOTE) {
                break;
            }
            let msg = wire::decode_payload(MessageKind::Accept, Bytes::from(value.into_vec()))
                .map_err(|e| Self::corrupt(&key, e))?;
            let Message::Accept {
                ballot,
                instance,
                value,
            } = msg
            else {
                return Err(Self::corrupt(&key, "not a vote"));
            };
            if key.len() != 9 || key[1..] != instance.to_be_bytes() {
                return Err(Self::corrupt(&key, "key and stored instance differ"));
            }
            // Restores the implied promise too, through the same rule the acceptor uses.
            state.apply(&Change::Accept(AcceptedEntry {
                instance,
                ballot,
                value,
            }));
        }
        Ok(state)
    }

    fn commit(&mut self, changes: &[Change], sync: bool) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut trimmed = None;
        for change in changes {
            match change {
                Change::Promise(b) => batch.put(PROMISED, ballot_bytes(*b)),
                Change::Accept(e) => {
                    self.buf.clear();
                    let msg = Message::Accept {
                        ballot: e.ballot,
                        instance: e.instance,
                        value: e.value.clone(),
                    };
                    wire::encode_payload(&msg, &mut self.buf)
                        .map_err(|err| Self::corrupt(&vote_key(e.instance), err))?;
                    batch.put(vote_key(e.instance), &self.buf);
                }
                Change::Trim(t) => {
                    batch.put(TRIM, t.to_be_bytes());
                    batch.delete_range(vote_key(0), vote_key(*t));
                    trimmed = Some(*t);
                }
                Change::ProposerRound(_) => {}
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(rocks("commit"))?;
        if let Some(t) = trimmed {
            // Reclaim the space soon rather than whenever compaction reaches those files, but
            // off the commit path (without a thread, compact here).
            match &self.compactor {
                Some((tx, _)) if tx.send(t).is_ok() => {}
                _ => self.db.compact_range(Some(vote_key(0)), Some(vote_key(t))),
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.db
            .flush_wal(true)
            .map_err(rocks("sync the write-ahead log"))
    }

    fn disk_bytes(&self) -> u64 {
        super::dir_bytes(&self.path)
    }
}
