//! The `learner:` section of a node's YAML: where and how its learner keeps its journal.

use super::{JournalConfig, Retention};
use crate::storage::FsyncPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// false: the learner keeps no journal; a restart starts it at instance 0 (it re-fetches
    /// what acceptors still hold), and its stream serves only `live`.
    pub journal: bool,
    /// `sync`: a turn's deliveries are synced before they count as durable (for trim and a
    /// restart) and before stream readers see them. `async`: synced every
    /// `fsync_interval_ms`; a power loss re-delivers the last interval after the restart, at
    /// the same positions. `none`: never synced. Default: the node's `storage.fsync_policy`
    /// (`sync` unless the node is an acceptor that set another).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync_policy: Option<FsyncPolicy>,
    /// The journal's directory. Default: `learner-<id>` under `storage.path`; with neither,
    /// the learner keeps no journal and a restart starts it at instance 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub fsync_interval_ms: u64,
    /// A new segment starts once the active one holds this many MiB.
    pub segment_mb: u64,
    /// Retention: old segments are deleted while the journal holds more than this many MiB
    /// (0: no bound) ...
    pub retention_mb: u64,
    /// ... or while a whole segment is more than this many instances behind (0: no bound) ...
    pub retention_instances: u64,
    /// ... or once a segment was last written this many seconds ago (0: no bound).
    pub retention_age_s: u64,
    /// The learner takes a snapshot image of its own state (delivery point and exactly-once
    /// table, no application state) every this many instances; acceptors trim by the newest
    /// a live learner holds. 0: only its application hands it snapshots (over the stream
    /// socket), and it refuses peers' images without application state.
    pub snapshot_every: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            journal: true,
            fsync_policy: None,
            path: None,
            fsync_interval_ms: 10,
            segment_mb: 64,
            retention_mb: 1024,
            retention_instances: 0,
            retention_age_s: 0,
            snapshot_every: 50_000,
        }
    }
}

impl LearnerConfig {
    /// Where node `id`'s journal lives, if anywhere.
    pub fn dir(&self, storage: Option<&Path>, id: crate::protocol::NodeId) -> Option<PathBuf> {
        if !self.journal {
            return None;
        }
        self.path
            .clone()
            .or_else(|| storage.map(|s| s.join(format!("learner-{id}"))))
    }

    /// Where node `id`'s snapshot images live: beside its journal (None: in memory).
    pub fn snapshot_dir(
        &self,
        storage: Option<&Path>,
        id: crate::protocol::NodeId,
    ) -> Option<PathBuf> {
        self.dir(storage, id).map(|d| d.join("snapshots"))
    }

    /// The journal's settings; `storage` is the node's `storage.fsync_policy`.
    pub fn journal(&self, storage: FsyncPolicy) -> JournalConfig {
        JournalConfig {
            fsync_policy: self.fsync_policy.unwrap_or(storage),
            fsync_interval: Duration::from_millis(self.fsync_interval_ms),
            segment_bytes: self.segment_mb << 20,
            retention: Retention {
                bytes: self.retention_mb << 20,
                instances: self.retention_instances,
                age: (self.retention_age_s > 0).then(|| Duration::from_secs(self.retention_age_s)),
            },
        }
    }

    /// The field at fault and why, for a value out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=60_000).contains(&self.fsync_interval_ms) {
            return Err(("learner.fsync_interval_ms", "must be 1..=60000".into()));
        }
        if !(1..=4096).contains(&self.segment_mb) {
            return Err(("learner.segment_mb", "must be 1..=4096".into()));
        }
        if self.retention_mb != 0 && self.retention_mb < 2 * self.segment_mb {
            return Err((
                "learner.retention_mb",
                format!(
                    "{} MiB keeps less than two segments of learner.segment_mb {} (0: no bound)",
                    self.retention_mb, self.segment_mb
                ),
            ));
        }
        if let Some(p) = &self.path {
            if p.exists() && !p.is_dir() {
                return Err((
                    "learner.path",
                    format!("{} is not a directory", p.display()),
                ));
            }
        }
        Ok(())
    }
}
