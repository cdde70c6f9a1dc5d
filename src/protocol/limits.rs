//! The frame-size model: how large every message is once encoded, and the frame limits.
//! The protocol owns it, so it can split long answers and refuse values before they are sent
//! rather than discover at encode time that a frame overflows; the codec (wire/) implements
//! exactly these sizes and checks them in debug builds.

use super::message::Message;
use super::types::{AcceptedEntry, Batch, ClientValue};

/// dst MAC + src MAC + EtherType.
pub const ETH_HEADER_LEN: usize = 14;
/// version, type, flags, reserved, cluster id (u32), sender (u16), payload length (u16).
pub const PAXOS_HEADER_LEN: usize = 12;
/// Everything before the payload.
pub const FRAME_OVERHEAD: usize = ETH_HEADER_LEN + PAXOS_HEADER_LEN;
/// Default maximum frame size (a standard Ethernet MTU's worth of payload plus header).
pub const DEFAULT_MAX_FRAME: usize = 1500;
/// Smallest frame size we accept in config: enough for every fixed-size message and a value.
pub const MIN_MAX_FRAME: usize = 128;
/// Largest frame size we accept in config (jumbo frames).
pub const MAX_MAX_FRAME: usize = 9216;

pub const BALLOT: usize = 6;
/// client id, sequence number, payload length.
pub const VALUE_FIXED: usize = 8 + 8 + 2;
/// value count.
pub const BATCH_FIXED: usize = 2;
/// instance id + ballot, before the batch.
pub const ENTRY_FIXED: usize = 8 + BALLOT;
/// ballot, from, end, log end, chunk start, chunk end, trim, entry count.
pub const PROMISE_FIXED: usize = BALLOT + 8 * 6 + 2;
/// ballot + instance, before the batch.
pub const ACCEPT_FIXED: usize = BALLOT + 8;
/// ballot + instance count.
pub const ACCEPTED_FIXED: usize = BALLOT + 2;
/// trim + entry count.
pub const CATCHUP_REPLY_FIXED: usize = 8 + 2;
/// value count.
pub const CLIENT_REQUEST_FIXED: usize = 2;
/// instance + index.
pub const POSITION: usize = 8 + 4;
/// from, through, oldest, end, last, value count.
pub const PEER_VALUES_FIXED: usize = POSITION + 3 * 8 + 1 + 2;
/// below, total, offset, last, data length.
pub const SNAPSHOT_CHUNK_FIXED: usize = POSITION + 8 + 8 + 1 + 2;

pub fn value(v: &ClientValue) -> usize {
    VALUE_FIXED + v.payload.len()
}

pub fn batch(b: &Batch) -> usize {
    BATCH_FIXED + b.values().iter().map(value).sum::<usize>()
}

pub fn entry(e: &AcceptedEntry) -> usize {
    ENTRY_FIXED + batch(&e.value)
}

/// The payload size of `msg` (what follows the ethpaxos header).
pub fn payload(msg: &Message) -> usize {
    match msg {
        Message::Prepare { .. } => BALLOT + 8,
        Message::Promise { entries, .. } => {
            PROMISE_FIXED + entries.iter().map(entry).sum::<usize>()
        }
        Message::Accept { value, .. } => ACCEPT_FIXED + batch(value),
        Message::Accepted { instances, .. } | Message::Decided { instances, .. } => {
            ACCEPTED_FIXED + 8 * instances.len()
        }
        Message::Reject { .. } => 2 * BALLOT,
        Message::Heartbeat { .. } => BALLOT + 16,
        Message::ClientRequest { values } => {
            CLIENT_REQUEST_FIXED + values.iter().map(value).sum::<usize>()
        }
        Message::Redirect { .. } => 8 + 1 + 2,
        Message::CatchupRequest { .. } => 16,
        Message::CatchupReply { entries, .. } => {
            CATCHUP_REPLY_FIXED + entries.iter().map(entry).sum::<usize>()
        }
        Message::Progress { .. } => 8,
        Message::Trim { .. } => 8,
        Message::PeerFetch { .. } => POSITION,
        Message::SnapshotHeld { .. } => 8,
        Message::SnapshotFetch { .. } => 8 + POSITION + 8,
        Message::SnapshotChunk { data, .. } => SNAPSHOT_CHUNK_FIXED + data.len(),
        Message::PeerValues { values, .. } => {
            PEER_VALUES_FIXED
                + values
                    .iter()
                    .map(|(_, v)| POSITION + value(v))
                    .sum::<usize>()
        }
    }
}

/// The largest encoded batch that fits alone in every message that carries one (a 2a, a 1b
/// chunk, a catch-up reply) in a frame of `max_frame` bytes.
pub fn max_batch(max_frame: usize) -> usize {
    let worst_fixed = [
        ACCEPT_FIXED,
        PROMISE_FIXED + ENTRY_FIXED,
        CATCHUP_REPLY_FIXED + ENTRY_FIXED,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    max_payload(max_frame).saturating_sub(worst_fixed)
}

/// The largest client payload that fits: alone in a batch of `max_batch`, and so also alone in
/// a client request.
pub fn max_value_payload(max_frame: usize) -> usize {
    max_batch(max_frame).saturating_sub(BATCH_FIXED + VALUE_FIXED)
}

/// The most payload bytes a frame of `max_frame` bytes can hold.
pub fn max_payload(max_frame: usize) -> usize {
    max_frame.saturating_sub(FRAME_OVERHEAD)
}
