//! A digest of a delivered sequence, to compare learners: BLAKE3 over each value's client id,
//! sequence number, length and payload, in delivery order. Values are staged in a buffer and
//! hashed in large pieces, which lets BLAKE3 use its wide SIMD path (hashing each small field
//! directly cost a third of the demo's CPU).

use crate::protocol::ClientValue;

const FLUSH_AT: usize = 64 * 1024;

pub struct SequenceDigest {
    hasher: blake3::Hasher,
    staged: Vec<u8>,
    count: u64,
}

impl Default for SequenceDigest {
    fn default() -> Self {
        SequenceDigest {
            hasher: blake3::Hasher::new(),
            staged: Vec::with_capacity(FLUSH_AT + 2048),
            count: 0,
        }
    }
}

impl SequenceDigest {
    pub fn add(&mut self, v: &ClientValue) {
        self.staged.extend_from_slice(&v.client.to_be_bytes());
        self.staged.extend_from_slice(&v.seq.to_be_bytes());
        self.staged
            .extend_from_slice(&(v.payload.len() as u64).to_be_bytes());
        self.staged.extend_from_slice(&v.payload);
        self.count += 1;
        if self.staged.len() >= FLUSH_AT {
            self.hasher.update(&self.staged);
            self.staged.clear();
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Values seen and the hex digest of the whole sequence.
    pub fn finish(mut self) -> (u64, String) {
        self.hasher.update(&self.staged);
        (self.count, self.hasher.finalize().to_hex().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn v(seq: u64, payload: &'static [u8]) -> ClientValue {
        ClientValue {
            client: 1,
            seq,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn staging_does_not_change_the_digest() {
        // Enough values to flush several times: equal to hashing the same bytes at once.
        let mut d = SequenceDigest::default();
        let mut all = Vec::new();
        for seq in 0..10_000 {
            let val = v(seq, b"payload-bytes");
            d.add(&val);
            all.extend_from_slice(&1u64.to_be_bytes());
            all.extend_from_slice(&seq.to_be_bytes());
            all.extend_from_slice(&13u64.to_be_bytes());
            all.extend_from_slice(b"payload-bytes");
        }
        assert_eq!(
            d.finish(),
            (10_000, blake3::hash(&all).to_hex().to_string())
        );
    }

    #[test]
    fn order_matters() {
        let (mut a, mut b) = (SequenceDigest::default(), SequenceDigest::default());
        a.add(&v(1, b"x"));
        a.add(&v(2, b"x"));
        b.add(&v(2, b"x"));
        b.add(&v(1, b"x"));
        assert_ne!(a.finish(), b.finish());
    }
}
