//! A snapshot image: everything a learner needs to stand at a position without the values
//! before it. The same bytes are a snapshot file on disk and what a peer sends in chunks:
//!
//! `len u32 | crc32 u32 | body`, the body: magic `EPXS`, format version, cluster id, the
//! position it covers up to (`below`: every value before it is in the image), the learner's
//! exactly-once table there, and the application's state (absent for a learner that keeps
//! none). One checksum covers it all, so a cut or altered image, from disk or from a peer,
//! is refused whole.

use super::learner::{ClientDedup, LearnerSnapshot};
use super::types::Position;
use bytes::Bytes;

const MAGIC: &[u8; 4] = b"EPXS";
pub const IMAGE_VERSION: u8 = 1;
/// The largest image a learner takes (what a frame's length field and a peer's claim may say).
pub const MAX_IMAGE: u64 = 1 << 30;

/// A decoded snapshot image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub below: Position,
    /// The learner's state at `below`: its next instance is `below.instance`; the values of
    /// that instance before `below.index` are in its exactly-once table, so delivering the
    /// instance again skips them.
    pub learner: LearnerSnapshot,
    pub app: Option<Bytes>,
}

/// Why bytes are not a snapshot image of this cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image is {0} bytes, shorter than its frame")]
    Short(usize),
    #[error("the image's length field says {said} bytes but it holds {held}")]
    Length { said: u64, held: u64 },
    #[error("the image's checksum does not match: it is damaged")]
    Checksum,
    #[error("not a snapshot image (magic {0:02x?})")]
    Magic(Vec<u8>),
    #[error("snapshot format version {0}, this build reads version {IMAGE_VERSION}")]
    Version(u8),
    #[error("the snapshot belongs to cluster {theirs}, this node to cluster {ours}")]
    Cluster { theirs: u32, ours: u32 },
    #[error("the image's field `{0}` does not decode")]
    Field(&'static str),
}

/// Appends a learner's state: next instance, then the exactly-once table sorted by client (so
/// equal states write equal bytes).
pub fn put_learner(b: &mut Vec<u8>, s: &LearnerSnapshot) {
    b.extend_from_slice(&s.next.to_le_bytes());
    b.extend_from_slice(&(s.dedup.len() as u32).to_le_bytes());
    let mut clients: Vec<_> = s.dedup.iter().collect();
    clients.sort_unstable_by_key(|(c, _)| **c);
    for (client, d) in clients {
        b.extend_from_slice(&client.to_le_bytes());
        b.extend_from_slice(&d.below.to_le_bytes());
        b.extend_from_slice(&(d.above.len() as u32).to_le_bytes());
        for seq in &d.above {
            b.extend_from_slice(&seq.to_le_bytes());
        }
    }
}

/// Reads little-endian fields off a byte string; None past its end.
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A count of items of at least `min` bytes each: never more than the rest can hold.
    pub fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
    /// A learner's state as `put_learner` wrote it.
    pub fn learner(&mut self) -> Option<LearnerSnapshot> {
        let mut s = LearnerSnapshot {
            next: self.u64()?,
            ..Default::default()
        };
        for _ in 0..self.count(20)? {
            let client = self.u64()?;
            let mut d = ClientDedup {
                below: self.u64()?,
                ..Default::default()
            };
            for _ in 0..self.count(8)? {
                d.above.insert(self.u64()?);
            }
            s.dedup.insert(client, d);
        }
        Some(s)
    }
}

/// The image of a learner standing at `below` with its state `learner` and the
/// application's `app`.
pub fn encode(
    cluster: u32,
    below: Position,
    learner: &LearnerSnapshot,
    app: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    out.extend_from_slice(MAGIC);
    out.push(IMAGE_VERSION);
    out.extend_from_slice(&cluster.to_le_bytes());
    out.extend_from_slice(&below.instance.to_le_bytes());
    out.extend_from_slice(&below.index.to_le_bytes());
    put_learner(&mut out, learner);
    match app {
        Some(a) => {
            out.push(1);
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            out.extend_from_slice(a);
        }
        None => out.push(0),
    }
    let len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and checks an image: whole, undamaged, of this format and this cluster.
pub fn decode(bytes: &[u8], cluster: u32) -> Result<Image, ImageError> {
    if bytes.len() < 8 {
        return Err(ImageError::Short(bytes.len()));
    }
    let said = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as u64;
    let held = bytes.len() as u64 - 8;
    if said != held {
        return Err(ImageError::Length { said, held });
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[8..]) != crc {
        return Err(ImageError::Checksum);
    }
    let mut f = Fields(&bytes[8..]);
    let magic = f.take(4).ok_or(ImageError::Field("magic"))?;
    if magic != MAGIC {
        return Err(ImageError::Magic(magic.to_vec()));
    }
    let version = f.u8().ok_or(ImageError::Field("version"))?;
    if version != IMAGE_VERSION {
        return Err(ImageError::Version(version));
    }
    let theirs = f.u32().ok_or(ImageError::Field("cluster"))?;
    if theirs != cluster {
        return Err(ImageError::Cluster {
            theirs,
            ours: cluster,
        });
    }
    let below = Position {
        instance: f.u64().ok_or(ImageError::Field("below.instance"))?,
        index: f.u32().ok_or(ImageError::Field("below.index"))?,
    };
    let learner = f.learner().ok_or(ImageError::Field("learner"))?;
    if learner.next != below.instance {
        return Err(ImageError::Field("learner.next"));
    }
    let app = match f.u8().ok_or(ImageError::Field("has_app"))? {
        0 => None,
        1 => {
            let len = f.u64().ok_or(ImageError::Field("app.len"))?;
            let len = usize::try_from(len).map_err(|_| ImageError::Field("app.len"))?;
            Some(Bytes::copy_from_slice(
                f.take(len).ok_or(ImageError::Field("app"))?,
            ))
        }
        _ => return Err(ImageError::Field("has_app")),
    };
    if !f.0.is_empty() {
        return Err(ImageError::Field("app (trailing bytes)"));
    }
    Ok(Image {
        below,
        learner,
        app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> LearnerSnapshot {
        let mut s = LearnerSnapshot {
            next: 40,
            ..Default::default()
        };
        s.replay_value(3, 0);
        s.replay_value(3, 2);
        s.replay_value(8, 0);
        s
    }

    #[test]
    fn an_image_reads_back() {
        let below = Position {
            instance: 40,
            index: 2,
        };
        for app in [None, Some(&b"map"[..]), Some(&b""[..])] {
            let bytes = encode(7, below, &state(), app);
            let img = decode(&bytes, 7).unwrap();
            assert_eq!(img.below, below);
            assert_eq!(img.learner, state());
            assert_eq!(img.app.as_deref(), app);
        }
    }

    #[test]
    fn a_damaged_cut_or_foreign_image_is_refused_by_name() {
        let below = Position {
            instance: 40,
            index: 0,
        };
        let bytes = encode(7, below, &state(), Some(b"state"));
        assert_eq!(
            decode(&bytes, 8),
            Err(ImageError::Cluster { theirs: 7, ours: 8 })
        );
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 7).is_err(), "cut at {cut}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b, 7).is_err(), "bit {bit} flipped still decoded");
        }
        let mut b = bytes.clone();
        b[12] ^= 1;
        let crc = crc32fast::hash(&b[8..]).to_le_bytes();
        b[4..8].copy_from_slice(&crc);
        assert!(matches!(decode(&b, 7), Err(ImageError::Version(_))));
    }
}
