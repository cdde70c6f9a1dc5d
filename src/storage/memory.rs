use super::{AcceptorStorage, StorageError};
use crate::protocol::{AcceptorState, Change};

/// Keeps the state in memory: a restart of the process loses it (fsync policy `none`).
#[derive(Default)]
pub struct MemoryStorage {
    state: AcceptorState,
}

impl AcceptorStorage for MemoryStorage {
    fn load(&mut self) -> Result<AcceptorState, StorageError> {
        Ok(self.state.clone())
    }

    fn commit(&mut self, changes: &[Change], _sync: bool) -> Result<(), StorageError> {
        changes.iter().for_each(|c| self.state.apply(c));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
