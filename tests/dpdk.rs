//! DPDK (feature `dpdk`): EAL on a ring virtual device, which loops every frame sent back to
//! its receive side, carries our frames byte for byte and the codec reads them back.
//! `cargo test --features dpdk --test dpdk`. EAL may be initialised once per process, so this
//! file holds one test.
#![cfg(feature = "dpdk")]

use ethpaxos::protocol::Message;
use ethpaxos::transport::dpdk::Dpdk;
use ethpaxos::wire::{self, FrameHeader};

#[test]
fn frames_go_round_a_ring_device() {
    let args: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
        "-l",
        "0",
        "--log-level=error",
        "--no-telemetry",
        "--vdev=net_ring0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut dpdk = Dpdk::init(&args, 0, 512).expect("EAL on a ring vdev");
    let frames: Vec<Vec<u8>> = (0..40u64)
        .map(|i| {
            let mut f = Vec::new();
            let header = FrameHeader {
                dst: [2, 0, 0, 0, 0, 2],
                src: dpdk.mac(),
                cluster: 7,
                sender: 1,
            };
            wire::encode(&header, &Message::Trim { below: i }, 1500, &mut f).unwrap();
            f
        })
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(dpdk.send(&refs), 40);
    let mut got = Vec::new();
    for _ in 0..1000 {
        dpdk.recv(|f| got.push(f.to_vec()));
        if got.len() == 40 {
            break;
        }
    }
    assert_eq!(got, frames, "the ring gave back other bytes");
    for (i, f) in got.iter().enumerate() {
        let frame = wire::decode(f).unwrap();
        assert_eq!(frame.msg, Message::Trim { below: i as u64 });
    }
    // A second EAL in the same process is refused, not attempted.
    assert!(Dpdk::init(&args, 0, 512).is_err());
    drop(dpdk);
    // Nothing left behind: no runtime directory, no hugepage files (--no-huge).
    assert!(
        !std::path::Path::new("/var/run/dpdk/rte").exists(),
        "EAL's runtime directory stayed behind"
    );
}
