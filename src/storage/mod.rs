//! Acceptor storage: what survives a crash, and when a vote may leave.
//!
//! `AcceptorStorage` is what the acceptor's storage stage drives: it loads everything at start
//! and commits the changes of many messages as one atomic batch (group commit), durable on
//! return when asked to sync. `memory` keeps nothing across a restart; `rocks` is RocksDB.

#![forbid(unsafe_code)]

mod memory;
mod rocks;
mod round;

pub use memory::MemoryStorage;
pub use rocks::RocksStorage;
pub use round::RoundFile;

use crate::protocol::{AcceptorState, Change};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open storage at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("storage {op} failed: {source}")]
    Rocks {
        op: &'static str,
        source: rocksdb::Error,
    },
    #[error("stored record {key} is corrupt: {why}")]
    Corrupt { key: String, why: String },
    #[error("storage.path is required with fsync_policy {0}")]
    NoPath(FsyncPolicy),
    #[error("storage.path {path} cannot be written: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Room a node wants on its storage path at start: RocksDB asserts (and aborts the process)
/// when it cannot write its log or manifest, so a full or read-only filesystem is found here,
/// with the path named, instead.
pub const START_PROBE_BYTES: usize = 4 << 20;

/// Creates `dir` if needed and writes, syncs and removes `START_PROBE_BYTES` there.
pub fn check_writable(dir: &std::path::Path) -> Result<(), StorageError> {
    use std::io::Write;
    let err = |source| StorageError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".ethpaxos-write-probe");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0u8; START_PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(err)
}

/// An acceptor's durable state.
pub trait AcceptorStorage: Send {
    /// Everything durable: promise, votes, trim point.
    fn load(&mut self) -> Result<AcceptorState, StorageError>;
    /// Writes `changes` as one atomic batch. With `sync` the batch is on disk when this
    /// returns; without, it is written and a later `sync` makes it durable.
    fn commit(&mut self, changes: &[Change], sync: bool) -> Result<(), StorageError>;
    /// Makes every batch committed so far durable.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Bytes the storage occupies on disk (0 in memory).
    fn disk_bytes(&self) -> u64;
}

/// When an acceptor's replies may leave relative to its writes reaching the disk.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// The write-ahead log is fsynced before any reply of a batch leaves: a 1b/2b that was
    /// sent is on disk. The only policy that is crash safe.
    #[default]
    Sync,
    /// Replies leave once the batch is written; the log is synced in the background every
    /// `fsync_interval_ms`. A power loss can lose the last interval (a process crash cannot).
    Async,
    /// Memory only. Not crash safe: a restarted acceptor has forgotten its promises and votes.
    None,
}

impl FsyncPolicy {
    pub const ALL: [FsyncPolicy; 3] = [FsyncPolicy::Sync, FsyncPolicy::Async, FsyncPolicy::None];

    pub fn name(&self) -> &'static str {
        match self {
            FsyncPolicy::Sync => "sync",
            FsyncPolicy::Async => "async",
            FsyncPolicy::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<FsyncPolicy> {
        FsyncPolicy::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The acceptor storage section of a node's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub fsync_policy: FsyncPolicy,
    /// Where the acceptor's RocksDB lives (ignored with policy `none`).
    pub path: Option<PathBuf>,
    /// `async`: how often the write-ahead log is synced in the background.
    pub fsync_interval_ms: u64,
    /// Group commit: one batch holds the changes of at most this many messages ...
    pub batch_max_messages: usize,
    /// ... and at most about this many bytes. A batch never waits for more: under light load
    /// a lone vote is committed at once, and under load the messages that arrive during a
    /// commit form the next batch.
    pub batch_max_bytes: usize,
    /// RocksDB memtable size in MiB (each acceptor has up to three). Votes that are trimmed
    /// while still in the memtable never reach an SST file; at full load a vote lives well
    /// under a second. Larger costs memory, smaller costs flush and compaction CPU.
    pub memtable_mb: usize,
}

/// The default `storage.memtable_mb`.
pub const DEFAULT_MEMTABLE_MB: usize = 64;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync_policy: FsyncPolicy::Sync,
            path: None,
            fsync_interval_ms: 10,
            batch_max_messages: 1024,
            batch_max_bytes: 4 << 20,
            memtable_mb: DEFAULT_MEMTABLE_MB,
        }
    }
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), crate::protocol::ConfigError> {
        let bad = |field, why: &str| crate::protocol::ConfigError::Invalid {
            field,
            why: why.into(),
        };
        if self.batch_max_messages == 0 {
            return Err(bad("storage.batch_max_messages", "must be greater than 0"));
        }
        if self.batch_max_bytes == 0 {
            return Err(bad("storage.batch_max_bytes", "must be greater than 0"));
        }
        if !(1..=4096).contains(&self.memtable_mb) {
            return Err(bad("storage.memtable_mb", "must be between 1 and 4096"));
        }
        if self.fsync_policy != FsyncPolicy::None && self.path.is_none() {
            return Err(bad("storage.path", "required unless fsync_policy is none"));
        }
        if self.fsync_policy == FsyncPolicy::Async && self.fsync_interval_ms == 0 {
            return Err(bad(
                "storage.fsync_interval_ms",
                "must be greater than 0 with policy async",
            ));
        }
        Ok(())
    }

    /// Opens this acceptor's storage: RocksDB under `acceptor_dir`, or memory for `none`.
    pub fn open(
        &self,
        id: crate::protocol::NodeId,
    ) -> Result<Box<dyn AcceptorStorage>, StorageError> {
        match (&self.fsync_policy, self.acceptor_dir(id)) {
            (FsyncPolicy::None, _) => Ok(Box::new(MemoryStorage::default())),
            (policy, None) => Err(StorageError::NoPath(*policy)),
            (_, Some(dir)) => Ok(Box::new(RocksStorage::open_with(
                &dir,
                self.memtable_mb << 20,
            )?)),
        }
    }

    /// Where acceptor `id` keeps RocksDB (`path/acceptor-<id>`); none under policy `none`.
    pub fn acceptor_dir(&self, id: crate::protocol::NodeId) -> Option<std::path::PathBuf> {
        match (&self.fsync_policy, &self.path) {
            (FsyncPolicy::None, _) | (_, None) => None,
            (_, Some(dir)) => Some(dir.join(format!("acceptor-{id}"))),
        }
    }
}

/// Roughly what a change costs in a batch, for the byte bound.
fn change_bytes(change: &Change) -> usize {
    match change {
        Change::Accept(e) => crate::wire::sizes::entry(e),
        _ => 16,
    }
}

/// Counts the messages of one burst, and the changes they produced, against the group-commit
/// bounds; a node loop handles messages until `add` says the batch is full.
#[derive(Clone, Copy, Debug)]
pub struct BatchBudget {
    max_messages: usize,
    max_bytes: usize,
    messages: usize,
    bytes: usize,
}

impl BatchBudget {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        BatchBudget {
            max_messages: max_messages.max(1),
            max_bytes,
            messages: 0,
            bytes: 0,
        }
    }

    pub fn of(cfg: &StorageConfig) -> Self {
        Self::new(cfg.batch_max_messages, cfg.batch_max_bytes)
    }

    /// An empty budget with the same bounds, for the next burst.
    pub fn fresh(&self) -> Self {
        Self::new(self.max_messages, self.max_bytes)
    }

    /// Records one handled message and the changes it produced; false once the batch is full.
    pub fn add(&mut self, changes: &[Change]) -> bool {
        self.messages += 1;
        self.bytes += changes.iter().map(change_bytes).sum::<usize>();
        self.messages < self.max_messages && self.bytes < self.max_bytes
    }
}

/// What one `GroupCommit::commit` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Changes written in one batch (0: none).
    pub changes: usize,
    /// How long writing them took (a synced write under `sync`).
    pub duration: std::time::Duration,
    /// How long a sync took, when one was made: the synced write under `sync`, the log's
    /// periodic sync under `async`.
    pub fsync: Option<std::time::Duration>,
}

/// The acceptor's storage stage: commits each burst's changes as one batch under the fsync
/// policy and, under `async`, syncs the log every `fsync_interval_ms`. Every runtime with an
/// acceptor (the demo's threads, the node loop and the staged pipeline's commit stage) drives
/// it through this.
pub struct GroupCommit {
    storage: Box<dyn AcceptorStorage>,
    policy: FsyncPolicy,
    fsync_interval: std::time::Duration,
    last_sync: std::time::Duration,
}

impl GroupCommit {
    pub fn new(storage: Box<dyn AcceptorStorage>, cfg: &StorageConfig) -> Self {
        GroupCommit {
            storage,
            policy: cfg.fsync_policy,
            fsync_interval: std::time::Duration::from_millis(cfg.fsync_interval_ms),
            last_sync: std::time::Duration::ZERO,
        }
    }

    /// Makes `changes` as durable as the policy promises; the replies that depend on them may
    /// leave once this returns. Says how many changes it committed (0: no batch written) and
    /// how long it took.
    pub fn commit(
        &mut self,
        now: std::time::Duration,
        changes: &[Change],
    ) -> Result<CommitReport, StorageError> {
        let start = std::time::Instant::now();
        let mut report = CommitReport {
            changes: changes.len(),
            ..CommitReport::default()
        };
        if !changes.is_empty() {
            let sync = self.policy == FsyncPolicy::Sync;
            self.storage.commit(changes, sync)?;
            report.duration = start.elapsed();
            if sync {
                report.fsync = Some(report.duration);
            }
        }
        if self.policy == FsyncPolicy::Async
            && now.saturating_sub(self.last_sync) >= self.fsync_interval
        {
            let at = std::time::Instant::now();
            self.storage.sync()?;
            report.fsync = Some(at.elapsed());
            self.last_sync = now;
        }
        Ok(report)
    }

    /// Makes everything committed so far durable (at shutdown).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.storage.sync()
    }
}

/// Bytes of the files under `dir` and its subdirectories (0 if it cannot be read).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
