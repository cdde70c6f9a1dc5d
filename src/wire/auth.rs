//! Optional frame authentication: a BLAKE3 keyed hash over the whole frame (Ethernet header,
//! our header with the `auth` flag set, payload), truncated to 16 bytes and appended after the
//! payload. A node with a key drops, and counts, every frame without a valid tag; a node
//! without one drops tagged frames (their flag is unknown to it). Replayed frames carry valid
//! tags: they are harmless because Paxos is safe under duplicated and delayed messages.

use super::{ETH_MIN_FRAME, FRAME_OVERHEAD};

/// Header flag: a tag follows the payload.
pub const FLAG_AUTH: u8 = 0x01;
/// Bytes of tag after the payload.
pub const TAG_LEN: usize = 16;
const FLAGS_AT: usize = 16;
const LEN_AT: usize = 24;

/// A 32-byte shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameKey([u8; 32]);

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the key is not 64 hex digits (32 bytes)")]
    BadKey,
    #[error("frame carries no authentication tag")]
    Unsigned,
    #[error("frame is too short for its tag")]
    Short,
    #[error("authentication tag does not match")]
    Forged,
}

impl FrameKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        FrameKey(bytes)
    }

    /// 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(AuthError::BadKey);
        }
        let mut key = [0u8; 32];
        for (k, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[2 * k..2 * k + 2], 16).map_err(|_| AuthError::BadKey)?;
        }
        Ok(FrameKey(key))
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&blake3::keyed_hash(&self.0, signed).as_bytes()[..TAG_LEN]);
        tag
    }

    /// Sets the `auth` flag of an encoded frame and appends its tag.
    pub fn seal(&self, frame: &mut Vec<u8>) {
        frame[FLAGS_AT] |= FLAG_AUTH;
        let tag = self.tag(frame);
        frame.extend_from_slice(&tag);
    }

    /// Checks a received frame's tag and returns the frame as the decoder expects it: flag
    /// cleared, tag (and any Ethernet padding) removed.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, AuthError> {
        if frame.len() < FRAME_OVERHEAD {
            return Err(AuthError::Short);
        }
        if frame[FLAGS_AT] & FLAG_AUTH == 0 {
            return Err(AuthError::Unsigned);
        }
        let len = u16::from_be_bytes([frame[LEN_AT], frame[LEN_AT + 1]]) as usize;
        let tag_at = FRAME_OVERHEAD + len;
        let end = tag_at + TAG_LEN;
        // Bytes past the tag are legal only as Ethernet padding of a short frame.
        if frame.len() < end || (frame.len() > end && frame.len() > ETH_MIN_FRAME) {
            return Err(AuthError::Short);
        }
        let expected = self.tag(&frame[..tag_at]);
        // Constant time: every byte is compared whatever the first difference.
        let diff = expected
            .iter()
            .zip(&frame[tag_at..end])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(AuthError::Forged);
        }
        let mut plain = frame[..tag_at].to_vec();
        plain[FLAGS_AT] &= !FLAG_AUTH;
        Ok(plain)
    }
}
