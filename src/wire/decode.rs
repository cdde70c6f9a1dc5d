use super::{
    sizes, Frame, FrameHeader, MacAddr, ETHERTYPE, ETH_MIN_FRAME, FRAME_OVERHEAD, VERSION,
};
use crate::protocol::{AcceptedEntry, Ballot, Batch, ClientValue, Message, MessageKind, Position};
use bytes::Bytes;

/// Why a byte string is not a valid ethpaxos frame. Decoding never panics; it returns one of
/// these, naming the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("frame is {len} bytes, shorter than the {min}-byte Ethernet + ethpaxos header")]
    TooShort { len: usize, min: usize },
    #[error("EtherType 0x{0:04x} is not ethpaxos (0x88b5)")]
    EtherType(u16),
    #[error("header version {0} is not supported (this build speaks version 2)")]
    Version(u8),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("header flags 0x{0:02x} hold bits this version does not know")]
    Flags(u8),
    #[error("header reserved byte is 0x{0:02x}; version 2 requires 0")]
    Reserved(u8),
    #[error("header says the payload is {header} bytes but the frame holds {actual}")]
    Length { header: usize, actual: usize },
    #[error("{kind:?} message is truncated in field `{field}`")]
    Truncated {
        kind: MessageKind,
        field: &'static str,
    },
    #[error("{kind:?} message has {extra} bytes after its last field")]
    Trailing { kind: MessageKind, extra: usize },
    #[error("{kind:?} message field `{field}` is invalid: {why}")]
    Invalid {
        kind: MessageKind,
        field: &'static str,
        why: &'static str,
    },
}

/// Decodes one frame. Values in the result share one copy of `frame`.
pub fn decode(frame: &[u8]) -> Result<Frame, DecodeError> {
    decode_bytes(Bytes::copy_from_slice(frame))
}

/// Decodes one frame without copying it; client payloads are slices of `frame`.
pub fn decode_bytes(frame: Bytes) -> Result<Frame, DecodeError> {
    if frame.len() < FRAME_OVERHEAD {
        return Err(DecodeError::TooShort {
            len: frame.len(),
            min: FRAME_OVERHEAD,
        });
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != ETHERTYPE {
        return Err(DecodeError::EtherType(ethertype));
    }
    if frame[14] != VERSION {
        return Err(DecodeError::Version(frame[14]));
    }
    let kind = MessageKind::from_code(frame[15]).ok_or(DecodeError::UnknownType(frame[15]))?;
    if frame[16] != 0 {
        return Err(DecodeError::Flags(frame[16]));
    }
    if frame[17] != 0 {
        return Err(DecodeError::Reserved(frame[17]));
    }
    let mut dst = MacAddr::default();
    let mut src = MacAddr::default();
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let cluster = u32::from_be_bytes([frame[18], frame[19], frame[20], frame[21]]);
    let sender = u16::from_be_bytes([frame[22], frame[23]]);
    let len = u16::from_be_bytes([frame[24], frame[25]]) as usize;
    let actual = frame.len() - FRAME_OVERHEAD;
    // Ethernet pads short frames to 60 bytes, so extra bytes are legal only in a padded frame.
    if actual < len || (actual > len && frame.len() > ETH_MIN_FRAME) {
        return Err(DecodeError::Length {
            header: len,
            actual,
        });
    }
    let msg = decode_payload(kind, frame.slice(FRAME_OVERHEAD..FRAME_OVERHEAD + len))?;
    Ok(Frame {
        header: FrameHeader {
            dst,
            src,
            cluster,
            sender,
        },
        msg,
    })
}

/// Decodes a message's payload alone (what follows the header); storage keeps votes this way.
pub fn decode_payload(kind: MessageKind, payload: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
        kind,
    };
    let msg = r.message()?;
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing {
            kind,
            extra: r.buf.len() - r.pos,
        });
    }
    Ok(msg)
}

struct Reader {
    buf: Bytes,
    pos: usize,
    kind: MessageKind,
}

impl Reader {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                field,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn ballot(&mut self, field: &'static str) -> Result<Ballot, DecodeError> {
        Ok(Ballot {
            round: self.u32(field)?,
            proposer: self.u16(field)?,
        })
    }
    /// A count, with a capacity bounded by what the rest of the payload could hold, so a
    /// forged count cannot make us allocate much.
    fn count(&mut self, field: &'static str, min_each: usize) -> Result<usize, DecodeError> {
        let n = self.u16(field)? as usize;
        let fits = (self.buf.len() - self.pos) / min_each;
        if n > fits {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                field,
            });
        }
        Ok(n)
    }
    fn value(&mut self) -> Result<ClientValue, DecodeError> {
        let client = self.u64("value.client")?;
        let seq = self.u64("value.seq")?;
        let len = self.u16("value.len")? as usize;
        if self.buf.len() - self.pos < len {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                field: "value.payload",
            });
        }
        let payload = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(ClientValue {
            client,
            seq,
            payload,
        })
    }
    /// `len` raw bytes, sharing the frame's copy.
    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.take(len, field)?;
        Ok(self.buf.slice(self.pos - len..self.pos))
    }
    fn position(&mut self, field: &'static str) -> Result<Position, DecodeError> {
        Ok(Position {
            instance: self.u64(field)?,
            index: self.u32(field)?,
        })
    }
    fn values(&mut self) -> Result<Vec<ClientValue>, DecodeError> {
        let n = self.count("values.count", sizes::VALUE_FIXED)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.value()?);
        }
        Ok(v)
    }
    fn batch(&mut self) -> Result<Batch, DecodeError> {
        Ok(Batch::new(self.values()?))
    }
    fn entries(&mut self) -> Result<Vec<AcceptedEntry>, DecodeError> {
        let n = self.count("entries.count", sizes::ENTRY_FIXED + sizes::BATCH_FIXED)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(AcceptedEntry {
                instance: self.u64("entry.instance")?,
                ballot: self.ballot("entry.ballot")?,
                value: self.batch()?,
            });
        }
        Ok(v)
    }
    fn invalid(&self, field: &'static str, why: &'static str) -> DecodeError {
        DecodeError::Invalid {
            kind: self.kind,
            field,
            why,
        }
    }

    fn message(&mut self) -> Result<Message, DecodeError> {
        Ok(match self.kind {
            MessageKind::Prepare => Message::Prepare {
                ballot: self.ballot("ballot")?,
                from: self.u64("from")?,
            },
            MessageKind::Promise => {
                let ballot = self.ballot("ballot")?;
                let from = self.u64("from")?;
                let end = self.u64("end")?;
                let log_end = self.u64("log_end")?;
                let chunk_start = self.u64("chunk_start")?;
                let chunk_end = self.u64("chunk_end")?;
                let trim = self.u64("trim")?;
                if !(from <= chunk_start && chunk_start <= chunk_end && chunk_end <= end) {
                    return Err(self.invalid(
                        "chunk_start",
                        "need from <= chunk_start <= chunk_end <= end",
                    ));
                }
                if end > log_end {
                    return Err(self.invalid("log_end", "need end <= log_end"));
                }
                let entries = self.entries()?;
                if entries
                    .iter()
                    .any(|e| e.instance < chunk_start || e.instance >= chunk_end)
                {
                    return Err(self.invalid("entry.instance", "outside the chunk's range"));
                }
                Message::Promise {
                    ballot,
                    from,
                    end,
                    log_end,
                    chunk_start,
                    chunk_end,
                    trim,
                    entries,
                }
            }
            MessageKind::Accept => Message::Accept {
                ballot: self.ballot("ballot")?,
                instance: self.u64("instance")?,
                value: self.batch()?,
            },
            // The same layout: a ballot and a list of instances.
            MessageKind::Accepted | MessageKind::Decided => {
                let ballot = self.ballot("ballot")?;
                let n = self.count("instances.count", 8)?;
                let mut instances = Vec::with_capacity(n);
                for _ in 0..n {
                    instances.push(self.u64("instance")?);
                }
                if self.kind == MessageKind::Accepted {
                    Message::Accepted { ballot, instances }
                } else {
                    Message::Decided { ballot, instances }
                }
            }
            MessageKind::Reject => Message::Reject {
                promised: self.ballot("promised")?,
                rejected: self.ballot("rejected")?,
            },
            MessageKind::Heartbeat => Message::Heartbeat {
                ballot: self.ballot("ballot")?,
                decided_below: self.u64("decided_below")?,
                next_instance: self.u64("next_instance")?,
            },
            MessageKind::ClientRequest => Message::ClientRequest {
                values: self.values()?,
            },
            MessageKind::Redirect => {
                let client = self.u64("client")?;
                let has = self.u8("has_leader")?;
                let leader = self.u16("leader")?;
                let leader = match (has, leader) {
                    (0, 0) => None,
                    (0, _) => return Err(self.invalid("leader", "must be 0 when has_leader is 0")),
                    (1, l) => Some(l),
                    _ => return Err(self.invalid("has_leader", "must be 0 or 1")),
                };
                Message::Redirect { client, leader }
            }
            MessageKind::CatchupRequest => {
                let from = self.u64("from")?;
                let to = self.u64("to")?;
                if from > to {
                    return Err(self.invalid("to", "range end is before its start"));
                }
                Message::CatchupRequest { from, to }
            }
            MessageKind::CatchupReply => Message::CatchupReply {
                trim: self.u64("trim")?,
                entries: self.entries()?,
            },
            MessageKind::Progress => Message::Progress {
                delivered_below: self.u64("delivered_below")?,
            },
            MessageKind::Trim => Message::Trim {
                below: self.u64("below")?,
            },
            MessageKind::SnapshotHeld => Message::SnapshotHeld {
                below: self.u64("below")?,
            },
            MessageKind::SnapshotFetch => Message::SnapshotFetch {
                at_least: self.u64("at_least")?,
                below: self.position("below")?,
                offset: self.u64("offset")?,
            },
            MessageKind::SnapshotChunk => {
                let below = self.position("below")?;
                let total = self.u64("total")?;
                let offset = self.u64("offset")?;
                let last = match self.u8("last")? {
                    0 => false,
                    1 => true,
                    _ => return Err(self.invalid("last", "must be 0 or 1")),
                };
                let len = self.u16("data.len")? as usize;
                let data = self.bytes(len, "data")?;
                if total > crate::protocol::image::MAX_IMAGE {
                    return Err(self.invalid("total", "larger than the largest image (1 GiB)"));
                }
                if offset.checked_add(len as u64).is_none_or(|end| end > total) {
                    return Err(self.invalid("offset", "the chunk ends past the image's total"));
                }
                Message::SnapshotChunk {
                    below,
                    total,
                    offset,
                    last,
                    data,
                }
            }
            MessageKind::PeerFetch => Message::PeerFetch {
                from: self.position("from")?,
            },
            MessageKind::PeerValues => {
                let from = self.position("from")?;
                let through = self.u64("through")?;
                let oldest = self.u64("oldest")?;
                let end = self.u64("end")?;
                if oldest > end {
                    return Err(self.invalid("oldest", "after end"));
                }
                if through < from.instance {
                    return Err(self.invalid("through", "before from"));
                }
                let last = match self.u8("last")? {
                    0 => false,
                    1 => true,
                    _ => return Err(self.invalid("last", "must be 0 or 1")),
                };
                let n = self.count("values.count", sizes::POSITION + sizes::VALUE_FIXED)?;
                let mut values: Vec<(Position, ClientValue)> = Vec::with_capacity(n);
                for _ in 0..n {
                    let p = self.position("value.position")?;
                    let v = self.value()?;
                    let after = values.last().map_or(p >= from, |(q, _)| p > *q);
                    if !after || p.instance > through {
                        return Err(self.invalid(
                            "value.position",
                            "positions must grow from `from` and stay at or below `through`",
                        ));
                    }
                    values.push((p, v));
                }
                Message::PeerValues {
                    from,
                    through,
                    oldest,
                    end,
                    values,
                    last,
                }
            }
        })
    }
}
