//! The journal's records on disk. Each is framed as `len u32 | crc32 u32 | body` (little
//! endian, the checksum over the body), so a torn or corrupt tail is found by its frame, and
//! its body starts with a kind byte:
//!
//! - `1` header, first in every segment: magic `EPXJ`, format version, cluster id, then the
//!   learner's state at the segment's start (next instance, exactly-once table). A restart
//!   replays only the newest segment onto its header.
//! - `2` delivered: an instance and the values delivered from it, each with its index in the
//!   instance's batch, client, sequence number and payload.
//! - `3` through: every instance below this was delivered (no-op instances, or instances whose
//!   values were all duplicates, deliver nothing).

use crate::protocol::image::{put_learner, Fields};
use crate::protocol::{ClientValue, InstanceId, LearnerSnapshot};
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"EPXJ";
pub const VERSION: u8 = 1;
const KIND_HEADER: u8 = 1;
const KIND_DELIVERED: u8 = 2;
const KIND_THROUGH: u8 = 3;
/// A frame's length and checksum.
pub const FRAME_OVERHEAD: usize = 8;
/// No record is larger: a length above it is corruption, not a record to allocate for.
pub const MAX_RECORD: usize = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Header {
        version: u8,
        cluster: u32,
        snapshot: LearnerSnapshot,
    },
    Delivered {
        instance: InstanceId,
        values: Vec<(u32, ClientValue)>,
    },
    Through(InstanceId),
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A record, and the offset after it.
    Record(Record, usize),
    /// The segment ends here.
    End,
    /// A frame cut short: a write the crash interrupted (or, to a reader following a live
    /// segment, one still being written).
    Short(String),
    /// A frame whose length, checksum or body is wrong: the segment's good part ends here.
    Bad(String),
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_OVERHEAD]);
    body(out);
    let len = (out.len() - start - FRAME_OVERHEAD) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_OVERHEAD..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn header(out: &mut Vec<u8>, cluster: u32, s: &LearnerSnapshot) {
    frame(out, |b| {
        b.push(KIND_HEADER);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&cluster.to_le_bytes());
        put_learner(b, s);
    })
}

pub fn delivered<'a>(
    out: &mut Vec<u8>,
    instance: InstanceId,
    values: impl ExactSizeIterator<Item = (u32, &'a ClientValue)>,
) {
    frame(out, |b| {
        b.push(KIND_DELIVERED);
        b.extend_from_slice(&instance.to_le_bytes());
        b.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for (index, v) in values {
            b.extend_from_slice(&index.to_le_bytes());
            b.extend_from_slice(&v.client.to_le_bytes());
            b.extend_from_slice(&v.seq.to_le_bytes());
            b.extend_from_slice(&(v.payload.len() as u32).to_le_bytes());
            b.extend_from_slice(&v.payload);
        }
    })
}

pub fn through(out: &mut Vec<u8>, next: InstanceId) {
    frame(out, |b| {
        b.push(KIND_THROUGH);
        b.extend_from_slice(&next.to_le_bytes());
    })
}

/// Reads the record at `at` of `seg`.
pub fn parse(seg: &[u8], at: usize) -> Parsed {
    let rest = &seg[at.min(seg.len())..];
    if rest.is_empty() {
        return Parsed::End;
    }
    if rest.len() < FRAME_OVERHEAD {
        return Parsed::Short(format!("{} bytes of a frame header", rest.len()));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return Parsed::Bad(format!("a record length of {len} bytes"));
    }
    if rest.len() < FRAME_OVERHEAD + len {
        return Parsed::Short(format!(
            "a record of {len} bytes cut at {}",
            rest.len() - FRAME_OVERHEAD
        ));
    }
    let body = &rest[FRAME_OVERHEAD..FRAME_OVERHEAD + len];
    if crc32fast::hash(body) != crc {
        return Parsed::Bad("a record whose checksum does not match".into());
    }
    match decode(body) {
        Some(r) => Parsed::Record(r, at + FRAME_OVERHEAD + len),
        None => Parsed::Bad(format!(
            "a record (kind {}) whose body does not decode",
            body[0]
        )),
    }
}

fn decode(body: &[u8]) -> Option<Record> {
    let mut b = Fields(body);
    let record = match b.u8()? {
        KIND_HEADER => {
            if b.take(4)? != MAGIC {
                return None;
            }
            let version = b.u8()?;
            let cluster = b.u32()?;
            let snapshot = b.learner()?;
            Record::Header {
                version,
                cluster,
                snapshot,
            }
        }
        KIND_DELIVERED => {
            let instance = b.u64()?;
            let n = b.count(24)?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let index = b.u32()?;
                let client = b.u64()?;
                let seq = b.u64()?;
                let len = b.u32()? as usize;
                let payload = Bytes::copy_from_slice(b.take(len)?);
                values.push((
                    index,
                    ClientValue {
                        client,
                        seq,
                        payload,
                    },
                ));
            }
            Record::Delivered { instance, values }
        }
        KIND_THROUGH => Record::Through(b.u64()?),
        _ => return None,
    };
    // Trailing bytes mean a body this version does not understand.
    b.0.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(client: u64, seq: u64, payload: &[u8]) -> ClientValue {
        ClientValue {
            client,
            seq,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let mut snap = LearnerSnapshot {
            next: 77,
            ..Default::default()
        };
        snap.replay_value(5, 0);
        snap.replay_value(5, 2);
        snap.replay_value(9, 0);
        let vals = [value(5, 1, b"x"), value(9, 1, b"")];
        let mut seg = Vec::new();
        header(&mut seg, 3, &snap);
        delivered(
            &mut seg,
            77,
            vals.iter().enumerate().map(|(k, v)| (k as u32 * 2, v)),
        );
        through(&mut seg, 80);
        let mut at = 0;
        let mut got = Vec::new();
        while let Parsed::Record(r, next) = parse(&seg, at) {
            got.push(r);
            at = next;
        }
        assert_eq!(at, seg.len());
        assert_eq!(
            got,
            vec![
                Record::Header {
                    version: VERSION,
                    cluster: 3,
                    snapshot: snap
                },
                Record::Delivered {
                    instance: 77,
                    values: vec![(0, vals[0].clone()), (2, vals[1].clone())]
                },
                Record::Through(80),
            ]
        );
    }

    #[test]
    fn a_cut_or_flipped_record_is_bad_never_a_panic() {
        let mut seg = Vec::new();
        delivered(&mut seg, 1, [(0u32, &value(1, 0, b"payload"))].into_iter());
        for cut in 1..seg.len() {
            assert!(
                matches!(parse(&seg[..cut], 0), Parsed::Short(_)),
                "cut {cut}"
            );
        }
        for bit in 0..seg.len() * 8 {
            let mut s = seg.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse(&s, 0), Parsed::Record(..)),
                "bit {bit} flipped still parsed"
            );
        }
    }
}
