//! Acceptor storage: what survives a crash, and when a vote may leave.

use serde::{Deserialize, Serialize};
use std::fmt;

/// When an acceptor's replies may leave relative to its writes reaching the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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
