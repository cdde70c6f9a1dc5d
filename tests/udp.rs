//! The UDP transport on loopback: a valid frame arrives; garbage, another cluster's frames and
//! a stranger's frames are dropped and counted.

use ethpaxos::protocol::{Envelope, Message};
use ethpaxos::transport::udp::UdpTransport;
use ethpaxos::transport::FrameCheck;
use ethpaxos::wire::auth::FrameKey;
use ethpaxos::wire::{self, FrameHeader};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

fn check(members: &[u16], key: Option<FrameKey>) -> FrameCheck {
    sized_check(members, key, 1500)
}

fn sized_check(members: &[u16], key: Option<FrameKey>, max_frame: usize) -> FrameCheck {
    FrameCheck {
        cluster: 7,
        members: members.iter().copied().collect(),
        key,
        max_frame,
        group: None,
        audience: None,
    }
}

fn frame(cluster: u32, sender: u16) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = FrameHeader {
        dst: [0; 6],
        src: [0; 6],
        cluster,
        sender,
    };
    wire::encode(&header, &Message::Trim { below: 9 }, 1500, &mut buf).unwrap();
    buf
}

/// Two free loopback ports.
fn two_ports() -> (SocketAddr, SocketAddr) {
    let (pa, pb) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    (addr(&pa), addr(&pb))
}

#[test]
fn drops_and_counts_what_is_not_ours() {
    let (a_addr, b_addr) = two_ports();
    let peers: HashMap<_, _> = [(1u16, a_addr), (2u16, b_addr)].into();
    let mut a = UdpTransport::bind(1, a_addr, peers.clone(), check(&[1, 2], None)).unwrap();
    let mut b = UdpTransport::bind(2, b_addr, peers, check(&[1, 2], None)).unwrap();

    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.send_to(b"not a frame at all", b_addr).unwrap();
    raw.send_to(&frame(8, 1), b_addr).unwrap(); // another cluster
    raw.send_to(&frame(7, 99), b_addr).unwrap(); // not a member
    a.send(&Envelope {
        to: 2,
        msg: Message::Progress { delivered_below: 5 },
    })
    .unwrap();

    let got = b.recv(Duration::from_secs(2)).unwrap();
    assert_eq!(got, Some((1, Message::Progress { delivered_below: 5 })));
    assert_eq!(b.recv(Duration::from_millis(50)).unwrap(), None);
    assert_eq!(b.stats.received, 4);
    assert_eq!(b.stats.dropped_bad_frame, 1);
    assert_eq!(b.stats.dropped_foreign_cluster, 1);
    assert_eq!(b.stats.dropped_non_member, 1);
    assert_eq!(a.stats.sent, 1);
}

#[test]
fn an_oversized_message_is_refused_not_truncated() {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = addr(&p);
    drop(p);
    let mut t =
        UdpTransport::bind(1, me, [(1u16, me)].into(), sized_check(&[1], None, 128)).unwrap();
    let big = Message::Accepted {
        ballot: Default::default(),
        instances: vec![0; 64],
    };
    // Dropped and counted: one message that cannot be encoded never ends the node.
    t.send(&Envelope { to: 1, msg: big }).unwrap();
    assert_eq!(t.stats.dropped_unencodable, 1);
    assert_eq!(t.stats.sent, 0);
    assert_eq!(t.recv(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn a_frame_longer_than_max_frame_is_refused_and_counted() {
    let (a_addr, b_addr) = two_ports();
    let peers: HashMap<_, _> = [(1u16, a_addr), (2u16, b_addr)].into();
    let mut b = UdpTransport::bind(2, b_addr, peers, check(&[1, 2], None)).unwrap();
    // A well-formed frame from a member, too long for this node's 1500 bytes.
    let mut long = Vec::new();
    let header = FrameHeader {
        dst: [0; 6],
        src: [0; 6],
        cluster: 7,
        sender: 1,
    };
    let msg = Message::Accepted {
        ballot: Default::default(),
        instances: (0..200).collect(),
    };
    wire::encode(&header, &msg, 9216, &mut long).unwrap();
    assert!(long.len() > 1500);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&long, b_addr)
        .unwrap();
    assert_eq!(b.recv(Duration::from_millis(300)).unwrap(), None);
    assert_eq!(b.stats.dropped_oversized, 1);
    assert_eq!(b.stats.dropped_bad_frame, 0);
}

#[test]
fn with_a_key_only_tagged_frames_pass_and_replays_still_decode() {
    let (a_addr, b_addr) = two_ports();
    let peers: HashMap<_, _> = [(1u16, a_addr), (2u16, b_addr)].into();
    let key = FrameKey::new([0x42; 32]);
    let mut a =
        UdpTransport::bind(1, a_addr, peers.clone(), check(&[1, 2], Some(key.clone()))).unwrap();
    let mut b = UdpTransport::bind(2, b_addr, peers, check(&[1, 2], Some(key.clone()))).unwrap();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();

    // A well-formed frame without a tag, one tagged with another key, one whose payload was
    // changed after tagging, and a tagged frame cut short: all refused.
    raw.send_to(&frame(7, 1), b_addr).unwrap();
    let mut other = frame(7, 1);
    FrameKey::new([0x43; 32]).seal(&mut other);
    raw.send_to(&other, b_addr).unwrap();
    let mut changed = frame(7, 1);
    key.seal(&mut changed);
    changed[27] ^= 1;
    raw.send_to(&changed, b_addr).unwrap();
    let mut cut = frame(7, 1);
    key.seal(&mut cut);
    cut.truncate(cut.len() - 1);
    raw.send_to(&cut, b_addr).unwrap();
    // A genuine frame, sent twice (a replay): both copies pass the transport; the protocol
    // is what makes a duplicate harmless.
    let mut good = frame(7, 1);
    key.seal(&mut good);
    raw.send_to(&good, b_addr).unwrap();
    raw.send_to(&good, b_addr).unwrap();
    a.send(&Envelope {
        to: 2,
        msg: Message::Progress { delivered_below: 5 },
    })
    .unwrap();

    let mut got = Vec::new();
    while let Some(m) = b.recv(Duration::from_millis(500)).unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        vec![
            (1, Message::Trim { below: 9 }),
            (1, Message::Trim { below: 9 }),
            (1, Message::Progress { delivered_below: 5 }),
        ]
    );
    assert_eq!(b.stats.dropped_unauthenticated, 4);
    assert_eq!(b.stats.dropped_bad_frame, 0);

    // A node without the key cannot read tagged frames: the flag is unknown to it.
    let (c_addr, _) = two_ports();
    let mut c =
        UdpTransport::bind(3, c_addr, [(1u16, a_addr)].into(), check(&[1, 3], None)).unwrap();
    raw.send_to(&good, c_addr).unwrap();
    assert_eq!(c.recv(Duration::from_millis(500)).unwrap(), None);
    assert_eq!(c.stats.dropped_bad_frame, 1);
}
