//! A proposer's highest round, kept in a small file: a proposer restarted without it could
//! propose two values under one ballot.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RoundFile {
    path: PathBuf,
}

impl RoundFile {
    pub fn new(dir: &Path, id: crate::protocol::NodeId) -> Self {
        RoundFile {
            path: dir.join(format!("proposer-{id}.round")),
        }
    }

    /// The stored round (0 if none yet).
    pub fn load(&self) -> std::io::Result<u32> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Stores `round` durably: written to a temporary file, fsynced, renamed over the old one.
    pub fn store(&self, round: u32) -> std::io::Result<()> {
        let tmp = self.path.with_extension("round.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{round}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
