//! The one frame format every transport carries: an Ethernet header with EtherType 0x88B5,
//! a versioned ethpaxos header, then the message payload, all in network byte order.
//! docs/wire-format.md gives every byte offset.

#![forbid(unsafe_code)]

pub mod auth;
mod decode;
mod encode;

pub use decode::{decode, decode_bytes, decode_payload, DecodeError};
pub use encode::{encode, encode_payload, EncodeError};

use crate::protocol::{Message, NodeId};

/// EtherType of ethpaxos frames (IEEE "local experimental" range).
pub const ETHERTYPE: u16 = 0x88B5;
/// The header version this build writes and accepts. Version 2: Promise carries `log_end`
/// (paged phase 1b).
pub const VERSION: u8 = 2;
/// The frame-size model lives with the protocol, which plans messages by it; the codec
/// implements it.
pub use crate::protocol::limits as sizes;
pub use crate::protocol::limits::{
    DEFAULT_MAX_FRAME, ETH_HEADER_LEN, FRAME_OVERHEAD, MAX_MAX_FRAME, MIN_MAX_FRAME,
    PAXOS_HEADER_LEN,
};
/// Ethernet pads frames shorter than this; bytes past the payload are tolerated only then.
pub const ETH_MIN_FRAME: usize = 60;

pub type MacAddr = [u8; 6];

/// The cluster's group MAC: a frame for every member that takes its message type goes out
/// once, to this address, and the switch floods it (locally administered multicast,
/// `03:45:50` then the cluster id's low 24 bits).
pub fn group_mac(cluster: u32) -> MacAddr {
    let c = cluster.to_be_bytes();
    [0x03, 0x45, 0x50, c[1], c[2], c[3]]
}

/// `aa:bb:cc:dd:ee:ff` (or with dashes) as six bytes.
pub fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The addressing part of a frame: who sends, to which MAC, in which cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub cluster: u32,
    pub sender: NodeId,
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub msg: Message,
}
