//! A simulated node's disk behind the one storage seam (`protocol::Persist`), under the
//! node's fsync policy. A crash here is a power loss: whatever had not reached the platter is
//! gone.
//!
//! Under `sync` a commit takes `fsync_latency` of virtual time, during which the node is busy
//! (as a real node loop is, blocked in fsync): its messages leave and its changes become
//! durable when the commit completes; a crash before that loses both. Under `async` changes
//! are durable at the next periodic fsync; under `none` never. A lying disk (`lies`)
//! acknowledges a `sync` commit at once and keeps it in its cache until the next periodic
//! fsync: the checker must catch what that does.

use crate::protocol::{AcceptorState, Change, Persist};
use crate::storage::FsyncPolicy;
use std::time::Duration;

pub struct SimDisk {
    policy: FsyncPolicy,
    fsync_latency: Duration,
    lies: bool,
    /// What a restart loads: the acceptor's state and the proposer's round.
    pub durable: AcceptorState,
    pub round: u32,
    /// Written, not yet synced (async, or a lying disk's cache).
    unsynced: Vec<Change>,
    /// The sync commit under way: durable once `complete` is called.
    in_flight: Vec<Change>,
    /// How long the last commit keeps the node busy.
    busy: Duration,
    /// Commits that wrote changes, and the changes they carried (group commit at work).
    pub commits: u64,
    pub committed_changes: u64,
}

impl SimDisk {
    pub fn new(policy: FsyncPolicy, fsync_latency: Duration, lies: bool) -> Self {
        SimDisk {
            policy,
            fsync_latency,
            lies,
            durable: AcceptorState::default(),
            round: 0,
            unsynced: Vec::new(),
            in_flight: Vec::new(),
            busy: Duration::ZERO,
            commits: 0,
            committed_changes: 0,
        }
    }

    /// How long the last commit keeps the node busy (zero: its messages leave now). Once.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    /// The sync commit under way reached the disk.
    pub fn complete(&mut self) {
        for c in self.in_flight.drain(..) {
            self.durable.apply(&c);
        }
    }

    /// The periodic fsync (async, and a lying disk's cache flush).
    pub fn fsync(&mut self) {
        for c in self.unsynced.drain(..) {
            self.durable.apply(&c);
        }
    }

    /// Whether this disk is flushed periodically.
    pub fn periodic(&self) -> bool {
        self.policy == FsyncPolicy::Async || (self.policy == FsyncPolicy::Sync && self.lies)
    }

    /// Power loss: everything not durable is gone.
    pub fn crash(&mut self) {
        self.unsynced.clear();
        self.in_flight.clear();
        self.busy = Duration::ZERO;
    }
}

impl Persist for SimDisk {
    type Error = std::convert::Infallible;

    fn persist(&mut self, _now: Duration, changes: &[Change]) -> Result<(), Self::Error> {
        let mut votes = Vec::new();
        for c in changes {
            match c {
                // A proposer's round is one small file, synced at once.
                Change::ProposerRound(r) => self.round = self.round.max(*r),
                c => votes.push(c.clone()),
            }
        }
        if votes.is_empty() {
            return Ok(());
        }
        self.commits += 1;
        self.committed_changes += votes.len() as u64;
        match self.policy {
            FsyncPolicy::None => {}
            FsyncPolicy::Async => self.unsynced.extend(votes),
            FsyncPolicy::Sync if self.lies => self.unsynced.extend(votes),
            FsyncPolicy::Sync => {
                self.in_flight.extend(votes);
                self.busy = self.fsync_latency;
            }
        }
        Ok(())
    }
}
