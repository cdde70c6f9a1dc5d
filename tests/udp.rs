//! The UDP transport on loopback: a valid frame arrives; garbage, another cluster's frames and
//! a stranger's frames are dropped and counted.

use ethpaxos::protocol::{Envelope, Message};
use ethpaxos::transport::udp::UdpTransport;
use ethpaxos::wire::{self, FrameHeader};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

#[test]
fn drops_and_counts_what_is_not_ours() {
    // Reserve two loopback ports, then hand them to the transports.
    let (pa, pb) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (a_addr, b_addr) = (addr(&pa), addr(&pb));
    drop((pa, pb));
    let peers: HashMap<_, _> = [(1u16, a_addr), (2u16, b_addr)].into();
    let mut a = UdpTransport::bind(1, a_addr, peers.clone(), 7, 1500).unwrap();
    let mut b = UdpTransport::bind(2, b_addr, peers, 7, 1500).unwrap();

    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let frame = |cluster, sender| {
        let mut buf = Vec::new();
        let header = FrameHeader {
            dst: [0; 6],
            src: [0; 6],
            cluster,
            sender,
        };
        wire::encode(&header, &Message::Trim { below: 9 }, 1500, &mut buf).unwrap();
        buf
    };
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
    let mut t = UdpTransport::bind(1, me, [(1u16, me)].into(), 7, 128).unwrap();
    let big = Message::Accepted {
        ballot: Default::default(),
        instances: vec![0; 64],
    };
    let err = t.send(&Envelope { to: 1, msg: big }).unwrap_err();
    assert!(err.to_string().contains("128-byte maximum"), "{err}");
}
