//! Following a journal from a position: what a stream reader gets after asking for
//! `from POS`. The reader reads the segment files (its own file handles, so retention may
//! delete a segment it is still reading) and looks at the journal's marks to know whether
//! anything new was written, so an idle reader costs no system call.

use super::files::{list_dir, SegmentReader};
use super::record::{self, Parsed, Record};
use super::Marks;
use crate::protocol::{ClientValue, InstanceId, LearnerSnapshot, Position};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A learner's journal as its stream readers see it.
#[derive(Clone)]
pub struct JournalTail {
    dir: PathBuf,
    marks: Arc<Marks>,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(
        "position {asked} is older than this learner keeps: the oldest position its journal \
         holds is {oldest}.0 (the journal's retention is set under `learner:` in its config)"
    )]
    Retention { asked: Position, oldest: InstanceId },
    #[error(
        "position {asked} is past the end of this learner's stream: it has delivered every \
         instance below {end}, so ask for {end}.0 or lower (or `live`)"
    )]
    Future { asked: Position, end: InstanceId },
    #[error("cannot read the learner's journal: {0}")]
    Io(#[from] std::io::Error),
    #[error("learner journal segment {seg} at offset {offset}: {why}")]
    Corrupt { seg: u64, offset: u64, why: String },
}

/// One reader's place in the journal.
pub struct TailReader {
    from: Position,
    file: SegmentReader,
    /// The journal's end when this reader last reached it.
    seen_end: Option<InstanceId>,
    /// Every instance below this was read: where the next segment must start.
    next: InstanceId,
    buf: Vec<u8>,
}

/// What one read gives at most, unless a single record is larger.
const READ_CHUNK: usize = 256 << 10;

impl JournalTail {
    pub fn new(dir: &Path, marks: Arc<Marks>) -> JournalTail {
        JournalTail {
            dir: dir.to_path_buf(),
            marks,
        }
    }

    /// Every instance below this is in the journal.
    pub fn end(&self) -> InstanceId {
        self.marks.end.load(Ordering::Acquire)
    }

    /// The first instance the journal still holds.
    pub fn oldest(&self) -> InstanceId {
        self.marks.oldest.load(Ordering::Acquire)
    }

    /// The segment that holds `at`: an error if it is past the stream's end or older than
    /// retention kept.
    fn segment_holding(&self, at: Position) -> Result<u64, TailError> {
        let end = self.end();
        if at.instance > end || (at.instance == end && at.index > 0) {
            return Err(TailError::Future { asked: at, end });
        }
        let oldest = self.oldest();
        let retention = || TailError::Retention { asked: at, oldest };
        if at.instance < oldest {
            return Err(retention());
        }
        list_dir(&self.dir)?
            .into_iter()
            .rev()
            .find(|s| *s <= at.instance)
            .ok_or_else(retention)
    }

    /// A reader that gets every value at `from` or later.
    pub fn reader(&self, from: Position) -> Result<TailReader, TailError> {
        let seg = self.segment_holding(from)?;
        Ok(TailReader {
            from,
            file: SegmentReader::open(&self.dir, seg, 0)?,
            seen_end: None,
            next: seg,
            buf: Vec::new(),
        })
    }

    /// The learner's state just before `below` (its next instance `below.instance`, its
    /// exactly-once table holding every value before `below`): what an application's
    /// snapshot taken after applying everything before `below` is stored with. Read from
    /// the segment that holds `below`, replayed from its header.
    pub fn state_at(&self, below: Position) -> Result<LearnerSnapshot, TailError> {
        let seg = self.segment_holding(below)?;
        let data = std::fs::read(self.dir.join(super::segment_name(seg)))?;
        let corrupt = |offset: usize, why: String| TailError::Corrupt {
            seg,
            offset: offset as u64,
            why,
        };
        let Parsed::Record(Record::Header { snapshot, .. }, mut at) = record::parse(&data, 0)
        else {
            return Err(corrupt(0, "no whole header".into()));
        };
        let mut state = snapshot;
        loop {
            match record::parse(&data, at) {
                Parsed::Record(Record::Delivered { instance, values }, next) => {
                    if instance > below.instance {
                        break;
                    }
                    for (index, v) in &values {
                        if (Position {
                            instance,
                            index: *index,
                        }) < below
                        {
                            state.replay_value(v.client, v.seq);
                        }
                    }
                    if instance < below.instance {
                        state.replay_through(instance + 1);
                    }
                    at = next;
                }
                Parsed::Record(Record::Through(n), next) => {
                    state.replay_through(n.min(below.instance));
                    at = next;
                }
                Parsed::Record(_, _) => return Err(corrupt(at, "a second header".into())),
                Parsed::End | Parsed::Short(_) => break,
                Parsed::Bad(why) => return Err(corrupt(at, why)),
            }
        }
        if state.next < below.instance {
            return Err(TailError::Future {
                asked: below,
                end: state.next,
            });
        }
        Ok(state)
    }

    /// A reader of every value at `below` or later, where a snapshot image stands: `below`
    /// may be inside the instance the learner delivers next (its values before `below` are
    /// in the image).
    pub fn reader_after_image(&self, below: Position) -> Result<TailReader, TailError> {
        let mut r = self.reader(Position {
            instance: below.instance,
            index: 0,
        })?;
        r.from = below;
        Ok(r)
    }

    /// A reader of what is delivered from now on.
    pub fn live(&self) -> Result<TailReader, TailError> {
        self.reader(Position {
            instance: self.end(),
            index: 0,
        })
    }

    /// Whether `r` has read everything written so far.
    pub fn caught_up(&self, r: &TailReader) -> bool {
        r.seen_end == Some(self.end())
    }

    /// Gives `r`'s next values to `emit`, about `max_bytes` of records at most. Returns
    /// whether it reached the journal's end.
    pub fn read(
        &self,
        r: &mut TailReader,
        max_bytes: usize,
        emit: &mut dyn FnMut(Position, &ClientValue),
    ) -> Result<bool, TailError> {
        let end = self.end();
        if r.seen_end == Some(end) {
            return Ok(true);
        }
        let mut budget = max_bytes;
        let mut chunk = READ_CHUNK.min(max_bytes.max(1));
        loop {
            r.buf.clear();
            let got = r.file.read_at(&mut r.buf, chunk)?;
            let mut at = 0;
            loop {
                match record::parse(&r.buf, at) {
                    Parsed::Record(rec, next) => {
                        if let Record::Through(n) = rec {
                            r.next = r.next.max(n);
                        }
                        if let Record::Delivered { instance, values } = rec {
                            r.next = r.next.max(instance + 1);
                            for (index, v) in &values {
                                let p = Position {
                                    instance,
                                    index: *index,
                                };
                                if p >= r.from {
                                    emit(p, v);
                                }
                            }
                        }
                        at = next;
                    }
                    Parsed::End | Parsed::Short(_) => break,
                    Parsed::Bad(why) => {
                        return Err(TailError::Corrupt {
                            seg: r.file.seg,
                            offset: r.file.offset + at as u64,
                            why,
                        })
                    }
                }
            }
            r.file.offset += at as u64;
            budget = budget.saturating_sub(at);
            if at == 0 && got == chunk {
                // One record larger than the chunk: read it whole.
                chunk = chunk.saturating_mul(2).min(record::MAX_RECORD + 8);
                continue;
            }
            if got < chunk {
                // The end of this segment: on to the next one, if there is one.
                let next = list_dir(&self.dir)?.into_iter().find(|s| *s > r.file.seg);
                match next {
                    // A later segment exists, so this one is complete (a torn record at
                    // its end was never part of the stream).
                    Some(seg) if seg <= r.next => r.file = SegmentReader::open(&self.dir, seg, 0)?,
                    // Retention deleted what this reader had still to read: it is told,
                    // never left with a silent gap.
                    Some(_) => {
                        return Err(TailError::Retention {
                            asked: Position {
                                instance: r.next,
                                index: 0,
                            },
                            oldest: self.oldest(),
                        })
                    }
                    None => {
                        r.seen_end = Some(end);
                        return Ok(true);
                    }
                }
            }
            if budget == 0 {
                return Ok(false);
            }
        }
    }
}
