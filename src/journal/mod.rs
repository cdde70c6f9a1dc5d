//! A learner's journal: the durable record of what it delivered, so that after a restart it
//! resumes where it stopped (never at instance 0), reports for trim only what is durable, and
//! serves its stream again from any position it still holds.
//!
//! The journal is a sequence of segments (record.rs gives the format). Each segment starts
//! with a header holding the learner's state at that point (next instance, exactly-once
//! table), so a restart reads only the newest segment, and retention may delete old segments
//! whole. Appends happen at the end of each driver turn; under `sync` the segment is synced
//! before the turn's progress counts as durable (and before the stream's readers or the
//! outputs see it), under `async` every `fsync_interval_ms`, under `none` never.

#![forbid(unsafe_code)]

mod config;
mod files;
pub mod record;
mod snapshots;
mod tail;

pub use config::LearnerConfig;
pub use files::{list_dir, segment_name, DiskFiles, MemFiles, SegmentFiles, SegmentReader};
pub use snapshots::{SnapshotError, SnapshotStore, KEEP};
pub use tail::{JournalTail, TailError, TailReader};

use crate::protocol::{ClientValue, Delivery, InstanceId, LearnerSnapshot, Position};
use crate::storage::FsyncPolicy;
use record::{Parsed, Record};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a journal keeps its segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    pub fsync_policy: FsyncPolicy,
    /// `async`: how often the active segment is synced.
    pub fsync_interval: Duration,
    /// A new segment starts once the active one holds this many bytes.
    pub segment_bytes: u64,
    pub retention: Retention,
}

/// How much of its history a journal keeps (0 or None: no bound of that kind). The newest
/// segment is always kept: it holds the learner's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub bytes: u64,
    pub instances: u64,
    pub age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("learner journal {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("learner journal segment {seg}: {why}")]
    Corrupt { seg: u64, why: String },
    #[error(
        "learner journal segment {seg} belongs to cluster {found}, this node is in cluster \
         {ours}: refusing to resume another cluster's stream"
    )]
    OtherCluster { seg: u64, found: u32, ours: u32 },
}

fn corrupt_at(seg: u64, offset: u64, why: String) -> JournalError {
    JournalError::Corrupt {
        seg,
        why: format!("{why} at offset {offset}"),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JournalError {
    let what = what.into();
    move |source| JournalError::Io { what, source }
}

/// What a stream reader of this journal needs to know without touching it: the instance
/// below which everything is in the segments, and the oldest segment kept.
#[derive(Debug, Default)]
pub struct Marks {
    pub end: AtomicU64,
    pub oldest: AtomicU64,
}

/// What opening a journal found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments found (0: a new journal).
    pub segments: usize,
    /// Records replayed onto the newest segment's header.
    pub records: u64,
    /// Bytes of a torn or corrupt tail cut off, and why.
    pub cut: Option<(u64, String)>,
}

/// The journal notes where records start every this many bytes, so a peer's fetch from a
/// position reads from near it rather than from its segment's start.
const INDEX_EVERY: u64 = 64 << 10;
/// What a peer's fetch reads at a time.
const PEER_READ: usize = 64 << 10;

/// What this learner's journal holds from a position on, for a peer learner that needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPage {
    /// Every instance below this is complete in `values` or before `from`.
    pub through: InstanceId,
    pub oldest: InstanceId,
    pub end: InstanceId,
    pub values: Vec<(Position, ClientValue)>,
}

impl PeerPage {
    /// Where the next page starts: after its last value, or at `through` when that
    /// instance holds nothing of this page yet.
    pub fn next(&self) -> Position {
        match self.values.last() {
            Some((p, _)) if self.through <= p.instance => Position {
                instance: p.instance,
                index: p.index + 1,
            },
            _ => Position {
                instance: self.through,
                index: 0,
            },
        }
    }
}

/// Outside `sync`, records are written once this many bytes gathered ...
const WRITE_BATCH: usize = 256 << 10;
/// ... or this long after the last write.
const WRITE_EVERY: Duration = Duration::from_millis(1);

struct Segment {
    id: u64,
    bytes: u64,
}

/// Counts for metrics and summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    pub appended_bytes: u64,
    pub syncs: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
}

pub struct Journal {
    files: Box<dyn SegmentFiles>,
    cfg: JournalConfig,
    cluster: u32,
    /// Oldest first; the last is the one appended to.
    segments: VecDeque<Segment>,
    buf: Vec<u8>,
    /// Every instance below this is in `buf` or the segments.
    recorded: InstanceId,
    /// Every instance below this is in the segments (written, maybe not synced).
    written: InstanceId,
    last_write: Option<Duration>,
    /// Every instance below this is as durable as the policy makes it.
    durable: InstanceId,
    /// Bytes appended since the last sync.
    dirty: bool,
    last_sync: Duration,
    last_retention: Duration,
    marks: Arc<Marks>,
    /// Where records start, sparsely: the records at (segment, offset) cover the instances
    /// from the key on.
    index: BTreeMap<InstanceId, (u64, u64)>,
    /// Segments whose records are all in `index` (the others are indexed when first read).
    indexed: HashSet<u64>,
    /// Bytes written since the last index entry.
    unindexed: u64,
    /// Retention keeps every segment from the one holding this instance on: where an
    /// application restoring the newest snapshot replays from (None: no such bound).
    hold_from: Option<InstanceId>,
    pub stats: JournalStats,
}

impl Journal {
    /// Opens the journal in `files`, creating it if empty, and returns the learner's state:
    /// the newest segment's header with that segment's records replayed onto it. A torn tail
    /// (a crash mid-write) is cut off; a newest segment without a whole header (a crash while
    /// starting it) is dropped for the one before.
    pub fn open(
        mut files: Box<dyn SegmentFiles>,
        cfg: JournalConfig,
        cluster: u32,
    ) -> Result<(Journal, LearnerSnapshot, Recovery), JournalError> {
        let mut ids = files.list().map_err(io_err("cannot list segments"))?;
        let mut recovery = Recovery {
            segments: ids.len(),
            ..Recovery::default()
        };
        let mut state = None;
        let mut newest_points = Vec::new();
        while let Some(&id) = ids.last() {
            let data = files
                .read(id)
                .map_err(io_err(format!("cannot read segment {id}")))?;
            match replay(&data, id, cluster)? {
                Some(Replayed {
                    snapshot,
                    good,
                    records,
                    points,
                }) => {
                    if good < data.len() {
                        let why = match record::parse(&data, good) {
                            Parsed::Bad(why) | Parsed::Short(why) => why,
                            _ => "trailing bytes".into(),
                        };
                        tracing::warn!(
                            "learner journal segment {id}: cutting {} bytes at offset {good} \
                             ({why}); resuming at instance {}",
                            data.len() - good,
                            snapshot.next
                        );
                        files
                            .truncate(id, good as u64)
                            .map_err(io_err(format!("cannot cut segment {id}")))?;
                        recovery.cut = Some(((data.len() - good) as u64, why));
                    }
                    recovery.records = records;
                    newest_points = points;
                    state = Some(snapshot);
                    break;
                }
                None => {
                    // Under `sync` a segment's header is synced before any older segment
                    // is deleted, so only a crash under `none` (or a damaged disk) leaves
                    // no whole header at all: the learner then starts over at instance 0
                    // and fetches what acceptors still hold.
                    tracing::warn!(
                        "learner journal segment {id} has no whole header (a crash while \
                         starting it): dropping it{}",
                        if ids.len() == 1 {
                            "; no segment is left, the learner starts at instance 0"
                        } else {
                            ""
                        }
                    );
                    files
                        .remove(id)
                        .map_err(io_err(format!("cannot remove segment {id}")))?;
                    ids.pop();
                }
            }
        }
        let mut segments = VecDeque::new();
        for &id in &ids {
            let bytes = files
                .len(id)
                .map_err(io_err(format!("cannot size segment {id}")))?;
            segments.push_back(Segment { id, bytes });
        }
        let snapshot = state.unwrap_or_default();
        let mut j = Journal {
            files,
            cfg,
            cluster,
            segments,
            buf: Vec::new(),
            recorded: snapshot.next,
            written: snapshot.next,
            last_write: None,
            durable: snapshot.next,
            dirty: false,
            last_sync: Duration::ZERO,
            last_retention: Duration::ZERO,
            marks: Arc::new(Marks::default()),
            index: BTreeMap::new(),
            indexed: HashSet::new(),
            unindexed: 0,
            hold_from: None,
            stats: JournalStats::default(),
        };
        for s in &j.segments {
            j.index.insert(s.id, (s.id, 0));
        }
        if let Some(newest) = j.segments.back().map(|s| s.id) {
            j.index
                .extend(newest_points.into_iter().map(|(i, at)| (i, (newest, at))));
            j.indexed.insert(newest);
        }
        if j.segments.is_empty() {
            j.start_segment(&snapshot)?;
        }
        j.publish_marks();
        Ok((j, snapshot, recovery))
    }

    /// The marks a stream reader follows.
    pub fn marks(&self) -> Arc<Marks> {
        self.marks.clone()
    }

    /// Retention keeps what an application restoring the snapshot at `instance` replays
    /// (every segment from the one holding it on), whatever its bounds say.
    pub fn hold_from(&mut self, instance: InstanceId) {
        self.hold_from = Some(instance);
    }

    /// Every instance below this is durable.
    pub fn durable(&self) -> InstanceId {
        self.durable
    }

    /// The first instance the oldest segment may hold.
    pub fn oldest(&self) -> InstanceId {
        self.segments.front().map_or(self.written, |s| s.id)
    }

    /// Records what one instance delivered (written at the end of the turn).
    pub fn append(&mut self, d: &Delivery) {
        record::delivered(
            &mut self.buf,
            d.instance,
            d.indexes.iter().copied().zip(&d.values),
        );
        self.recorded = self.recorded.max(d.instance + 1);
    }

    /// Ends a turn: writes its records (under `sync` at once; otherwise once
    /// `WRITE_BATCH` bytes or `WRITE_EVERY` gathered, a system call per turn being most of
    /// what a journal costs), syncs as the policy says, starts a new segment when the active
    /// one is full and applies retention. `learner` is the learner's state after the turn.
    /// Returns the durable delivery point.
    pub fn end_turn(
        &mut self,
        now: Duration,
        learner: &LearnerSnapshot,
    ) -> Result<InstanceId, JournalError> {
        if learner.next > self.recorded {
            record::through(&mut self.buf, learner.next);
            self.recorded = learner.next;
        }
        let policy = self.cfg.fsync_policy;
        if !self.buf.is_empty()
            && (policy == FsyncPolicy::Sync
                || self.buf.len() >= WRITE_BATCH
                || self
                    .last_write
                    .is_none_or(|t| now.saturating_sub(t) >= WRITE_EVERY))
        {
            self.write(now)?;
        }
        let due = match policy {
            FsyncPolicy::Sync => true,
            FsyncPolicy::Async => now.saturating_sub(self.last_sync) >= self.cfg.fsync_interval,
            FsyncPolicy::None => false,
        };
        if self.dirty && due {
            self.sync_active(now)?;
        } else if policy == FsyncPolicy::None {
            self.durable = self.written;
        }
        if self.buf.is_empty()
            && self
                .segments
                .back()
                .is_some_and(|s| s.bytes >= self.cfg.segment_bytes)
        {
            if self.dirty && policy != FsyncPolicy::None {
                self.sync_active(now)?;
            }
            self.start_segment(learner)?;
            self.retain(now)?;
        } else if now.saturating_sub(self.last_retention) >= Duration::from_secs(1) {
            self.retain(now)?;
        }
        self.publish_marks();
        Ok(self.durable)
    }

    fn write(&mut self, now: Duration) -> Result<(), JournalError> {
        let active = self.segments.back().map_or(0, |s| s.id);
        if self.unindexed >= INDEX_EVERY {
            let at = self.segments.back().map_or(0, |s| s.bytes);
            self.index.insert(self.written, (active, at));
            self.unindexed = 0;
        }
        self.unindexed += self.buf.len() as u64;
        self.files
            .append(active, &self.buf)
            .map_err(io_err(format!("cannot append to segment {active}")))?;
        self.stats.appended_bytes += self.buf.len() as u64;
        if let Some(s) = self.segments.back_mut() {
            s.bytes += self.buf.len() as u64;
        }
        self.buf.clear();
        self.dirty = true;
        self.written = self.recorded;
        self.last_write = Some(now);
        Ok(())
    }

    /// Writes and syncs what was recorded (at a clean stop, whatever the policy).
    pub fn sync(&mut self, now: Duration) -> Result<(), JournalError> {
        if !self.buf.is_empty() {
            self.write(now)?;
        }
        if self.dirty {
            self.sync_active(now)?;
        }
        self.publish_marks();
        Ok(())
    }

    fn sync_active(&mut self, now: Duration) -> Result<(), JournalError> {
        let active = self.segments.back().map_or(0, |s| s.id);
        self.files
            .sync(active)
            .map_err(io_err(format!("cannot sync segment {active}")))?;
        self.stats.syncs += 1;
        self.dirty = false;
        self.last_sync = now;
        self.durable = self.written;
        Ok(())
    }

    /// Where a learner resumes: its journal's state, or the newest image in `store` if that
    /// stands past it (a crash between storing an installed image and restarting the
    /// journal at it, or a journal lost with its disk). Returns the state and the image's
    /// position when the image won.
    pub fn resume(
        &mut self,
        state: LearnerSnapshot,
        store: &SnapshotStore,
    ) -> Result<(LearnerSnapshot, Option<Position>), JournalError> {
        let Some((below, bytes)) = store.newest() else {
            return Ok((state, None));
        };
        if below.instance <= state.next {
            return Ok((state, None));
        }
        let img = crate::protocol::image::decode(&bytes, self.cluster)
            .map_err(|e| corrupt_at(0, 0, format!("snapshot image at {below}: {e}")))?;
        self.install(Duration::ZERO, &img.learner)?;
        Ok((img.learner, Some(below)))
    }

    /// The learner installed a snapshot image and now stands at `learner`: what was recorded
    /// before goes to disk, then a segment starts at the image's state and every older one
    /// goes (they hold a history that stops short of the image; no reader or peer may read
    /// across the jump). Durable whatever the policy: the learner stands there after a crash.
    pub fn install(
        &mut self,
        now: Duration,
        learner: &LearnerSnapshot,
    ) -> Result<(), JournalError> {
        self.sync(now)?;
        let id = learner.next;
        if self.segments.back().is_some_and(|s| s.id >= id) {
            return Ok(());
        }
        self.recorded = id;
        self.written = id;
        self.start_segment(learner)?;
        if self.cfg.fsync_policy == FsyncPolicy::None {
            self.files
                .sync(id)
                .map_err(io_err(format!("cannot sync segment {id}")))?;
        }
        while self.segments.len() > 1 {
            let old = self.segments[0].id;
            self.files
                .remove(old)
                .map_err(io_err(format!("cannot remove segment {old}")))?;
            self.segments.pop_front();
            self.indexed.remove(&old);
            self.stats.segments_removed += 1;
        }
        self.index.retain(|i, _| *i >= id);
        self.durable = id;
        self.publish_marks();
        Ok(())
    }

    /// Starts a segment at the learner's current state.
    fn start_segment(&mut self, learner: &LearnerSnapshot) -> Result<(), JournalError> {
        let id = learner.next;
        if self.segments.back().is_some_and(|s| s.id == id) {
            // Nothing delivered since the active one started: it stays the active one.
            return Ok(());
        }
        let mut head = Vec::new();
        record::header(&mut head, self.cluster, learner);
        let what = |w: &str| format!("cannot {w} segment {id}");
        self.files.create(id).map_err(io_err(what("create")))?;
        self.files
            .append(id, &head)
            .map_err(io_err(what("write")))?;
        if self.cfg.fsync_policy != FsyncPolicy::None {
            self.files.sync(id).map_err(io_err(what("sync")))?;
            self.stats.syncs += 1;
        }
        self.stats.segments_created += 1;
        self.index.insert(id, (id, 0));
        self.indexed.insert(id);
        self.unindexed = 0;
        self.segments.push_back(Segment {
            id,
            bytes: head.len() as u64,
        });
        Ok(())
    }

    /// Deletes the oldest segments while retention says so. The newest is always kept.
    fn retain(&mut self, now: Duration) -> Result<(), JournalError> {
        self.last_retention = now;
        let r = self.cfg.retention.clone();
        while self.segments.len() > 1 {
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            // Everything the oldest segment holds is below the next one's start.
            let oldest_end = self.segments[1].id;
            let oldest = self.segments[0].id;
            if self.hold_from.is_some_and(|h| oldest_end > h) {
                break;
            }
            let drop = (r.bytes > 0 && total > r.bytes)
                || (r.instances > 0 && oldest_end <= self.written.saturating_sub(r.instances))
                || r.age
                    .is_some_and(|a| self.files.age(oldest).is_some_and(|age| age > a));
            if !drop {
                break;
            }
            self.files
                .remove(oldest)
                .map_err(io_err(format!("cannot remove segment {oldest}")))?;
            self.segments.pop_front();
            self.index.retain(|_, (s, _)| *s != oldest);
            self.indexed.remove(&oldest);
            self.stats.segments_removed += 1;
        }
        Ok(())
    }

    /// What this journal holds from `from` on, at most `budget` bytes of values as a
    /// `PeerValues` message counts them (`protocol::limits`).
    pub fn peer_page(&mut self, from: Position, budget: usize) -> Result<PeerPage, JournalError> {
        let (oldest, end) = (self.oldest(), self.written);
        let mut page = PeerPage {
            through: from.instance,
            oldest,
            end,
            values: Vec::new(),
        };
        let Some(holder) = self
            .segments
            .iter()
            .rev()
            .find(|s| s.id <= from.instance)
            .map(|s| s.id)
            .filter(|_| from.instance >= oldest && from.instance < end)
        else {
            return Ok(page);
        };
        if !self.indexed.contains(&holder) {
            self.index_segment(holder)?;
        }
        let (mut seg, mut offset) = self
            .index
            .range(..=from.instance)
            .next_back()
            .map_or((holder, 0), |(_, at)| *at);
        let mut used = 0;
        let mut want = PEER_READ;
        loop {
            let chunk = self
                .files
                .read_at(seg, offset, want)
                .map_err(io_err(format!("cannot read segment {seg}")))?;
            let mut at = 0;
            loop {
                let (r, next) = match record::parse(&chunk, at) {
                    Parsed::Record(r, next) => (r, next),
                    Parsed::End | Parsed::Short(_) => break,
                    // Answering past a damaged record would skip what it held.
                    Parsed::Bad(why) => return Err(corrupt_at(seg, offset + at as u64, why)),
                };
                match r {
                    Record::Header { .. } => {}
                    Record::Through(n) => page.through = page.through.max(n.min(end)),
                    Record::Delivered { instance, values } if instance >= from.instance => {
                        // Instances between the last record and this one delivered nothing:
                        // they are complete, whether or not this one fits the page.
                        page.through = page.through.max(instance);
                        for (index, v) in values {
                            let p = Position { instance, index };
                            if p < from {
                                continue;
                            }
                            let cost = crate::protocol::limits::POSITION
                                + crate::protocol::limits::value(&v);
                            if used + cost > budget {
                                return Ok(page);
                            }
                            used += cost;
                            page.values.push((p, v));
                        }
                        page.through = page.through.max(instance + 1);
                    }
                    Record::Delivered { .. } => {}
                }
                at = next;
                if page.through >= end {
                    return Ok(page);
                }
            }
            let full = chunk.len() == want;
            if at == 0 && full {
                if want >= record::MAX_RECORD + record::FRAME_OVERHEAD {
                    return Err(corrupt_at(
                        seg,
                        offset,
                        "a record longer than any written".into(),
                    ));
                }
                // One record larger than what was read: read it whole.
                want = (want * 2).min(record::MAX_RECORD + record::FRAME_OVERHEAD);
                continue;
            }
            if !full && at < chunk.len() {
                return Err(corrupt_at(
                    seg,
                    offset + at as u64,
                    format!("a record cut short ({} bytes left)", chunk.len() - at),
                ));
            }
            offset += at as u64;
            want = PEER_READ;
            if !full {
                // This segment's end: on to the next.
                match self.segments.iter().find(|s| s.id > seg) {
                    Some(s) => (seg, offset) = (s.id, 0),
                    None => return Ok(page),
                }
            }
        }
    }

    /// Notes where the records of an older segment start (read once, when a peer first
    /// asks for it).
    fn index_segment(&mut self, seg: u64) -> Result<(), JournalError> {
        let data = self
            .files
            .read(seg)
            .map_err(io_err(format!("cannot read segment {seg}")))?;
        // The same walk as at open, which notes the newest segment's points.
        if let Some(r) = replay(&data, seg, self.cluster)? {
            self.index
                .extend(r.points.into_iter().map(|(i, at)| (i, (seg, at))));
        }
        self.indexed.insert(seg);
        Ok(())
    }

    fn publish_marks(&self) {
        self.marks.end.store(self.written, Ordering::Release);
        self.marks.oldest.store(self.oldest(), Ordering::Release);
    }
}

/// A segment replayed: its header's state with its records applied, the length of its good
/// part, the records replayed, and index points (first instance, offset).
struct Replayed {
    snapshot: LearnerSnapshot,
    good: usize,
    records: u64,
    points: Vec<(InstanceId, u64)>,
}

/// Replays a segment. None if it has no whole header.
fn replay(data: &[u8], seg: u64, cluster: u32) -> Result<Option<Replayed>, JournalError> {
    let corrupt = |why: String| JournalError::Corrupt { seg, why };
    let Parsed::Record(head, mut at) = record::parse(data, 0) else {
        return Ok(None);
    };
    let Record::Header {
        version,
        cluster: found,
        mut snapshot,
    } = head
    else {
        return Err(corrupt("does not start with a header".into()));
    };
    if version != record::VERSION {
        return Err(corrupt(format!(
            "format version {version}, this build reads {}",
            record::VERSION
        )));
    }
    if found != cluster {
        return Err(JournalError::OtherCluster {
            seg,
            found,
            ours: cluster,
        });
    }
    let mut records = 0;
    let mut points = Vec::new();
    let mut last_point = 0;
    while let Parsed::Record(r, next) = record::parse(data, at) {
        if (at - last_point) as u64 >= INDEX_EVERY {
            points.push((snapshot.next, at as u64));
            last_point = at;
        }
        match r {
            Record::Delivered { instance, values } => {
                if instance < snapshot.next {
                    return Err(corrupt(format!(
                        "instance {instance} recorded after instance {} (offset {at})",
                        snapshot.next
                    )));
                }
                for (_, v) in &values {
                    if !snapshot.replay_value(v.client, v.seq) {
                        return Err(corrupt(format!(
                            "value {}:{} recorded twice (offset {at})",
                            v.client, v.seq
                        )));
                    }
                }
                snapshot.replay_through(instance + 1);
            }
            Record::Through(next) => snapshot.replay_through(next),
            Record::Header { .. } => {
                return Err(corrupt(format!("a second header at offset {at}")));
            }
        }
        records += 1;
        at = next;
    }
    Ok(Some(Replayed {
        snapshot,
        good: at,
        records,
        points,
    }))
}

#[cfg(test)]
mod tests;
