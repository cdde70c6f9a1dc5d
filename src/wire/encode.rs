use super::{sizes, FrameHeader, ETHERTYPE, FRAME_OVERHEAD, VERSION};
use crate::protocol::{AcceptedEntry, Ballot, Batch, ClientValue, Message, MessageKind, Position};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("{kind:?} message needs a {size}-byte frame, over the {max}-byte maximum frame size")]
    FrameTooLarge {
        kind: MessageKind,
        size: usize,
        max: usize,
    },
    #[error("{kind:?} message has {count} {field}, over the 65535 a frame can count")]
    TooMany {
        kind: MessageKind,
        field: &'static str,
        count: usize,
    },
    #[error("a value of {len} bytes does not fit the 16-bit length field")]
    ValueTooLong { len: usize },
}

/// Appends the frame for `msg` to `out` (cleared first). Refuses rather than truncates.
pub fn encode(
    header: &FrameHeader,
    msg: &Message,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let kind = msg.kind();
    let payload = sizes::payload(msg);
    let size = FRAME_OVERHEAD + payload;
    if size > max_frame || payload > u16::MAX as usize {
        return Err(EncodeError::FrameTooLarge {
            kind,
            size,
            max: max_frame,
        });
    }
    out.clear();
    out.reserve(size);
    out.extend_from_slice(&header.dst);
    out.extend_from_slice(&header.src);
    out.extend_from_slice(&ETHERTYPE.to_be_bytes());
    out.push(VERSION);
    out.push(kind as u8);
    out.push(0); // flags
    out.push(0); // reserved
    out.extend_from_slice(&header.cluster.to_be_bytes());
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&(payload as u16).to_be_bytes());
    encode_payload(msg, out)?;
    debug_assert_eq!(out.len(), size, "sizes::payload disagrees with the encoder");
    Ok(())
}

/// Appends only the payload of `msg` (no header, no size limit); storage keeps votes this way.
pub fn encode_payload(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    Writer {
        out,
        kind: msg.kind(),
    }
    .message(msg)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    kind: MessageKind,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn position(&mut self, p: Position) {
        self.u64(p.instance);
        self.u32(p.index);
    }
    fn ballot(&mut self, b: Ballot) {
        self.u32(b.round);
        self.u16(b.proposer);
    }
    fn count(&mut self, field: &'static str, n: usize) -> Result<(), EncodeError> {
        let n16 = u16::try_from(n).map_err(|_| EncodeError::TooMany {
            kind: self.kind,
            field,
            count: n,
        })?;
        self.u16(n16);
        Ok(())
    }
    fn value(&mut self, v: &ClientValue) -> Result<(), EncodeError> {
        let len = u16::try_from(v.payload.len()).map_err(|_| EncodeError::ValueTooLong {
            len: v.payload.len(),
        })?;
        self.u64(v.client);
        self.u64(v.seq);
        self.u16(len);
        self.out.extend_from_slice(&v.payload);
        Ok(())
    }
    fn values(&mut self, values: &[ClientValue]) -> Result<(), EncodeError> {
        self.count("values", values.len())?;
        values.iter().try_for_each(|v| self.value(v))
    }
    fn batch(&mut self, b: &Batch) -> Result<(), EncodeError> {
        self.values(b.values())
    }
    fn entries(&mut self, entries: &[AcceptedEntry]) -> Result<(), EncodeError> {
        self.count("entries", entries.len())?;
        for e in entries {
            self.u64(e.instance);
            self.ballot(e.ballot);
            self.batch(&e.value)?;
        }
        Ok(())
    }

    fn message(&mut self, msg: &Message) -> Result<(), EncodeError> {
        match msg {
            Message::Prepare { ballot, from } => {
                self.ballot(*ballot);
                self.u64(*from);
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
            } => {
                self.ballot(*ballot);
                for v in [*from, *end, *log_end, *chunk_start, *chunk_end, *trim] {
                    self.u64(v);
                }
                self.entries(entries)?;
            }
            Message::Accept {
                ballot,
                instance,
                value,
            } => {
                self.ballot(*ballot);
                self.u64(*instance);
                self.batch(value)?;
            }
            Message::Accepted { ballot, instances } | Message::Decided { ballot, instances } => {
                self.ballot(*ballot);
                self.count("instances", instances.len())?;
                instances.iter().for_each(|i| self.u64(*i));
            }
            Message::Reject { promised, rejected } => {
                self.ballot(*promised);
                self.ballot(*rejected);
            }
            Message::Heartbeat {
                ballot,
                decided_below,
                next_instance,
            } => {
                self.ballot(*ballot);
                self.u64(*decided_below);
                self.u64(*next_instance);
            }
            Message::ClientRequest { values } => self.values(values)?,
            Message::Redirect { client, leader } => {
                self.u64(*client);
                self.u8(leader.is_some() as u8);
                self.u16(leader.unwrap_or(0));
            }
            Message::CatchupRequest { from, to } => {
                self.u64(*from);
                self.u64(*to);
            }
            Message::CatchupReply { trim, entries } => {
                self.u64(*trim);
                self.entries(entries)?;
            }
            Message::Progress { delivered_below } => self.u64(*delivered_below),
            Message::Trim { below } => self.u64(*below),
            Message::PeerFetch { from } => self.position(*from),
            Message::SnapshotHeld { below } => self.u64(*below),
            Message::SnapshotFetch {
                at_least,
                below,
                offset,
            } => {
                self.u64(*at_least);
                self.position(*below);
                self.u64(*offset);
            }
            Message::SnapshotChunk {
                below,
                total,
                offset,
                last,
                data,
            } => {
                self.position(*below);
                self.u64(*total);
                self.u64(*offset);
                self.u8(*last as u8);
                self.count("data", data.len())?;
                self.out.extend_from_slice(data);
            }
            Message::PeerValues {
                from,
                through,
                oldest,
                end,
                values,
                last,
            } => {
                self.position(*from);
                self.u64(*through);
                self.u64(*oldest);
                self.u64(*end);
                self.u8(*last as u8);
                self.count("values", values.len())?;
                for (p, v) in values {
                    self.position(*p);
                    self.value(v)?;
                }
            }
        }
        Ok(())
    }
}
