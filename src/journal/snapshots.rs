//! Where a learner keeps its snapshot images (protocol/image.rs): the newest `KEEP` files
//! `<instance>.<index>.snapshot` in the `snapshots/` directory beside its journal, or, for a
//! learner without a journal (and in the simulator), in memory. An image is written to a
//! temporary file, synced, renamed into place and the directory synced: a crash leaves the
//! old image or the new one, never a torn one. The kept images are also held in memory, so
//! a peer's fetch is answered without reading the disk.

use crate::protocol::image::{self, Image, ImageError};
use crate::protocol::{InstanceId, Position};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Images kept: the newest, and the one before it (a peer may be half way through it).
pub const KEEP: usize = 2;
const SUFFIX: &str = ".snapshot";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("snapshot {file}: {source}")]
    Image { file: String, source: ImageError },
    #[error("snapshot image refused: {0}")]
    Refused(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

struct Inner {
    dir: Option<PathBuf>,
    images: BTreeMap<Position, Arc<Vec<u8>>>,
    saved: u64,
}

/// A learner's snapshot images; clones share them (the driver, the stream server).
#[derive(Clone)]
pub struct SnapshotStore {
    cluster: u32,
    inner: Arc<Mutex<Inner>>,
}

impl SnapshotStore {
    /// Images kept in memory only.
    pub fn memory(cluster: u32) -> SnapshotStore {
        SnapshotStore {
            cluster,
            inner: Arc::new(Mutex::new(Inner {
                dir: None,
                images: BTreeMap::new(),
                saved: 0,
            })),
        }
    }

    /// Opens (creating) the store in `dir`. A damaged image is set aside as `*.damaged`
    /// (logged, the one before it serves); another cluster's image is refused.
    pub fn open(dir: &Path, cluster: u32) -> Result<SnapshotStore, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let mut images = BTreeMap::new();
        let list =
            std::fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        for entry in list {
            let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                if name.ends_with(".tmp") {
                    // A save the crash interrupted.
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            };
            if stem.parse::<Position>().is_err() {
                continue;
            }
            let path = entry.path();
            let bytes =
                std::fs::read(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
            match image::decode(&bytes, cluster) {
                Ok(img) => {
                    images.insert(img.below, Arc::new(bytes));
                }
                Err(e @ ImageError::Cluster { .. }) => {
                    return Err(SnapshotError::Image {
                        file: path.display().to_string(),
                        source: e,
                    })
                }
                Err(e) => {
                    tracing::warn!("snapshot {}: {e}; set aside as .damaged", path.display());
                    let _ = std::fs::rename(&path, path.with_extension("damaged"));
                }
            }
        }
        Ok(SnapshotStore {
            cluster,
            inner: Arc::new(Mutex::new(Inner {
                dir: Some(dir.to_path_buf()),
                images,
                saved: 0,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cluster(&self) -> u32 {
        self.cluster
    }

    /// Checks `bytes` is an image of this cluster and keeps it durably; drops images beyond
    /// the newest `KEEP`. Returns it decoded.
    pub fn save(&self, bytes: Arc<Vec<u8>>) -> Result<Image, SnapshotError> {
        let img = image::decode(&bytes, self.cluster).map_err(|e| SnapshotError::Image {
            file: "(new)".into(),
            source: e,
        })?;
        let mut inner = self.lock();
        if let Some(dir) = inner.dir.clone() {
            let path = dir.join(format!("{}{SUFFIX}", img.below));
            let tmp = dir.join(format!("{}.tmp", img.below));
            let what = |w: &str| format!("cannot {w} {}", tmp.display());
            let mut f = std::fs::File::create(&tmp).map_err(io_err(what("create")))?;
            f.write_all(&bytes).map_err(io_err(what("write")))?;
            f.sync_all().map_err(io_err(what("sync")))?;
            std::fs::rename(&tmp, &path).map_err(io_err(what("rename")))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(format!("cannot sync {}", dir.display())))?;
        }
        inner.images.insert(img.below, bytes);
        inner.saved += 1;
        while inner.images.len() > KEEP {
            let (old, _) = inner.images.pop_first().expect("more than KEEP");
            if let Some(dir) = &inner.dir {
                let _ = std::fs::remove_file(dir.join(format!("{old}{SUFFIX}")));
            }
        }
        Ok(img)
    }

    /// The newest image and where it stands.
    pub fn newest(&self) -> Option<(Position, Arc<Vec<u8>>)> {
        self.lock()
            .images
            .last_key_value()
            .map(|(p, b)| (*p, b.clone()))
    }

    /// Every instance below this is covered by the newest image (0: none).
    pub fn newest_below(&self) -> InstanceId {
        self.lock()
            .images
            .last_key_value()
            .map_or(0, |(p, _)| p.instance)
    }

    /// The image a peer asks for: the one at `below` while kept, else the newest, if it
    /// covers every instance below `at_least`.
    pub fn serving(
        &self,
        at_least: InstanceId,
        below: Position,
    ) -> Option<(Position, Arc<Vec<u8>>)> {
        let inner = self.lock();
        let held = inner
            .images
            .get_key_value(&below)
            .or_else(|| inner.images.last_key_value());
        held.filter(|(p, _)| p.instance >= at_least)
            .map(|(p, b)| (*p, b.clone()))
    }

    /// Images saved since this store was opened.
    pub fn saved(&self) -> u64 {
        self.lock().saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LearnerSnapshot;

    fn img(cluster: u32, instance: u64, app: &[u8]) -> Arc<Vec<u8>> {
        let below = Position { instance, index: 0 };
        let learner = LearnerSnapshot {
            next: instance,
            ..Default::default()
        };
        Arc::new(image::encode(cluster, below, &learner, Some(app)))
    }

    #[test]
    fn the_newest_images_survive_a_reopen_and_damaged_ones_are_set_aside() {
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        impl Dir {
            fn path(&self) -> &Path {
                &self.0
            }
        }
        let dir =
            Dir(std::env::temp_dir().join(format!("ethpaxos-snapshots-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(dir.path());
        let s = SnapshotStore::open(dir.path(), 4).unwrap();
        for i in [10, 20, 30] {
            s.save(img(4, i, b"state")).unwrap();
        }
        assert_eq!(s.newest_below(), 30);
        let again = SnapshotStore::open(dir.path(), 4).unwrap();
        assert_eq!(again.newest().map(|(p, _)| p.instance), Some(30));
        assert_eq!(
            again
                .serving(
                    15,
                    Position {
                        instance: 20,
                        index: 0
                    }
                )
                .map(|(p, _)| p.instance),
            Some(20),
            "an image still kept is served while a peer reads it"
        );
        assert_eq!(again.serving(31, Position::default()), None);
        // The newest damaged on disk: the one before it serves.
        let newest = dir.path().join(format!("30.0{SUFFIX}"));
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let third = SnapshotStore::open(dir.path(), 4).unwrap();
        assert_eq!(third.newest_below(), 20);
        assert!(dir.path().join("30.0.damaged").exists());
        // Another cluster's image is refused by name, on disk and to save.
        assert!(third.save(img(5, 40, b"x")).is_err());
        std::fs::write(dir.path().join(format!("50.0{SUFFIX}")), &*img(5, 50, b"x")).unwrap();
        let e = SnapshotStore::open(dir.path(), 4)
            .err()
            .expect("foreign image");
        assert!(e.to_string().contains("cluster 5"), "{e}");
    }
}
