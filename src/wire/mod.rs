//! The one frame format every transport carries: an Ethernet header with EtherType 0x88B5,
//! a versioned ethpaxos header, then the message payload, all in network byte order.
//! docs/wire-format.md gives every byte offset.

#![forbid(unsafe_code)]

pub mod auth;
mod decode;
mod encode;
pub mod sizes;

pub use decode::{decode, decode_bytes, decode_payload, DecodeError};
pub use encode::{encode, encode_payload, EncodeError};

use crate::protocol::{Message, NodeId};

/// EtherType of ethpaxos frames (IEEE "local experimental" range).
pub const ETHERTYPE: u16 = 0x88B5;
/// The header version this build writes and accepts. Version 2: Promise carries `log_end`
/// (paged phase 1b).
pub const VERSION: u8 = 2;
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
/// Ethernet pads frames shorter than this; bytes past the payload are tolerated only then.
pub const ETH_MIN_FRAME: usize = 60;

pub type MacAddr = [u8; 6];

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
