//! An acceptor's disk in the simulator, under the node's fsync policy. A crash here is a power
//! loss: whatever the policy had not made durable is gone.

use crate::protocol::{AcceptorState, Change, Envelope};
use crate::storage::FsyncPolicy;

/// Changes and the replies that must wait for them.
#[derive(Default)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub sends: Vec<Envelope>,
}

pub struct SimDisk {
    pub policy: FsyncPolicy,
    /// What a restart loads.
    pub durable: AcceptorState,
    /// async: written to the OS, not yet fsynced.
    unsynced: Vec<Change>,
    /// sync: the batch being committed, and the one gathering behind it (group commit).
    in_flight: Option<Batch>,
    gathering: Batch,
    /// Bumped by every crash, so a commit that completes after one is dropped.
    pub incarnation: u64,
    /// Commits completed and the changes they carried (sync), to see group commit at work.
    pub commits: u64,
    pub committed_changes: u64,
}

/// What `write` asks of the simulation.
pub enum Write {
    /// Send these now.
    SendNow(Vec<Envelope>),
    /// Start a commit; when it completes call `commit_done`.
    StartCommit,
    /// Joined the batch behind the commit in flight.
    Queued,
}

impl SimDisk {
    pub fn new(policy: FsyncPolicy) -> Self {
        SimDisk {
            policy,
            durable: AcceptorState::default(),
            unsynced: Vec::new(),
            in_flight: None,
            gathering: Batch::default(),
            incarnation: 0,
            commits: 0,
            committed_changes: 0,
        }
    }

    /// An acceptor's step produced `changes` and `sends`.
    pub fn write(&mut self, changes: Vec<Change>, sends: Vec<Envelope>) -> Write {
        match self.policy {
            FsyncPolicy::None => Write::SendNow(sends),
            FsyncPolicy::Async => {
                self.unsynced.extend(changes);
                Write::SendNow(sends)
            }
            FsyncPolicy::Sync => {
                // Replies wait for their own changes and for every earlier commit.
                if changes.is_empty() && self.in_flight.is_none() {
                    return Write::SendNow(sends);
                }
                self.gathering.changes.extend(changes);
                self.gathering.sends.extend(sends);
                if self.in_flight.is_some() {
                    return Write::Queued;
                }
                self.in_flight = Some(std::mem::take(&mut self.gathering));
                Write::StartCommit
            }
        }
    }

    /// The commit in flight is durable: its replies may leave. Returns them, and whether
    /// another commit starts (the batch that gathered meanwhile).
    pub fn commit_done(&mut self) -> (Vec<Envelope>, bool) {
        let Some(batch) = self.in_flight.take() else {
            return (Vec::new(), false);
        };
        self.commits += 1;
        self.committed_changes += batch.changes.len() as u64;
        for c in &batch.changes {
            self.durable.apply(c);
        }
        let more = !self.gathering.changes.is_empty() || !self.gathering.sends.is_empty();
        if more {
            self.in_flight = Some(std::mem::take(&mut self.gathering));
        }
        (batch.sends, more)
    }

    /// async: the background fsync.
    pub fn fsync(&mut self) {
        for c in self.unsynced.drain(..) {
            self.durable.apply(&c);
        }
    }

    /// Power loss: everything not durable is gone.
    pub fn crash(&mut self) {
        self.incarnation += 1;
        self.unsynced.clear();
        self.in_flight = None;
        self.gathering = Batch::default();
    }
}
