//! RocksDB storage. Keys are laid out so instance ranges scan and delete cheaply:
//!
//! | key | value |
//! |---|---|
//! | `m/promised` | ballot: round u32, proposer u16 (big-endian) |
//! | `m/trim` | trim point, u64 big-endian |
//! | `a` + first instance (u64 BE) + commit number (u64 BE) | the votes of one group commit |
//!
//! A group commit writes its votes as one record, keyed by the lowest instance it holds: one
//! put of a few hundred KiB instead of hundreds of 1 KiB puts cost RocksDB a third less CPU
//! per value (docs/storage.md). The record is a format byte (1) and then, per vote, a u32
//! big-endian length and the payload of the 2a that carried it (docs/wire-format.md). The
//! commit number keeps two records that start at the same instance apart; a later commit
//! never holds a lower ballot for an instance than an earlier one, so loading applies records
//! in commit order.
//!
//! Big-endian ids sort in instance order, so a trim is one range delete over `a[0, f)`, where
//! `f` is the first instance of the lowest record still holding a vote at or above the trim
//! point (every record below `f` holds only trimmed instances), then the dropping of whole
//! files and a compaction of that range on a background thread.

use super::{AcceptorStorage, StorageError};
use crate::protocol::{AcceptedEntry, AcceptorState, Ballot, Change, Message, MessageKind};
use crate::wire;
use bytes::Bytes;
use crossbeam_channel::Sender;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PROMISED: &[u8] = b"m/promised";
const TRIM: &[u8] = b"m/trim";
const VOTE: u8 = b'a';
const RECORD_FORMAT: u8 = 1;

/// The lower bound of every record whose first instance is `instance`.
fn instance_key(instance: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = VOTE;
    k[1..].copy_from_slice(&instance.to_be_bytes());
    k
}

fn record_key(first: u64, commit: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&instance_key(first));
    k[9..].copy_from_slice(&commit.to_be_bytes());
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
    /// The next commit number (one past the highest stored).
    next_commit: u64,
    /// Live records: (first instance, commit number) -> last instance. A trim deletes the
    /// records below the first one that still reaches the trim point.
    records: BTreeMap<(u64, u64), u64>,
    /// Deletion bounds for the compaction thread: compacting in the commit path held every
    /// reply for 100-200 ms, on every acceptor at once.
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

/// How often the compaction thread may compact a trimmed range: a manual compaction first
/// flushes the memtable, and votes flushed before their trim reach the disk twice (flush and
/// compaction). Compacting on every trim cost a third of the acceptors' CPU at 256 clients.
const COMPACT_EVERY: Duration = Duration::from_secs(30);

/// Reclaims the space below a trim in the background, skipping to the newest deletion bound
/// when several are waiting: files wholly inside the range are dropped at once without being
/// read, and at most every `COMPACT_EVERY` a compaction rewrites the ones that straddle it.
fn spawn_compactor(db: Arc<DB>) -> Option<(Sender<u64>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let handle = std::thread::Builder::new()
        .name("rocksdb-trim".into())
        .spawn(move || {
            let mut last_compaction = Instant::now();
            while let Ok(mut below) = rx.recv() {
                below = rx.try_iter().fold(below, u64::max);
                let (from, to) = (instance_key(0), instance_key(below));
                // Only space is at stake here: the range delete, committed with the trim
                // point, already hides these records.
                let _ = db.delete_file_in_range(from, to);
                if last_compaction.elapsed() >= COMPACT_EVERY {
                    db.compact_range(Some(from), Some(to));
                    last_compaction = Instant::now();
                }
            }
        })
        .ok()?;
    Some((tx, handle))
}

/// A key for error messages: `a/<first instance>/<commit>` for a record.
fn key_name(key: &[u8]) -> String {
    match key {
        [VOTE, rest @ ..] if rest.len() == 16 => {
            let first = u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
            let commit = u64::from_be_bytes(rest[8..].try_into().unwrap_or_default());
            format!("a/{first}/{commit}")
        }
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

impl RocksStorage {
    /// Opens (creating if needed) the database at `path`, with the default memtable size.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, super::DEFAULT_MEMTABLE_MB << 20)
    }

    /// Opens (creating if needed) the database at `path`; `memtable_bytes` bounds each of its
    /// (at most three) memtables.
    pub fn open_with(path: &Path, memtable_bytes: usize) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Votes live for well under a second at full load (until the trim point passes them)
        // and are read back only at start. A memtable that holds more than that lifetime lets
        // most votes die in memory: the flush drops what a range delete covers, so they are
        // written once, to the log. A bounded number of open files keeps index blocks, which
        // grow memory, in check. Compression stays on: without it disk use doubled in a soak
        // and the 256-client runs were slower (more bytes through CRC and the page cache).
        opts.set_write_buffer_size(memtable_bytes);
        opts.set_max_write_buffer_number(3);
        opts.set_max_open_files(256);
        opts.set_max_background_jobs(2);
        // Under load the info log (a line per flush and compaction, every trim) and the
        // MANIFEST (an edit per flush and compaction) grew by ~14 KB/s and ~0.4 KB/s per
        // acceptor without end: most of a 30-minute soak's disk creep. Warnings only, and
        // both roll over at a bound.
        opts.set_log_level(rocksdb::LogLevel::Warn);
        opts.set_max_log_file_size(1 << 20);
        opts.set_keep_log_file_num(2);
        opts.set_max_manifest_file_size(4 << 20);
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
            next_commit: 0,
            records: BTreeMap::new(),
        })
    }

    fn corrupt(key: &[u8], why: impl ToString) -> StorageError {
        StorageError::Corrupt {
            key: key_name(key),
            why: why.to_string(),
        }
    }

    /// The votes of one stored record, checked against its key.
    fn decode_record(key: &[u8], value: Bytes) -> Result<Vec<AcceptedEntry>, StorageError> {
        if key.len() != 17 {
            return Err(Self::corrupt(key, "a vote record key is 17 bytes"));
        }
        let first = u64::from_be_bytes(key[1..9].try_into().unwrap_or_default());
        match value.first() {
            Some(&RECORD_FORMAT) => {}
            Some(other) => {
                return Err(Self::corrupt(key, format!("unknown record format {other}")))
            }
            None => return Err(Self::corrupt(key, "empty record")),
        }
        let mut pos = 1;
        let mut votes = Vec::new();
        while pos < value.len() {
            let Some(len) = value.get(pos..pos + 4) else {
                return Err(Self::corrupt(key, "record truncated in a vote's length"));
            };
            let len = u32::from_be_bytes(len.try_into().unwrap_or_default()) as usize;
            pos += 4;
            if value.len() - pos < len {
                return Err(Self::corrupt(key, "record truncated in a vote"));
            }
            let msg = wire::decode_payload(MessageKind::Accept, value.slice(pos..pos + len))
                .map_err(|e| Self::corrupt(key, e))?;
            pos += len;
            let Message::Accept {
                ballot,
                instance,
                value,
            } = msg
            else {
                return Err(Self::corrupt(key, "not a vote"));
            };
            votes.push(AcceptedEntry {
                instance,
                ballot,
                value,
            });
        }
        match votes.iter().map(|v| v.instance).min() {
            None => Err(Self::corrupt(key, "a record without votes")),
            Some(min) if min != first => Err(Self::corrupt(
                key,
                format!("the key says first instance {first}, the votes start at {min}"),
            )),
            Some(_) => Ok(votes),
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
        // Records sort by first instance; their votes must be applied in commit order.
        let mut by_commit = BTreeMap::new();
        self.records.clear();
        for item in self
            .db
            .iterator(IteratorMode::From(&[VOTE], Direction::Forward))
        {
            let (key, value) = item.map_err(rocks("scan votes"))?;
            if key.first() != Some(&VOTE) {
                break;
            }
            let votes = Self::decode_record(&key, Bytes::from(value.into_vec()))?;
            let commit = u64::from_be_bytes(key[9..17].try_into().unwrap_or_default());
            let first = u64::from_be_bytes(key[1..9].try_into().unwrap_or_default());
            let last = votes.iter().map(|v| v.instance).max().unwrap_or(first);
            if by_commit.insert(commit, votes).is_some() {
                return Err(Self::corrupt(&key, "two records share a commit number"));
            }
            self.records.insert((first, commit), last);
        }
        self.next_commit = by_commit.keys().next_back().map_or(0, |c| c + 1);
        for votes in by_commit.into_values() {
            for vote in votes {
                // Restores the implied promise too, through the same rule the acceptor uses.
                state.apply(&Change::Accept(vote));
            }
        }
        Ok(state)
    }

    fn commit(&mut self, changes: &[Change], sync: bool) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut trimmed = None;
        let mut span: Option<(u64, u64)> = None;
        self.buf.clear();
        self.buf.push(RECORD_FORMAT);
        for change in changes {
            match change {
                Change::Promise(b) => batch.put(PROMISED, ballot_bytes(*b)),
                Change::Accept(e) => {
                    let msg = Message::Accept {
                        ballot: e.ballot,
                        instance: e.instance,
                        value: e.value.clone(),
                    };
                    let at = self.buf.len();
                    self.buf.extend_from_slice(&[0; 4]);
                    wire::encode_payload(&msg, &mut self.buf).map_err(|err| {
                        Self::corrupt(&record_key(e.instance, self.next_commit), err)
                    })?;
                    let len = (self.buf.len() - at - 4) as u32;
                    self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    span = Some(span.map_or((e.instance, e.instance), |(lo, hi)| {
                        (lo.min(e.instance), hi.max(e.instance))
                    }));
                }
                Change::Trim(t) => {
                    batch.put(TRIM, t.to_be_bytes());
                    trimmed = Some(*t);
                }
                Change::ProposerRound(_) => {}
            }
        }
        if let Some((first, last)) = span {
            batch.put(record_key(first, self.next_commit), &self.buf);
            self.records.insert((first, self.next_commit), last);
            self.next_commit += 1;
        }
        // Every record below the first one still reaching the trim point holds only
        // trimmed votes (this batch's record included, if it does).
        let delete_below = trimmed.map(|t| {
            while let Some((&(first, commit), &last)) = self.records.iter().next() {
                if last >= t {
                    return first;
                }
                self.records.remove(&(first, commit));
            }
            t
        });
        if let Some(below) = delete_below {
            batch.delete_range(instance_key(0), instance_key(below));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(rocks("commit"))?;
        if let Some(below) = delete_below {
            // Reclaim the space soon rather than whenever compaction reaches those files, but
            // off the commit path (without a thread, drop whole files here).
            match &self.compactor {
                Some((tx, _)) if tx.send(below).is_ok() => {}
                _ => {
                    let _ = self
                        .db
                        .delete_file_in_range(instance_key(0), instance_key(below));
                }
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
