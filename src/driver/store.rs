//! A node's durable state behind the one storage seam (`protocol::Persist`): the acceptor's
//! votes in one group commit under the fsync policy (RocksDB, or memory for `none`), and the
//! proposer's round in its own small file.

use crate::protocol::{Change, Persist};
use crate::storage::{CommitReport, GroupCommit, RoundFile, StorageError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("acceptor storage: {0}")]
    Acceptor(#[from] StorageError),
    #[error("cannot store the proposer's round: {0}")]
    Round(std::io::Error),
}

/// Where a proposer keeps its highest round.
pub enum RoundStore {
    File(RoundFile),
    /// Kept in memory: nothing survives the process (the demo with fsync policy `none`), or
    /// the simulator keeps it as the node's disk.
    Memory(u32),
}

/// A node's storage: what its roles need made durable before their messages leave.
#[derive(Default)]
pub struct NodeStore {
    round: Option<RoundStore>,
    acceptor: Option<GroupCommit>,
    /// Group commits that wrote changes, and the changes they carried.
    pub commits: u64,
    pub committed_changes: u64,
    last: Option<CommitReport>,
    scratch: Vec<Change>,
}

impl NodeStore {
    pub fn new(round: Option<RoundStore>, acceptor: Option<GroupCommit>) -> NodeStore {
        NodeStore {
            round,
            acceptor,
            ..NodeStore::default()
        }
    }

    /// The last commit's report (for the metrics), once.
    pub fn take_report(&mut self) -> Option<CommitReport> {
        self.last.take()
    }

    /// Makes everything committed so far durable (at shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(a) = &mut self.acceptor {
            a.sync()?;
        }
        Ok(())
    }

    /// The round kept in memory (0 if none, or if it is kept in a file).
    pub fn round_in_memory(&self) -> u32 {
        match &self.round {
            Some(RoundStore::Memory(r)) => *r,
            _ => 0,
        }
    }
}

impl Persist for NodeStore {
    type Error = StoreError;

    fn persist(&mut self, now: Duration, changes: &[Change]) -> Result<(), StoreError> {
        let round = changes
            .iter()
            .filter_map(|c| match c {
                Change::ProposerRound(r) => Some(*r),
                _ => None,
            })
            .max();
        match (round, &mut self.round) {
            (Some(r), Some(RoundStore::File(f))) => f.store(r).map_err(StoreError::Round)?,
            (Some(r), Some(RoundStore::Memory(kept))) => *kept = (*kept).max(r),
            _ => {}
        }
        let Some(acceptor) = &mut self.acceptor else {
            return Ok(());
        };
        let votes: &[Change] = if round.is_some() {
            self.scratch.clear();
            self.scratch.extend(
                changes
                    .iter()
                    .filter(|c| !matches!(c, Change::ProposerRound(_)))
                    .cloned(),
            );
            &self.scratch
        } else {
            changes
        };
        // Called every turn, changes or not: under `async` it syncs the log on its period.
        let report = acceptor.commit(now, votes)?;
        if report.changes > 0 {
            self.commits += 1;
            self.committed_changes += report.changes as u64;
        }
        self.last = Some(report);
        Ok(())
    }
}
