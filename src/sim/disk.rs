//! A simulated node's disk. The node writes to it through the production storage path: its
//! `NodeStore`, whose `GroupCommit` commits each turn's changes to a `SimStorage` under the
//! node's fsync policy, exactly as it commits to RocksDB in a node process. A crash is a power
//! loss: whatever had not reached the platter is gone.
//!
//! Under `sync` a commit takes `fsync_latency` of virtual time, during which the node is busy
//! (as a real node loop is, blocked in fsync): its messages leave and its changes become
//! durable when the commit completes; a crash before that loses both. Under `async` changes
//! are durable at the `GroupCommit`'s periodic sync; under `none` never. A lying disk
//! (`lies`) acknowledges a synced write at once and keeps it in its cache until the
//! simulator's periodic cache flush: the checker must catch what that does.

use crate::driver::{NodeStore, RoundStore};
use crate::protocol::{AcceptorState, Change};
use crate::storage::{AcceptorStorage, FsyncPolicy, GroupCommit, StorageConfig, StorageError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What the platter and the cache hold.
#[derive(Default)]
struct Platter {
    durable: AcceptorState,
    /// Written, not yet synced (async, none, or a lying disk's cache).
    unsynced: Vec<Change>,
    /// The synced write under way: durable once it completes.
    in_flight: Vec<Change>,
    /// How long the last synced write keeps the node busy.
    busy: Duration,
    commits: u64,
    committed_changes: u64,
}

/// One node's disk: survives the node's crashes.
pub struct SimDisk {
    platter: Arc<Mutex<Platter>>,
    policy: FsyncPolicy,
    fsync_latency: Duration,
    fsync_interval: Duration,
    lies: bool,
    /// The proposer's round file: one small record, synced at once.
    pub round: u32,
}

/// The disk as the production `GroupCommit` sees it.
struct SimStorage {
    platter: Arc<Mutex<Platter>>,
    fsync_latency: Duration,
    lies: bool,
}

fn lock(p: &Mutex<Platter>) -> MutexGuard<'_, Platter> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl AcceptorStorage for SimStorage {
    fn load(&mut self) -> Result<AcceptorState, StorageError> {
        Ok(lock(&self.platter).durable.clone())
    }

    fn commit(&mut self, changes: &[Change], sync: bool) -> Result<(), StorageError> {
        let mut p = lock(&self.platter);
        p.commits += 1;
        p.committed_changes += changes.len() as u64;
        if sync && !self.lies {
            p.in_flight.extend_from_slice(changes);
            p.busy = self.fsync_latency;
        } else {
            p.unsynced.extend_from_slice(changes);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut p = lock(&self.platter);
        let unsynced = std::mem::take(&mut p.unsynced);
        unsynced.iter().for_each(|c| p.durable.apply(c));
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

impl SimDisk {
    pub fn new(
        policy: FsyncPolicy,
        fsync_latency: Duration,
        fsync_interval: Duration,
        lies: bool,
    ) -> Self {
        SimDisk {
            platter: Arc::default(),
            policy,
            fsync_latency,
            fsync_interval,
            lies,
            round: 0,
        }
    }

    /// The store a (re)started node writes through: the production `NodeStore`, with a
    /// `GroupCommit` under the node's policy over this disk if it has an acceptor.
    pub fn store(&self, acceptor: bool) -> NodeStore {
        let cfg = StorageConfig {
            fsync_policy: self.policy,
            fsync_interval_ms: self.fsync_interval.as_millis().max(1) as u64,
            ..StorageConfig::default()
        };
        let votes = acceptor.then(|| {
            GroupCommit::new(
                Box::new(SimStorage {
                    platter: self.platter.clone(),
                    fsync_latency: self.fsync_latency,
                    lies: self.lies,
                }),
                &cfg,
            )
        });
        NodeStore::new(Some(RoundStore::Memory(self.round)), votes)
    }

    /// What a restarted acceptor loads.
    pub fn durable(&self) -> AcceptorState {
        lock(&self.platter).durable.clone()
    }

    /// How long the last commit keeps the node busy (zero: its messages leave now). Once.
    pub fn take_busy(&self) -> Duration {
        std::mem::take(&mut lock(&self.platter).busy)
    }

    /// The synced write under way reached the platter.
    pub fn complete(&self) {
        let mut p = lock(&self.platter);
        let done = std::mem::take(&mut p.in_flight);
        done.iter().for_each(|c| p.durable.apply(c));
    }

    /// A lying disk's cache reaches the platter (its own schedule, not the node's).
    pub fn flush_cache(&self) {
        let mut p = lock(&self.platter);
        let cached = std::mem::take(&mut p.unsynced);
        cached.iter().for_each(|c| p.durable.apply(c));
    }

    /// Whether the simulator must flush this disk's cache now and then.
    pub fn lies(&self) -> bool {
        self.lies && self.policy == FsyncPolicy::Sync
    }

    /// Power loss: everything not on the platter is gone.
    pub fn crash(&self) {
        let mut p = lock(&self.platter);
        p.unsynced.clear();
        p.in_flight.clear();
        p.busy = Duration::ZERO;
    }

    /// Commits that wrote changes, and the changes they carried (group commit at work).
    pub fn commits(&self) -> (u64, u64) {
        let p = lock(&self.platter);
        (p.commits, p.committed_changes)
    }
}
