//! Where a journal's segments live: files in a directory (a node), or memory that keeps across
//! a simulated crash only what was synced (the simulator). The journal's logic is the same
//! over both.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub trait SegmentFiles: Send {
    /// The segments present, by id, oldest first.
    fn list(&mut self) -> io::Result<Vec<u64>>;
    fn len(&mut self, seg: u64) -> io::Result<u64>;
    fn read(&mut self, seg: u64) -> io::Result<Vec<u8>>;
    /// Up to `max` bytes of a segment from `offset` (fewer at its end).
    fn read_at(&mut self, seg: u64, offset: u64, max: usize) -> io::Result<Vec<u8>>;
    /// Creates an empty segment (its directory entry durable at once).
    fn create(&mut self, seg: u64) -> io::Result<()>;
    fn append(&mut self, seg: u64, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self, seg: u64) -> io::Result<()>;
    fn truncate(&mut self, seg: u64, len: u64) -> io::Result<()>;
    fn remove(&mut self, seg: u64) -> io::Result<()>;
    /// How long ago the segment was last written (None where unknown).
    fn age(&mut self, seg: u64) -> Option<Duration>;
}

/// A segment's file name: its id (the first instance it may hold), zero-padded so names sort.
pub fn segment_name(seg: u64) -> String {
    format!("{seg:020}.journal")
}

/// The segment ids in `dir`, oldest first (other files are ignored).
pub fn list_dir(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".journal")) else {
            continue;
        };
        if let (20, Ok(id)) = (stem.len(), stem.parse()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Segments as files in a directory.
pub struct DiskFiles {
    dir: PathBuf,
    /// The segment being appended to, kept open.
    open: Option<(u64, File)>,
}

impl DiskFiles {
    pub fn new(dir: &Path) -> io::Result<DiskFiles> {
        std::fs::create_dir_all(dir)?;
        Ok(DiskFiles {
            dir: dir.to_path_buf(),
            open: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seg: u64) -> PathBuf {
        self.dir.join(segment_name(seg))
    }

    fn file(&mut self, seg: u64) -> io::Result<&mut File> {
        if self.open.as_ref().is_none_or(|(s, _)| *s != seg) {
            let f = OpenOptions::new().append(true).open(self.path(seg))?;
            self.open = Some((seg, f));
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl SegmentFiles for DiskFiles {
    fn list(&mut self) -> io::Result<Vec<u64>> {
        list_dir(&self.dir)
    }

    fn len(&mut self, seg: u64) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(seg))?.len())
    }

    fn read(&mut self, seg: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(self.path(seg))?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_at(&mut self, seg: u64, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(self.path(seg))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn create(&mut self, seg: u64) -> io::Result<()> {
        File::create(self.path(seg))?;
        self.sync_dir()
    }

    fn append(&mut self, seg: u64, bytes: &[u8]) -> io::Result<()> {
        self.file(seg)?.write_all(bytes)
    }

    fn sync(&mut self, seg: u64) -> io::Result<()> {
        self.file(seg)?.sync_data()
    }

    fn truncate(&mut self, seg: u64, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(self.path(seg))?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&mut self, seg: u64) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|(s, _)| *s == seg) {
            self.open = None;
        }
        std::fs::remove_file(self.path(seg))?;
        self.sync_dir()
    }

    fn age(&mut self, seg: u64) -> Option<Duration> {
        std::fs::metadata(self.path(seg))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
    }
}

#[derive(Default)]
struct MemSegment {
    data: Vec<u8>,
    synced: usize,
}

/// Segments in memory, shared between a running journal and the simulated disk that outlives
/// it: `crash` drops every byte not synced.
#[derive(Clone, Default)]
pub struct MemFiles(Arc<Mutex<BTreeMap<u64, MemSegment>>>);

impl MemFiles {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, MemSegment>> {
        // A poisoned lock only means another simulated node panicked: its state is still
        // what it wrote.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A power loss: what was not synced is gone.
    pub fn crash(&self) {
        for s in self.lock().values_mut() {
            s.data.truncate(s.synced);
        }
    }

    /// A disk that lies: a crash loses the second half of the newest segment, synced or not.
    pub fn crash_losing_synced(&self) {
        self.crash();
        if let Some(s) = self.lock().values_mut().next_back() {
            let keep = s.synced / 2;
            s.data.truncate(keep);
            s.synced = keep;
        }
    }

    /// Bytes held, synced or not.
    pub fn bytes(&self) -> u64 {
        self.lock().values().map(|s| s.data.len() as u64).sum()
    }

    /// Corrupts one byte of a segment (tests of recovery).
    pub fn flip(&self, seg: u64, at: usize) {
        if let Some(s) = self.lock().get_mut(&seg) {
            if let Some(b) = s.data.get_mut(at) {
                *b ^= 0x55;
            }
        }
    }
}

fn missing(seg: u64) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no segment {seg}"))
}

impl SegmentFiles for MemFiles {
    fn list(&mut self) -> io::Result<Vec<u64>> {
        Ok(self.lock().keys().copied().collect())
    }
    fn len(&mut self, seg: u64) -> io::Result<u64> {
        self.lock()
            .get(&seg)
            .map(|s| s.data.len() as u64)
            .ok_or_else(|| missing(seg))
    }
    fn read(&mut self, seg: u64) -> io::Result<Vec<u8>> {
        self.lock()
            .get(&seg)
            .map(|s| s.data.clone())
            .ok_or_else(|| missing(seg))
    }
    fn read_at(&mut self, seg: u64, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let segs = self.lock();
        let data = &segs.get(&seg).ok_or_else(|| missing(seg))?.data;
        let start = (offset as usize).min(data.len());
        Ok(data[start..(start + max).min(data.len())].to_vec())
    }
    fn create(&mut self, seg: u64) -> io::Result<()> {
        self.lock().insert(seg, MemSegment::default());
        Ok(())
    }
    fn append(&mut self, seg: u64, bytes: &[u8]) -> io::Result<()> {
        self.lock()
            .get_mut(&seg)
            .ok_or_else(|| missing(seg))?
            .data
            .extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self, seg: u64) -> io::Result<()> {
        let mut segs = self.lock();
        let s = segs.get_mut(&seg).ok_or_else(|| missing(seg))?;
        s.synced = s.data.len();
        Ok(())
    }
    fn truncate(&mut self, seg: u64, len: u64) -> io::Result<()> {
        let mut segs = self.lock();
        let s = segs.get_mut(&seg).ok_or_else(|| missing(seg))?;
        s.data.truncate(len as usize);
        s.synced = s.synced.min(s.data.len());
        Ok(())
    }
    fn remove(&mut self, seg: u64) -> io::Result<()> {
        self.lock().remove(&seg);
        Ok(())
    }
    fn age(&mut self, _seg: u64) -> Option<Duration> {
        None
    }
}

/// Reads a segment file from an offset on, as a stream reader follows the journal.
pub struct SegmentReader {
    pub seg: u64,
    file: File,
    pub offset: u64,
}

impl SegmentReader {
    pub fn open(dir: &Path, seg: u64, offset: u64) -> io::Result<SegmentReader> {
        let file = File::open(dir.join(segment_name(seg)))?;
        Ok(SegmentReader { seg, file, offset })
    }

    /// Appends up to `max` bytes from the offset to `buf` (the offset does not move: the
    /// caller advances it by what it parsed). Returns how many.
    pub fn read_at(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        let start = buf.len();
        (&mut self.file).take(max as u64).read_to_end(buf)?;
        Ok(buf.len() - start)
    }
}
